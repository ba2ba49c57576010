"""The domain's exception family; each maps to one reply error code.

    JobManagerError            code "internal"
    +-- InvalidInput           code "invalid"
    +-- NotFound               code "not_found"
    +-- Conflict               code "conflict"
    +-- UnknownCommand         code "unknown_command"
    +-- TooLarge               code "too_large"
    +-- Forbidden              code "forbidden"
    +-- RateLimited            code "rate_limited"

Messages quote user values cut short (`limits.shown`), and `error_reply` cuts the whole
message to `limits.MAX_REASON_CHARS`: an error reply is never larger than a few kB.
"""

from __future__ import annotations


class JobManagerError(Exception):
    """A rule of the Job Manager was broken; `code` is the reply error code."""

    code = "internal"

    @property
    def message(self) -> str:
        return str(self)


class InvalidInput(JobManagerError):
    """The input is malformed: wrong type, missing field, out of range."""

    code = "invalid"


class NotFound(JobManagerError):
    """The job or entry named does not exist (or is not in the table named)."""

    code = "not_found"


class Conflict(JobManagerError):
    """The request contradicts the current state (duplicate name, running entry)."""

    code = "conflict"


class UnknownCommand(JobManagerError):
    """The command name is not one of the contract's commands."""

    code = "unknown_command"


class TooLarge(JobManagerError):
    """The payload is larger than the configured maximum."""

    code = "too_large"


class EventTooLarge(TooLarge):
    """An event the message would store is over `limits.MAX_EVENT_BYTES`."""


class Forbidden(JobManagerError):
    """The actor's role may not send this command (an auditor's `job.add`)."""

    code = "forbidden"


class RateLimited(JobManagerError):
    """The actor sent more commands than its rate allows (a burst, then a steady rate)."""

    code = "rate_limited"
