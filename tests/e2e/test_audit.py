"""Auditors and the real service: `att-jm audit ...` against the store while `att-jm serve` runs.

Every scenario runs on an SQLite and on a PostgreSQL store (`BOTH_BACKENDS`); the copies made
with `audit import` are SQLite files on both, so their views and seals are compared across
the engines."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers.mqtt import TestClient
from helpers.postgres import BOTH_BACKENDS
from helpers.service import Service, ServiceFactory
from helpers.store import flip_a_bit, rewrite_state

from att_jm.audit.replay import replay_views

from .conftest import Operator

pytestmark = BOTH_BACKENDS

FAST_SEALS = ("--seal-every-events", "10", "--seal-every-seconds", "0.3")


def audit(store: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "att_jm", "audit", *args, "--store", str(store)],
        capture_output=True, text=True, check=False, timeout=120,
    )


def audit_json(store: Path | str, *args: str) -> Any:
    done = audit(store, *args, "--json")
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


def flaky_script(scripts_dir: Path) -> None:
    """A script that fails on its first two attempts and succeeds on the third."""
    path = scripts_dir / "third-time"
    path.write_text(
        "#!/bin/sh\n"
        'if [ "$ATT_JM_ATTEMPT" -lt 3 ]; then echo "attempt $ATT_JM_ATTEMPT: not yet" >&2; '
        "exit 1; fi\n"
        """echo '{"result": 3, "feedback": "third time lucky"}'\n""",
        encoding="utf-8",
    )
    path.chmod(0o755)


def settle(operator: Operator) -> None:
    operator.wait_view("queue", lambda v: v["total"] == 0, timeout=30)


def test_point_in_time_views_equal_what_the_service_published_at_those_positions(
    operator: Operator, mqtt: TestClient,
) -> None:
    service = operator.service
    published = mqtt.subscribe(service.topic("job-manager/views/+"))
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("ipx", "ipx-update", "channel-up", command="channel={channel}")
    operator.add_job("fails", "always-fail", "channel-up", match={"site": "paris"})
    # the relay (a process of its own, slower to start on a loaded machine) publishes the
    # views before the burst, so that it sees the burst's positions one by one
    published.wait_for(lambda m: m.topic.endswith("/jobs") and m.json()["total"] == 2,
                       timeout=30)
    for n in range(8):
        operator.notify("channel-up", {"id": f"up-{n}", "channel": f"C{n}",
                                       "site": "paris" if n % 3 == 0 else "lyon"})
        time.sleep(0.15)
    settle(operator)
    failed = operator.view("failed")["rows"][0]["id"]
    operator.ok("failed.delete", {"id": failed})
    operator.ok("settings.set", {"executed_cleanup": {"max_rows": 3}})
    operator.ok("cleanup.run", {"table": "executed"})
    operator.wait_view("executed", lambda v: v["total"] == 3)
    time.sleep(0.6)  # the last coalesced publications

    messages = [m.json() for m in published.messages()]
    positions = sorted({m["position"] for m in messages})
    # several moments at least (the jobs before the burst, the burst, the deletion, the
    # cleanup); how many more depends on how the relay coalesced them on a busy machine
    assert len(positions) >= 4, positions
    for message in messages:  # the service keeps running while the log is replayed
        moment = replay_views(str(service.store), position=message["position"])
        try:
            assert moment.payload(message["view"], 1000) == message, message["position"]
        finally:
            moment.close()
    for position in positions[1::max(1, len(positions) // 3)]:  # and through the CLI
        shown = audit_json(service.store, "views", "--position", str(position))
        for message in messages:
            if message["position"] == position:
                assert shown["views"][message["view"]] == message
    now = audit_json(service.store, "views")
    for name in ("jobs", "queue", "executed", "failed", "settings"):
        assert now["views"][name] == operator.view(name)


def test_a_trace_shows_three_attempts_and_the_operator_who_re_executed(
    service_factory: ServiceFactory, mqtt: TestClient, scripts_dir: Path,
) -> None:
    flaky_script(scripts_dir)
    operator = Operator(service_factory(), mqtt)
    alice = Operator(operator.service, mqtt, actor="alice")
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("flaky", "third-time", "channel-up", command="{channel}")
    operator.notify("channel-up", {"id": "n-flaky", "channel": "BBC One"})
    for attempt in (1, 2):

        def failed_at(view: dict[str, Any], attempt: int = attempt) -> bool:
            return bool(view["rows"]) and view["rows"][0]["attempt"] == attempt

        entry = operator.wait_view("failed", failed_at)["rows"][0]["id"]
        alice.ok("failed.execute", {"id": entry})
    operator.wait_view("executed", lambda v: v["total"] == 1)

    result = audit_json(operator.service.store, "trace", entry)
    assert result["status"] == "executed"
    assert [(a["attempt"], a["ended"]["result"]) for a in result["attempts"]] == [
        (1, 2), (2, 2), (3, 3)]
    assert result["attempts"][0]["ended"]["feedback"] == "exit code 1: attempt 1: not yet"
    assert result["attempts"][2]["ended"]["feedback"] == "third time lucky"
    assert [(a["action"], a["actor"]) for a in result["actions"]] == [
        ("failed.execute", "alice"), ("failed.execute", "alice")]
    assert result["notification"]["payload"] == {"id": "n-flaky", "channel": "BBC One"}
    assert result["enqueued"]["command"] == "BBC One"
    text = audit(operator.service.store, "trace", entry)
    assert text.returncode == 0, text.stderr
    assert "operator alice: failed.execute" in text.stdout
    assert "attempt 3" in text.stdout


def test_a_backtest_finds_what_a_real_job_with_the_same_trigger_enqueued(
    operator: Operator,
) -> None:
    operator.ok("settings.set", {"interval_seconds": 3600})  # entries stay queued
    operator.add_job("real", "ipx-update", "alarm", match={"level.major": True},
                     command="raise {channel}")
    for n in range(6):
        operator.notify("alarm", {"id": f"a-{n}", "channel": f"C{n}",
                                  "level": {"major": n % 2 == 0}})
        operator.notify("other", {"id": f"o-{n}", "channel": f"C{n}"})
    queue = operator.wait_view("queue", lambda v: v["total"] == 3)
    result = audit_json(operator.service.store, "backtest", "--trigger", "alarm",
                        "--match", "level.major=true", "--command", "raise {channel}")
    would = [(o["notification_id"], o["command"]) for o in result["outcomes"]]
    real = sorted((row["notification_id"], row["command"]) for row in queue["rows"])
    assert sorted(would) == real == [("a-0", "raise C0"), ("a-2", "raise C2"),
                                     ("a-4", "raise C4")]
    assert result["counts"]["notifications"] == 12
    assert result["counts"]["enqueued"] == 3


def start_witness(service: Service, path: Path) -> subprocess.Popen[bytes]:
    """The witness of docs/audit.md: mosquitto_sub, a persistent session, appending each seal."""
    binary = shutil.which("mosquitto_sub")
    if binary is None:
        pytest.skip("mosquitto_sub is not installed (it ships with mosquitto-clients)")
    handle = path.open("ab")
    process = subprocess.Popen(
        [binary, "-V", "mqttv5", "-q", "1", "-c", "-i", "att-witness", "-x", "604800",
         "-h", service.broker.host, "-p", str(service.broker.port),
         "-t", service.topic("job-manager/seals")],
        stdout=handle, stderr=subprocess.DEVNULL,
    )
    handle.close()
    return process


def test_seals_are_published_and_verify_catches_tampering_and_a_rewrite(
    service_factory: ServiceFactory, mqtt: TestClient, tmp_path: Path,
) -> None:
    service = service_factory(extra_args=FAST_SEALS)
    operator = Operator(service, mqtt)
    seals = mqtt.subscribe(service.topic("job-manager/seals"))
    witness = tmp_path / "witness.jsonl"
    witnessing = start_witness(service, witness)
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("ipx", "ipx-update", "channel-up")
    for n in range(12):
        operator.notify("channel-up", {"id": f"n-{n}", "channel": "x"})
    operator.wait_view("executed", lambda v: v["total"] == 12, timeout=30)
    first = seals.wait_for(timeout=10).json()
    assert set(first) == {"position", "hash", "previous", "count", "at"}
    assert first["previous"] == ""

    running = audit(service.store, "verify")  # while the service writes
    assert running.returncode == 0, running.stdout + running.stderr
    assert "verify: OK" in running.stdout
    service.stop()  # a clean stop seals everything
    last = seals.messages()[-1].json()["hash"].encode()
    deadline = time.monotonic() + 10
    while last not in witness.read_bytes():  # the last seal, published on the clean stop
        assert time.monotonic() < deadline, "the witness never got the last seal"
        time.sleep(0.05)
    witnessing.terminate()
    witnessing.wait(10)
    report = audit_json(service.store, "verify", "--witness", str(witness))
    assert report["ok"] is True
    assert report["unsealed"] == 0
    assert report["witness"]["matched"] == report["witness"]["seals"] >= 5

    exported = tmp_path / "log.jsonl"
    assert audit(service.store, "export", "--output", str(exported)).returncode == 0
    copy = tmp_path / "copy" / "att-jm.db"
    imported = audit(copy, "import", str(exported))
    assert imported.returncode == 0, imported.stderr
    assert audit_json(copy, "verify", "--witness", str(witness))["ok"] is True
    assert audit_json(copy, "views") == audit_json(service.store, "views")

    rewrite_state(service.store, 30, flip_a_bit)
    tampered = audit(service.store, "verify")
    assert tampered.returncode == 1
    assert "modified: position 30: the stored event was modified" in tampered.stdout

    # A whole rewrite: the log without its seals, one event altered, then sealed afresh by a
    # service of its own: consistent on its own, caught only by the witness.
    lines = [line for line in exported.read_bytes().splitlines()
             if b'"att_jm:Ledger.' not in line]
    forged = []
    for position, line in enumerate(lines, start=1):
        item = orjson.loads(line.replace(b'"tester"', b'"mallory"'))
        item["position"] = position
        forged.append(orjson.dumps(item))
    (tmp_path / "forged.jsonl").write_bytes(b"\n".join(forged) + b"\n")
    rewritten = tmp_path / "forged" / "att-jm.db"
    assert audit(rewritten, "import", str(tmp_path / "forged.jsonl")).returncode == 0
    forger = service_factory(prefix="forger", client_id="forger", store=rewritten,
                             extra_args=FAST_SEALS)
    forger.stop()
    alone = audit(rewritten, "verify")
    assert alone.returncode == 0, alone.stdout
    caught = audit(rewritten, "verify", "--witness", str(witness))
    assert caught.returncode == 1
    assert "the log was rewritten" in caught.stdout
