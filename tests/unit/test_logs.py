"""Log lines stay small whatever a message carries: values, containers and tracebacks cut."""

from __future__ import annotations

from typing import Any

import orjson

from att_jm.logs import (
    LOG_EXCEPTION_CHARS,
    LOG_LINE_BYTES,
    LOG_VALUE_CHARS,
    cap_event,
    cap_value,
    dumps_capped,
)


def test_a_60_kb_topic_is_cut_with_a_marker_saying_how_much() -> None:
    event = cap_event(None, "warning", {"event": "message.unexpected_topic",
                                        "topic": "t" * 60_000})
    assert event["topic"] == "t" * LOG_VALUE_CHARS + f"…[cut: {60_000 - LOG_VALUE_CHARS} " \
                                                      "more characters]"


def test_containers_are_cut_in_items_and_depth_and_bytes_are_shown_cut() -> None:
    capped: Any = cap_value({"list": list(range(1000)), "deep": [[[["x" * 10_000]]]],
                             "raw": b"\xff" * 5000})
    assert len(capped["list"]) == 21 and capped["list"][-1] == "… 980 more"
    assert len(orjson.dumps(capped)) < 2 * LOG_VALUE_CHARS * 4
    assert capped["raw"].endswith("(5000 bytes)")
    assert cap_value(7) == 7 and cap_value(None) is None and cap_value(1.5) == 1.5


def test_a_traceback_keeps_its_start_and_its_end() -> None:
    text = "Traceback (most recent call last):\n" + "x" * 100_000 + "\nValueError: the end"
    event = cap_event(None, "error", {"event": "boom", "exception": text})
    assert len(event["exception"]) < LOG_EXCEPTION_CHARS + 100
    assert event["exception"].startswith("Traceback") and event["exception"].endswith("the end")


def test_a_line_still_over_the_cap_is_replaced_by_a_short_one_that_says_so() -> None:
    event = {"event": "x", "level": "info", "timestamp": "t",
             **{f"k{i}": "v" * LOG_VALUE_CHARS for i in range(100)}}
    line = dumps_capped(event)
    assert len(line) <= LOG_LINE_BYTES
    assert orjson.loads(line)["line_cut"].endswith(f"over {LOG_LINE_BYTES}")
    assert orjson.loads(dumps_capped({"event": "short"})) == {"event": "short"}
