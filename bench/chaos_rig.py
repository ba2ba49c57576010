"""The chaos harness's machinery: a rig (a site made by `att-jm setup` with its real
mosquitto, the real `att-jm serve` on it, a SQLite store), an at-least-once publisher, precise
kills, and the audit of what the log holds.

The site is made exactly as `./run.sh` makes it (tests/helpers/site.py): its broker runs from
the generated `var/broker/mosquitto.conf` (no anonymous clients, passwords, the ACL by role,
the client-id plugin, a TLS listener), and the service is started with `--config` of its
`var/att-jm.toml` (its credentials, the roles file) plus the rig's own flags. Every client
logs in as a site user with a client id of that user: the operator `chaos` (role operator,
added to the site) sends the commands, `channel-manager` the notifications.

Everything runs on loopback, in a temporary directory, with bounded counts and deadlines.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import psycopg
import psycopg.sql
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import pytest  # noqa: E402 -- the helpers report failures with pytest.fail
from helpers.mqtt import TestClient, new_properties, parse_url  # noqa: E402 -- tests/ on sys.path
from helpers.processes import pids_with_env  # noqa: E402 -- idem
from helpers.service import Service, populate_scripts_dir, reachable  # noqa: E402 -- idem
from helpers.site import SecureSite  # noqa: E402 -- idem

from att_jm.domain.ids import execution_id  # noqa: E402 -- after the sys.path set-up, like the rest
from att_jm.log.backend import PG_EVENTS  # noqa: E402 -- idem
from att_jm.log.codec import loads_state  # noqa: E402 -- idem
from att_jm.site.broker import BrokerSetupError  # noqa: E402 -- idem
from att_jm.site.local import SERVICE_USER  # noqa: E402 -- idem

#: The site user (role operator) that sends the scenarios' commands: their actor level.
ACTOR = "chaos"
#: The site user (role channel-manager) that publishes the notifications.
CHANNEL_MANAGER = "channel-manager"
#: The reason code of a PUBACK for a publish the broker's ACL refuses.
NOT_AUTHORIZED = "Not authorized"
RUNS_LOG = "chaos-runs.log"  # written by tests/scripts/chaos-run in the scripts directory
HelperFailure = pytest.fail.Exception  # what the test helpers raise when a process misbehaves

# Syscall numbers of fsync and fdatasync: a writer thread blocked in one of them on the store
# is in the middle of a commit.
_SYNC_SYSCALLS = {"x86_64": {74, 75}, "aarch64": {82, 83}}.get(platform.machine(), set())


class ChaosError(RuntimeError):
    """The rig could not do what a scenario asked (a process would not start, a deadline)."""


# --- figures ----------------------------------------------------------------------------------


@dataclass
class Figures:
    """What one scenario found; `ok` is False on any loss, duplicate, stuck entry or problem."""

    scenario: str
    sent: int = 0
    logged: int = 0
    lost: int = 0
    duplicated: int = 0
    double_runs: int = 0
    stuck: int = 0
    interrupted: int = 0
    restarts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.double_runs or self.stuck or self.problems)

    def line(self) -> str:
        extra = "".join(f" {key}={value}" for key, value in self.extra.items())
        return (
            f"{self.scenario}: sent={self.sent} logged={self.logged} lost={self.lost} "
            f"duplicated={self.duplicated} double_runs={self.double_runs} stuck={self.stuck} "
            f"interrupted={self.interrupted} restarts={self.restarts}{extra} "
            f"problems={len(self.problems)} seconds={self.seconds:.1f} "
            f"{'OK' if self.ok else 'FAILED'}"
        )

    def problem(self, text: str) -> None:
        self.problems.append(text)


def say(text: str) -> None:
    print(f"  {text}", flush=True)


# --- the log, read like an auditor -----------------------------------------------------------


@dataclass
class Run:
    """One execution as the log tells it."""

    id: str
    notification_id: str = ""
    job: str = ""
    status: str = "none"
    starts: Counter[int] = field(default_factory=Counter)
    ends: Counter[int] = field(default_factory=Counter)
    attempt: int = 1
    interrupted: int = 0
    feedback: list[str | None] = field(default_factory=list)
    timed_out: int = 0


@dataclass
class Audit:
    """Everything the store holds that the harness checks, read with a read-only connection."""

    notifications: Counter[str] = field(default_factory=Counter)
    payloads: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    runs: dict[str, Run] = field(default_factory=dict)
    rejections: list[dict[str, Any]] = field(default_factory=list)
    commands: Counter[str] = field(default_factory=Counter)  # correlation hex -> records
    command_replies: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: Counter[str] = field(default_factory=Counter)
    position: int = 0

    @classmethod
    def read(cls, store: Path | str) -> Audit:
        """The log of `store`: an SQLite file, or a PostgreSQL store's URL (`?schema=`)."""
        audit = cls()
        if isinstance(store, str) and "://" in store:
            rows: list[tuple[Any, Any, Any, Any]] = pg_rows(store)
        else:
            with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
                rows = db.execute("SELECT rowid, originator_id, topic, state FROM "
                                  "stored_events ORDER BY rowid").fetchall()
        for position, originator, topic, state in rows:
            audit.position = position
            audit._apply(str(uuid.UUID(str(originator))), str(topic), loads_state(bytes(state)))
        return audit

    def _run(self, originator: str) -> Run:
        run = self.runs.get(originator)
        if run is None:
            run = self.runs[originator] = Run(originator)
        return run

    def _apply(self, originator: str, topic: str, state: dict[str, Any]) -> None:
        kind = topic.rpartition(":")[2]
        self.events[kind] += 1
        if kind == "Notification.Received":
            nid = state["notification_id"]
            self.notifications[nid] += 1
            self.payloads[nid] = state["payload"]
            if state["skipped"]:
                self.skipped[nid] = state["skipped"]
        elif kind == "Rejection.Rejected":
            self.rejections.append(state)
        elif kind == "CommandRecord.Handled":
            self.commands[state["correlation"]] += 1
            self.command_replies[state["correlation"]] = state["reply"]
        elif kind.startswith("Execution."):
            self._execution(self._run(originator), kind.partition(".")[2], state)

    @staticmethod
    def _execution(run: Run, name: str, state: dict[str, Any]) -> None:
        if name == "Enqueued":
            run.notification_id = state["notification_id"]
            run.job = state["job"]
            run.status = "queued"
        elif name == "Started":
            run.starts[state["attempt"]] += 1
            run.attempt = state["attempt"]
            run.status = "running"
        elif name in ("Succeeded", "Failed"):
            run.ends[run.attempt] += 1
            run.status = "executed" if name == "Succeeded" else "failed"
            run.feedback.append(state.get("feedback"))
            if state.get("interrupted"):
                run.interrupted += 1
            if state.get("timed_out"):
                run.timed_out += 1
        elif name == "Reexecuted":
            run.status = "queued"
            run.attempt = state["attempt"]
        else:  # removed from a table, deleted, cleaned up
            run.status = "gone"

    def check_runs(self, figures: Figures, side_effects: Counter[tuple[str, int]]) -> None:
        """Double starts, double ends, stuck entries, interrupted ones; and the scripts' own
        record of their runs (a line not backed by a Started event, or a line twice)."""
        for run in self.runs.values():
            for attempt, count in run.starts.items():
                if count > 1:
                    figures.duplicated += count - 1
                    figures.problem(f"{run.id} attempt {attempt} started {count} times")
                if run.ends[attempt] > 1:
                    figures.duplicated += run.ends[attempt] - 1
                    figures.problem(f"{run.id} attempt {attempt} ended {run.ends[attempt]} times")
            if run.status in ("queued", "running", "none"):
                figures.stuck += 1
                if figures.stuck <= 5:
                    figures.problem(f"{run.id} ({run.job}) still {run.status}")
            figures.interrupted += run.interrupted
        for (entry, attempt), count in side_effects.items():
            found = self.runs.get(entry)
            if count > 1:
                figures.double_runs += count - 1
                figures.problem(f"script ran {count} times for {entry} attempt {attempt}")
            if found is None or found.starts[attempt] == 0:
                figures.double_runs += 1
                figures.problem(f"script ran for {entry} attempt {attempt} with no Started event")

    def check_notifications(
        self, figures: Figures, sent: Iterable[str], job: str | None = None,
        runs_job: Callable[[str], bool] = lambda nid: True,
    ) -> None:
        """Every id sent is in the log exactly once, and enqueued `job` when `runs_job(id)`."""
        sent = set(sent)
        figures.sent = len(sent)
        figures.logged = len(sent & set(self.notifications))
        missing = sorted(sent - set(self.notifications))
        figures.lost += len(missing)
        if missing:
            figures.problem(f"{len(missing)} ids never logged, e.g. {missing[:5]}")
        doubled = {nid: n for nid, n in self.notifications.items() if nid in sent and n > 1}
        figures.duplicated += sum(n - 1 for n in doubled.values())
        if doubled:
            figures.problem(f"ids logged twice: {list(doubled)[:5]}")
        if job is None:
            return
        unenqueued = [
            nid for nid in sent & set(self.notifications)
            if runs_job(nid) and str(execution_id(nid, job)) not in self.runs
        ]
        figures.lost += len(unenqueued)
        if unenqueued:
            figures.problem(f"{len(unenqueued)} notifications logged but not enqueued")


