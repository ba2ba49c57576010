"""The checks `verify` runs on every row, fed rows directly (tests/integration/test_audit_tail.py
runs them on real stores)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import orjson

from att_jm.audit.checks import EVENT_CLASSES, RowChecks
from att_jm.audit.findings import MAX_LISTED, Findings
from att_jm.log.records import EVENT_TOPICS
from att_jm.log.rows import Row

ID = "6f1c7a5252a44c1e9d7e0a7d3b1f2c11"


def stamp(at: str = "2026-03-02T08:00:00+00:00") -> dict[str, str]:
    return {"_type_": "datetime_iso", "_data_": at}


def enqueued(position: int = 1, **changes: object) -> Row:
    state: dict[str, object] = {
        "timestamp": stamp(), "originator_topic": "att_jm:Execution", "job": "ipx",
        "script": "s", "command": None, "trigger": "t", "notification_id": "n",
        "timeout_seconds": 300.0, "actor": "a", **changes}
    return Row(position, ID, 1, "att_jm:Execution.Enqueued", orjson.dumps(state))


def run(*rows: Row) -> list[tuple[str, int | None, str]]:
    findings = Findings()
    checks = RowChecks(findings, timedelta(seconds=1))
    for row in rows:
        checks.row(row)
    checks.finish()
    return [(f.kind, f.position, f.message) for f in findings.all()]


def test_every_stored_event_class_is_known_with_the_fields_it_needs() -> None:
    assert set(EVENT_CLASSES) == set(EVENT_TOPICS.values())
    for topic, known in EVENT_CLASSES.items():
        fields = {f.name for f in dataclasses.fields(known.cls)}
        assert known.fields <= fields, topic
        assert "timestamp" in known.fields
        assert (known.origin is not None) == ("originator_topic" in fields), topic


def test_a_field_with_a_default_may_be_missing_one_without_may_not() -> None:
    assert run(enqueued()) == []
    state = orjson.loads(enqueued().state)
    del state["job"]
    row = enqueued()._replace(state=orjson.dumps(state))
    assert run(row) == [("undecodable", 1, "position 1: it lacks job")]


def test_a_time_one_tolerance_back_is_fine_more_is_not() -> None:
    first = enqueued(1, timestamp=stamp("2026-03-02T08:00:01+00:00"))
    later = Row(2, "ab" * 16, 1, first.topic, enqueued(
        timestamp=stamp("2026-03-02T08:00:00+00:00")).state)
    assert run(first, later) == []
    much = Row(2, "ab" * 16, 1, first.topic, enqueued(
        timestamp=stamp("2026-03-02T07:59:59.5+00:00")).state)
    assert [kind for kind, _, _ in run(first, much)] == ["time_backwards"]


def test_a_damaged_log_lists_at_most_max_listed_findings_of_a_kind() -> None:
    rows = [Row(n, ID, n, "att_jm:Execution.Started", b"{}") for n in range(1, MAX_LISTED + 6)]
    found = run(*rows)
    undecodable = [f for f in found if f[0] == "undecodable"]
    assert len(undecodable) == MAX_LISTED + 1
    assert undecodable[-1] == ("undecodable", None, "5 more undecodable findings (not listed)")
