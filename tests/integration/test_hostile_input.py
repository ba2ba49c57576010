"""Well-formed hostile input through the application: every value at its extremes.

Generated with hypothesis against the real JobManager over real SQLite files, driven like the
writer, with a fake clock: every command gets a reply; no event is over the cap; the state
loads again from the log; and after the clock moves on by years the scheduler and the cleanup
timers still compute. Amplification (templates x fields) is cut at the Command's cap. The
caps' own tests (a huge template, a NUL, an event over the cap, too many jobs) run on an
SQLite and on a PostgreSQL store too.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers.application import Harness
from helpers.clock import Clock
from helpers.hostile import JSON, SCALARS, commands
from helpers.postgres import BOTH_BACKENDS
from helpers.store import all_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from att_jm.domain import limits as lim
from att_jm.domain.notifications import Notification
from att_jm.store import log_position
from projections.rebuild import catch_up

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
YEARS = (1, 10, 100, 1000)
OUTCOMES = ("enqueued", "matched none", "duplicate", "conflict", "rejected",
            "duplicate conflict")
@contextmanager
def harness() -> Iterator[tuple[Harness, Path, Clock]]:
    """A fresh store and views (hypothesis runs many examples in one test function)."""
    with tempfile.TemporaryDirectory() as directory:
        clock = Clock(T0)
        opened = Harness(Path(directory), clock, 256 * 1024)
        try:
            yield opened, Path(directory), clock
        finally:
            opened.close()


def _stored_sizes(jm: Harness) -> list[int]:
    """The size of every stored state (committed rows, on either engine)."""
    return [len(row.state) for row in all_rows(jm.store)]


def _timers_compute(jm: Harness, clock: Clock) -> None:
    """Every timer of the writer, at now and years later, and the work they start."""
    for years in YEARS:
        now = clock.now + timedelta(days=365 * years)
        jm.manager.next_cleanup(now)
        jm.manager.next_start(now)
        jm.manager.cleanup_due(now)
    clock.advance(365 * 24 * 3600 * 10)
    for table in jm.manager.cleanup_due(clock()):
        jm.unit(partial(jm.manager.cleanup, table=table, actor="scheduler"))
    jm.dispatch()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(commands(), min_size=1, max_size=6))
def test_every_command_with_any_json_gets_a_reply_and_the_state_survives_years(
    sequence: list[tuple[str, dict[str, Any]]],
) -> None:
    with harness() as (jm, directory, clock):
        jm.ok("job.add", {"name": "anchor", "script": "backup.sh", "trigger": "alarm"})
        for name, args in sequence:
            try:
                payload = orjson.dumps(args)
            except (TypeError, orjson.JSONEncodeError):  # deeper than orjson writes
                payload = b"[" * 300 + b"]" * 300
            reply = jm.command(name, raw=payload, correlation=payload[:8] or None)
            assert isinstance(reply.get("ok"), bool), reply
            if not reply["ok"]:
                assert reply["error"]["code"] in (
                    "invalid", "not_found", "conflict", "unknown_command", "too_large")
                assert len(orjson.dumps(reply)) <= 2 * lim.MAX_REASON_CHARS
            clock.advance(1)
        assert max(_stored_sizes(jm)) <= lim.MAX_EVENT_BYTES
        _timers_compute(jm, clock)
        reopened = Harness(directory, clock, 256 * 1024)  # the state loads again from the log
        try:
            assert reopened.views.snapshot() == jm.views.snapshot()
            _timers_compute(reopened, clock)
        finally:
            reopened.close()


TEMPLATE_PARTS = st.sampled_from(["{f}", "{a.b}", "{id}", "x", "{{", "}}", " ", "{missing}",
                                  "{f}" * 64])


@st.composite
def jobs(draw: st.DrawFn) -> dict[str, Any]:
    job: dict[str, Any] = {
        "name": f"j{draw(st.integers(0, 5))}", "script": "backup.sh",
        "trigger": draw(st.sampled_from(["alarm", "other"])),
    }
    if draw(st.booleans()):
        job["command"] = "".join(draw(st.lists(TEMPLATE_PARTS, max_size=6)))
    if draw(st.booleans()):
        job["match"] = draw(st.dictionaries(st.sampled_from(["f", "a.b", "k", "id"]),
                                            SCALARS, max_size=2))
    return job


FIELDS = st.one_of(
    SCALARS,
    st.sampled_from(["x" * 250_000, "é" * 60_000, "a\u0000b"]),
    st.dictionaries(st.just("b"), SCALARS, max_size=1),
)


@st.composite
def notifications(draw: st.DrawFn) -> tuple[str, bytes]:
    body: dict[str, Any] = draw(st.dictionaries(
        st.sampled_from(["f", "a", "k", "a.b", "extra"]), FIELDS, max_size=4))
    if draw(st.integers(0, 9)):
        body["id"] = draw(st.one_of(st.sampled_from(["n-1", "n-2", "n-3"]), JSON))
    trigger = draw(st.sampled_from(["alarm", "other", "t" * 201]))
    try:
        return trigger, orjson.dumps(body)
    except (TypeError, orjson.JSONEncodeError):
        return trigger, b'{"id": "deep", "v": ' + b"[" * 300 + b"]" * 300 + b"}"


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(jobs(), max_size=5), st.lists(notifications(), min_size=1, max_size=8))
def test_any_notification_against_any_job_is_recorded_or_rejected_within_the_caps(
    job_list: list[dict[str, Any]], sent: list[tuple[str, bytes]],
) -> None:
    with harness() as (jm, _, _clock):
        for job in job_list:
            try:
                raw = orjson.dumps(job)
            except (TypeError, orjson.JSONEncodeError):  # a match deeper than orjson writes
                raw = orjson.dumps({**job, "match": None})[:-1] + b', "deep": ' + \
                      b"[" * 300 + b"]" * 300 + b"}"
            jm.command("job.add", raw=raw)
        for trigger, payload in sent:
            outcome = jm.notify(trigger, payload)
            assert outcome.startswith(OUTCOMES), outcome
        assert max(_stored_sizes(jm)) <= lim.MAX_EVENT_BYTES
        for event in jm.events(Notification.Received):
            for skip in event.skipped:
                assert len(skip["reason"]) <= lim.MAX_REASON_CHARS + 40
        for row in jm.rows("queue"):
            command = row["command"]
            assert len(command.encode()) <= lim.MAX_COMMAND_BYTES and "\x00" not in command


@BOTH_BACKENDS
def test_a_template_multiplying_a_huge_field_skips_the_job_with_the_reason_recorded(
    jm: Harness,
) -> None:
    """Once 5,000 placeholders x a 250 kB field built a 1.25 GB Command and the writer retried
    its commit for ever; now the Command stops at its cap and that job is skipped."""
    jm.add_job("amplifier", command="{f}" * lim.MAX_PLACEHOLDERS)
    jm.add_job("plain", command="ok {id}")
    assert jm.notify("alarm", {"id": "n-1", "f": "x" * 250_000}) == "enqueued 1"
    (received,) = jm.events(Notification.Received)
    assert [e["job"] for e in received.enqueued] == ["plain"]
    assert received.skipped == [{
        "job": "amplifier",
        "reason": f"the Command would be over {lim.MAX_COMMAND_BYTES} bytes (the cap of one "
                  "script argument)",
    }]
    assert max(_stored_sizes(jm)) < 400_000


@BOTH_BACKENDS
def test_a_command_with_a_nul_or_over_the_cap_without_a_template_is_skipped(jm: Harness) -> None:
    jm.add_job("whole-payload")  # no template: the payload as compact JSON
    jm.add_job("nul", command="{f}")
    assert jm.notify("alarm", {"id": "n-1", "f": "a\x00b"}) == "enqueued 1"
    assert jm.notify("alarm", {"id": "n-2", "f": "x", "pad": "y" * 200_000}) == "enqueued 1"
    first, second = jm.events(Notification.Received)
    assert [s["job"] for s in first.skipped] == ["nul"]
    assert "NUL" in first.skipped[0]["reason"]
    assert [s["job"] for s in second.skipped] == ["whole-payload"]
    assert "over 128000 bytes" in second.skipped[0]["reason"]


@BOTH_BACKENDS
def test_an_event_over_the_cap_is_refused_with_its_reason_not_retried(
    open_harness: Any,
) -> None:
    jm: Harness = open_harness(max_payload_bytes=1024 * 1024)
    # 1e5 is written back as 100000.0: a payload under its own limit makes a bigger event.
    payload = b'{"id": "grows", "v": [' + b",".join([b"1e5"] * 250_000) + b"]}"
    assert len(payload) < 1024 * 1024
    with pytest.raises(Exception, match="over the cap"):
        jm.notify("alarm", payload)


@BOTH_BACKENDS
def test_more_jobs_than_the_cap_are_refused(jm: Harness) -> None:
    jm.batch(*[jm.command_work("job.add", {"name": f"j-{n}", "script": "backup.sh",
                                           "trigger": "t"}) for n in range(lim.MAX_JOBS)])
    assert len(jm.rows("jobs")) == lim.MAX_JOBS
    code, message = jm.error("job.add", {"name": "one-more", "script": "backup.sh",
                                         "trigger": "t"})
    assert code == "conflict" and f"at most {lim.MAX_JOBS} jobs" in message


FORGED = [  # (topic, state): rows the service never wrote, with the topics of view rules
    ("att_jm:Execution.Enqueued", b"not json"),
    ("att_jm:Execution.Enqueued", b'{"timestamp": {"_type_": "datetime_iso", "_data_": "x"}}'),
    ("att_jm:Job.Updated", b'{"timestamp": {"_type_": "datetime_iso", '
                           b'"_data_": "2026-04-01T09:00:00+00:00"}, "changes": 5}'),
    ("att_jm:Scheduler.SettingsChanged", b'[1, 2]'),
    ("att_jm:Execution.CleanedUp", b'{"table": 7}'),
]


def _forge(store: Path) -> None:
    import sqlite3  # noqa: PLC0415 -- only this test writes rows behind the service's back
    with sqlite3.connect(store) as db:
        for n, (topic, state) in enumerate(FORGED):
            db.execute("INSERT INTO stored_events VALUES (?, ?, ?, ?)",
                       (f"{n:032x}", 1, topic, state))


@pytest.mark.parametrize("rebuild", [False, True])
def test_rows_the_service_never_wrote_do_not_stall_the_views(
    tmp_path: Path, rebuild: bool
) -> None:
    """A forged or corrupt row with a view rule's topic is logged and skipped; the views still
    reach the log's end (incrementally and in a rebuild), so nothing waits behind it."""
    clock = Clock(T0)
    jm = Harness(tmp_path, clock, 256 * 1024)
    try:
        jm.add_job("backup")
        _forge(tmp_path / "store.db")
        jm.add_job("after")
        if rebuild:
            jm.views.reset()
        catch_up(jm.app, jm.views)
        assert jm.views.position == log_position(jm.app)
        assert [row["name"] for row in jm.rows("jobs")] == ["after", "backup"]
        assert jm.notify("alarm", {"id": "n-1"}) == "enqueued 2"
    finally:
        jm.close()
