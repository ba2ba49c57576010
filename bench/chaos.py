"""Fault injection: proves that nothing is lost, nothing runs twice and nothing stays running.

Usage: python -m bench.chaos [--quick] [--scenario NAME]... [--seed N] [--count N] [--kills N]
                             [--keep DIR]

Every scenario runs the real `att-jm serve` against a real mosquitto started from the shipped
`mosquitto.conf` (tests/helpers/broker.py: same persistence, autosave, queue and in-flight
settings; its own loopback port and directory) and a real SQLite store, all in a temporary
directory, on loopback only, bounded in count and time. Each prints what it sent, what the log
holds and the differences, then one line:

    service-kill: sent=5000 logged=5000 lost=0 duplicated=0 double_runs=0 stuck=0 ...

and the run ends with a `chaos:` total line. The exit code is 1 when any scenario found a loss,
a duplicate, a double run, a stuck execution or another broken promise, else 0.

Scenarios (`--scenario` takes these names; default: all, in this order):
  service-kill  SIGKILL the service >= 10 times (mid-commit, mid-execution, at random) during
                a burst of notifications whose jobs run, restarting it each time.
  broker-restart  SIGKILL and SIGTERM the broker mid-burst, restarting it each time.
  both          broker and service SIGKILLed in the same moment, several times.
  storm         every notification and command published 3 times, some retained, with
                service restarts in between (retained messages come again on resubscribe).
  bad-input     10,000 generated malformed messages on both inbound topics among valid ones.
  scripts       scripts that hang, leave children behind, print megabytes, die by a signal.
  store         the store's disk full (a small tmpfs) and the store locked while messages
                arrive; SIGTERM during the fault; recovery without loss.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from att_jm.domain.ids import execution_id
from att_jm.mqtt.common import DEFAULT_RECEIVE_MAXIMUM
from att_jm.service import INBOX_PAUSE
from bench.chaos_inputs import KNOWN_JOB, generate
from bench.chaos_rig import (
    Audit,
    ChaosError,
    Figures,
    HelperFailure,
    Outgoing,
    Publisher,
    Rig,
    log_events,
    memory_kib,
    notifications,
    publish_raw,
    retained_views_match,
    rig,
    say,
    side_effects,
    stored_copy,
    wait_published,
)
from bench.harness import REPO

if TYPE_CHECKING:
    from helpers.mqtt import Message  # tests/helpers: on sys.path once bench.chaos_rig loaded


@dataclass(frozen=True)
class Config:
    quick: bool
    seed: int
    count: int | None
    kills: int | None
    workdir: Path | None

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def autosave_interval() -> int:
    """`autosave_interval` of the shipped mosquitto.conf (the broker's unsaved-change bound)."""
    for line in (REPO / "mosquitto.conf").read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "autosave_interval":
            return int(parts[1])
    return 1800


def _chaos_job(r: Rig) -> None:
    r.ok("settings.set", {"interval_seconds": 0})
    r.ok("job.add", {"name": "chaos", "script": "chaos-run", "trigger": "chaos",
                     "match": {"run": True}, "command": "{sleep}", "timeout_seconds": 60})


def _burst(r: Rig, prefix: str, count: int, every: int) -> list[Outgoing]:
    """`count` notifications; one in `every` runs the chaos job, some of those for 0.3 s."""
    topic = r.service.notification_topic("chaos")
    return notifications(
        prefix, topic, count,
        lambda n: {"run": n % every == 0, "sleep": "0.3" if n % (every * 4) == 0 else "0"},
    )


def _runs_job(nid: str, every: int) -> bool:
    return int(nid.rpartition("-")[2]) % every == 0


def _final_checks(
    r: Rig, figures: Figures, sent: list[str], every: int, *, quiet_broker_kill: bool = False
) -> Audit:
    """Drain, stop cleanly, then audit the log, the scripts' own record and the views.

    With `quiet_broker_kill`, the broker is SIGKILLed once more after the drain, when no view
    changes any more: its retained views revert to its last save, and the service must
    publish them again when it reconnects.
    """
    audit = r.wait_drained(sent, timeout=300, figures=figures)
    if quiet_broker_kill:
        r.ok("settings.set", {"interval_seconds": 0.001})  # a retained view change to lose
        time.sleep(1.0)
        r.broker.kill()
        r.broker.start()
        retained_views_match(r, ("queue", "executed", "failed", "jobs", "settings"), figures)
        status = r.operator.retained(r.service.status_topic, timeout=10)
        if status.get("state") != "online" or status.get("pid") != r.service.pid:
            figures.problem(f"retained status is not this service online: {status}")
    views = {name: r.view(name)["total"] for name in ("queue", "executed", "failed")}
    r.stop_service()
    audit = Audit.read(r.store)
    audit.check_notifications(figures, sent, "chaos", lambda nid: _runs_job(nid, every))
    audit.check_runs(figures, side_effects(r.scripts_dir))
    statuses = Counter(run.status for run in audit.runs.values())
    expected = {"queue": statuses["queued"] + statuses["running"],
                "executed": statuses["executed"], "failed": statuses["failed"]}
    if views != expected:
        figures.problem(f"views {views} differ from the log {expected}")
    for run in audit.runs.values():
        if run.interrupted and not any((f or "").startswith("interrupted") for f in run.feedback):
            figures.problem(f"{run.id} interrupted without 'interrupted' feedback")
    leftovers = r.leftovers()
    if leftovers:
        figures.problem(f"scripts still alive after the stop: {leftovers}")
    figures.extra["executed"] = statuses["executed"]
    figures.extra["failed"] = statuses["failed"]
    say(f"log: {sum(audit.notifications.values())} notifications, {len(audit.runs)} executions "
        f"({dict(statuses)}), {len(side_effects(r.scripts_dir))} script runs recorded")
    return audit


# --- 1. service SIGKILL -------------------------------------------------------------------


def service_kill(cfg: Config, rng: random.Random) -> Figures:
    figures = Figures("service-kill")
    count = cfg.count or cfg.size(5000, 400)
    kills = cfg.kills or cfg.size(12, 3)
    every = 10
    with rig("service-kill", cfg.workdir) as r:
        _chaos_job(r)
        messages = _burst(r, "sk", count, every)
        say(f"sending {count} notifications ({count // every} run the job), "
            f"{kills} service SIGKILLs")
        publisher = Publisher(r.broker.url, rate=cfg.size(400, 300)).start(messages)
        kinds = ("commit", "execution", "random")
        try:
            for number in range(kills):
                time.sleep(rng.uniform(0.2, 1.0))
                hit = r.kill_service(kinds[number % len(kinds)], rng, figures)
                say(f"kill {number + 1}/{kills}: SIGKILL {hit}")
                r.restart_service()
            if not publisher.wait_done(300):
                figures.problem("the publisher did not finish in 300 s")
        finally:
            publisher.close()
        if publisher.error is not None:
            figures.problem(f"publisher failed: {publisher.error!r}")
        figures.restarts = r.restarts
        _final_checks(r, figures, [m.id for m in messages], every)
    return figures


# --- 2. broker SIGKILL / SIGTERM ------------------------------------------------------------


def _broker_losses(audit: Audit, messages: list[Outgoing], figures: Figures) -> None:
    """Notifications whose PUBACKed copy the broker lost (the log holds a later copy)."""
    lost_by_broker = sum(
        1 for m in messages
        if m.confirmed_copy and stored_copy(audit, m.id) > m.confirmed_copy
    )
    figures.extra["broker_lost_acked"] = lost_by_broker


def broker_restart(cfg: Config, rng: random.Random) -> Figures:
    figures = Figures("broker-restart")
    count = cfg.count or cfg.size(3000, 300)
    restarts = cfg.kills or cfg.size(6, 2)
    every = 10
    republish = autosave_interval() + DEFAULT_RECEIVE_MAXIMUM
    with rig("broker-restart", cfg.workdir) as r:
        _chaos_job(r)
        messages = _burst(r, "br", count, every)
        say(f"sending {count} notifications, {restarts} broker restarts (SIGKILL and SIGTERM); "
            f"the publisher republishes its last {republish} after a reconnect")
        publisher = Publisher(r.broker.url, rate=cfg.size(300, 300),
                              republish_last=republish).start(messages)
        try:
            for number in range(restarts):
                time.sleep(rng.uniform(0.3, 1.5))
                how = "SIGKILL" if number % 2 == 0 else "SIGTERM"
                if how == "SIGKILL":
                    r.broker.kill()
                else:
                    r.broker.stop()
                time.sleep(rng.uniform(0.0, 0.5))
                r.broker.start()
                say(f"broker restart {number + 1}/{restarts}: {how}")
            if not publisher.wait_done(300):
                figures.problem("the publisher did not finish in 300 s")
            time.sleep(3)  # a last reconnect's republication
        finally:
            publisher.close()
        figures.restarts = restarts
        figures.extra["republished"] = publisher.republished
        if not r.service.running:
            figures.problem("the service died during broker restarts")
        audit = _final_checks(r, figures, [m.id for m in messages], every,
                              quiet_broker_kill=True)
        _broker_losses(audit, messages, figures)
    return figures


# --- 3. both at once -----------------------------------------------------------------------


def both(cfg: Config, rng: random.Random) -> Figures:
    figures = Figures("both")
    count = cfg.count or cfg.size(3000, 300)
    windows = cfg.kills or cfg.size(5, 2)
    every = 10
    republish = autosave_interval() + DEFAULT_RECEIVE_MAXIMUM
    with rig("both", cfg.workdir) as r:
        _chaos_job(r)
        messages = _burst(r, "bo", count, every)
        say(f"sending {count} notifications; {windows} windows in which broker and service "
            "are both SIGKILLed")
        publisher = Publisher(r.broker.url, rate=cfg.size(300, 300),
                              republish_last=republish).start(messages)
        try:
            for number in range(windows):
                time.sleep(rng.uniform(0.3, 1.5))
                first_broker = rng.random() < 0.5
                if first_broker:
                    r.broker.kill()
                r.kill_service("random" if number % 2 else "commit", rng, figures)
                if not first_broker:
                    r.broker.kill()
                time.sleep(rng.uniform(0.0, 0.3))
                r.broker.start()
                r.restart_service()
                say(f"window {number + 1}/{windows}: both SIGKILLed "
                    f"({'broker' if first_broker else 'service'} first)")
            if not publisher.wait_done(300):
                figures.problem("the publisher did not finish in 300 s")
            time.sleep(3)
        finally:
            publisher.close()
        figures.extra["republished"] = publisher.republished
        figures.restarts = r.restarts + windows
        audit = _final_checks(r, figures, [m.id for m in messages], every,
                              quiet_broker_kill=True)
        _broker_losses(audit, messages, figures)
    return figures


# --- 4. redelivery storm -------------------------------------------------------------------


def storm(cfg: Config, rng: random.Random) -> Figures:
    figures = Figures("storm")
    count = cfg.count or cfg.size(1000, 150)
    triggers = [f"storm-{n}" for n in range(5)]
    with rig("storm", cfg.workdir) as r:
        r.ok("settings.set", {"interval_seconds": 0})
        for trigger in triggers:
            r.ok("job.add", {"name": f"job-{trigger}", "script": "chaos-run",
                             "trigger": trigger, "command": "0"})
        r.ok("job.add", {"name": "failing", "script": "always-fail", "trigger": "fail"})
        client = r.operator
        # Notifications: each 3 times; every tenth of them retained (the last one per topic
        # stays retained and comes again on every resubscribe).
        messages = [
            Outgoing(f"st-{n}", r.service.notification_topic(triggers[n % 5]),
                     {"id": f"st-{n}"}, retain=n % 10 == 0)
            for n in range(count)
        ]
        # Commands with CorrelationData, each 3 times (some retained); replies collected.
        reply_topic = "att/job-manager/replies/chaos/storm"
        replies = client.subscribe(reply_topic)
        commands: list[tuple[str, dict[str, Any], bytes, bool]] = []
        for n in range(cfg.size(30, 10)):
            commands.append(("job.add", {"name": f"extra-{n}", "script": "chaos-run",
                                         "trigger": "storm-extra"}, uuid.uuid4().bytes,
                             n % 3 == 0))
            commands.append(("settings.set", {"interval_seconds": n % 2 / 1000},
                             uuid.uuid4().bytes, False))
        say(f"{count} notifications and {len(commands)} commands, each published 3 times "
            "(some retained), with a SIGTERM and a SIGKILL restart of the service in between")
        infos = []
        for copy in range(3):
            for message in messages:
                infos.append(publish_raw(client, message.topic, orjson.dumps(message.body),
                                         retain=message.retain))
            for name, args, correlation, retain in commands:
                infos.append(publish_raw(
                    client, r.service.command_topic(name, "chaos"), orjson.dumps(args),
                    retain=retain, response_topic=reply_topic, correlation=correlation,
                ))
            if copy == 0:
                r.stop_service()
                r.restart_service()
            elif copy == 1:
                r.kill_service("random", rng, figures)
                r.restart_service()
        if wait_published(infos, 60):
            figures.problem("publishes without PUBACK")
        entry = _retained_command(r, figures)
        sent = [m.id for m in messages] + ["fail-1"]
        r.wait_drained(sent, timeout=120, figures=figures)
        time.sleep(1.0)
        r.stop_service()
        audit = Audit.read(r.store)
        figures.restarts = r.restarts
        audit.check_notifications(figures, [m.id for m in messages])
        audit.check_runs(figures, side_effects(r.scripts_dir))
        attempts = max((run.attempt for run in audit.runs.values() if run.id == entry), default=0)
        if attempts != 2:
            figures.problem(f"a retained failed.execute ran the entry to attempt {attempts}, "
                            "not 2 (it was asked once)")
        for nid in (m.id for m in messages):
            job = f"job-{triggers[int(nid.rpartition('-')[2]) % 5]}"
            runs = [run for run in audit.runs.values() if run.notification_id == nid]
            if len(runs) != 1 or runs[0].job != job:
                figures.duplicated += max(0, len(runs) - 1)
                figures.problem(f"{nid} made {len(runs)} executions")
        _check_commands_once(audit, commands, replies.messages(), figures)
        jobs_added = audit.events["Job.Added"]
        if jobs_added != 6 + cfg.size(30, 10):
            figures.problem(f"{jobs_added} Job.Added events for {6 + cfg.size(30, 10)} jobs")
        figures.sent = count
        figures.extra["copies_published"] = len(infos)
        figures.extra["replies"] = len(replies.messages())
        say(f"log: {sum(audit.notifications.values())} notifications, {len(audit.runs)} "
            f"executions, {len(audit.commands)} command records; "
            f"{len(replies.messages())} replies")
    return figures


def _retained_command(r: Rig, figures: Figures) -> str:
    """A retained failed.execute WITHOUT CorrelationData: the operator asked once, so it must
    run once, not again on every resubscribe of the service. The entry's id."""
    client = r.operator
    client.publish(r.service.notification_topic("fail"), {"id": "fail-1"})
    entry = str(execution_id("fail-1", "failing"))
    if not _wait_for(lambda: _ended_failed(r, entry, 1), 30):
        figures.problem("the always-fail entry never failed")
        return entry
    client.publish(r.service.command_topic("failed.execute", "chaos"), {"id": entry},
                   retain=True)
    for _ in range(2):  # each time the entry is back in Failed: restart
        _wait_for(lambda: _ended_failed(r, entry, 2), 30)
        r.stop_service()
        r.restart_service()
        time.sleep(1.0)
    client.publish(r.service.command_topic("failed.execute", "chaos"), b"", retain=True)
    return entry


def _check_commands_once(
    audit: Audit, commands: list[tuple[str, dict[str, Any], bytes, bool]],
    replies: list[Message], figures: Figures,
) -> None:
    """Each command recorded once, and every copy of it answered with the same reply."""
    by_correlation = Counter(m.prop("CorrelationData") for m in replies)
    for name, args, correlation, _ in commands:
        records = audit.commands[correlation.hex()]
        if records != 1:
            figures.duplicated += max(0, records - 1)
            figures.problem(f"{name} {args} recorded {records} times")
        bodies = {m.payload for m in replies if m.prop("CorrelationData") == correlation}
        if len(bodies) != 1:
            figures.problem(f"{name}: {len(bodies)} different replies for one correlation")
        if by_correlation[correlation] < 1:
            figures.problem(f"{name}: no reply")


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def _ended_failed(r: Rig, entry: str, attempt: int) -> bool:
    """Whether the entry's attempt `attempt` (or a later one) ended in Failed."""
    run = Audit.read(r.store).runs.get(entry)
    return run is not None and run.attempt >= attempt and run.status == "failed"


# --- 5. bad input ------------------------------------------------------------------------


def bad_input(cfg: Config, rng: random.Random) -> Figures:  # noqa: PLR0912 -- one storm, then its checks in order
    figures = Figures("bad-input")
    count = cfg.count or cfg.size(10_000, 1_000)
    valid = cfg.size(1000, 100)
    with rig("bad-input", cfg.workdir) as r:
        r.ok("settings.set", {"interval_seconds": 0})
        r.ok("job.add", {"name": "bad-input-run", "script": "chaos-run", "trigger": "bad-input",
                         "match": {"run": True}, "command": "0"})
        r.ok("job.add", {"name": KNOWN_JOB, "script": "chaos-run", "trigger": "bad-input",
                         "match": {"template": True}, "command": "{channel.name} {missing}"})
        pid = r.service.pid
        bad = generate(rng, count)
        client = r.operator
        reply_topic = "att/job-manager/replies/chaos/bad-input"
        replies = client.subscribe(reply_topic)
        # Valid messages interleaved: notifications that run a job, notifications whose
        # template lacks a field (recorded skip), and commands that must succeed.
        plan: list[tuple[str, Any]] = [("bad", b) for b in bad]
        valid_ids = [f"ok-{n}" for n in range(valid)]
        for n, nid in enumerate(valid_ids):
            plan.insert(rng.randrange(len(plan) + 1),
                        ("valid", {"id": nid, "run": n % 2 == 0, "template": n % 2 == 1}))
        good_commands: dict[bytes, str] = {}
        for n in range(cfg.size(200, 20)):
            correlation = uuid.uuid4().bytes
            good_commands[correlation] = "views.get" if n % 2 else "job.update"
            plan.insert(rng.randrange(len(plan) + 1), ("good-command", (correlation, n)))
        say(f"{len(bad)} malformed messages ({Counter(b.kind for b in bad)}) interleaved with "
            f"{valid} valid notifications and {len(good_commands)} valid commands")
        expected: dict[bytes, tuple[str, str]] = {}
        infos = []
        no_reply = 0
        for kind, item in plan:
            if kind == "valid":
                infos.append(publish_raw(client, r.service.notification_topic("bad-input"),
                                         orjson.dumps(item)))
            elif kind == "good-command":
                correlation, n = item
                name = good_commands[correlation]
                args = ({"view": "jobs"} if name == "views.get"
                        else {"name": "bad-input-run", "timeout_seconds": 60 + n})
                infos.append(publish_raw(client, r.service.command_topic(name, "chaos"),
                                         orjson.dumps(args), response_topic=reply_topic,
                                         correlation=correlation))
            elif item.kind == "notification":
                infos.append(publish_raw(client, r.service.notification_topic(item.name),
                                         item.payload))
            else:
                correlation = uuid.uuid4().bytes
                topic = r.service.command_topic(item.name, item.actor)
                if rng.random() < 0.01:  # odd reply topics: runs, logged, no reply sent
                    response = rng.choice(["att/job-manager/replies/chaos/#", "elsewhere/x",
                                           "att/job-manager/replies/+/x"])
                    no_reply += 1
                    infos.append(publish_raw(client, topic, item.payload,
                                             response_topic=response, correlation=correlation))
                    continue
                expected[correlation] = (item.code, item.label)
                infos.append(publish_raw(client, topic, item.payload,
                                         response_topic=reply_topic, correlation=correlation))
        # An empty actor level: an error reply too, and recorded.
        empty_actor = uuid.uuid4().bytes
        expected[empty_actor] = ("invalid", "empty-actor")
        infos.append(publish_raw(client, "att/job-manager/commands//job.add", b"{}",
                                 response_topic=reply_topic, correlation=empty_actor))
        missing_acks = wait_published(infos, 120)
        if missing_acks:
            figures.problem(f"{missing_acks} publishes without PUBACK")
        want = len(expected) + len(good_commands)
        _wait_for(lambda: len({m.prop("CorrelationData") for m in replies.messages()}) >= want,
                  180)
        audit = r.wait_drained(valid_ids, timeout=180, figures=figures)
        got = {m.prop("CorrelationData"): m.json() for m in replies.messages()}
        wrong = _wrong_replies(got, expected, good_commands)
        for text, times in wrong.most_common(10):
            figures.problem(f"{times}x {text}")
        if r.service.pid != pid or not r.service.running:
            figures.problem("the service restarted or died")
        r.stop_service()
        audit = Audit.read(r.store)
        audit.check_notifications(figures, valid_ids, "bad-input-run",
                                  lambda nid: int(nid.partition("-")[2]) % 2 == 0)
        audit.check_runs(figures, side_effects(r.scripts_dir))
        skipped = sum(1 for nid in valid_ids if nid in audit.skipped)
        if skipped != valid // 2:
            figures.problem(f"{skipped} template skips recorded, {valid // 2} expected")
        # Rejections: every bad notification is recorded with its code; every command error
        # reply has its record (CommandRecord with the reply, or a Rejection).
        expected_codes = Counter(b.code for b in bad if b.kind == "notification")
        recorded = Counter(x["code"] for x in audit.rejections if x["source"] == "notification")
        if recorded != expected_codes:
            figures.problem(f"notification rejections {dict(recorded)} != {dict(expected_codes)}")
        unrecorded = [c for c in expected if c.hex() not in audit.commands]
        command_rejections = sum(1 for x in audit.rejections if x["source"] == "command")
        if len(unrecorded) > command_rejections:
            figures.problem(f"{len(unrecorded)} error replies without a record")
        figures.extra["malformed"] = len(bad)
        figures.extra["error_replies"] = sum(1 for c in expected if c in got)
        figures.extra["rejections"] = len(audit.rejections)
        figures.extra["wrong_outcomes"] = sum(wrong.values())
        figures.extra["odd_reply_topics"] = no_reply
        say(f"replies {len(got)}/{want}, rejections recorded {len(audit.rejections)}, "
            f"command records {len(audit.commands)}, wrong outcomes {sum(wrong.values())}")
    return figures


def _wrong_replies(
    got: dict[bytes, dict[str, Any]], expected: dict[bytes, tuple[str, str]],
    good_commands: dict[bytes, str],
) -> Counter[str]:
    """Replies missing or not as the contract says, counted by what went wrong."""
    wrong: Counter[str] = Counter()
    for correlation, (code, label) in expected.items():
        reply = got.get(correlation)
        if reply is None:
            wrong[f"{label}: no reply"] += 1
        elif reply.get("ok") is not False or reply["error"]["code"] != code:
            wrong[f"{label}: {code} expected, got {reply.get('error', reply)}"] += 1
    for correlation in good_commands:
        reply = got.get(correlation)
        if reply is None or reply.get("ok") is not True:
            wrong[f"valid command: {reply}"] += 1
    return wrong


# --- 6. slow and broken scripts ----------------------------------------------------------


MISBEHAVIOURS = {
    # mode: (timeout, expected result, feedback starts with)
    "hang": (2, 2, "timed out after 2 s"),
    "orphans": (30, 3, "left two children behind"),
    "orphans-hang": (2, 2, "timed out after 2 s"),
    "flood": (60, 3, "flooded"),
    "flood-hang": (2, 2, "timed out after 2 s"),
    "segv": (30, 2, "killed by signal SIGSEGV"),
    "term-ignore": (2, 2, "timed out after 2 s"),
}


def scripts(cfg: Config, rng: random.Random) -> Figures:
    figures = Figures("scripts")
    modes = list(MISBEHAVIOURS)
    rounds = cfg.size(3, 1)
    with rig("scripts", cfg.workdir) as r:
        r.ok("settings.set", {"interval_seconds": 0})
        for mode, (timeout, _, _) in MISBEHAVIOURS.items():
            r.ok("job.add", {"name": f"bad-{mode}", "script": "chaos-misbehave",
                             "trigger": "scripts", "match": {"mode": mode}, "command": mode,
                             "timeout_seconds": timeout})
        r.ok("job.add", {"name": "good", "script": "chaos-run", "trigger": "scripts",
                         "match": {"mode": "good"}, "command": "0"})
        pid = r.service.pid
        assert pid is not None
        before = memory_kib(pid)
        sent = []
        plan = [mode for _ in range(rounds) for mode in [*modes, "good", "good"]]
        rng.shuffle(plan)
        say(f"{len(plan)} executions: {dict(Counter(plan))}")
        for n, mode in enumerate(plan):
            nid = f"sc-{n}"
            sent.append(nid)
            r.operator.publish(r.service.notification_topic("scripts"), {"id": nid, "mode": mode})
        peak = 0
        deadline = time.monotonic() + 60 + 15 * len(plan)
        while time.monotonic() < deadline:
            peak = max(peak, memory_kib(pid).get("VmRSS", 0))
            audit = Audit.read(r.store)
            if len(audit.runs) == len(plan) and all(
                run.status in ("executed", "failed") for run in audit.runs.values()
            ):
                break
            time.sleep(0.2)
        after = memory_kib(pid)
        time.sleep(0.5)
        leftovers = r.leftovers()
        r.stop_service()
        audit = Audit.read(r.store)
        audit.check_notifications(figures, sent)
        audit.check_runs(figures, side_effects(r.scripts_dir))
        for nid, mode in zip(sent, plan, strict=True):
            runs = [run for run in audit.runs.values() if run.notification_id == nid]
            if len(runs) != 1:
                figures.problem(f"{nid} ({mode}) made {len(runs)} executions")
                continue
            run = runs[0]
            result = 3 if run.status == "executed" else 2
            want = MISBEHAVIOURS.get(mode, (0, 3, "chaos-run done"))
            feedback = run.feedback[-1] if run.feedback else None
            if result != want[1] or not (feedback or "").startswith(want[2]):
                figures.problem(f"{mode}: result {result} feedback {feedback!r}, "
                                f"expected {want[1]} {want[2]!r}")
        if leftovers:
            figures.problem(f"{len(leftovers)} script processes outlived their execution")
        growth = (after.get("VmHWM", 0) - before.get("VmRSS", 0)) // 1024
        figures.extra["rss_growth_mib"] = growth
        figures.extra["peak_rss_mib"] = max(peak, after.get("VmHWM", 0)) // 1024
        if growth > 64:
            figures.problem(f"service memory grew by {growth} MiB while scripts flooded")
        if r.service.pid != pid:
            figures.problem("the service restarted")
        say(f"service RSS {before.get('VmRSS', 0) // 1024} MiB before, peak "
            f"{after.get('VmHWM', 0) // 1024} MiB; leftovers {len(leftovers)}")
    return figures


# --- 7. store trouble --------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(size_mib: int) -> Iterator[Path | None]:
    """A fresh tmpfs of `size_mib` MiB (None when mounting is not allowed here)."""
    with tempfile.TemporaryDirectory(prefix="att-jm-tmpfs-") as tmp:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", tmp],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            say(f"cannot mount a tmpfs here ({done.stderr.strip()}): disk-full phase skipped")
            yield None
            return
        try:
            yield Path(tmp)
        finally:
            subprocess.run(["umount", "-l", tmp], capture_output=True, check=False)


def _fill(directory: Path) -> Path:
    """Fill the filesystem of `directory` to the last byte; the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for block in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * block):
                    pass
    finally:
        os.close(fd)
    return filler


def _fault_status(r: Rig, timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = r.operator.retained(r.service.status_topic, timeout=5)
        if isinstance(status, dict) and status.get("fault"):
            return status
        time.sleep(0.2)
    return None


def _store_phase(  # noqa: PLR0912 -- one phase, checked step by step
    r: Rig, figures: Figures, prefix: str, count: int, fault: Callable[[], Callable[[], None]],
    rng: random.Random, *, sigterm_during_fault: bool, recovered: str = "store.recovered",
    during: int | None = None,
) -> list[str]:
    """Send, cause the fault, send during it, check it is reported, (stop,) heal, check."""
    topic = r.service.notification_topic("chaos")
    client = r.operator
    log_mark = len(r.service_log())
    ids = []
    infos = []
    for n in range(count // 2):
        ids.append(f"{prefix}-{n}")
        infos.append(publish_raw(client, topic, orjson.dumps({"id": ids[-1], "run": n % 5 == 0,
                                                              "sleep": "0"})))
    heal = fault()
    for n in range(count // 2, count // 2 + (during or count - count // 2)):
        ids.append(f"{prefix}-{n}")
        infos.append(publish_raw(client, topic, orjson.dumps({"id": ids[-1], "run": n % 5 == 0,
                                                              "sleep": "0"})))
        if n % 50 == 0:
            time.sleep(0.05)
    if wait_published(infos, 60):
        figures.problem(f"{prefix}: publishes without PUBACK")
    status = _fault_status(r, 30)
    if status is None:
        figures.problem(f"{prefix}: no fault in the retained status")
    else:
        say(f"{prefix}: status shows fault {status['fault'].get('message', '')[:80]}")
    time.sleep(rng.uniform(1.0, 2.0))
    failures = log_events(r.service_log()[log_mark:], "store.commit_failed")
    if not failures and recovered == "store.recovered":
        figures.problem(f"{prefix}: no store.commit_failed in the log")
    backlog = max((int(e.get("inbox", 0)) for e in failures), default=0)
    figures.extra[f"{prefix}_max_inbox"] = backlog
    if backlog > 2 * INBOX_PAUSE:
        figures.problem(f"{prefix}: the inbox grew to {backlog} during the fault")
    if log_events(r.service_log()[log_mark:], "mqtt.paused"):
        figures.extra[f"{prefix}_paused"] = "yes"
    pid = r.service.pid
    assert pid is not None
    if sigterm_during_fault:
        started = time.monotonic()
        try:
            code = r.stop_service()
        except ChaosError as error:
            figures.problem(f"{prefix}: SIGTERM during the fault: {error}")
            code = -1
        stop_seconds = time.monotonic() - started
        figures.extra[f"{prefix}_stop_seconds"] = round(stop_seconds, 1)
        say(f"{prefix}: SIGTERM during the fault stopped the service in {stop_seconds:.1f} s "
            f"(exit code {code})")
        heal()
        r.restart_service()
    else:
        heal()
        if not _wait_for(lambda: not r.operator.retained(r.service.status_topic).get("fault"),
                         60):
            figures.problem(f"{prefix}: the fault never cleared from the status")
        if r.service.pid != pid:
            figures.problem(f"{prefix}: the service restarted during the fault")
        if not log_events(r.service_log()[log_mark:], recovered):
            figures.problem(f"{prefix}: no {recovered} in the log")
    return ids


def store(cfg: Config, rng: random.Random) -> Figures:
    figures = Figures("store")
    count = cfg.count or cfg.size(2000, 400)
    with small_tmpfs(48) as mount, small_tmpfs(16) as views_mount:
        views_dir = views_mount if mount is not None else None
        with rig("store", cfg.workdir, store_dir=mount, views_dir=views_dir) as r:
            _chaos_job(r)
            sent: list[str] = []

            def full(directory: Path) -> Callable[[], Callable[[], None]]:
                def cause() -> Callable[[], None]:
                    filler = _fill(directory)
                    say(f"disk full: {filler.stat().st_size // (1 << 20)} MiB filler")
                    return filler.unlink
                return cause

            if mount is not None and views_mount is not None:
                sent += _store_phase(r, figures, "full", count, full(mount), rng,
                                     sigterm_during_fault=False)
                sent += _store_phase(r, figures, "full-stop", count, full(mount), rng,
                                     sigterm_during_fault=True, during=3 * count)
                sent += _store_phase(r, figures, "views-full", count, full(views_mount), rng,
                                     sigterm_during_fault=False, recovered="views.recovered")
            else:
                figures.extra["disk_full"] = "skipped (mount not permitted)"

            def locked() -> Callable[[], None]:
                db = sqlite3.connect(r.store, timeout=30, isolation_level=None)
                db.execute("BEGIN EXCLUSIVE")
                say("store locked by another writer (BEGIN EXCLUSIVE)")

                def release() -> None:
                    db.execute("ROLLBACK")
                    db.close()

                return release

            sent += _store_phase(r, figures, "locked", count // 2, locked, rng,
                                 sigterm_during_fault=False)
            figures.restarts = r.restarts
            _final_checks(r, figures, sent, 5)
    return figures


# --- main ----------------------------------------------------------------------------------


SCENARIOS: dict[str, Callable[[Config, random.Random], Figures]] = {
    "service-kill": service_kill,
    "broker-restart": broker_restart,
    "both": both,
    "storm": storm,
    "bad-input": bad_input,
    "scripts": scripts,
    "store": store,
}


def run_scenario(name: str, cfg: Config) -> Figures:
    """Run one scenario; a harness failure becomes a problem of its figures."""
    rng = random.Random(f"{cfg.seed}-{name}")
    started = time.monotonic()
    print(f"== {name}", flush=True)
    try:
        figures = SCENARIOS[name](cfg, rng)
    except (ChaosError, HelperFailure, AssertionError, OSError, TimeoutError) as error:
        figures = Figures(name)
        figures.problem(f"harness: {type(error).__name__}: {str(error)[:2000]}")
    figures.seconds = time.monotonic() - started
    for problem in figures.problems[:20]:
        print(f"  problem: {problem}", flush=True)
    print(figures.line(), flush=True)
    return figures


def total_line(results: list[Figures]) -> str:
    def total(attribute: str) -> int:
        return sum(int(getattr(f, attribute)) for f in results)

    return (
        f"chaos: sent={total('sent')} logged={total('logged')} lost={total('lost')} "
        f"duplicated={total('duplicated')} double_runs={total('double_runs')} "
        f"stuck={total('stuck')} interrupted={total('interrupted')} "
        f"restarts={total('restarts')} problems={sum(len(f.problems) for f in results)} "
        f"scenarios={len(results)} failed={sum(1 for f in results if not f.ok)} "
        f"seconds={sum(f.seconds for f in results):.0f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="the scaled-down sizes of the tests")
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS),
                        help="run only this scenario (repeatable)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--count", type=int, default=None, help="notifications per scenario")
    parser.add_argument("--kills", type=int, default=None, help="kills/restarts per scenario")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep each scenario's directory (logs, store, broker) under DIR")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    cfg = Config(quick=args.quick, seed=seed, count=args.count, kills=args.kills,
                 workdir=args.keep)
    print(f"chaos harness: seed={seed} quick={cfg.quick} pid={os.getpid()}", flush=True)
    results = [run_scenario(name, cfg) for name in (args.scenario or list(SCENARIOS))]
    print("-- summary", flush=True)
    for figures in results:
        print(figures.line(), flush=True)
    print(total_line(results), flush=True)
    return 0 if all(f.ok for f in results) else 1


if __name__ == "__main__":
    sys.exit(main())

