"""The `att-jm audit` verbs: options in, results out (text tables, or JSON with `--json`).

Every verb opens the store read-only (except `import`, which writes a new store) and never
touches the views file. Exit codes: 0 ok; 1 `verify` found a problem, or what was asked
for is not in the log; 2 bad usage, no store. With `--json` a failure is printed on stdout as
`{"ok": false, "error": {"code": "not_found" (exit 1) | "usage" (exit 2), "message"}}`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Final

import orjson

from att_jm.audit import render
from att_jm.audit.archiving import archive
from att_jm.audit.backtest import Backtest, draft_job
from att_jm.audit.cutoff import NothingToArchive
from att_jm.audit.filters import LogFilter
from att_jm.audit.progress import Progress
from att_jm.audit.replay import replay_views
from att_jm.audit.transfer import export, import_log
from att_jm.audit.verify import verify
from att_jm.audit.witness import check_witness, load_witness
from att_jm.domain.times import parse_iso
from att_jm.log.anchor import archived_message
from att_jm.log.archive_names import expand
from att_jm.log.backend import redact, views_location
from att_jm.log.history import History
from att_jm.log.lineage import execution_key, trace
from att_jm.log.messages import record_message
from att_jm.log.records import Record, decode
from att_jm.log.rows import AuditError, Row
from att_jm.output import error_json, plural
from att_jm.vocabulary import VIEWS
from projections.reader import VIEW_MAX_BYTES

EXIT_OK: Final = 0
EXIT_FOUND_PROBLEM: Final = 1
EXIT_USAGE: Final = 2


class NotInLog(AuditError):
    """What the auditor asked about is not in the log."""


class Output:
    """stdout for results, with the progress bar (on stderr) erased before each write."""

    def __init__(self, out: IO[str], progress: Progress | None = None) -> None:
        self.out = out
        self.progress = progress

    def write(self, text: str) -> None:
        if self.progress is not None:
            self.progress.clear()
        self.out.write(text)
        self.out.flush()

    def json(self, value: Any) -> None:
        self.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def parse_time(text: str) -> datetime:
    """An ISO-8601 time (`2026-01-05T06:00:00Z`, an offset, or a date); naive means UTC."""
    try:
        return parse_iso(text)
    except ValueError:
        raise AuditError(f"not an ISO-8601 time: {text!r} (e.g. 2026-01-05T06:00:00Z)") from None


def _times(ns: argparse.Namespace) -> tuple[datetime | None, datetime | None]:
    since = None if ns.since is None else parse_time(ns.since)
    until = None if ns.until is None else parse_time(ns.until)
    return since, until


@contextlib.contextmanager
def _reader(store: str, ns: argparse.Namespace) -> Iterator[History]:
    """The log of `store` with the archives of `--archive` (an archive chain that does not
    verify: AuditError, `verify --archive` names the problems)."""
    archives = expand(getattr(ns, "archive", None) or ())
    reader = History(store, archives)
    try:
        if reader.problems and ns.audit_verb != "verify":
            raise AuditError("the archives do not verify (`att-jm audit verify --archive` "
                             f"tells more): {reader.problems[0][2]}")
        yield reader
    finally:
        reader.close()


def _archived(reader: History, after: int | None, upto: int | None) -> None:
    """For a question about (after, upto] on a store whose rows up to its anchor are
    archived, none given: AuditError when all of it is archived, else a note on stderr
    (the rows after the anchor are shown)."""
    anchor = reader.anchor
    if anchor is None or reader.past is not None or (after or 0) >= anchor.position:
        return
    if upto is not None and upto <= anchor.position:
        raise AuditError(archived_message(anchor, f"position {upto}"))
    what = f"the log up to position {anchor.position:,}"
    sys.stderr.write(f"note: {archived_message(anchor, what)}; shown: the rows after it\n")


def _progress(total: int, label: str, ns: argparse.Namespace) -> Progress:
    return Progress(total, label, enabled=False if ns.no_progress else None)


# Verbs -----------------------------------------------------------------------------------


def run_log(ns: argparse.Namespace, store: str, out: IO[str]) -> int:
    since, until = _times(ns)
    chosen = LogFilter(
        since=since, until=until, types=tuple(ns.type or ()), job=ns.job,
        execution=None if ns.execution is None else execution_key(ns.execution),
        notification=ns.notification, actor=ns.actor, after=ns.after, upto=ns.upto,
    )
    topics = chosen.topics
    with _reader(store, ns) as reader:
        _archived(reader, ns.after, ns.upto)
        upto = reader.max_position() if ns.upto is None else ns.upto
        progress = _progress(upto, "log", ns)
        output = Output(out, progress)
        if not ns.json:
            output.write(render.LOG_HEADER + "\n")
        shown = 0
        for rows in reader.pages(ns.after, upto, topics):
            records = chosen.select(_readable(rows))
            if ns.json:
                text = "".join(orjson.dumps(record_message(r)).decode() + "\n" for r in records)
            else:
                text = "".join(render.log_line(r) + "\n" for r in records)
            if text:
                shown += text.count("\n")
                output.write(text)
            progress(rows[-1].position)
        progress.clear()
        if not ns.json:
            output.write(plural(shown, "event") + "\n")
    return EXIT_OK


def _readable(rows: list[Row]) -> Iterator[Record]:
    """The decoded rows; an unreadable one (a damaged store) is reported and skipped."""
    for row in rows:
        try:
            yield decode(row)
        except ValueError as error:
            sys.stderr.write(f"att-jm audit log: {error}\n")


def run_views(
    ns: argparse.Namespace, store: str, out: IO[str], view_rows: int, view_max_bytes: int,
) -> int:
    at = None if ns.at is None else parse_time(ns.at)
    with _reader(store, ns) as reader:
        total = reader.max_position() if ns.position is None else ns.position
        progress = _progress(total, "replay", ns)
        moment = replay_views(reader, position=ns.position, at=at, progress=progress)
    progress.clear()
    try:
        names = tuple(ns.view) if ns.view else VIEWS
        payloads = moment.payloads(names, ns.limit or view_rows, view_max_bytes)
    finally:
        moment.close()
    output = Output(out)
    if ns.json:
        output.json({"position": moment.position, "views": payloads})
    else:
        output.write(render.render_views(moment.position, payloads) + "\n")
    return EXIT_OK


def run_trace(ns: argparse.Namespace, store: str, out: IO[str]) -> int:
    key = execution_key(ns.id)  # a malformed id: AuditError, a usage error
    with _reader(store, ns) as reader:
        try:
            result = trace(reader, key)
        except AuditError:
            if reader.anchor is not None and reader.past is None:
                raise NotInLog(archived_message(
                    reader.anchor, f"execution {key} (not in the store, or its first "
                    "events)")) from None
            raise NotInLog(f"no execution {key} in the log") from None
    _emit(ns, out, result.to_json, lambda: render.render_trace(result))
    return EXIT_OK


def draft_args(ns: argparse.Namespace, match: dict[str, object] | None) -> dict[str, Any]:
    """The `job.add` arguments of the draft job given on the command line."""
    args: dict[str, Any] = {"trigger": ns.trigger}
    for key in ("name", "script", "command", "timeout_seconds"):
        if getattr(ns, key, None) is not None:
            args[key] = getattr(ns, key)
    if match is not None:
        args["match"] = match
    return args


def run_backtest(
    ns: argparse.Namespace, store: str, out: IO[str], match: dict[str, object] | None
) -> int:
    since, until = _times(ns)
    test = Backtest(draft_job(draft_args(ns, match)), since=since, until=until,
                    after=ns.after, upto=ns.upto)
    with _reader(store, ns) as reader:
        _archived(reader, ns.after, ns.upto)
        progress = _progress(reader.max_position(), "backtest", ns)
        outcomes = []
        for outcome in test.run(reader):
            outcomes.append(outcome)
            progress(outcome.position)
        progress.clear()
    output = Output(out)
    if ns.json:
        spec = test.job
        output.json({
            "job": {"name": spec.name, **spec.fields()}, "counts": test.counts.to_json(),
            "outcomes": [o.to_json() for o in outcomes],
        })
    else:
        output.write(render.render_backtest(outcomes, test.counts) + "\n")
    return EXIT_OK


def run_verify(ns: argparse.Namespace, store: str, out: IO[str]) -> int:
    witness = None if ns.witness is None else load_witness(ns.witness)
    with _reader(store, ns) as reader:
        progress = _progress(reader.max_position(), "verify", ns)
        result = verify(reader, progress)
        progress.clear()
    if witness is not None:
        check_witness(result, witness, ns.witness)
    _emit(ns, out, result.to_json, lambda: render.render_verification(result))
    return EXIT_OK if result.ok else EXIT_FOUND_PROBLEM


def run_export(ns: argparse.Namespace, store: str, out: IO[str]) -> int:
    with _reader(store, ns) as reader:
        _archived(reader, None, ns.upto)
        progress = _progress(reader.max_position() if ns.upto is None else ns.upto,
                             "export", ns)
        if ns.output in (None, "-"):
            written = export(reader, _binary(out), upto=ns.upto, progress=progress)
        else:
            with open(ns.output, "wb") as handle:
                written = export(reader, handle, upto=ns.upto, progress=progress)
        progress.clear()
    sys.stderr.write(f"exported {plural(written, 'event')}\n")
    return EXIT_OK


def _binary(out: IO[str]) -> IO[bytes]:
    buffer = getattr(out, "buffer", None)
    if buffer is None:
        raise AuditError("export needs a binary output: pass --output FILE")
    out.flush()
    return buffer  # type: ignore[no-any-return]  # a text stream's underlying binary buffer


def run_import(ns: argparse.Namespace, store: str, out: IO[str], *, compact: bool = False
               ) -> int:
    """`audit import`: states written plain, or compact when `compact` (compact_states)."""
    source = ns.file
    if source == "-":
        count = import_log(store, sys.stdin.buffer, compact=compact)
    else:
        path = Path(source)
        if not path.is_file():
            raise AuditError(f"no file {source}")
        with path.open("rb") as lines:
            count = import_log(store, lines, compact=compact)
    output = Output(out)
    if ns.json:
        output.json({"store": redact(store), "events": count})
    else:
        output.write(f"imported {plural(count, 'event')} into {redact(store)}\n")
    return EXIT_OK


def run_archive(ns: argparse.Namespace, store: str, out: IO[str], *, views_path: str,
                compact: bool = False) -> int:
    """`audit archive`: the store's oldest sealed rows to an archive file, an anchor left."""
    before = None if ns.before is None else parse_time(ns.before)
    result = archive(store, ns.output, upto=ns.upto, before=before, views_path=views_path,
                     compact=compact)
    _emit(ns, out, result.to_json, lambda: render.render_archived(result))
    return EXIT_OK


