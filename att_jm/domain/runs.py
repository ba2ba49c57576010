"""One run of a script, from its dispatch to its outcome (values, no I/O).

The scheduler's dispatch makes a `Run`; the runner runs it (`att_jm.runner.ScriptRunner`)
and says how it went as an `Outcome`; the Job Manager records that outcome on the execution.
"""

from __future__ import annotations

from dataclasses import dataclass

from att_jm.vocabulary import Result


@dataclass(frozen=True)
class Run:
    """An execution the scheduler just started: which script, with which Command, for how
    long at most, and what the script is told about it (its environment)."""

    execution_id: str
    job: str
    trigger: str
    attempt: int
    script: str
    command: str
    timeout_seconds: float


@dataclass(frozen=True)
class Outcome:
    """How a run ended: the Result (3 Succeeded, 2 Failed) and Feedback the execution
    records, and, for diagnostics only (never stored), the tails of the script's output."""

    result: Result
    feedback: str | None
    exit_code: int | None
    duration_seconds: float
    timed_out: bool = False
    stdout_tail: str = ""
    stderr_tail: str = ""

    @classmethod
    def failed(cls, feedback: str, duration_seconds: float = 0.0) -> Outcome:
        """Failed without an exit code (the script did not run, or its end was not seen)."""
        return cls(Result.FAILED, feedback, None, duration_seconds)
