"""What an auditor reads: the audit results as text (the `--json` forms are their to_json)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from att_jm.audit.archiving import Archived
from att_jm.audit.backtest import Counts, Outcome
from att_jm.audit.verify import Verification
from att_jm.domain.times import iso
from att_jm.log.lineage import Trace
from att_jm.log.records import Record
from att_jm.output import cell, duration, plural, render_table, render_view, short_time, truncate
from att_jm.vocabulary import Result

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


def _item(key: str, value: object) -> str:
    if key == "duration_seconds":
        return f"duration={duration(value)}"
    return f"{key}={_value(value)}"


def summary(data: Mapping[str, object], width: int = DATA_WIDTH) -> str:
    """`key=value ...` of an event's data (ids, version and actor have their own columns);
    a run's duration as `duration=47.7 ms`."""
    text = " ".join(_item(k, v) for k, v in data.items() if k not in _QUIET)
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


def _attempt_text(attempt: dict[str, Any]) -> str:
    """One attempt of a trace: its start, and its end (with the retry its end queued)."""
    ended = attempt["ended"]
    front = " (sent to the front)" if attempt.get("front") else ""
    text = f"attempt {attempt['attempt']}: started {_when(attempt['started'])}{front}"
    if ended is None:
        return text + ", still running"
    how = "succeeded" if ended["result"] == Result.SUCCEEDED else "failed"
    if ended.get("timed_out"):
        how += " (timed out)"
    if ended.get("interrupted"):
        how += " (interrupted)"
    text += (f"\n  {how} {_when(ended)}: Result {ended['result']}, Feedback "
             f"{cell(ended['feedback'])}, exit code {cell(ended['exit_code'])}, "
             f"{duration(ended['duration_seconds'])}")
    retry = ended.get("retry")
    if isinstance(retry, dict):
        text += (f"\n  retried by the job's policy: attempt {cell(retry.get('attempt'))} "
                 f"not before {cell(retry.get('not_before'))}")
    return text


def render_trace(t: Trace) -> str:
    lines = [f"execution {t.execution_id}: {t.status}"]
    n = t.notification
    if n is None:
        lines.append(f"no notification {cell(_enqueued_by(t))} in the log")
    else:
        lines.append(f"notification {n['id']} on trigger {n['trigger']}, received "
                     f"{_when(n)} from {n['actor']}")
        lines.append(f"  payload  {orjson.dumps(n['payload']).decode()}")
        others = [e["job"] for e in n["enqueued"] if e.get("execution_id") != t.execution_id]
        if others:
            lines.append(f"  it also enqueued: {', '.join(others)}")
    job = t.job
    if job is None:
        lines.append(f"no definition of job {t.enqueued['job']} in the log before the enqueue")
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
        steps.append((attempt["started"]["position"], _attempt_text(attempt)))
    for action in t.actions:
        then = f" -> attempt {action['attempt']}" if "attempt" in action else ""
        steps.append((action["position"], f"operator {action['actor']}: {action['action']} "
                                          f"{_when(action)}{then}"))
    if t.cleanup is not None:
        c = t.cleanup
        steps.append((c["position"], f"cleaned up from {c['table']} by {c['actor']} "
                                     f"{_when(c)} (run {c['cleanup']})"))
    lines.extend(text for _, text in sorted(steps))
    lines.append(f"{plural(len(t.events), 'event')} in this lineage (--json lists them)")
    return "\n".join(lines)


def _enqueued_by(t: Trace) -> object:
    """The id of the notification that enqueued the execution, from its events."""
    for event in t.events:
        data = event.get("data")
        if event.get("type") == "execution.enqueued" and isinstance(data, Mapping):
            return data.get("notification_id")
    return None


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
    return (f"{plural(c.notifications, 'notification')}{scanned}: {c.trigger:,} with the "
            f"trigger, {c.matched:,} matching, {c.enqueued:,} would enqueue, {c.skipped:,} "
            "would skip")


def render_verification(v: Verification) -> str:
    lines = ["verify: OK" if v.ok else f"verify: FAILED ({plural(len(v.findings), 'problem')})"]
    if v.seals:
        last = v.seals[-1]
        lines.append(f"{plural(v.events, 'event')}; {plural(len(v.seals), 'seal')}; sealed "
                     f"through position {last.position:,} by seal #{last.number} (hash "
                     f"{last.hash[:16]}, {short_time(last.at)})")
    else:
        lines.append(f"{plural(v.events, 'event')}; no seal yet")
    lines.append(f"{plural(v.unsealed, 'event')} after position {v.sealed_through:,} "
                 f"{'is' if v.unsealed == 1 else 'are'} not sealed yet")
    lines.append(f"versions followed for {plural(v.aggregates, 'aggregate')}; "
                 f"{plural(v.snapshots, 'snapshot')} compared with a replay of their events")
    if v.closed is not None:
        lines.append(f"the log ends with a clean stop (position {v.closed:,})")
    elif v.starts:
        lines.append("the log is open: the service runs, or its last stop did not close it "
                     "(the events after the last seal are counted, not proven)")
    if v.archived is not None:
        a = v.archived
        anchor = a["anchor"]
        names = ", ".join(a["archives"])
        lines.append(
            f"archived up to position {anchor['position']:,} (anchor: seal #"
            f"{anchor['seal']['number']}, archive {anchor['archive']['name']}); "
            + (f"checked with the archives {names} as one chain from position 1" if names
               else "the chain checked from the anchor (`--archive` checks the archives too); "
               f"{plural(a['snapshots_from_anchor'], 'snapshot')} taken at the archival "
               "stand in for the archived events"))
        if a["leftover"]:
            lines.append(f"info: {plural(a['leftover'], 'row')} at or before the anchor are "
                         "still stored (an interrupted archival; `audit archive` again "
                         "deletes them): ignored")
    for finding in v.findings:
        lines.append(f"  {finding.kind}: {finding.message}")
    if v.witness is not None:
        w = v.witness
        lines.append(f"witness {w['file']}: {plural(w['seals'], 'seal')}, {w['matched']:,} "
                     f"matching the log (newest up to position {w['newest']:,}); "
                     f"{plural(w['newer_in_log'], 'newer seal')} checked against the log only")
    return "\n".join(lines)


def render_archived(a: Archived) -> str:
    lines = []
    if a.finished:
        lines.append(f"finished an interrupted archival: {plural(a.finished, 'row')} deleted")
    lines.append(f"archived positions up to {a.position:,} to {a.archive}: "
                 f"{plural(a.rows, 'row')}, {plural(a.seals, 'seal')}, {a.size:,} bytes "
                 f"(sha256 {a.sha256[:16]})")
    lines.append(f"{plural(a.snapshots, 'snapshot')} taken; {plural(a.deleted, 'row')} "
                 "removed from the store (its freed pages are reused by new rows)")
    lines.extend(f"set aside (an interrupted archival's, not in the chain): {path}"
                 for path in a.set_aside)
    return "\n".join(lines)
