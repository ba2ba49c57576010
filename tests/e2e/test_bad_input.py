"""Bad input on both inbound topics: an error reply or a recorded rejection, never a crash."""

from __future__ import annotations

import orjson
import pytest
from helpers.mqtt import TestClient
from helpers.store import rejections

from .conftest import Operator

BIG = 300 * 1024


BAD_NOTIFICATIONS = [
    (b"not json", "invalid"),
    (b"[1, 2]", "invalid"),
    (b'"text"', "invalid"),
    (b"{}", "invalid"),
    (b'{"id": 7}', "invalid"),
    (b'{"id": ""}', "invalid"),
    (orjson.dumps({"id": "x" * 201}), "invalid"),
    (b'{"id": "bad-utf8", "v": "\xff\xfe"}', "invalid"),
    (orjson.dumps({"id": "huge", "blob": "x" * BIG}), "too_large"),
]


def test_bad_notifications_are_rejected_and_recorded_and_valid_ones_around_them_run(
    operator: Operator,
) -> None:
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("ipx", "ipx-update", "t")
    operator.notify("t", {"id": "before", "channel": "a"})
    for payload, _ in BAD_NOTIFICATIONS:
        operator.notify("t", payload)
    operator.notify("t", {"id": "after", "channel": "b"})
    executed = operator.wait_view("executed", lambda v: v["total"] == 2)
    assert {row["notification_id"] for row in executed["rows"]} == {"before", "after"}
    rejected = rejections(operator.service.store)
    assert [r["code"] for r in rejected] == [code for _, code in BAD_NOTIFICATIONS]
    assert all(r["source"] == "notification" and r["reason"] for r in rejected)
    assert operator.service.running


@pytest.mark.parametrize(
    ("command", "payload", "code"),
    [
        ("job.add", b"not json", "invalid"),
        ("job.add", b"[]", "invalid"),
        ("job.add", b'{"name": "x"}', "invalid"),
        ("job.add", b'{"name": "bad name!", "script": "ipx-update", "trigger": "t"}', "invalid"),
        ("job.add", b'{"name": "x", "script": "../etc/passwd", "trigger": "t"}', "invalid"),
        ("job.add", b'{"name": "x", "script": "missing", "trigger": "t"}', "invalid"),
        ("job.add", b'{"name": "x", "script": "ipx-update", "trigger": "a/b"}', "invalid"),
        ("job.add",
         b'{"name": "x", "script": "ipx-update", "trigger": "t", "timeout_seconds": "9"}',
         "invalid"),
        ("job.add", b'{"name": "x", "script": "ipx-update", "trigger": "t", "command": "{a"}',
         "invalid"),
        ("job.update", b'{"name": "nobody", "enabled": false}', "not_found"),
        ("job.remove", b'{"name": "nobody"}', "not_found"),
        ("queue.remove", b'{"id": "not-an-entry"}', "not_found"),
        ("queue.execute-now", b'{"id": "00000000-0000-0000-0000-000000000000"}', "not_found"),
        ("executed.remove", b'{"id": 5}', "invalid"),
        ("failed.execute", b'{"id": "nope"}', "not_found"),
        ("failed.delete", b"{}", "invalid"),
        ("settings.set", b'{"interval_seconds": -1}', "invalid"),
        ("settings.set", b'{"executed_cleanup": {"max_rows": null, "max_age_days": null}}',
         "invalid"),
        ("settings.set", b'{"failed_cleanup": {"max_rows": 10001}}', "invalid"),
        ("cleanup.run", b'{"table": "jobs"}', "invalid"),
        ("views.get", b'{"view": "nothing"}', "invalid"),
        ("no.such-command", b"{}", "unknown_command"),
        ("job.add", b'{"name": "\xff"}', "invalid"),
        ("job.add", orjson.dumps({"name": "x", "pad": "x" * BIG}), "too_large"),
    ],
)
def test_bad_commands_get_an_error_reply_with_the_right_code(
    operator: Operator, mqtt: TestClient, command: str, payload: bytes, code: str
) -> None:
    reply = mqtt.request(operator.service.command_topic(command), payload)
    assert reply["ok"] is False
    assert reply["error"]["code"] == code, reply
    assert reply["error"]["message"]
    assert operator.ok("views.get", {"view": "jobs"})["total"] == 0


def test_a_command_without_a_response_topic_still_runs(
    operator: Operator, mqtt: TestClient
) -> None:
    mqtt.publish(operator.service.command_topic("job.add"),
                 {"name": "silent", "script": "ipx-update", "trigger": "t"})
    jobs = operator.wait_view("jobs", lambda v: v["total"] == 1)
    assert jobs["rows"][0]["name"] == "silent"
