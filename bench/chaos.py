"""Fault injection: proves that nothing is lost, nothing runs twice and nothing stays running.

Usage: python -m bench.chaos [--quick] [--scenario NAME]... [--seed N] [--count N] [--kills N]
                             [--keep DIR]

Every scenario runs the real `att-jm serve` against a site made by `att-jm setup` exactly as
`./run.sh` makes it (tests/helpers/site.py): its mosquitto runs from the generated
`var/broker/mosquitto.conf` (the shipped `mosquitto.conf`'s persistence, autosave, queue and
in-flight settings; no anonymous clients, passwords, the ACL by role, the client-id plugin, a
TLS listener; its own loopback ports), the service logs in with the site's settings file
(`--config var/att-jm.toml`: its user, the roles file), and a real SQLite store, all in a
temporary directory, on loopback only, bounded in count and time. Commands come from the site
user `chaos` (role operator), notifications from `channel-manager`. Each prints what it sent,
what the log holds and the differences, then one line:

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
  bad-input     10,000 generated malformed messages and ~1,000 well-formed hostile ones
                (every value at its extremes and caps, 60 kB strings and topic levels,
                template amplification, reused ids, the job cap, views paging) on both
                inbound topics among valid ones; then a restart. Every outcome is checked;
                commands under an actor level not their sender's (empty, 200 characters
                and more, another operator's) must be refused by the broker and leave no
                trace (`denied_by_broker`).
  scripts       scripts that hang, leave children behind, print megabytes, die by a signal.
  store         the store's disk full (a small tmpfs) and the store locked while messages
                arrive; SIGTERM during the fault; recovery without loss.
  failover      two instances on one PostgreSQL store (tests/helpers/postgres.py finds or
                starts the server): the active one SIGKILLed 5 times (`--kills`) while
                notifications arrive (the burst goes on until the last take-over), while its
                script runs or at random, and started again as a standby; each take-over
                (the SIGKILL to the new one's `online` status) within `takeover_seconds`
                (10 s; 4 s with --quick), each execution whose script the kill cut short
                Failed (interrupted), no script of a dead writer still running once another
                one started. Its line gives takeover_median and takeover_max; the fail-over
                figure: `python -m bench.chaos --scenario failover --kills 10`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from att_jm.domain.ids import execution_id
from att_jm.mqtt.common import DEFAULT_RECEIVE_MAXIMUM
from att_jm.service.units import INBOX_PAUSE
from bench.chaos_inputs import (
    CLASSES,
    CORRELATION_BYTES,
    DEFAULT_SETTINGS,
    DENIED,
    HOSTILE_JOBS,
    KEY_RE,
    KNOWN_JOB,
    LONGEST_USER,
    MAX_JOBS,
    NONE_TRIGGER,
    REPLY_BYTES,
    REUSED_LATER,
    RUN_JOB,
    VIEW_LIMIT,
    Bad,
    Hostile,
    Keys,
    conflict_copies,
    generate,
    grows_past_event_cap,
    hostile,
)
from bench.chaos_rig import (
    ACTOR,
    CHANNEL_MANAGER,
    NOT_AUTHORIZED,
    Audit,
    ChaosError,
    FailoverRig,
    Figures,
    HelperFailure,
    Outgoing,
    Publisher,
    Rig,
    Run,
    cut_short,
    log_events,
    memory_kib,
    notifications,
    outlived,
    publish_raw,
    read_records,
    record_starts,
    retained_views_match,
    rig,
    say,
    side_effects,
    stored_copy,
    wait_published,
)
from bench.harness import REPO

if TYPE_CHECKING:
    from helpers.mqtt import Message, Subscription  # tests/helpers: on sys.path via chaos_rig
    from paho.mqtt.client import MQTTMessageInfo


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
    r: Rig, figures: Figures, sent: list[str], every: int, *, quiet_broker_kill: bool = False,
    effects: Callable[[], Counter[tuple[str, int]]] | None = None,
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
    ran = side_effects(r.scripts_dir) if effects is None else effects()
    audit.check_runs(figures, ran)
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
        f"({dict(statuses)}), {sum(ran.values())} script runs recorded")
    return audit


@contextlib.contextmanager
def _sending(publisher: Publisher, figures: Figures) -> Iterator[None]:
    """While `publisher` sends its burst: then wait until it is done (a problem after 300 s),
    close it, and report its failure."""
    try:
        yield
        if not publisher.wait_done(300):
            figures.problem("the publisher did not finish in 300 s")
    finally:
        publisher.close()
    if publisher.error is not None:
        figures.problem(f"publisher failed: {publisher.error!r}")


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
        publisher = Publisher(r.url(CHANNEL_MANAGER), rate=cfg.size(400, 300)).start(messages)
        kinds = ("commit", "execution", "random")
        with _sending(publisher, figures):
            for number in range(kills):
                time.sleep(rng.uniform(0.2, 1.0))
                hit = r.kill_service(kinds[number % len(kinds)], rng, figures)
                say(f"kill {number + 1}/{kills}: SIGKILL {hit}")
                r.restart_service()
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
        publisher = Publisher(r.url(CHANNEL_MANAGER), rate=cfg.size(300, 300),
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
        publisher = Publisher(r.url(CHANNEL_MANAGER), rate=cfg.size(300, 300),
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
        client, channel = r.operator, r.channel
        # Notifications: each 3 times; every tenth of them retained (the last one per topic
        # stays retained and comes again on every resubscribe).
        messages = [
            Outgoing(f"st-{n}", r.service.notification_topic(triggers[n % 5]),
                     {"id": f"st-{n}"}, retain=n % 10 == 0)
            for n in range(count)
        ]
        # Commands with CorrelationData, each 3 times (some retained); replies collected.
        reply_topic = f"att/job-manager/replies/{ACTOR}/storm"
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
                infos.append(publish_raw(channel, message.topic, orjson.dumps(message.body),
                                         retain=message.retain))
            for name, args, correlation, retain in commands:
                infos.append(publish_raw(
                    client, r.service.command_topic(name, ACTOR), orjson.dumps(args),
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
    r.channel.publish(r.service.notification_topic("fail"), {"id": "fail-1"})
    entry = str(execution_id("fail-1", "failing"))
    if not _wait_for(lambda: _ended_failed(r, entry, 1), 30):
        figures.problem("the always-fail entry never failed")
        return entry
    client.publish(r.service.command_topic("failed.execute", ACTOR), {"id": entry},
                   retain=True)
    for _ in range(2):  # each time the entry is back in Failed: restart
        _wait_for(lambda: _ended_failed(r, entry, 2), 30)
        r.stop_service()
        r.restart_service()
        time.sleep(1.0)
    client.publish(r.service.command_topic("failed.execute", ACTOR), b"", retain=True)
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

REPLY_TOPIC = f"att/job-manager/replies/{ACTOR}/bad-input"


def reply_topic(actor: str) -> str:
    """Where a command of `actor` asks for its reply: its own reply tree (the service answers
    nowhere else, and the ACL lets each user read only its own)."""
    return f"att/job-manager/replies/{actor}/bad-input"


class _Replies:
    """The replies of every actor the bad-input run sends commands as (each read by its own
    user's client), as one list."""

    def __init__(self, *subscriptions: Subscription) -> None:
        self._subscriptions = subscriptions

    def messages(self) -> list[Message]:
        return [m for subscription in self._subscriptions for m in subscription.messages()]
RAISED_PAYLOAD_BYTES = 1024 * 1024  # after the restart: a payload whose event grows past 2 MiB
LOG_LINE_BYTES = 8192  # the longest log line the service writes (att_jm/logs.py)


@dataclass
class _Storm:
    """The malformed messages and the valid ones sent among them, and what they expect."""

    bad: list[Bad]
    valid_ids: list[str]
    expected: dict[bytes, tuple[str, str]] = field(default_factory=dict)  # error replies
    good_commands: dict[bytes, str] = field(default_factory=dict)
    odd_reply_topics: int = 0


@dataclass
class _Sent:
    """The well-formed hostile messages sent, as the replies and the log will name them."""

    commands: dict[bytes, Hostile] = field(default_factory=dict)  # CorrelationData -> item
    notifications: list[Hostile] = field(default_factory=list)
    classes: Counter[str] = field(default_factory=Counter)  # messages published per class
    #: Commands the broker must refuse: CorrelationData -> (item, the PUBACKs' reason codes).
    denied: dict[bytes, tuple[Hostile, list[str]]] = field(default_factory=dict)

    def send(self, r: Rig, item: Hostile, infos: list[MQTTMessageInfo]) -> None:
        """Notifications as the Channel Manager; commands as their actor, a site operator
        (`chaos`, or LONGEST_USER); a DENIED one as `chaos` under its forged actor level."""
        self.classes[item.cls] += item.copies
        if item.kind == "notification":
            self.notifications.append(item)
            topic = r.service.notification_topic(item.name)
            infos.extend(publish_raw(r.channel, topic, item.payload)
                         for _ in range(item.copies))
            return
        correlation = item.correlation or uuid.uuid4().bytes
        topic = r.service.command_topic(item.name, item.actor)
        if item.expect == DENIED:
            self.denied[correlation] = (item, [
                r.publish_denied(topic, item.payload, response_topic=REPLY_TOPIC,
                                 correlation=correlation) for _ in range(item.copies)])
            return
        self.commands[correlation] = item
        client = r.client(item.actor)
        infos.extend(publish_raw(client, topic, item.payload,
                                 response_topic=reply_topic(item.actor),
                                 correlation=correlation) for _ in range(item.copies))

    def logged(self) -> list[str]:
        return [item.key for item in self.notifications if item.expect == "logged"]

    def answered(self, by_correlation: dict[bytes, list[Message]]) -> bool:
        return all(len(by_correlation.get(correlation, ())) >= item.copies
                   for correlation, item in self.commands.items())


def _by_correlation(messages: list[Message]) -> dict[bytes, list[Message]]:
    found: dict[bytes, list[Message]] = {}
    for message in messages:
        found.setdefault(message.prop("CorrelationData") or b"", []).append(message)
    return found


def bad_input(cfg: Config, rng: random.Random) -> Figures:
    """Malformed and well-formed hostile messages on both inbound topics among valid ones; the
    reused ids, the job cap and views paging after them; a restart; then every outcome."""
    figures = Figures("bad-input")
    key = Keys()
    sent = _Sent()
    with rig("bad-input", cfg.workdir, users={LONGEST_USER: "operator"}) as r:
        r.ok("settings.set", {"interval_seconds": 0})
        r.ok("job.add", {"name": RUN_JOB, "script": "chaos-run", "trigger": "bad-input",
                         "match": {"run": True}, "command": "0"})
        r.ok("job.add", {"name": KNOWN_JOB, "script": "chaos-run", "trigger": "bad-input",
                         "match": {"template": True}, "command": "{channel.name} {missing}"})
        for job in HOSTILE_JOBS:
            r.ok("job.add", job)
        pid = r.service.pid
        replies = _Replies(r.operator.subscribe(REPLY_TOPIC),
                           r.client(LONGEST_USER).subscribe(reply_topic(LONGEST_USER)))
        storm = _storm(cfg, rng, r, key, sent, replies, figures)
        settings = _after_storm(r, figures, key, sent, replies)
        if r.service.pid != pid or not r.service.running:
            figures.problem("the service restarted or died")
        _restart(r, figures, key, sent, settings)
        figures.restarts = r.restarts
        r.stop_service()
        audit = Audit.read(r.store)
        got = _by_correlation(replies.messages())
        wrong = _wrong_replies(got, storm.expected, storm.good_commands)
        _check_malformed(audit, storm, figures)
        _check_hostile(audit, sent, got, wrong)
        _check_denied(audit, sent, got, r.service_log(), wrong)
        _check_cut(audit, got, r.service_log(), wrong)
        runs_job = {nid for nid in sent.logged()
                    if RUN_JOB in next(i for i in sent.notifications if i.key == nid).enqueued}
        audit.check_notifications(
            figures, storm.valid_ids + sent.logged(), RUN_JOB,
            lambda nid: nid in runs_job if nid.startswith("hx-")
            else int(nid.partition("-")[2]) % 2 == 0,
        )
        audit.check_runs(figures, side_effects(r.scripts_dir))
        for text, times in wrong.most_common(20):
            figures.problem(f"{times}x {text}")
        errors = [c for c, item in sent.commands.items() if item.expect != "ok"]
        figures.extra["malformed"] = len(storm.bad)
        figures.extra["hostile"] = sum(sent.classes.values())
        figures.extra["hostile_by_class"] = ",".join(
            f"{name}:{sent.classes[name]}" for name in CLASSES if sent.classes[name])
        figures.extra["error_replies"] = (sum(1 for c in storm.expected if c in got)
                                          + sum(len(got.get(c, ())) for c in errors))
        figures.extra["rejections"] = len(audit.rejections)
        figures.extra["skips"] = sum(len(s) for s in audit.skipped.values())
        figures.extra["wrong_outcomes"] = sum(wrong.values())
        figures.extra["odd_reply_topics"] = storm.odd_reply_topics
        figures.extra["denied_by_broker"] = sum(
            reasons.count(NOT_AUTHORIZED) for _, reasons in sent.denied.values())
        say(f"replies {len(replies.messages())}, rejections recorded {len(audit.rejections)}, "
            f"command records {len(audit.commands)}, wrong outcomes {sum(wrong.values())}")
    return figures


def _storm(
    cfg: Config, rng: random.Random, r: Rig, key: Keys, sent: _Sent, replies: _Replies,
    figures: Figures,
) -> _Storm:
    """Malformed and hostile messages interleaved with valid notifications and commands;
    returns once every reply is in and every valid notification is handled."""
    storm = _Storm(generate(rng, cfg.count or cfg.size(10_000, 1_000)),
                   [f"ok-{n}" for n in range(cfg.size(1000, 100))])
    client, channel = r.operator, r.channel
    # Valid messages interleaved: notifications that run a job, notifications whose template
    # lacks a field (recorded skip), and commands that must succeed. Hostile groups are sent
    # in their order (a valid interval of a day is followed by its reset to 0).
    plan: list[tuple[str, Any]] = [("bad", b) for b in storm.bad]
    for group in hostile(rng, cfg.size(3, 1), key):
        plan.insert(rng.randrange(len(plan) + 1), ("hostile", group))
    for n, nid in enumerate(storm.valid_ids):
        plan.insert(rng.randrange(len(plan) + 1),
                    ("valid", {"id": nid, "run": n % 2 == 0, "template": n % 2 == 1}))
    for n in range(cfg.size(200, 20)):
        correlation = uuid.uuid4().bytes
        storm.good_commands[correlation] = "views.get" if n % 2 else "job.update"
        plan.insert(rng.randrange(len(plan) + 1), ("good-command", (correlation, n)))
    say(f"{len(storm.bad)} malformed messages ({Counter(b.kind for b in storm.bad)}) and "
        f"{sum(1 for kind, _ in plan if kind == 'hostile')} groups of well-formed hostile ones "
        f"interleaved with {len(storm.valid_ids)} valid notifications and "
        f"{len(storm.good_commands)} valid commands")
    infos: list[MQTTMessageInfo] = []
    for kind, item in plan:
        if kind == "hostile":
            for message in item:
                sent.send(r, message, infos)
        elif kind == "valid":
            infos.append(publish_raw(channel, r.service.notification_topic("bad-input"),
                                     orjson.dumps(item)))
        elif kind == "good-command":
            correlation, n = item
            name = storm.good_commands[correlation]
            args = ({"view": "jobs"} if name == "views.get"
                    else {"name": RUN_JOB, "timeout_seconds": 60 + n})
            infos.append(publish_raw(client, r.service.command_topic(name, ACTOR),
                                     orjson.dumps(args), response_topic=REPLY_TOPIC,
                                     correlation=correlation))
        elif item.kind == "notification":
            infos.append(publish_raw(channel, r.service.notification_topic(item.name),
                                     item.payload))
        else:
            infos.append(_send_malformed_command(r, rng, item, storm))
    # (An empty actor level, once among these, is a hostile `topics` item now: the site's
    # broker refuses it, see `_check_denied`.)
    missing_acks = wait_published(infos, 120)
    if missing_acks:
        figures.problem(f"{missing_acks} publishes without PUBACK")
    want = set(storm.expected) | set(storm.good_commands)

    def answered() -> bool:
        got = _by_correlation(replies.messages())
        return want <= set(got) and sent.answered(got)

    if not _wait_for(answered, 180):
        figures.problem("not every command was answered within 180 s")
    r.wait_drained(storm.valid_ids + sent.logged(), timeout=180, figures=figures)
    return storm


def _send_malformed_command(
    r: Rig, rng: random.Random, item: Bad, storm: _Storm
) -> MQTTMessageInfo:
    correlation = uuid.uuid4().bytes
    topic = r.service.command_topic(item.name, item.actor)
    if rng.random() < 0.01:  # odd reply topics: runs, logged, no reply sent
        response = rng.choice([f"att/job-manager/replies/{ACTOR}/#", "elsewhere/x",
                               "att/job-manager/replies/+/x"])
        storm.odd_reply_topics += 1
        return publish_raw(r.operator, topic, item.payload, response_topic=response,
                           correlation=correlation)
    storm.expected[correlation] = (item.code, item.label)
    return publish_raw(r.operator, topic, item.payload, response_topic=REPLY_TOPIC,
                       correlation=correlation)


def _after_storm(
    r: Rig, figures: Figures, key: Keys, sent: _Sent, replies: _Replies
) -> dict[str, Any]:
    """The reused ids again (now that the originals are stored), the default settings back,
    the job cap, and views.get paging over the 1000 jobs; the settings set."""
    infos: list[MQTTMessageInfo] = []
    originals = [i for i in sent.notifications if i.label == REUSED_LATER]
    for item in conflict_copies(originals):
        sent.send(r, item, infos)
    last = key()  # handled after every copy: the copies are handled once it is logged
    sent.send(r, Hostile("conflicts", "a notification after the reused ids", "notification",
                         NONE_TRIGGER, orjson.dumps({"id": last}), "logged", key=last), infos)
    if wait_published(infos, 60):
        figures.problem("reused ids: publishes without PUBACK")
    r.wait_drained([last], timeout=60, figures=figures)
    settings = dict(r.ok("settings.set", DEFAULT_SETTINGS))
    _job_limit(r, figures, key, sent, replies)
    _paging(r, figures, sent)
    return settings


def _job_limit(
    r: Rig, figures: Figures, key: Keys, sent: _Sent, replies: _Replies
) -> None:
    """Jobs up to the cap of 1000, then job.add past it (`conflict`), at it after a remove."""
    total = int(r.view("jobs")["total"])
    fillers = [f"fill-{n}" for n in range(MAX_JOBS - total)]
    infos: list[MQTTMessageInfo] = []
    correlations = []
    for name in fillers:
        correlations.append(uuid.uuid4().bytes)
        infos.append(publish_raw(
            r.operator, r.service.command_topic("job.add", ACTOR),
            orjson.dumps({"name": name, "script": "chaos-run", "trigger": "cap-filler"}),
            response_topic=REPLY_TOPIC, correlation=correlations[-1]))
    if wait_published(infos, 60):
        figures.problem("job cap: publishes without PUBACK")
    _wait_for(lambda: set(correlations) <= set(_by_correlation(replies.messages())), 120)
    got = _by_correlation(replies.messages())
    refused = [c for c in correlations if not got.get(c) or got[c][0].json().get("ok") is not True]
    if refused or not fillers:
        figures.problem(f"job cap: {len(refused)} of {len(fillers)} jobs refused below the cap "
                        f"({total} jobs before)")
    say(f"{total} jobs after the storm, {len(fillers)} added up to the cap of {MAX_JOBS}")
    victim = fillers[0] if fillers else RUN_JOB

    def job(name: str) -> bytes:
        return orjson.dumps({"name": name, "script": "chaos-run", "trigger": "cap-filler"})

    for label, name, payload, expect in (
        (f"job.add of job {MAX_JOBS + 1}", "job.add", job(key()), "conflict"),
        ("job.add of an existing name at the cap", "job.add", job(KNOWN_JOB), "conflict"),
        ("job.update at the cap", "job.update",
         orjson.dumps({"name": victim, "enabled": False}), "ok"),
        ("job.remove at the cap", "job.remove", orjson.dumps({"name": victim}), "ok"),
        ("job.add after a remove", "job.add", job(key()), "ok"),
        ("job.add of a removed name at the cap", "job.add", job(victim), "conflict"),
        (f"job.add of job {MAX_JOBS + 1} again", "job.add", job(key()), "conflict"),
    ):
        sent.send(r, Hostile("job-limit", label, "command", name, payload, expect), infos)
    if wait_published(infos, 60):
        figures.problem("job cap: publishes without PUBACK")
    _wait_for(lambda: sent.answered(_by_correlation(replies.messages())), 60)


def _view_get(r: Rig, figures: Figures, sent: _Sent, args: dict[str, Any]) -> dict[str, Any]:
    """A valid views.get (counted with the views class); {} and a problem if refused."""
    sent.classes["views"] += 1
    reply = r.command("views.get", args)
    if reply.get("ok") is not True:
        figures.problem(f"views.get {args}: ok expected, got {str(reply)[:300]}")
        return {}
    return dict(reply["result"])


def _paging(r: Rig, figures: Figures, sent: _Sent) -> None:
    """Pages of the jobs view (1000 rows) put together give every job once, in order."""
    names: list[str] = []
    page = 300
    for offset in range(0, MAX_JOBS, page):
        result = _view_get(r, figures, sent, {"view": "jobs", "offset": offset, "limit": page})
        rows = result.get("rows", [])
        names += [row["name"] for row in rows]
        head = {k: result.get(k) for k in ("offset", "total", "omitted")}
        want = {"offset": offset, "total": MAX_JOBS, "omitted": MAX_JOBS - len(rows)}
        if head != want or len(rows) != min(page, MAX_JOBS - offset):
            figures.problem(f"jobs page at {offset}: {head} and {len(rows)} rows, expected "
                            f"{want} and {min(page, MAX_JOBS - offset)} rows")
    if len(names) != MAX_JOBS or len(set(names)) != MAX_JOBS:
        figures.problem(f"jobs pages: {len(names)} rows, {len(set(names))} distinct, "
                        f"expected {MAX_JOBS}")
    whole = _view_get(r, figures, sent, {"view": "jobs", "limit": VIEW_LIMIT[1]})
    if not whole.get("omitted") and [row["name"] for row in whole.get("rows", [])] != names:
        figures.problem("jobs pages differ from the whole jobs view")
    past = _view_get(r, figures, sent, {"view": "jobs", "offset": MAX_JOBS})
    if past.get("rows") != [] or past.get("total") != MAX_JOBS:
        figures.problem(f"jobs page past the end: {str(past)[:300]}")
    tail = _view_get(r, figures, sent, {"view": "jobs", "offset": MAX_JOBS - 1, "limit": 10})
    if names and [row["name"] for row in tail.get("rows", [])] != names[-1:]:
        figures.problem(f"the last jobs page: {str(tail)[:300]}")
    if names:
        one = _view_get(r, figures, sent, {"view": "jobs", "id": names[len(names) // 2]})
        if one.get("row", {}).get("name") != names[len(names) // 2]:
            figures.problem(f"views.get of one job: {str(one)[:300]}")


def _restart(r: Rig, figures: Figures, key: Keys, sent: _Sent, settings: dict[str, Any]) -> None:
    """Stop the service cleanly and start it again (payloads of up to 1 MiB): it answers
    views.get with the state it had, a payload whose event would pass 2 MiB is refused, a
    reused id is still known, and a normal job runs end to end."""
    r.stop_service()
    r.service.env["ATT_JM_MAX_PAYLOAD_BYTES"] = str(RAISED_PAYLOAD_BYTES)
    r.restart_service()
    jobs = _view_get(r, figures, sent, {"view": "jobs"})
    if jobs.get("total") != MAX_JOBS:
        figures.problem(f"after the restart: {jobs.get('total')} jobs, expected {MAX_JOBS}")
    now = _view_get(r, figures, sent, {"view": "settings"}).get("settings")
    if now != settings:
        figures.problem(f"after the restart: settings {now}, expected {settings}")
    infos: list[MQTTMessageInfo] = []
    for item in grows_past_event_cap(key):
        sent.send(r, item, infos)
    original = next(i for i in sent.notifications if i.label == REUSED_LATER)
    for label, version, expect in (
        ("a reused id's other payload again, after the restart", 2, "silent"),
        ("a reused id with a third payload, after the restart", 3, "conflict"),
    ):
        sent.send(r, Hostile("conflicts", label, "notification", "bad-input",
                             orjson.dumps({"id": original.key, "run": True, "v": version}),
                             expect, key=original.key), infos)
    last = key()
    sent.send(r, Hostile("restart", "a notification running its job after the restart",
                         "notification", "bad-input", orjson.dumps({"id": last, "run": True}),
                         "logged", key=last, enqueued=(RUN_JOB,)), infos)
    if wait_published(infos, 60):
        figures.problem("after the restart: publishes without PUBACK")
    r.wait_drained([last], timeout=60, figures=figures)
    if not r.service.running:
        figures.problem("the service died after the restart")


def _check_malformed(audit: Audit, storm: _Storm, figures: Figures) -> None:
    """The malformed messages' records: a rejection per notification with its code (those
    without an hx- key), every command error with a record; the template skips."""
    skipped = sum(1 for nid in storm.valid_ids if nid in audit.skipped)
    if skipped != len(storm.valid_ids) // 2:
        figures.problem(f"{skipped} template skips recorded, {len(storm.valid_ids) // 2} "
                        "expected")
    unkeyed = [x for x in audit.rejections if not KEY_RE.search(x["excerpt"])]
    expected_codes = Counter(b.code for b in storm.bad if b.kind == "notification")
    recorded = Counter(x["code"] for x in unkeyed if x["source"] == "notification")
    if recorded != expected_codes:
        figures.problem(f"notification rejections {dict(recorded)} != {dict(expected_codes)}")
    unrecorded = [c for c in storm.expected if c.hex() not in audit.commands]
    command_rejections = sum(1 for x in unkeyed if x["source"] == "command")
    if len(unrecorded) > command_rejections:
        figures.problem(f"{len(unrecorded)} error replies without a record")


def _wrong_replies(
    got: dict[bytes, list[Message]], expected: dict[bytes, tuple[str, str]],
    good_commands: dict[bytes, str],
) -> Counter[str]:
    """Replies missing or not as the contract says, counted by what went wrong."""
    wrong: Counter[str] = Counter()
    for correlation, (code, label) in expected.items():
        if correlation not in got:
            wrong[f"{label}: no reply"] += 1
            continue
        reply = got[correlation][0].json()
        if reply.get("ok") is not False or reply["error"]["code"] != code:
            wrong[f"{label}: {code} expected, got {str(reply.get('error', reply))[:300]}"] += 1
    for correlation in good_commands:
        reply = got[correlation][0].json() if correlation in got else None
        if reply is None or reply.get("ok") is not True:
            wrong[f"valid command: {str(reply)[:300]}"] += 1
    return wrong


def _rejections_by_key(audit: Audit) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for rejection in audit.rejections:
        match = KEY_RE.search(rejection["excerpt"])
        if match:
            found.setdefault(match.group(1), []).append(rejection)
    return found


def _check_hostile(
    audit: Audit, sent: _Sent, got: dict[bytes, list[Message]], wrong: Counter[str]
) -> None:
    """Every hostile message's outcome: its replies and records, its rejections, what it
    enqueued and skipped, and every run it caused."""
    rejections = _rejections_by_key(audit)
    for correlation, item in sent.commands.items():
        _check_command(audit, item, correlation, got.get(correlation, []),
                       rejections.get(item.key, []) if item.key else [], wrong)
    runs: dict[str, list[Run]] = {}
    for run in audit.runs.values():
        runs.setdefault(run.notification_id, []).append(run)
    want: dict[str, Counter[str]] = {}
    first: dict[str, Hostile] = {}
    for item in sent.notifications:
        first.setdefault(item.key, item)
        codes = want.setdefault(item.key, Counter())
        if item.expect not in ("logged", "silent"):
            codes[item.expect] += item.copies
    for nid, codes in want.items():
        item = first[nid]
        recorded = Counter(x["code"] for x in rejections.get(nid, ())
                           if x["source"] == "notification")
        if recorded != codes:
            wrong[f"hostile {item.cls}/{item.label}: rejections {dict(codes)} expected, "
                  f"got {dict(recorded)}"] += 1
        logged = item.expect == "logged"
        if audit.notifications[nid] != int(logged):
            wrong[f"hostile {item.cls}/{item.label}: logged {audit.notifications[nid]} "
                  f"times, expected {int(logged)}"] += 1
        if logged:
            _check_effects(audit, item, runs.get(nid, []), wrong)


def _check_denied(
    audit: Audit, sent: _Sent, got: dict[bytes, list[Message]], log_text: str,
    wrong: Counter[str],
) -> None:
    """Each command under an actor level not its sender's: refused by the broker
    (`Not authorized`, every copy), and never seen by the service: no reply, no record, no
    rejection, nothing in its log."""
    rejections = _rejections_by_key(audit)
    for correlation, (item, reasons) in sent.denied.items():
        what = f"hostile {item.cls}/{item.label}"
        if reasons != [NOT_AUTHORIZED] * item.copies:
            wrong[f"{what}: the broker answered {reasons}, {NOT_AUTHORIZED!r} expected"] += 1
        if got.get(correlation):
            wrong[f"{what}: refused by the broker, yet answered "
                  f"{got[correlation][0].payload[:200]!r}"] += 1
        if audit.commands[correlation.hex()] or (item.key and rejections.get(item.key)):
            wrong[f"{what}: refused by the broker, yet recorded by the service"] += 1
        if item.key and f'"{item.key}"' in log_text:
            wrong[f"{what}: refused by the broker, yet in the service's log"] += 1


def _check_command(
    audit: Audit, item: Hostile, correlation: bytes, replies: list[Message],
    rejections: list[dict[str, Any]], wrong: Counter[str],
) -> None:
    what = f"hostile {item.cls}/{item.label}"
    if len(replies) < item.copies:
        wrong[f"{what}: {len(replies)} replies for {item.copies} copies"] += 1
    for message in replies:
        reply = message.json()
        if item.expect == "ok":
            if reply.get("ok") is not True:
                wrong[f"{what}: ok expected, got {str(reply.get('error', reply))[:300]}"] += 1
                continue
            for path, value in item.result:
                shown = _at(reply["result"], path)
                if not _same(shown, value):
                    wrong[f"{what}: result {path} = {str(shown)[:80]}, expected {value!r}"] += 1
        elif reply.get("ok") is not False or reply["error"]["code"] != item.expect:
            wrong[f"{what}: {item.expect} expected, got "
                  f"{str(reply.get('error', reply))[:300]}"] += 1
    _check_record(audit, item, correlation, rejections, wrong)


def _check_record(
    audit: Audit, item: Hostile, correlation: bytes, rejections: list[dict[str, Any]],
    wrong: Counter[str],
) -> None:
    what = f"hostile {item.cls}/{item.label}"
    # how the log records it: a Rejection (CorrelationData over its cap: once per copy),
    # nothing (views.get answered from the views), or one CommandRecord
    records = audit.commands[correlation.hex()]
    if len(correlation) > CORRELATION_BYTES:
        codes = Counter(x["code"] for x in rejections if x["source"] == "command")
        if codes != Counter({item.expect: item.copies}) or records:
            wrong[f"{what}: {item.copies} {item.expect} rejections expected, got "
                  f"{dict(codes)} and {records} command records"] += 1
    elif item.name == "views.get" and item.expect in ("ok", "not_found"):
        if records:
            wrong[f"{what}: views.get recorded {records} times"] += 1
    elif records != 1:
        wrong[f"{what}: recorded {records} times, expected once"] += 1
    else:
        stored = audit.command_replies[correlation.hex()]
        code = "ok" if stored.get("ok") else stored.get("error", {}).get("code")
        if code != item.expect:
            wrong[f"{what}: recorded reply {code}, expected {item.expect}"] += 1


def _at(value: Any, path: str) -> Any:
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _same(got: Any, want: Any) -> bool:
    """JSON equality of a reply's value; a number expected to be 0 must not be -0.0."""
    if isinstance(want, int | float) and not isinstance(want, bool):
        return (isinstance(got, int | float) and not isinstance(got, bool) and got == want
                and (want != 0 or math.copysign(1.0, got) > 0))
    return bool(got == want)


def _check_effects(audit: Audit, item: Hostile, runs: list[Run], wrong: Counter[str]) -> None:
    """A logged notification enqueued exactly `item.enqueued`, each ran once and succeeded,
    and skipped exactly `item.skipped`, each with its reason."""
    what = f"hostile {item.cls}/{item.label}"
    jobs = Counter(run.job for run in runs)
    if jobs != Counter(item.enqueued):
        wrong[f"{what}: enqueued {sorted(jobs.elements())}, expected "
              f"{sorted(item.enqueued)}"] += 1
    for run in runs:
        if run.ends[1] != 1 or not run.feedback or run.feedback[-1] != "chaos-run done":
            wrong[f"{what}: {run.job} ended {dict(run.ends)} with {run.feedback[-1:]}"] += 1
    skips = {skip["job"]: skip["reason"] for skip in audit.skipped.get(item.key, [])}
    if set(skips) != {job for job, _ in item.skipped}:
        wrong[f"{what}: skipped {sorted(skips)}, expected "
              f"{sorted(job for job, _ in item.skipped)}"] += 1
    for job, fragment in item.skipped:
        reason = skips.get(job, "")
        if fragment not in reason or len(reason) > REPLY_BYTES:
            wrong[f"{what}: {job} skipped for {reason[:200]!r}, expected {fragment!r}"] += 1


def _check_cut(
    audit: Audit, got: dict[bytes, list[Message]], log_text: str, wrong: Counter[str]
) -> None:
    """Error replies stay under ~2 kB, recorded reasons and topics are cut, and no log line
    is longer than the service's cap (a 60 kB topic is cut in logs)."""
    for messages in got.values():
        for message in messages:
            if len(message.payload) > REPLY_BYTES and message.json().get("ok") is False:
                wrong[f"an error reply of {len(message.payload)} bytes"] += 1
    for rejection in audit.rejections:
        for field_ in ("reason", "topic"):
            if len(rejection[field_]) > REPLY_BYTES:
                wrong[f"a rejection's {field_} of {len(rejection[field_])} characters"] += 1
    longest = max((len(line.encode()) for line in log_text.splitlines()), default=0)
    if longest > LOG_LINE_BYTES:
        wrong[f"a log line of {longest} bytes"] += 1


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
            r.channel.publish(r.service.notification_topic("scripts"), {"id": nid, "mode": mode})
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
    client = r.channel
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


# --- 8. fail-over between two instances on PostgreSQL -----------------------------------


@contextlib.contextmanager
def postgres_store(figures: Figures) -> Iterator[str | None]:
    """A fresh PostgreSQL store (a schema of the tests' server, tests/helpers/postgres.py:
    127.0.0.1:5432 or a cluster of its own), dropped afterwards; None, said, without one.

    Its database is `att_jm_chaos_<pid>`, not the tests' `att_jm_tests_<pid>`: under pytest
    (tests/e2e/test_chaos.py) the session's database of the same process is in use, and
    `find()` drops and creates its database."""
    from helpers.postgres import NoPostgres, PostgresServer  # noqa: PLC0415 -- psycopg, lazily

    @dataclasses.dataclass
    class ChaosServer(PostgresServer):
        database: str = dataclasses.field(
            default_factory=lambda: f"att_jm_chaos_{os.getpid()}")

    try:
        server = ChaosServer.find()
    except NoPostgres as error:
        if os.environ.get("CI") == "true":
            figures.problem(f"no PostgreSQL: {error}")
        else:
            figures.extra["skipped"] = "no-postgresql"
            say(f"skipped: {error}")
        yield None
        return
    url = server.new_store()
    try:
        yield url
    finally:
        server.terminate_others()
        server.drop_store(url)
        server.close()


def failover(cfg: Config, rng: random.Random) -> Figures:
    figures = Figures("failover")
    kills = cfg.kills or 5
    takeover = 4.0 if cfg.quick else 10.0
    rate = cfg.size(60, 30)
    # The burst lasts until the last take-over (then it ends after its current window): at
    # most `count` notifications, by default more than the kills can take at `rate`.
    count = cfg.count or int(rate * kills * (takeover + 20))
    every = 10
    with postgres_store(figures) as url:
        if url is None:
            return figures
        with failover_rig(cfg, url, takeover) as r:
            r.ok("settings.set", {"interval_seconds": 0})
            r.ok("job.add", {"name": "chaos", "script": "chaos-record", "trigger": "chaos",
                             "match": {"run": True}, "command": f"{r.records} {{tenths}}",
                             "timeout_seconds": 60})
            topic = r.service.notification_topic("chaos")
            messages = notifications(
                "fo", topic, count,
                lambda n: {"run": n % every == 0, "tenths": 3 if n % (every * 2) == 0 else 0},
            )
            say(f"sending notifications at {rate}/s (one in {every} runs the job) until "
                f"{kills} SIGKILLs of the active instance are over (takeover_seconds "
                f"{takeover:g})")
            publisher = Publisher(r.url(CHANNEL_MANAGER), rate=rate, window=10).start(messages)
            with _sending(publisher, figures):
                for number in range(kills):
                    time.sleep(rng.uniform(0.5, 1.5))
                    if publisher.done.is_set():
                        figures.problem(f"the burst ended before kill {number + 1} "
                                        "(--count too small)")
                    took = r.kill_active("execution" if number % 2 == 0 else "random", rng,
                                         figures)
                    if took > takeover:
                        figures.problem(f"take-over {number + 1} took {took:.2f} s, over the "
                                        f"bound of {takeover:g} s")
                publisher.finish()
            figures.restarts = r.restarts
            times = sorted(r.takeovers)
            figures.extra["takeover_median"] = f"{statistics.median(times):.2f}"
            figures.extra["takeover_max"] = f"{times[-1]:.2f}"
            audit = _final_checks(r, figures, publisher.sent, every,
                                  effects=lambda: record_starts(read_records(r.records)))
            records = read_records(r.records)
            for problem in outlived(records, r.deaths):
                figures.problem(problem)
            for run in audit.runs.values():
                if run.interrupted and run.status != "failed":
                    figures.problem(f"{run.id} interrupted but {run.status}")
            for entry, attempt in sorted(cut_short(records, r.deaths)):
                cut = audit.runs.get(entry)
                if cut is None or not cut.interrupted or cut.status != "failed":
                    figures.problem(f"{entry} attempt {attempt}: its writer was killed while "
                                    "its script ran, but it is not Failed (interrupted)")
    return figures


@contextlib.contextmanager
def failover_rig(cfg: Config, url: str, takeover: float) -> Iterator[FailoverRig]:
    """A started FailoverRig in a temporary directory (under `cfg.workdir`, kept, if given)."""
    with contextlib.ExitStack() as stack:
        if cfg.workdir is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix="att-jm-failover-")))
        else:
            cfg.workdir.mkdir(parents=True, exist_ok=True)
            root = Path(tempfile.mkdtemp(prefix="failover-", dir=cfg.workdir))
            say(f"keeping {root}")
        the_rig = FailoverRig(root, store_url=url, takeover_seconds=takeover)
        try:
            the_rig.start()
            yield the_rig
        finally:
            the_rig.close()


# --- main ----------------------------------------------------------------------------------


SCENARIOS: dict[str, Callable[[Config, random.Random], Figures]] = {
    "service-kill": service_kill,
    "broker-restart": broker_restart,
    "both": both,
    "storm": storm,
    "bad-input": bad_input,
    "scripts": scripts,
    "store": store,
    "failover": failover,
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