def pg_rows(store: str) -> list[tuple[int, Any, str, bytes]]:
    """(position, originator id, topic, state) of every row of a PostgreSQL store's log."""
    base, _, schema = store.partition("?schema=")
    with psycopg.connect(base, connect_timeout=10) as db:
        return [(int(p), o, str(t), bytes(s)) for p, o, t, s in db.execute(
            psycopg.sql.SQL("SELECT notification_id, originator_id, topic, state FROM {}.{} "
                            "ORDER BY notification_id").format(
                psycopg.sql.Identifier(schema), psycopg.sql.Identifier(PG_EVENTS)))]


def side_effects(scripts_dir: Path) -> Counter[tuple[str, int]]:
    """(execution id, attempt) -> how many times tests/scripts/chaos-run really started."""
    seen: Counter[tuple[str, int]] = Counter()
    path = scripts_dir / RUNS_LOG
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            entry, _, attempt = line.partition(" ")
            seen[(entry, int(attempt))] += 1
    return seen


# --- processes -----------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    """Pids whose parent is `pid`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(proc.name))
    return found


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    out = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def in_store_sync(pid: int, store: Path) -> bool:
    """Whether the writer (main) thread of `pid` is blocked in fsync/fdatasync of the store."""
    try:
        fields = Path(f"/proc/{pid}/task/{pid}/syscall").read_text().split()
    except OSError:
        return False
    if not fields or not fields[0].isdigit() or int(fields[0]) not in _SYNC_SYSCALLS:
        return False
    try:
        target = os.readlink(f"/proc/{pid}/fd/{int(fields[1], 16)}")
    except (OSError, IndexError, ValueError):
        return False
    return target.startswith(str(store))  # the store itself or its -wal / -journal


