"""View messages built from the encoded-row cache equal those built from scratch, and every
table view message is bounded in bytes (cells cut, rows left out) on real SQLite files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers.audit_run import ScriptedRun, typical_day
from helpers.postgres import BOTH_BACKENDS
from helpers.store import views_for

from projections.views import VIEW_MAX_BYTES, VIEWS, Views, cut_row

pytestmark = BOTH_BACKENDS  # the store-level behaviour on SQLite and on PostgreSQL


@pytest.fixture
def run(tmp_path: Path, store_location: str) -> Iterator[ScriptedRun]:
    scripted = ScriptedRun(tmp_path / "store", store=store_location)
    yield scripted
    scripted.close()


def check_every_view(views: Views, reader: Views, limit: int, max_bytes: int) -> None:
    for name in VIEWS:
        expected = orjson.dumps(views.payload(name, limit, max_bytes=max_bytes))
        assert views.payload_json(name, limit, max_bytes=max_bytes) == expected, name
        assert reader.payload_json(name, limit, max_bytes=max_bytes) == expected, name
        assert len(expected) <= max_bytes or name == "settings"


def test_the_cached_view_messages_follow_every_change_byte_for_byte(run: ScriptedRun) -> None:
    reader = Views(run.views.path, readonly=True)
    steps = 0
    original = run.unit

    def checked(work):  # type: ignore[no-untyped-def]  # wraps the helper's generic unit()
        nonlocal steps
        result = original(work)
        steps += 1
        for limit in (1000, 3):  # a small limit: rows enter and leave the cap
            check_every_view(run.views, reader, limit, VIEW_MAX_BYTES)
        check_every_view(run.views, reader, 1000, 1500)  # ... and the byte cap
        return result

    run.unit = checked  # type: ignore[method-assign]  # a spy on the real one
    typical_day(run)  # runs, failures, re-execution, removals, execute-now, cleanup
    run.ok("job.add", {"name": "again", "script": "ok", "trigger": "t"})
    for n in range(5):
        run.notify("t", {"id": f"t-{n}", "long": "\u0001" * 1500 * n})  # cut cells, escaped
    run.run_next(3, "é" * 3000)
    run.ok("settings.set", {"interval_seconds": 3600})
    run.run_next()  # one running, others queued
    assert steps > 40
    reader.close()


def test_the_cache_holds_only_the_rows_of_the_last_message(run: ScriptedRun) -> None:
    run.ok("settings.set", {"interval_seconds": 0})
    run.ok("job.add", {"name": "j", "script": "ok", "trigger": "t"})
    for n in range(30):
        run.notify("t", {"id": f"n-{n}"})
        run.run_next()
    run.views.payload_json("executed", 10)
    assert len(run.views._encoded["executed"]) == 10  # the bound is the point


# Bounded in bytes --------------------------------------------------------------------------

AT = "2026-03-02T08:00:00.000Z"
ORDER = ["view", "position", "total", "omitted", "cut", "rows"]


@pytest.fixture
def views(tmp_path: Path, store_location: str) -> Iterator[Views]:
    opened = Views(views_for(store_location, tmp_path))
    yield opened
    opened.close()


def add_job(views: Views, position: int, name: str, **fields: Any) -> None:
    data = {"name": name, "script": "ok", "trigger": "t", "match": None, "command": None,
            "timeout_seconds": 300.0, "enabled": True, "at": AT, **fields}
    views.apply_data([(position, "att_jm:Job.Added", f"job-{name}", data)])


def executions(
    views: Views, first: int, count: int, command: Callable[[int], str],
    feedback: Callable[[int], str | None], *, finish: str | None = "Succeeded",
) -> list[str]:
    """`count` executions enqueued (and finished, unless `finish` is None) in one batch; ids."""
    items: list[tuple[int, str, str, dict[str, Any]]] = []
    position = first
    ids = [f"e-{first + n:06d}" for n in range(count)]
    for n, entry in enumerate(ids):
        items.append((position, "att_jm:Execution.Enqueued", entry, {
            "job": "j", "command": command(n), "trigger": "t", "notification_id": f"n-{n}",
            "script": "ok", "timeout_seconds": 300.0, "at": AT}))
        position += 1
        if finish is not None:
            items.append((position, "att_jm:Execution.Started", entry, {"attempt": 1, "at": AT}))
            items.append((position + 1, f"att_jm:Execution.{finish}", entry,
                          {"result": 3 if finish == "Succeeded" else 2,
                           "feedback": feedback(n), "at": AT}))
            position += 2
    views.apply_data(items)
    return ids


def same_bytes(views: Views, view: str, limit: int, **bounds: Any) -> bytes:
    """The message from the cache; asserted equal to the one made from scratch."""
    message = views.payload_json(view, limit, **bounds)
    assert message == orjson.dumps(views.payload(view, limit, **bounds))
    return message


def encoded_rows(views: Views, view: str, limit: int) -> list[bytes]:
    """Each row of the view as a message shows it (cells cut), encoded, in order."""
    out = []
    for row in views.rows(view, limit):
        cut_row(row)
        out.append(orjson.dumps(row))
    return out


def test_huge_cells_are_cut_and_a_thousand_rows_stay_under_the_byte_cap(views: Views) -> None:
    # 1,000 executed rows of 128 KB commands and 64 KiB feedbacks: ~190 MB in full
    ids = executions(views, 1, 1000, lambda n: f"{n:06d}" + "c" * 128_000,
                     lambda n: "\u0001" * 65_536)  # each feedback character escaped: 6 bytes
    message = same_bytes(views, "executed", 1000)
    assert len(message) <= VIEW_MAX_BYTES
    shown = orjson.loads(message)
    assert list(shown) == ORDER
    sent = len(shown["rows"])
    assert 50 < sent < 1000
    assert (shown["total"], shown["omitted"], shown["cut"]) == (1000, 1000 - sent, 2 * sent)
    assert [row["id"] for row in shown["rows"]] == ids[::-1][:sent]  # newest first, in order
    first = shown["rows"][0]
    assert first["command"] == "000999" + "c" * 1018 + "\u2026[cut: 126982 more characters]"
    assert first["feedback"] == "\u0001" * 1024 + "\u2026[cut: 64512 more characters]"
    # the next row would not have fitted (a few bytes of slack: the head is reserved for its
    # widest `omitted` and `cut`)
    assert len(message) + 1 + len(encoded_rows(views, "executed", sent + 1)[sent]) > (
        VIEW_MAX_BYTES - 8)


@pytest.mark.parametrize("max_bytes", [1024, 1025, 1500, 4096, 65_536, 300_000])
def test_the_message_never_exceeds_max_bytes_and_takes_rows_in_order(
    views: Views, max_bytes: int,
) -> None:
    executions(views, 1, 300, lambda n: "x" * (n * 37 % 3000), lambda n: "é" * (n % 1500),
               finish="Failed")
    executions(views, 10_000, 200, lambda n: "q" * (n * 53 % 2500), lambda n: None, finish=None)
    for view in ("queue", "failed"):
        message = same_bytes(views, view, 1000, max_bytes=max_bytes)
        assert len(message) <= max_bytes, view
        shown = orjson.loads(message)
        encoded = encoded_rows(views, view, 1000)
        sent = len(shown["rows"])
        assert [orjson.dumps(row) for row in shown["rows"]] == encoded[:sent]  # a prefix
        assert shown["omitted"] == shown["total"] - sent
        assert shown["cut"] == sum(row.count(b"\xe2\x80\xa6[cut: ") for row in encoded[:sent])
        if sent < len(encoded):
            assert len(message) + 1 + len(encoded[sent]) > max_bytes - 8, view


def test_the_row_cap_still_applies_and_omitted_counts_both_caps(views: Views) -> None:
    executions(views, 1, 30, lambda n: "small", lambda n: "ok")
    shown = orjson.loads(same_bytes(views, "executed", 10))
    assert (len(shown["rows"]), shown["omitted"], shown["cut"]) == (10, 20, 0)
    empty = orjson.loads(same_bytes(views, "queue", 1000))
    assert empty == {"view": "queue", "position": 90, "total": 0, "omitted": 0, "cut": 0,
                     "rows": []}


def test_the_jobs_view_cuts_commands_and_match_objects_into_text(views: Views) -> None:
    big_match = {f"field{n}": "v" * 20 for n in range(1400)}  # ~32 KiB of compact JSON
    add_job(views, 1, "a", command="{x}" * 5400, match=big_match)  # a 16 KiB template
    add_job(views, 2, "b", match={"site": "paris"}, enabled=False)
    shown = orjson.loads(same_bytes(views, "jobs", 1000))
    a, b = shown["rows"]
    text = orjson.dumps(big_match).decode()
    assert a["match"] == text[:1024] + f"\u2026[cut: {len(text) - 1024} more characters]"
    assert a["command"] == ("{x}" * 5400)[:1024] + "\u2026[cut: 15176 more characters]"
    assert (b["match"], b["enabled"], shown["cut"]) == ({"site": "paris"}, False, 2)
    assert same_bytes(views, "jobs", 1000, max_bytes=1024).count(b'"name"') == 0
    whole = len(same_bytes(views, "jobs", 1000))
    assert orjson.loads(same_bytes(views, "jobs", 1000, max_bytes=whole))["omitted"] == 0
    assert orjson.loads(same_bytes(views, "jobs", 1000, max_bytes=whole - 1))["omitted"] == 1


def test_offset_pages_through_the_view_and_is_in_the_message_only_when_given(
    views: Views,
) -> None:
    ids = executions(views, 1, 25, lambda n: "c" * 2000, lambda n: "ok", finish=None)
    assert list(orjson.loads(same_bytes(views, "queue", 1000))) == ORDER
    paged = orjson.loads(same_bytes(views, "queue", 10, offset=20))
    assert list(paged) == ["view", "offset", *ORDER[1:]]
    assert paged["offset"] == 20
    assert [row["id"] for row in paged["rows"]] == ids[20:25]
    assert (paged["omitted"], paged["cut"]) == (20, 5)
    first = orjson.loads(same_bytes(views, "queue", 10, offset=0))
    assert first["offset"] == 0 and [row["id"] for row in first["rows"]] == ids[:10]
    assert orjson.loads(same_bytes(views, "queue", 10, offset=99))["rows"] == []
    # paging under the byte cap: each page starts where the last one stopped
    seen: list[str] = []
    while len(seen) < 25:
        page = orjson.loads(same_bytes(views, "queue", 1000, offset=len(seen), max_bytes=4000))
        assert page["rows"], seen
        seen += [row["id"] for row in page["rows"]]
    assert seen == ids


def test_row_json_gives_one_row_in_full_or_none(views: Views) -> None:
    big_match = {"ids": list(range(1000))}
    add_job(views, 1, "a", command="t" * 16_000, match=big_match)
    (entry,) = executions(views, 2, 1, lambda n: "c" * 128_000, lambda n: "f" * 65_536,
                          finish="Failed")
    job = views.row_json("jobs", "a")
    assert job is not None
    assert orjson.loads(job) == {"view": "jobs", "position": 1, "row": views.rows("jobs", 1)[0]}
    assert orjson.loads(job)["row"]["match"] == big_match
    failed = views.row_json("failed", entry)
    assert failed is not None
    shown = orjson.loads(failed)
    assert list(shown) == ["view", "position", "row"]
    assert (shown["position"], len(shown["row"]["command"]), len(shown["row"]["feedback"])) == (
        4, 128_000, 65_536)
    assert views.row_json("failed", "nope") is None
    assert views.row_json("executed", entry) is None
    assert views.row_json("jobs", "job-a") is None  # jobs are keyed by name


def test_the_settings_view_is_unchanged_and_bad_bounds_are_refused(views: Views) -> None:
    assert list(views.payload("settings", 1000, max_bytes=1024)) == [
        "view", "position", "settings"]
    with pytest.raises(ValueError, match="max_bytes"):
        views.payload_json("queue", 10, max_bytes=1023)
    with pytest.raises(ValueError, match="offset"):
        views.payload("jobs", 10, offset=-1)
    with pytest.raises(ValueError, match="table view"):
        views.row_json("settings", "x")


def test_payloads_passes_the_byte_cap_to_every_view(views: Views) -> None:
    executions(views, 1, 100, lambda n: "c" * 3000, lambda n: "f" * 3000)
    published = dict((name, payload) for name, _, payload in views.payloads(
        ("executed", "settings"), 1000, max_bytes=20_000))
    assert len(published["executed"]) <= 20_000
    assert published["executed"] == views.payload_json("executed", 1000, max_bytes=20_000)
    assert orjson.loads(published["settings"]) == views.payload("settings", 1000)