def _emit(ns: argparse.Namespace, out: IO[str], as_json: Callable[[], object],
          as_text: Callable[[], str]) -> None:
    """A verb's result: one JSON document with `--json`, else its rendered text."""
    output = Output(out)
    if ns.json:
        output.json(as_json())
    else:
        output.write(as_text() + "\n")


Handler = Callable[..., int]


def _failed(ns: argparse.Namespace, out: IO[str], code: str, message: str, exit_code: int,
            shown: str) -> int:
    """A failure: `{"ok": false, "error": ...}` on `out` with --json, else `shown` on stderr."""
    if getattr(ns, "json", False):
        out.write(error_json(code, message) + "\n")
        out.flush()
    else:
        sys.stderr.write(shown + "\n")
    return exit_code


def run(ns: argparse.Namespace, store: str, view_rows: int,
        match: dict[str, object] | None, out: IO[str] | None = None,
        view_max_bytes: int = VIEW_MAX_BYTES, *, compact: bool = False,
        views_path: str | None = None) -> int:
    """Run the audit verb `ns.audit_verb` against `store`; the exit code. `compact`: the
    setting `compact_states`, for the verbs that write (`import`, `archive`); `views_path`:
    the service's views, which `archive` must not cut ahead of (default: next to the
    store)."""
    verb = ns.audit_verb
    out = sys.stdout if out is None else out
    try:
        if verb == "views":
            return run_views(ns, store, out, view_rows, view_max_bytes)
        if verb == "backtest":
            return run_backtest(ns, store, out, match)
        handlers: dict[str, Handler] = {
            "log": run_log, "trace": run_trace, "verify": run_verify, "export": run_export,
            "import": functools.partial(run_import, compact=compact),
            "archive": functools.partial(run_archive, compact=compact,
                                         views_path=views_path or views_location(store)),
        }
        return handlers[verb](ns, store, out)
    except (NotInLog, NothingToArchive) as error:
        code = "nothing_to_archive" if isinstance(error, NothingToArchive) else "not_found"
        return _failed(ns, out, code, str(error), EXIT_FOUND_PROBLEM,
                       f"att-jm audit {verb}: {error}")
    except (AuditError, ValueError) as error:  # ValueError: an event the store holds is unreadable
        return _failed(ns, out, "usage", str(error), EXIT_USAGE,
                       f"att-jm audit {verb}: error: {error}")
    except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