# --- the rig -----------------------------------------------------------------------------------


class Rig:
    """One site (its broker), one service, one store and one scripts directory in a temporary
    directory. `users` (name -> role) are added to the site besides the operator `chaos`."""

    def __init__(
        self, root: Path, *, store_dir: Path | None = None, views_dir: Path | None = None,
        name: str = "chaos", users: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.name = name
        self.scripts_dir = populate_scripts_dir(root / "scripts")
        self.site = SecureSite(root / "site", self.scripts_dir)
        for user, role in {ACTOR: "operator", **(users or {})}.items():
            self.site.add_user(user, role)  # before the broker starts: it reads them then
        self.broker = self.site.broker
        self.store = (store_dir or root / "store") / "att-jm.db"
        self.service = Service(
            self.broker, store=self.store, scripts_dir=self.scripts_dir,
            log_path=root / "att-jm.log", client_id=SERVICE_USER,
            mqtt_url=self.site.url(), watch_url=self.site.url("auditor"),
            extra_args=["--config", str(self.site.config)],
            env={
                # Storms of thousands of commands from one actor: not what rate limits are
                # tested with (tests/e2e/test_security.py is).
                "ATT_JM_COMMAND_RATE": "100000", "ATT_JM_COMMAND_BURST": "1000000",
                **({"ATT_JM_VIEWS_DB": str(views_dir / "views.db")} if views_dir else {}),
            },
        )
        self.restarts = 0
        self._clients: dict[str, TestClient] = {}

    # life cycle
    def start(self) -> Rig:
        self.broker.start()
        self.start_service()
        return self

    def start_service(self, timeout: float = 60.0) -> None:
        try:
            self.service.start(timeout=timeout)
        except HelperFailure as error:
            raise ChaosError(str(error)) from None

    def restart_service(self) -> None:
        self.start_service()
        self.restarts += 1

    def stop_service(self) -> int:
        """SIGTERM the service; its exit code (the helper requires 0)."""
        try:
            return self.service.stop(timeout=30)
        except HelperFailure as error:
            raise ChaosError(str(error)) from None

    def close(self) -> None:
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                client.close()
        self.service.kill()
        self.broker.kill()

    # clients, each logged in as a site user
    def url(self, user: str) -> str:
        """`mqtt://user:password@host:port` of a site user."""
        return self.site.url(user)

    def client(self, user: str) -> TestClient:
        """A connected client of site user `user` (one per user; it reconnects by itself after
        a broker restart). Never publish what its ACL refuses with it: mosquitto drops the
        connection then (see `publish_denied`)."""
        client = self._clients.get(user)
        if client is None:
            client = self._clients[user] = TestClient(self.url(user)).connect(timeout=30)
        client.wait_connected(30)
        return client

    @property
    def operator(self) -> TestClient:
        """The operator `chaos`: commands under its own name, the views, status and replies."""
        return self.client(ACTOR)

    @property
    def channel(self) -> TestClient:
        """The Channel Manager: the only user that may publish notifications."""
        return self.client(CHANNEL_MANAGER)

    def publish_denied(
        self, topic: str, payload: bytes, *, user: str = ACTOR,
        response_topic: str | None = None, correlation: bytes | None = None,
    ) -> str:
        """Publish as `user` something the site's ACL must refuse, from a client of its own
        (mosquitto 2.0 drops a client after a publish it denies); the PUBACK's reason code
        (`NOT_AUTHORIZED` when refused)."""
        properties = new_properties(PacketTypes.PUBLISH)
        if response_topic is not None:
            properties.ResponseTopic = response_topic
        if correlation is not None:
            properties.CorrelationData = correlation
        with TestClient(self.url(user)) as client:
            reason = client.publish(topic, payload, properties=properties, check=False,
                                    timeout=20)
        return str(reason)

    def command(self, name: str, args: dict[str, Any], timeout: float = 20.0) -> dict[str, Any]:
        return self.operator.request(self.service.command_topic(name, ACTOR), args,
                                     timeout=timeout)

    def ok(self, name: str, args: dict[str, Any]) -> Any:
        reply = self.command(name, args)
        if reply.get("ok") is not True:
            raise ChaosError(f"{name} {args} refused: {reply}")
        return reply["result"]

    def view(self, name: str) -> dict[str, Any]:
        return dict(self.ok("views.get", {"view": name}))

    # waiting
    def wait_drained(
        self, expected: Iterable[str], timeout: float, figures: Figures | None = None
    ) -> Audit:
        """Wait until every expected id is logged and nothing is queued or running."""
        expected = set(expected)
        deadline = time.monotonic() + timeout
        while True:
            audit = Audit.read(self.store)
            missing = expected - set(audit.notifications)
            busy = [r for r in audit.runs.values() if r.status in ("queued", "running")]
            if not missing and not busy:
                return audit
            if time.monotonic() > deadline:
                if figures is not None:
                    figures.problem(
                        f"not drained after {timeout:.0f} s: {len(missing)} ids missing, "
                        f"{len(busy)} entries queued or running"
                    )
                return audit
            time.sleep(0.5)

    def leftovers(self) -> list[int]:
        """Scripts of this rig still alive (their HOME is the rig's scripts directory)."""
        return pids_with_env(f"HOME={self.scripts_dir.resolve()}")

    def service_log(self) -> str:
        return self.service.log_text()

    # kills
    def kill_service(self, how: str, rng: random.Random, figures: Figures) -> str:
        """SIGKILL the service at a chosen moment: `commit`, `execution` or `random`."""
        pid = self.service.pid
        if pid is None or not self.service.running:
            raise ChaosError("the service is not running")
        hit = "random"
        if how == "commit":
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                if in_store_sync(pid, self.store):
                    hit = "commit"
                    break
        elif how == "execution":
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                if children_of(pid):
                    hit = "execution"
                    break
                time.sleep(0.005)
        else:
            time.sleep(rng.uniform(0.0, 0.5))
        os.kill(pid, signal.SIGKILL)
        self.service.kill()  # reap
        figures.extra[f"kills_{hit}"] = figures.extra.get(f"kills_{hit}", 0) + 1
        return hit


@contextlib.contextmanager
def rig(
    name: str, workdir: Path | None = None, store_dir: Path | None = None,
    views_dir: Path | None = None, users: Mapping[str, str] | None = None,
) -> Iterator[Rig]:
    """A started rig in a fresh temporary directory; under `workdir` (and kept) when given.
    `users`: more site users (name -> role) than the operator `chaos`."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"att-jm-{name}-")))
        else:
            workdir.mkdir(parents=True, exist_ok=True)
            root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))
            say(f"keeping {root}")
        try:
            the_rig = Rig(root, store_dir=store_dir, views_dir=views_dir, name=name,
                          users=users)
        except BrokerSetupError as error:  # no C compiler or mosquitto-dev for the plugin
            raise ChaosError(f"att-jm setup: {error}") from None
        try:
            the_rig.start()
            yield the_rig
        finally:
            the_rig.close()


# --- the Channel Manager: an at-least-once publisher --------------------------------------


@dataclass
class Outgoing:
    """One notification to publish; `copies` counts how often it was published."""

    id: str
    topic: str
    body: dict[str, Any]
    retain: bool = False
    copies: int = 0
    confirmed_copy: int = 0  # the first copy that got a PUBACK (0: none yet)


def acked(info: paho.MQTTMessageInfo) -> bool:
    """Whether the broker sent the PUBACK (paho raises for a publish made while disconnected;
    it may still send that one after reconnecting, but the caller cannot know: not acked)."""
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return False


class Publisher:
    """Publishes notifications at QoS 1 the way a careful Channel Manager does.

    Messages go out in windows; one without a PUBACK after `ack_timeout` is published again.
    With `republish_last` > 0, every reconnect (a broker restart) republishes the last that
    many PUBACKed notifications: mosquitto acknowledges before it saves, so a broker SIGKILL
    may lose a few of them (docs/reliability.md). Each copy carries `"copy": n`, so the log
    shows which copy was stored. The id makes every extra copy harmless.

    `url` may name a user (`mqtt://user:password@host:port`, a site's `channel-manager`): it
    logs in as that user, with a client id of that user (`user.chaos-...`).
    """

    def __init__(
        self, url: str, *, rate: float = 0.0, window: int = 100, ack_timeout: float = 3.0,
        republish_last: int = 0,
    ) -> None:
        host, port, user, password = parse_url(url)
        suffix = f"chaos-{uuid.uuid4().hex[:8]}"
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{user}.{suffix}" if user else f"{suffix}-cm", protocol=paho.MQTTv5,
        )
        if user is not None:
            self._client.username_pw_set(user, password)
        self._client.max_inflight_messages_set(window)
        self._client.reconnect_delay_set(1, 2)
        self._connects = 0
        self._client.on_connect = self._on_connect
        self._rate = rate
        self._window = window
        self._ack_timeout = ack_timeout
        self._recent: deque[Outgoing] = deque(maxlen=max(republish_last, 1))
        self._republish = republish_last
        self._seen_connects = 1
        self.republished = 0
        self.resent = 0
        self._client.connect(host, port, keepalive=10)
        self._client.loop_start()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._finish = threading.Event()
        self._messages: Sequence[Outgoing] = ()
        self.done = threading.Event()
        self.error: BaseException | None = None

    def _on_connect(self, *args: Any) -> None:
        self._connects += 1

    def _send(self, message: Outgoing) -> tuple[int, paho.MQTTMessageInfo]:
        message.copies += 1
        body = {**message.body, "copy": message.copies}
        info = self._client.publish(message.topic, orjson.dumps(body), qos=1,
                                    retain=message.retain)
        return message.copies, info

    def _send_window(self, batch: Sequence[Outgoing]) -> None:
        """Publish `batch` until every message has a PUBACK (or the run is stopped)."""
        pending = list(batch)
        while pending and not self._stop.is_set():
            infos = [(message, *self._send(message)) for message in pending]
            deadline = time.monotonic() + self._ack_timeout
            while time.monotonic() < deadline and not all(acked(i) for *_, i in infos):
                time.sleep(0.002)
            pending = []
            for message, copy, info in infos:
                if acked(info):
                    message.confirmed_copy = message.confirmed_copy or copy
                    self._recent.append(message)
                else:
                    pending.append(message)
            self.resent += len(pending)
            self._check_reconnect()

    def _check_reconnect(self) -> None:
        if self._connects > self._seen_connects:
            self._seen_connects = self._connects
            if self._republish:
                again = list(self._recent)
                self.republished += len(again)
                for message in again:
                    self._send(message)

    def _loop(self, messages: Sequence[Outgoing]) -> None:
        try:
            started = time.monotonic()
            for start in range(0, len(messages), self._window):
                if self._stop.is_set():
                    return
                if self._finish.is_set():
                    break
                self._send_window(messages[start : start + self._window])
                if self._rate > 0:
                    due = started + (start + self._window) / self._rate
                    time.sleep(max(0.0, due - time.monotonic()))
            self.done.set()
            while not self._stop.wait(0.05):  # keep covering broker restarts
                self._check_reconnect()
        except BaseException as error:  # reported by the scenario  # noqa: BLE001
            self.error = error
            self.done.set()

    def start(self, messages: Sequence[Outgoing]) -> Publisher:
        self._messages = messages
        self._thread = threading.Thread(target=self._loop, args=(messages,), daemon=True)
        self._thread.start()
        return self

    def wait_done(self, timeout: float) -> bool:
        return self.done.wait(timeout)

    def finish(self) -> None:
        """Send no window after the current one (whose messages are still sent until each
        has its PUBACK): the burst ends there, `done` is set then."""
        self._finish.set()

    @property
    def sent(self) -> list[str]:
        """The ids published at least once (all of them unless `finish` ended it early)."""
        return [message.id for message in self._messages if message.copies]

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._client.disconnect()
        self._client.loop_stop()


def notifications(
    prefix: str, topic: str, count: int, body: Callable[[int], dict[str, Any]]
) -> list[Outgoing]:
    return [Outgoing(f"{prefix}-{n}", topic, {"id": f"{prefix}-{n}", **body(n)})
            for n in range(count)]


def stored_copy(audit: Audit, nid: str) -> int:
    """Which copy of a notification the service stored (1 = the first one published)."""
    copy = audit.payloads.get(nid, {}).get("copy", 1)
    return copy if isinstance(copy, int) else 1


def retained_views_match(rig_: Rig, views: Sequence[str], figures: Figures) -> None:
    """The retained view messages equal `views.get` (none stale after broker restarts)."""
    time.sleep(2.0)  # the service reconnects; views are published coalesced, 4 times a second
    for name in views:
        fresh = rig_.view(name)
        retained = rig_.operator.retained(rig_.service.view_topic(name), timeout=10)
        if retained != fresh:
            figures.problem(
                f"retained view {name} is stale: position {retained.get('position')} "
                f"total {retained.get('total')} vs position {fresh.get('position')} "
                f"total {fresh.get('total')}"
            )


def publish_raw(
    client: TestClient, topic: str, payload: bytes, *, retain: bool = False,
    response_topic: str | None = None, correlation: bytes | None = None,
) -> paho.MQTTMessageInfo:
    """Publish without waiting (QoS 1); the caller waits for the returned infos."""
    properties = new_properties(PacketTypes.PUBLISH)
    if response_topic is not None:
        properties.ResponseTopic = response_topic
    if correlation is not None:
        properties.CorrelationData = correlation
    return client.client.publish(topic, payload, qos=1, retain=retain, properties=properties)


def wait_published(infos: Sequence[paho.MQTTMessageInfo], timeout: float) -> int:
    """Wait until every publish has its PUBACK; how many have none by the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(acked(info) for info in infos):
            return 0
        time.sleep(0.01)
    return sum(1 for info in infos if not acked(info))


def log_events(log_text: str, event: str) -> list[dict[str, Any]]:
    """The JSON log lines of the service whose `event` is `event`."""
    found = []
    pattern = re.compile(rf'"event":\s*"{re.escape(event)}"')
    for line in log_text.splitlines():
        if pattern.search(line):
            with contextlib.suppress(orjson.JSONDecodeError):
                found.append(orjson.loads(line))
    return found


def run_command(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


# --- several instances on one PostgreSQL store (bench/chaos.py `failover`, test_failover.py) --

#: tests/scripts/chaos-record's lines: (kind, time, execution id, attempt, writer pid).
Record = tuple[str, float, str, int, int]


class InstanceProcess(Service):
    """One `att-jm serve --instance NAME` on a PostgreSQL store, beside others. `start()`
    returns once its own instance status (standby or active) is on the broker."""

    def __init__(self, broker: Any, *, store_url: str, instance: str,
                 takeover_seconds: float, **kwargs: Any) -> None:
        super().__init__(broker, store=Path("unused"), **kwargs)
        self.store_url = store_url
        self.instance = instance
        self.takeover_seconds = takeover_seconds

    @property
    def instance_topic(self) -> str:
        return self.topic(f"job-manager/instances/{self.instance}/status")

    def argv(self) -> list[str]:
        argv = super().argv()
        argv[argv.index("--store") + 1] = self.store_url
        return [*argv, "--instance", self.instance,
                "--takeover-seconds", str(self.takeover_seconds)]

    @property
    def ready_topic(self) -> str:
        return self.instance_topic

    def is_ready(self, payload: bytes, pid: int) -> bool:
        """Its own instance status, standby or active."""
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return False
        return isinstance(body, dict) and body.get("pid") == pid \
            and body.get("state") in ("standby", "active")


def read_records(path: Path) -> list[Record]:
    """The lines tests/scripts/chaos-record wrote to `path`."""
    records: list[Record] = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) == 5:
                records.append((parts[0], float(parts[1]), parts[2], int(parts[3]),
                                int(parts[4])))
    return records


def record_starts(records: Iterable[Record]) -> Counter[tuple[str, int]]:
    """(execution id, attempt) -> how many times chaos-record really started."""
    return Counter((entry, attempt) for kind, _, entry, attempt, _ in records
                   if kind == "start")


def outlived(records: Sequence[Record], deaths: Mapping[int, float]) -> list[str]:
    """Scripts of a writer that was killed or fenced (pid -> when, wall clock) still running
    after another writer started a script after that moment: each as a line of text."""
    found = []
    for pid, died in deaths.items():
        later = [at for kind, at, _, _, writer in records
                 if kind == "start" and writer != pid and at > died]
        if not later:
            continue
        first = min(later)
        for kind, at, entry, attempt, writer in records:
            if writer == pid and kind in ("beat", "end") and at > first:
                found.append(f"{entry} attempt {attempt} of writer {pid} still ran "
                             f"{at - first:.3f} s after another writer started a script")
                break
    return found


def cut_short(records: Iterable[Record], dead: Iterable[int]) -> set[tuple[str, int]]:
    """(execution id, attempt) of the scripts a dead writer (a pid of `dead`) started and that
    wrote no `end` line: the executions its SIGKILL interrupted."""
    dead = set(dead)
    started = {(entry, attempt) for kind, _, entry, attempt, writer in records
               if kind == "start" and writer in dead}
    ended = {(entry, attempt) for kind, _, entry, attempt, _ in records if kind == "end"}
    return started - ended


def shared_file(directory: Path, name: str) -> Path:
    """An empty file every user may append to, in `directory` (scripts run as the
    unprivileged script user when the harness runs as root, and may not write into the
    scripts directory)."""
    directory.mkdir(parents=True, exist_ok=True)
    reachable(directory)
    path = directory / name
    path.touch()
    path.chmod(0o666)
    return path


class FailoverRig(Rig):
    """A site, its broker and `count` instances of `att-jm serve` on one PostgreSQL store
    (`store_url`). The first one started becomes active; the others are standbys."""

    def __init__(self, root: Path, *, store_url: str, count: int = 2,
                 takeover_seconds: float = 10.0, name: str = "failover",
                 urls: Mapping[int, str] | None = None) -> None:
        """`urls`: instance number -> the store URL it uses instead (e.g. through a proxy)."""
        super().__init__(root, name=name)
        self.store_url = store_url
        self.store = store_url  # type: ignore[assignment]  # what Audit.read takes
        self.takeover_seconds = takeover_seconds
        self.records = shared_file(root / "records", "runs.log")
        base = self.service
        self.instances = [
            InstanceProcess(
                self.broker, store_url=(urls or {}).get(n, store_url),
                instance=f"jm-{chr(ord('a') + n)}",
                takeover_seconds=takeover_seconds, scripts_dir=self.scripts_dir,
                log_path=root / f"att-jm-{chr(ord('a') + n)}.log", client_id=SERVICE_USER,
                mqtt_url=base.mqtt_url, watch_url=base.watch_url,
                extra_args=base.extra_args, env=base.env,
            )
            for n in range(count)
        ]
        self.service = self.instances[0]
        #: Fail-over times measured by `kill_active` (seconds).
        self.takeovers: list[float] = []
        #: Writer pid -> when it was SIGKILLed (wall clock).
        self.deaths: dict[int, float] = {}

    def start(self) -> FailoverRig:
        self.broker.start()
        first, *others = self.instances
        self._start(first)
        self.wait_active(first, 60)
        for instance in others:
            self._start(instance)
        return self

    def _start(self, instance: InstanceProcess) -> None:
        try:
            instance.start(timeout=60)
        except HelperFailure as error:
            raise ChaosError(str(error)) from None

    def status(self) -> dict[str, Any]:
        """The service's retained status (the active instance's)."""
        return dict(self.operator.retained(self.service.status_topic, timeout=10))

    def wait_active(self, instance: InstanceProcess, timeout: float) -> None:
        """Until the service's status is `online` from `instance` (retained or live)."""
        with TestClient(self.url("auditor")) as watcher:
            status = watcher.subscribe(self.service.status_topic)
            try:
                status.wait_for(lambda m: _online_of(m.payload, instance.pid), timeout)
            except AssertionError:
                raise ChaosError(f"{instance.instance} was not active within {timeout} s") \
                    from None

    def active(self) -> InstanceProcess:
        status = self.status()
        for instance in self.instances:
            if instance.running and status.get("state") == "online" \
                    and status.get("pid") == instance.pid:
                self.service = instance
                return instance
        raise ChaosError(f"no running instance is active: {status}")

    def kill_active(self, how: str, rng: random.Random, figures: Figures,
                    timeout: float = 60.0) -> float:
        """SIGKILL the active instance (`execution`: while its script runs; else at random),
        wait until another one is active, restart the killed one as a standby; the fail-over
        time (the SIGKILL to the new one's `online` status on the broker)."""
        victim = self.active()
        pid = victim.pid
        assert pid is not None
        hit = "random"
        if how == "execution":
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                if [child for child in children_of(pid) if child not in self._relays(pid)]:
                    hit = "execution"
                    break
                time.sleep(0.005)
        else:
            time.sleep(rng.uniform(0.0, 0.5))
        with TestClient(self.url("auditor")) as watcher:
            status = watcher.subscribe(self.service.status_topic)
            killed_at = time.monotonic()
            self.deaths[pid] = time.time()
            os.kill(pid, signal.SIGKILL)
            victim.kill()  # reap
            try:
                message = status.wait_for(lambda m: _online_of(m.payload, pid, other=True),
                                         timeout)
            except AssertionError:
                raise ChaosError(f"no instance took over within {timeout} s") from None
            took = time.monotonic() - killed_at
        new = orjson.loads(message.payload)
        figures.extra[f"kills_{hit}"] = figures.extra.get(f"kills_{hit}", 0) + 1
        self.takeovers.append(took)
        say(f"SIGKILL {victim.instance} ({hit}): {new.get('instance')} active after "
            f"{took:.2f} s (epoch {new.get('epoch')})")
        self._start(victim)  # back as a standby
        self.restarts += 1
        return took

    @staticmethod
    def _relays(pid: int) -> set[int]:
        """The relay of writer `pid` (a child that is not a script)."""
        found = set()
        for child in children_of(pid):
            with contextlib.suppress(OSError):
                if b"att_jm.relay" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.add(child)
        return found

    def stop_service(self) -> int:
        """SIGTERM the standbys, then the active instance (each must exit 0)."""
        active = self.active()
        try:
            for instance in [i for i in self.instances if i is not active] + [active]:
                if instance.running:
                    instance.stop(timeout=30)
        except HelperFailure as error:
            raise ChaosError(str(error)) from None
        return 0

    def close(self) -> None:
        for instance in self.instances:
            instance.kill()
        super().close()


def _online_of(payload: bytes, pid: int | None, *, other: bool = False) -> bool:
    """Whether `payload` is an `online` status of `pid` (of another pid, with `other`)."""
    try:
        status = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return False
    return isinstance(status, dict) and status.get("state") == "online" \
        and (status.get("pid") != pid if other else status.get("pid") == pid)
