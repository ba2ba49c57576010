"""A trigger's retained notification against the real service and broker: the broker sends it
again at every subscribe, however old; after `att-jm audit archive` took its record away and
the service restarted (a new subscribe), it runs nothing. On an SQLite and a PostgreSQL
store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from helpers.mqtt import TestClient
from helpers.postgres import BOTH_BACKENDS
from helpers.service import ServiceFactory

from .conftest import Operator
from .test_archive import FAST_SEALS, att_jm

pytestmark = BOTH_BACKENDS


def commands(view: dict[str, Any]) -> list[str]:
    return [row["command"] for row in view["rows"]]


def test_a_retained_notification_archived_then_sent_again_at_the_restart_runs_nothing(
    service_factory: ServiceFactory, mqtt: TestClient, tmp_path: Path,
) -> None:
    service = service_factory(extra_args=FAST_SEALS)
    operator = Operator(service, mqtt)
    operator.ok("settings.set", {"interval_seconds": 0,
                                 "executed_cleanup": {"max_rows": 1, "every_seconds": 1}})
    operator.add_job("ipx", "ipx-update", "channel-up", command="channel={channel}")
    received = mqtt.subscribe(service.topic("job-manager/events/notification.received"))
    cleaned = mqtt.subscribe(service.topic("job-manager/events/execution.cleaned_up"))
    seals = mqtt.subscribe(service.topic("job-manager/seals"))
    mqtt.publish(service.notification_topic("channel-up"),
                 orjson.dumps({"id": "kept", "channel": "K"}), retain=True)
    operator.notify("channel-up", {"id": "plain", "channel": "P"})
    operator.wait_view("executed", lambda v: v["total"] == 2, timeout=30)
    data = {m.json()["data"]["notification_id"]: m.json()["data"]
            for m in received.wait_for_count(2, timeout=30)}
    assert data["kept"]["retained"] is True and "retained" not in data["plain"]
    # Auto Cleanup (1 row) takes both rows, a seal follows (an archive cuts at a seal), then
    # the next run's row goes too: the oldest execution left starts after their last rows
    # (an archive's cut never passes a live execution's start)
    operator.notify("channel-up", {"id": "later-1", "channel": "L1"})
    operator.wait_view("executed", lambda v: commands(v) == ["channel=L1"], timeout=30)
    last_row = max(m.json()["position"] for m in cleaned.wait_for_count(2, timeout=30))
    seals.wait_for(lambda m: m.json()["position"] >= last_row, timeout=30)
    operator.notify("channel-up", {"id": "later-2", "channel": "L2"})
    operator.wait_view("executed", lambda v: commands(v) == ["channel=L2"], timeout=30)
    # a seal of a position after all of it (every 0.3 s), then the archive up to the last seal
    operator.notify("nothing-listens", {"id": "marker"})
    position = received.wait_for(lambda m: m.json()["data"]["notification_id"] == "marker",
                                 timeout=30).json()["position"]
    seals.wait_for(lambda m: m.json()["position"] >= position, timeout=30)
    done = att_jm("audit", "archive", "--store", str(service.store), "--upto", "1000000",
                  "--output", str(tmp_path / "a.arc"), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    archived: dict[str, Any] = orjson.loads(done.stdout)
    assert archived["deleted"] == archived["position"] >= last_row, done.stdout

    service.restart()  # a new subscribe: the broker sends its retained copy of "kept" again
    # a later notification on the same topic is handled after that copy (the barrier)
    operator.notify("channel-up", {"id": "after", "channel": "A"})
    operator.wait_view("executed", lambda v: commands(v) == ["channel=A"], timeout=30)
    assert operator.view("queue")["total"] == 0
    ran = [m.json()["data"]["notification_id"] for m in received.messages()]
    assert ran.count("kept") == 1  # stored once: its copy at the restart ran nothing
    assert "notification.seen_before_archive" in service.log_text()
