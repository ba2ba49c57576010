"""What an auditor reads: the audit results as text (the `--json` forms are their to_json)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from att_jm.audit.backtest import Counts, Outcome
from att_jm.audit.records import Record
from att_jm.audit.trace import Trace
from att_jm.audit.verify import Verification
from att_jm.cli import cell, render_table, render_view, short_time, truncate
from att_jm.domain.times import iso

DATA_WIDTH: Final = 100
NOTHING: Final = "-"
_QUIET: Final = frozenset({"aggregate_id", "version", "actor", "timestamp", "originator_topic"})
LOG_HEADER: Final = (
    f"{'POSITION':>9}  {'AT':<24}  {'TYPE':<32}  {'ACTOR':<16}  {'AGGREGATE':<36}  DATA"
)


_UNPRINTABLE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _value(value: object) -> str:
    if isinstance(value, str) and value and " " not in value and '"' not in value:
        return value
    return orjson.dumps(value).decode()


def summary(data: Mapping[str, object], width: int = DATA_WIDTH) -> str:
    """`key=value ...` of an event's data (ids, version and actor have their own columns)."""
    text = " ".join(f"{k}={_value(v)}" for k, v in data.items() if k not in _QUIET)
    return truncate(_UNPRINTABLE.sub(" ", text[: width + 1]), width)


def log_line(record: Record) -> str:
    """One event of `audit log` as a fixed-width line (streamed, so no width measuring)."""
    actor = _UNPRINTABLE.sub(" ", record.actor or NOTHING)
    return (f"{record.position:>9}  {iso(record.at):<24}  {record.type:<32}  "
            f"{actor:<16}  {record.aggregate_id:<36}  {summary(record.state)}").rstrip()


def render_views(position: int, payloads: Mapping[str, Mapping[str, object]]) -> str:
    """Every view asked for, as `att-jm queue` etc. show them, under its name."""
    parts = [f"views at log position {position:,}"]
    for name, payload in payloads.items():
        parts.append(f"\n== {name} ==\n{render_view(payload)}")
    return "\n".join(parts)


def _when(moment: Mapping[str, Any] | None) -> str:
    if not moment:
        return NOTHING
    return f"{short_time(moment['at'])} (position {moment['position']})"


def render_trace(t: Trace) -> str:
    lines = [f"execution {t.execution_id}: {t.status}"]
    n = t.notification
    if n is None:
        lines.append("notification: not in the log")
    else:
        lines.append(f"notification {n['id']} on trigger {n['trigger']}, received "
                     f"{_when(n)} from {n['actor']}")
        lines.append(f"  payload  {orjson.dumps(n['payload']).decode()}")
        others = [e["job"] for e in n["enqueued"] if e.get("execution_id") != t.execution_id]
        if others:
            lines.append(f"  it also enqueued: {', '.join(others)}")
    job = t.job
    if job is None:
        lines.append(f"job {t.enqueued['job']}: no definition in the log before the enqueue")
    else:
        d = job["definition"]
        changed = job["changed"]
        lines.append(f"job {job['name']} as defined then (last {changed['type']} by "
                     f"{changed['actor']}, {_when(changed)}):")
        lines.append(f"  trigger {d.get('trigger')}  match {cell(d.get('match'))}  "
                     f"command {cell(d.get('command'))}")
        lines.append(f"  script {d.get('script')}  timeout {cell(d.get('timeout_seconds'))} s  "
                     f"enabled {cell(d.get('enabled'))}")
    e = t.enqueued
    lines.append(f"enqueued {_when(e)} by {e['actor']}: Command {cell(e['command'])}")
    steps: list[tuple[int, str]] = []
    for attempt in t.attempts:
        ended = attempt["ended"]
        front = " (sent to the front)" if attempt.get("front") else ""
        text = f"attempt {attempt['attempt']}: started {_when(attempt['started'])}{front}"
        if ended is None:
            text += ", still running"
        else:
            how = "succeeded" if ended["result"] == 3 else "failed"
            if ended.get("timed_out"):
                how += " (timed out)"
            if ended.get("interrupted"):
                how += " (interrupted)"
            text += (f"\n  {how} {_when(ended)}: Result {ended['result']}, Feedback "
                     f"{cell(ended['feedback'])}, exit code {cell(ended['exit_code'])}, "
                     f"{cell(ended['duration_seconds'])} s")
        steps.append((attempt["started"]["position"], text))
    for action in t.actions:
        then = f" -> attempt {action['attempt']}" if "attempt" in action else ""
        steps.append((action["position"], f"operator {action['actor']}: {action['action']} "
                                          f"{_when(action)}{then}"))
    if t.cleanup is not None:
        c = t.cleanup
        steps.append((c["position"], f"cleaned up from {c['table']} by {c['actor']} "
                                     f"{_when(c)} (run {c['cleanup']})"))
    lines.extend(text for _, text in sorted(steps))
    lines.append(f"{len(t.events)} events in this lineage (--json lists them)")
    return "\n".join(lines)


def _names(value: object) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value)) or NOTHING
    return cell(value)


BACKTEST_COLUMNS: Final = (
    ("position", "POSITION", cell), ("at", "RECEIVED", short_time),
    ("notification_id", "NOTIFICATION", lambda v: truncate(cell(v))),
    ("outcome", "WOULD", cell), ("command", "COMMAND / REASON", lambda v: truncate(cell(v), 60)),
    ("actually_enqueued", "ENQUEUED THEN", _names),
)


def render_backtest(outcomes: Sequence[Outcome], counts: Counts) -> str:
    rows = []
    for outcome in outcomes:
        row = outcome.to_json()
        row["command"] = outcome.command if outcome.enqueued else outcome.reason
        rows.append(row)
    table = render_table(BACKTEST_COLUMNS, rows) if rows else "no notification would match"
    return f"{table}\n{render_counts(counts)}"


def render_counts(c: Counts) -> str:
    scanned = "" if c.first is None else f" (positions {c.first}-{c.last})"
    return (f"{c.notifications} notifications{scanned}: {c.trigger} with the trigger, "
            f"{c.matched} matching, {c.enqueued} would enqueue, {c.skipped} would skip")


def render_verification(v: Verification) -> str:
    problems = f"{len(v.findings)} problem{'' if len(v.findings) == 1 else 's'}"
    lines = ["verify: OK" if v.ok else f"verify: FAILED ({problems})"]
    if v.seals:
        last = v.seals[-1]
        lines.append(f"{v.events:,} events; {len(v.seals)} seals; sealed through position "
                     f"{last.position:,} by seal #{last.number} (hash {last.hash[:16]}, "
                     f"{short_time(last.at)})")
    else:
        lines.append(f"{v.events:,} events; no seal yet")
    lines.append(f"{v.unsealed:,} events after position {v.sealed_through:,} are not sealed yet")
    lines.append(f"versions followed for {v.aggregates:,} aggregates; {v.snapshots:,} "
                 f"snapshot{'' if v.snapshots == 1 else 's'} compared with a replay of "
                 "their events")
    if v.closed is not None:
        lines.append(f"the log ends with a clean stop (position {v.closed:,})")
    elif v.starts:
        lines.append("the log is open: the service runs, or its last stop did not close it "
                     "(the events after the last seal are counted, not proven)")
    for finding in v.findings:
        lines.append(f"  {finding.kind}: {finding.message}")
    if v.witness is not None:
        w = v.witness
        lines.append(f"witness {w['file']}: {w['matched']} of {w['seals']} seals match "
                     f"(newest up to position {w['newest']:,}; {w['newer_in_log']} newer "
                     "seals checked against the log only)")
    return "\n".join(lines)
