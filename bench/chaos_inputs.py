"""Generated bad input for the chaos harness, each message with the outcome the contract
promises (the error code of the reply, or of the recorded rejection, ...).

- `generate`: malformed notifications and commands (bad JSON, wrong types, huge, too deep,
  invalid UTF-8, unknown commands and ids, bad templates).
- `hostile`: well-formed hostile ones, in classes: numbers at the edges of every range and at
  the extremes of JSON, 60 kB strings in every string argument, deep-but-valid and over-deep
  nesting, job.add at and past every cap, views.get paging and single rows, oversized
  CorrelationData, 60 kB topic levels, template amplification, Commands with a NUL, reused
  notification ids (`conflict_copies`), events that grow past their cap
  (`grows_past_event_cap`). Valid ones are among them, with the result they must give.

The scenario runs against a site set up as `./run.sh` sets it up: an operator may publish
commands only under its own name (the broker's ACL), and a user name has 1 to 64 characters.
So a command under an actor level that is not its sender's name (empty, 200 characters and
more, another user's) stops at the broker, refused `Not authorized` (expected `DENIED`), and
the longest actor that reaches the service is a 64-character user name (`LONGEST_USER`, a
site user the scenario adds); the service's own checks of the actor level (empty, over 200
characters) are behind the broker now and are not reached from here.

Seeded: the same seed gives the same messages. No outcome depends on the order the service
handles them in, except where a group is sent in order (a valid interval of a day, then its
reset), or the scenario sends them after the storm (reused ids, the job cap).
"""

from __future__ import annotations

import math
import random
import re
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

LIMIT = 256 * 1024  # the service's default ATT_JM_MAX_PAYLOAD_BYTES
KNOWN_JOB = "bad-input-known"  # a job the scenario adds before the storm (for `conflict`)


@dataclass(frozen=True)
class Bad:
    """One generated message: where it goes, what it holds, what must come of it."""

    kind: str  # "notification" or "command"
    name: str  # the trigger, or the command name
    payload: bytes
    code: str  # the expected error code
    label: str  # the generator that made it (shown when the outcome differs)
    actor: str = "chaos"


def _word(rng: random.Random, size: int = 8) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=size))


def _nested(depth: int, leaf: bytes = b"1") -> bytes:
    return b"[" * depth + leaf + b"]" * depth


def _huge(rng: random.Random) -> bytes:
    return orjson.dumps({"id": _word(rng), "blob": "x" * (LIMIT + rng.randint(1, 4096))})


# --- notifications: every one is rejected and recorded with `code` ----------------------


def _n_not_json(rng: random.Random) -> bytes:
    return rng.choice([
        _word(rng, rng.randint(1, 40)).encode(),
        b"{" + _word(rng).encode(),
        b'{"id": "' + _word(rng).encode(),
        b'{"id": "x",}',
        b"{'id': 'single-quotes'}",
        b'{"id": "x"} trailing',
        b'{"id": "x", "n": NaN}',
        b"\xef\xbb\xbf" + orjson.dumps({"id": _word(rng)}),
        b"",
        bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 64))) + b"\x00{",
    ])


def _n_not_object(rng: random.Random) -> bytes:
    return rng.choice([b"[1, 2]", b'"text"', b"42", b"null", b"true", b"[]",
                       orjson.dumps([{"id": _word(rng)}])])


def _n_bad_id(rng: random.Random) -> bytes:
    return orjson.dumps({"id": rng.choice([
        None, 7, 1.5, True, [], {}, [_word(rng)], {"id": _word(rng)}, "",
        "x" * rng.randint(201, 600),
    ]), "run": True})


def _n_no_id(rng: random.Random) -> bytes:
    return orjson.dumps({rng.choice(["ID", "Id", "identifier", "_id"]): _word(rng), "run": True})


def _n_bad_utf8(rng: random.Random) -> bytes:
    return rng.choice([
        b'{"id": "' + _word(rng).encode() + b'\xff\xfe"}',
        b'{"id": "ok-' + _word(rng).encode() + b'", "v": "\xc3\x28"}',
        b'{"id": "\\ud800' + _word(rng).encode() + b'"}',
        b'{"id": "' + _word(rng).encode() + b'", "v": "\xed\xa0\x80"}',
    ])


def _n_deep(rng: random.Random) -> bytes:
    depth = rng.choice([rng.randint(300, 1000), rng.randint(1030, 5000)])
    return b'{"id": "deep-' + _word(rng).encode() + b'", "run": true, "v": ' + _nested(depth) + b"}"


NOTIFICATIONS: list[tuple[str, Callable[[random.Random], bytes], str, int]] = [
    # label, generator, code, weight
    ("not-json", _n_not_json, "invalid", 20),
    ("not-object", _n_not_object, "invalid", 8),
    ("bad-id", _n_bad_id, "invalid", 20),
    ("no-id", _n_no_id, "invalid", 8),
    ("bad-utf8", _n_bad_utf8, "invalid", 15),
    ("deep", _n_deep, "invalid", 6),
    ("huge", _huge, "too_large", 1),
]


# --- commands: every one gets an error reply with `code` -------------------------------


def _c_not_json(rng: random.Random) -> tuple[str, bytes]:
    return rng.choice(["job.add", "settings.set", "queue.remove"]), _n_not_json(rng) or b"{"


def _c_not_object(rng: random.Random) -> tuple[str, bytes]:
    return rng.choice(["job.add", "views.get", "cleanup.run"]), _n_not_object(rng)


def _c_bad_utf8(rng: random.Random) -> tuple[str, bytes]:
    return "job.add", b'{"name": "' + _word(rng).encode() + b'\xff", "script": "ok"}'


def _job(rng: random.Random, **fields: object) -> bytes:
    base: dict[str, object] = {"name": f"bad-{_word(rng)}", "script": "chaos-run",
                               "trigger": "bad-input"}
    base.update(fields)
    return orjson.dumps({key: value for key, value in base.items() if value is not ...})


def _c_job_add_invalid(rng: random.Random) -> tuple[str, bytes]:
    choice = rng.randrange(11)
    if choice == 0:
        payload = _job(rng, name=rng.choice([7, None, "", "bad name!", "x" * 65, "a/b", "ü"]))
    elif choice == 1:
        payload = _job(rng, script=rng.choice([
            "../chaos-run", "../../etc/passwd", "/bin/sh", "./../x", "nope-" + _word(rng), "",
            "sub/../../chaos-run", 5, None, "chaos-run\x00", ".",
        ]))
    elif choice == 2:
        payload = _job(rng, trigger=rng.choice(["a/b", "+", "#", "", 3, None]))
    elif choice == 3:
        payload = _job(rng, timeout_seconds=rng.choice(["9", -1, 0, None, True, 1e12, [1]]))
    elif choice == 4:
        payload = _job(rng, enabled=rng.choice(["yes", 1, None, [True]]))
    elif choice == 5:
        payload = _job(rng, match=rng.choice([[], "x", 5, {"": 1}, {"k" * 201: 1}]))
    elif choice == 6:
        payload = _job(rng, command=rng.choice(["{a", "}", "{{a}", "{a}}", 5, ["x"],
                                                 "x" * (64 * 1024 + 1)]))
    elif choice == 7:  # a match too deeply nested to be stored (orjson writes <= 254 levels)
        payload = (_job(rng)[:-1] + b', "match": {"deep": '
                   + _nested(rng.randint(300, 900)) + b"}}")
    elif choice == 8:
        payload = _job(rng, **{_word(rng): 1})
    elif choice == 9:
        payload = _job(rng, name=...)
    else:
        payload = _job(rng, script=...)
    return "job.add", payload


def _c_settings_invalid(rng: random.Random) -> tuple[str, bytes]:
    return "settings.set", orjson.dumps(rng.choice([
        {"interval_seconds": rng.choice([-1, "5", None, [], True])},
        {"executed_cleanup": {"max_rows": rng.choice([0, 10001, "1", 1.5])}},
        {"failed_cleanup": {"max_rows": None, "max_age_days": None}},
        {"failed_cleanup": {"every_seconds": rng.choice([0, -5, "x"])}},
        {"executed_cleanup": "weekly"},
        {"nonsense": 1},
        {},
    ]))


def _c_table_or_view(rng: random.Random) -> tuple[str, bytes]:
    if rng.random() < 0.5:
        return "cleanup.run", orjson.dumps({"table": rng.choice(["jobs", "", 1, None, "ALL"])})
    return "views.get", orjson.dumps({"view": rng.choice(["nothing", "", 2, None, "Jobs"])})


def _c_entry_invalid(rng: random.Random) -> tuple[str, bytes]:
    name = rng.choice(["queue.remove", "queue.execute-now", "executed.remove", "failed.execute",
                       "failed.delete"])
    return name, orjson.dumps(rng.choice([{}, {"id": 5}, {"id": None}, {"id": ""},
                                          {"id": str(uuid.uuid4()), "extra": 1}]))


def _c_entry_not_found(rng: random.Random) -> tuple[str, bytes]:
    name = rng.choice(["queue.remove", "queue.execute-now", "executed.remove", "failed.execute",
                       "failed.delete"])
    return name, orjson.dumps({"id": rng.choice([str(uuid.uuid4()), _word(rng), "../x"])})


def _c_job_not_found(rng: random.Random) -> tuple[str, bytes]:
    name = f"ghost-{_word(rng)}"
    if rng.random() < 0.5:
        return "job.remove", orjson.dumps({"name": name})
    return "job.update", orjson.dumps({"name": name, "enabled": False})


def _c_unknown(rng: random.Random) -> tuple[str, bytes]:
    return rng.choice(["job.delete", "JOB.ADD", "queue.flush", _word(rng), "views", "x.y.z",
                       "job.add ", "failed.execute-now"]), b"{}"


def _c_conflict(rng: random.Random) -> tuple[str, bytes]:
    return "job.add", orjson.dumps({"name": KNOWN_JOB, "script": "chaos-run", "trigger": "t"})


def _c_huge(rng: random.Random) -> tuple[str, bytes]:
    return rng.choice(["job.add", "views.get", "no.such"]), _huge(rng)


COMMANDS: list[tuple[str, Callable[[random.Random], tuple[str, bytes]], str, int]] = [
    ("not-json", _c_not_json, "invalid", 10),
    ("not-object", _c_not_object, "invalid", 5),
    ("bad-utf8", _c_bad_utf8, "invalid", 5),
    ("job.add-invalid", _c_job_add_invalid, "invalid", 25),
    ("settings-invalid", _c_settings_invalid, "invalid", 8),
    ("table-or-view", _c_table_or_view, "invalid", 5),
    ("entry-invalid", _c_entry_invalid, "invalid", 5),
    ("entry-not-found", _c_entry_not_found, "not_found", 10),
    ("job-not-found", _c_job_not_found, "not_found", 6),
    ("unknown", _c_unknown, "unknown_command", 5),
    ("conflict", _c_conflict, "conflict", 3),
    ("huge", _c_huge, "too_large", 1),
]


def generate(rng: random.Random, count: int) -> list[Bad]:
    """`count` bad messages, about half notifications and half commands, shuffled."""
    out: list[Bad] = []
    n_weights = [weight for *_, weight in NOTIFICATIONS]
    c_weights = [weight for *_, weight in COMMANDS]
    for _ in range(count):
        if rng.random() < 0.5:
            label, make, code, _ = rng.choices(NOTIFICATIONS, n_weights)[0]
            trigger = rng.choice(["bad-input", "other", "t"])
            out.append(Bad("notification", trigger, make(rng), code, label))
        else:
            label, make_command, code, _ = rng.choices(COMMANDS, c_weights)[0]
            name, payload = make_command(rng)
            out.append(Bad("command", name, payload, code, label))
    return out


# --- well-formed hostile input: every value at its extremes, each with its outcome ----------
#
# Unlike the malformed messages above, each of these is well-formed JSON on a well-formed
# topic, and many are valid. The ranges and caps are the contract's (docs/contract.md,
# docs/asyncapi.yaml, and the ranges table of issue 10), written out here rather than
# imported from att_jm.domain.limits: the harness checks the contract, not whatever the code
# says today.

INTERVAL_SECONDS = (0.0, 86_400.0)
MAX_ROWS = (1, 10_000)
MAX_AGE_DAYS = (0.00001, 3_650.0)
EVERY_SECONDS = (1.0, 2_592_000.0)
TIMEOUT_SECONDS = (0.1, 604_800.0)
VIEW_OFFSET = (0, 1_000_000_000)
VIEW_LIMIT = (1, 10_000)
MATCH_FIELDS = 32
MATCH_NAME_CHARS = 200
MATCH_VALUE_BYTES = 1024  # each match value, as compact JSON
TEMPLATE_BYTES = 16_384  # UTF-8
PLACEHOLDERS = 256
SCRIPT_BYTES = 255  # UTF-8
TRIGGER_CHARS = 200
ACTOR_CHARS = 200
ENTRY_ID_CHARS = 200
NOTIFICATION_ID_CHARS = 200
NAME_CHARS = 64
USER_CHARS = 64  # a site user's name: [A-Za-z0-9_-]{1,64}
MAX_JOBS = 1000
CORRELATION_BYTES = 256
COMMAND_BYTES = 128_000  # a filled Command, UTF-8
JSON_DEPTH = 64  # objects and arrays, the payload itself counted
EVENT_BYTES = 2 * 1024 * 1024
REPLY_BYTES = 2048  # "an error reply stays under ~2 kB"
BIG = 60_000  # "60 kB strings"
AMP_FIELD = 250_000  # the field a 256-placeholder template multiplies

# The jobs the scenario adds before the storm for these classes (the interval is 0).
AMP_TRIGGER = "hostile-amp"
NUL_TRIGGER = "hostile-nul"
IDLE_TRIGGER = "hostile-idle"  # jobs added by valid hostile commands: never notified
NONE_TRIGGER = "hostile-none"  # no job at all
EDGE_TRIGGER = "e" * TRIGGER_CHARS  # the longest trigger a job may have
#: A site user (role operator) the scenario adds: the longest actor level a site lets through.
LONGEST_USER = "o" * USER_CHARS
#: The user a forged actor level names (a site's own operator: `att-jm setup` makes it).
OTHER_OPERATOR = "operator"
#: `Hostile.expect` of a command the broker must refuse (`Not authorized`) before the service.
DENIED = "denied"
RUN_JOB = "bad-input-run"  # the scenario's job on trigger "bad-input", match {"run": true}
IDLE_JOB = "hx-idle"
HOSTILE_JOBS: list[dict[str, Any]] = [
    # 256 placeholders of one field: a 250 kB field would make a 64 MB Command
    {"name": "hx-amp", "script": "chaos-run", "trigger": AMP_TRIGGER,
     "command": "{f}" * PLACEHOLDERS},
    {"name": "hx-amp-plain", "script": "chaos-run", "trigger": AMP_TRIGGER, "command": "0"},
    {"name": "hx-whole", "script": "chaos-run", "trigger": AMP_TRIGGER},  # Command = payload
    {"name": "hx-nul", "script": "chaos-run", "trigger": NUL_TRIGGER, "command": "{f}"},
    {"name": "hx-nul-plain", "script": "chaos-run", "trigger": NUL_TRIGGER, "command": "0"},
    {"name": "hx-edge", "script": "chaos-run", "trigger": EDGE_TRIGGER, "command": "0"},
    {"name": IDLE_JOB, "script": "chaos-run", "trigger": IDLE_TRIGGER, "command": "0"},
]
#: The reason fragments a skip must carry.
OVER_CAP = f"over {COMMAND_BYTES} bytes"
NUL_REASON = "NUL"
#: The settings the scenario restores after the storm (the defaults, interval 0).
DEFAULT_SETTINGS: dict[str, Any] = {
    "interval_seconds": 0,
    "executed_cleanup": {"max_rows": 1000, "max_age_days": 7, "every_seconds": 3600},
    "failed_cleanup": {"max_rows": 1000, "max_age_days": 7, "every_seconds": 3600},
}
#: The key of a hostile message in the log: the first `"hx-N"` of a record's payload excerpt
#: (a notification's id, or a marker in a command's arguments).
KEY_RE = re.compile(r'"(hx-\d+)"')


@dataclass(frozen=True)
class Hostile:
    """One well-formed hostile message and everything that must come of it.

    `expect`: for a command, "ok", the reply's error code, or DENIED (the broker refuses
    it: no reply, no trace in the log); for a notification, "logged"
    (stored once, `enqueued` jobs run, `skipped` jobs recorded with a reason containing the
    fragment), "silent" (a redelivery: no trace) or the code of the Rejection recorded.
    """

    cls: str  # the class, for the figures
    label: str  # what it is, shown when its outcome differs
    kind: str  # "notification" or "command"
    name: str  # the topic level: the trigger, or the command name
    payload: bytes
    expect: str
    key: str = ""  # the hx-N the log finds it by (see KEY_RE); "" for a command recorded
    actor: str = "chaos"
    correlation: bytes | None = None  # None: a fresh 16-byte one
    copies: int = 1  # published this many times in a row (same CorrelationData)
    enqueued: tuple[str, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()  # (job, fragment of the reason)
    result: tuple[tuple[str, Any], ...] = ()  # (dotted path in the reply's result, value)


class Keys:
    """hx-0, hx-1, ...: unique keys for one scenario."""

    def __init__(self) -> None:
        self._next = 0

    def __call__(self) -> str:
        key = f"hx-{self._next}"
        self._next += 1
        return key


_N = b'"@N@"'  # where a number literal goes in a payload


def _with_number(args: dict[str, Any], literal: bytes) -> bytes:
    """`args` as JSON with the string "@N@" replaced by the raw number `literal` (JSON can
    hold numbers orjson cannot write: 1e400, 2**64, 10**40)."""
    return orjson.dumps(args).replace(_N, literal)


def _literal(value: float) -> bytes:
    return orjson.dumps(value)


#: Numbers outside every range here (1e400 is not even a double: not JSON for orjson).
OUT_OF_EVERY_RANGE: list[bytes] = [
    b"1e308", b"-1e308", b"1.7976931348623157e308", b"1e12", b"-1e12", b"1e400", b"-1e400",
    b"9223372036854775808", b"18446744073709551616", b"-9223372036854775809",
    b"1" + b"0" * 40, b"-" + b"9" * 40,
]


@dataclass(frozen=True)
class _Numeric:
    """One numeric argument: how to make its command, its range, integer or not."""

    label: str
    name: str  # the command
    args: Callable[[str], dict[str, Any]]  # key -> the arguments, "@N@" where the number goes
    low: float
    high: float
    integer: bool
    path: str | None  # where the reply's result shows the value taken (None: not shown)


def _cleanup_args(policy: str, field_: str) -> Callable[[str], dict[str, Any]]:
    return lambda key: {policy: {field_: "@N@"}}


def _numerics(rng: random.Random) -> list[_Numeric]:
    table = rng.choice(["executed", "failed"])
    view = rng.choice(["jobs", "queue", "executed", "failed"])
    out = [
        _Numeric("settings.set interval_seconds", "settings.set",
                 lambda key: {"interval_seconds": "@N@"}, *INTERVAL_SECONDS, False,
                 "interval_seconds"),
        _Numeric("job.add timeout_seconds", "job.add",
                 lambda key: {"name": key, "script": "chaos-run", "trigger": IDLE_TRIGGER,
                              "timeout_seconds": "@N@"}, *TIMEOUT_SECONDS, False,
                 "timeout_seconds"),
        _Numeric("job.update timeout_seconds", "job.update",
                 lambda key: {"name": IDLE_JOB, "timeout_seconds": "@N@"}, *TIMEOUT_SECONDS,
                 False, "timeout_seconds"),
        _Numeric("views.get offset", "views.get", lambda key: {"view": view, "offset": "@N@"},
                 *VIEW_OFFSET, True, None),
        _Numeric("views.get limit", "views.get", lambda key: {"view": view, "limit": "@N@"},
                 *VIEW_LIMIT, True, None),
    ]
    for field_, (low, high), integer in (("max_rows", MAX_ROWS, True),
                                         ("max_age_days", MAX_AGE_DAYS, False),
                                         ("every_seconds", EVERY_SECONDS, False)):
        out.append(_Numeric(
            f"settings.set {table}_cleanup.{field_}", "settings.set",
            _cleanup_args(f"{table}_cleanup", field_), low, high, integer,
            f"{table}_cleanup.{field_}",
        ))
    return out


def _numbers(rng: random.Random, key: Callable[[], str]) -> list[list[Hostile]]:
    """Every numeric argument at its edges, just outside them and at the extremes of JSON."""
    groups: list[list[Hostile]] = []

    def add(spec: _Numeric, literal: bytes, value: float | None, what: str) -> None:
        valid = value is not None and spec.low <= value <= spec.high and (
            not spec.integer or (float(value).is_integer() and not isinstance(value, float)))
        result: tuple[tuple[str, Any], ...] = ()
        if valid and spec.path is not None:
            result = ((spec.path, value),)
        if valid and spec.label == "views.get offset" and value == spec.high:
            result = (("rows", []),)
        item = Hostile("numbers", f"{spec.label} = {what}", "command", spec.name,
                       _with_number(spec.args(key()), literal), "ok" if valid else "invalid",
                       result=result)
        group = [item]
        if valid and spec.path == "interval_seconds" and value:  # keep the queue moving
            group.append(Hostile("numbers", "settings.set interval_seconds = 0 (reset)",
                                 "command", "settings.set", b'{"interval_seconds": 0}', "ok",
                                 result=(("interval_seconds", 0),)))
        groups.append(group)

    for spec in _numerics(rng):
        low, high = spec.low, spec.high
        if spec.integer:
            edges: list[float] = [int(low), int(high), int(low) - 1, int(high) + 1]
            edges.append(low + 0.5)  # not an integer
        else:
            edges = [low, high, math.nextafter(low, math.inf), math.nextafter(high, -math.inf),
                     math.nextafter(low, -math.inf), math.nextafter(high, math.inf),
                     low - 1, high + 1, -0.0]  # nextafter(0, inf): 5e-324
        for value in edges:
            add(spec, _literal(value), value, repr(value))
        for literal in OUT_OF_EVERY_RANGE:
            add(spec, literal, None, literal.decode()[:24])
    # null where the contract allows it (with the other limit set in the same message)
    table = rng.choice(["executed", "failed"])
    for args, what in (({"max_rows": None, "max_age_days": 7}, "max_rows null"),
                       ({"max_rows": 1000, "max_age_days": None}, "max_age_days null")):
        groups.append([Hostile("numbers", f"settings.set {table}_cleanup {what}", "command",
                               "settings.set", orjson.dumps({f"{table}_cleanup": args}), "ok")])
    # numbers at the extremes inside a notification: stored as they are, its job runs; one
    # beyond a double (1e400, which no JSON reader here can hold) is refused
    nid = key()
    extremes = b",".join(b'"n%d":%s' % (n, literal) for n, literal in enumerate(
        [b"1e308", b"-1e308", b"-0.0", b"5e-324", b"18446744073709551616", b"9" * 40]))
    groups.append([Hostile("numbers", "notification with numbers at the extremes (runs its job)",
                           "notification", "bad-input",
                           orjson.dumps({"id": nid, "run": True})[:-1] + b"," + extremes + b"}",
                           "logged", key=nid, enqueued=(RUN_JOB,))])
    nid = key()
    groups.append([Hostile("numbers", "notification with a number beyond a double (1e400)",
                           "notification", "bad-input",
                           orjson.dumps({"id": nid, "run": True})[:-1] + b',"n":1e400}',
                           "invalid", key=nid)])
    # the exact message that once killed the writer for good
    groups.append([Hostile("numbers", "settings.set executed_cleanup.every_seconds = 1e12 "
                           "(the issue-10 example)", "command", "settings.set",
                           b'{"executed_cleanup": {"every_seconds": 1e12}}', "invalid")])
    return groups


def _big(rng: random.Random) -> str:
    """A string of about BIG bytes (UTF-8): ASCII, 2-byte or 4-byte characters."""
    return rng.choice(["x" * BIG, "\u00e9" * (BIG // 2), "\U0001f600" * (BIG // 4)])


def _strings(rng: random.Random, key: Callable[[], str]) -> list[list[Hostile]]:
    """A 60 kB string in every string argument (and as a key, and as a notification's id)."""
    out: list[list[Hostile]] = []

    def cmd(label: str, name: str, args: dict[str, Any], expect: str = "invalid") -> None:
        out.append([Hostile("strings", label, "command", name, orjson.dumps(args), expect)])

    job = {"name": key(), "script": "chaos-run", "trigger": IDLE_TRIGGER}
    for field_ in ("name", "script", "trigger", "command", "enabled", "timeout_seconds"):
        cmd(f"job.add {field_} of 60 kB", "job.add", {**job, field_: _big(rng)})
    cmd("job.add match field name of 60 kB", "job.add", {**job, "match": {_big(rng): 1}})
    cmd("job.add match value of 60 kB", "job.add", {**job, "match": {"k": _big(rng)}})
    cmd("job.add unknown argument of 60 kB", "job.add", {**job, _big(rng): 1})
    for field_ in ("script", "trigger", "command", "enabled", "timeout_seconds"):
        cmd(f"job.update {field_} of 60 kB", "job.update", {"name": RUN_JOB, field_: _big(rng)})
    cmd("job.update match of 60 kB", "job.update", {"name": RUN_JOB, "match": {"k": _big(rng)}})
    cmd("job.update name of 60 kB", "job.update", {"name": _big(rng), "enabled": False})
    cmd("job.remove name of 60 kB", "job.remove", {"name": _big(rng)})
    for name in ("queue.remove", "queue.execute-now", "executed.remove", "failed.execute",
                 "failed.delete"):
        cmd(f"{name} id of 60 kB", name, {"id": _big(rng)})
    cmd("settings.set interval_seconds of 60 kB", "settings.set",
        {"interval_seconds": _big(rng)})
    cmd("settings.set executed_cleanup of 60 kB", "settings.set",
        {"executed_cleanup": _big(rng)})
    for field_ in ("max_rows", "max_age_days", "every_seconds"):
        cmd(f"settings.set failed_cleanup.{field_} of 60 kB", "settings.set",
            {"failed_cleanup": {field_: _big(rng)}})
    cmd("settings.set unknown argument of 60 kB", "settings.set", {_big(rng): 1})
    cmd("cleanup.run table of 60 kB", "cleanup.run", {"table": _big(rng)})
    cmd("views.get view of 60 kB", "views.get", {"view": _big(rng)})
    for view in ("jobs", "queue"):
        cmd(f"views.get {view} id of 60 kB", "views.get", {"view": view, "id": _big(rng)})
    for field_ in ("offset", "limit"):
        cmd(f"views.get {field_} of 60 kB", "views.get", {"view": "jobs", field_: _big(rng)})
    mark = key()
    out.append([Hostile("strings", "notification id of 60 kB", "notification", "bad-input",
                        orjson.dumps({"mark": mark, "id": _big(rng), "run": True}), "invalid",
                        key=mark)])
    nid = key()
    out.append([Hostile("strings", "notification with a 60 kB field (runs its job)",
                        "notification", "bad-input",
                        orjson.dumps({"id": nid, "run": True, "f": _big(rng)}), "logged",
                        key=nid, enqueued=(RUN_JOB,))])
    return out


def _nested_value(depth: int, rng: random.Random) -> Any:
    """`depth` levels of arrays or objects around 1."""
    value: Any = 1
    as_object = rng.random() < 0.5
    for _ in range(depth):
        value = {"a": value} if as_object else [value]
    return value


def _nested_bytes(depth: int) -> bytes:  # deeper than orjson writes (it writes <= 254)
    return b"[" * depth + b"1" + b"]" * depth


def _nesting(rng: random.Random, key: Callable[[], str]) -> list[list[Hostile]]:
    """Deep but valid (the payload and 63 levels inside it: 64 in all), and one level more."""
    out: list[list[Hostile]] = []
    for inner in (60, JSON_DEPTH - 1):
        nid = key()
        out.append([Hostile("nesting", f"notification {inner} levels deep (runs its job)",
                            "notification", "bad-input",
                            orjson.dumps({"id": nid, "run": True,
                                          "v": _nested_value(inner, rng)}),
                            "logged", key=nid, enqueued=(RUN_JOB,))])
    for inner in (JSON_DEPTH, 100, 250, 400):
        nid = key()
        payload = (orjson.dumps({"id": nid, "run": True})[:-1] + b',"v":'
                   + _nested_bytes(inner) + b"}")
        out.append([Hostile("nesting", f"notification {inner} levels deep", "notification",
                            "bad-input", payload, "invalid", key=nid)])
    # job.add: the arguments, `match` and its value: 62 levels in the value is the deepest
    for inner, expect in ((JSON_DEPTH - 2, "ok"), (JSON_DEPTH - 1, "invalid"),
                          (200, "invalid")):
        name = key()
        args = orjson.dumps({"name": name, "script": "chaos-run", "trigger": IDLE_TRIGGER})
        payload = args[:-1] + b',"match":{"deep":' + _nested_bytes(inner) + b"}}"
        out.append([Hostile("nesting", f"job.add match value {inner} levels deep", "command",
                            "job.add", payload, expect,
                            result=(("name", name),) if expect == "ok" else ())])
    out.append([Hostile("nesting", "settings.set every_seconds 70 levels deep", "command",
                        "settings.set",
                        b'{"executed_cleanup":{"every_seconds":' + _nested_bytes(70) + b"}}",
                        "invalid")])
    out.append([Hostile("nesting", "views.get limit 3 levels deep", "command", "views.get",
                        b'{"view":"jobs","limit":[[[1]]]}', "invalid")])
    return out


def _caps(rng: random.Random, key: Callable[[], str]) -> list[list[Hostile]]:
    """job.add with match, template, script, trigger and name at their caps and one past."""
    out: list[list[Hostile]] = []

    def add(label: str, expect: str, **fields: Any) -> None:
        name = fields.pop("name", None) or key()
        args = {"name": name, "script": "chaos-run", "trigger": IDLE_TRIGGER, **fields}
        out.append([Hostile("caps", label, "command", "job.add", orjson.dumps(args), expect,
                            result=(("name", name),) if expect == "ok" else ())])

    add(f"match of {MATCH_FIELDS} fields", "ok",
        match={f"f{n}": n for n in range(MATCH_FIELDS)})
    add(f"match of {MATCH_FIELDS + 1} fields", "invalid",
        match={f"f{n}": n for n in range(MATCH_FIELDS + 1)})
    add(f"match field name of {MATCH_NAME_CHARS} chars", "ok", match={"n" * MATCH_NAME_CHARS: 1})
    add(f"match field name of {MATCH_NAME_CHARS + 1} chars", "invalid",
        match={"n" * (MATCH_NAME_CHARS + 1): 1})
    add(f"match value of {MATCH_VALUE_BYTES} bytes", "ok",
        match={"k": "v" * (MATCH_VALUE_BYTES - 2)})
    add(f"match value of {MATCH_VALUE_BYTES + 1} bytes", "invalid",
        match={"k": "v" * (MATCH_VALUE_BYTES - 1)})
    add(f"match value of {MATCH_VALUE_BYTES + 2} bytes (UTF-8)", "invalid",
        match={"k": "\u00e9" * ((MATCH_VALUE_BYTES - 2) // 2 + 1)})
    add(f"template of {TEMPLATE_BYTES} bytes", "ok", command="0" * TEMPLATE_BYTES)
    add(f"template of {TEMPLATE_BYTES + 1} bytes", "invalid", command="0" * (TEMPLATE_BYTES + 1))
    add(f"template of {TEMPLATE_BYTES} bytes in 2-byte chars", "ok",
        command="\u00e9" * (TEMPLATE_BYTES // 2))
    add(f"template of {TEMPLATE_BYTES + 2} bytes in {TEMPLATE_BYTES // 2 + 1} chars", "invalid",
        command="\u00e9" * (TEMPLATE_BYTES // 2 + 1))
    add(f"template of {PLACEHOLDERS} placeholders", "ok", command="{a}" * PLACEHOLDERS)
    add(f"template of {PLACEHOLDERS + 1} placeholders", "invalid",
        command="{a}" * (PLACEHOLDERS + 1))
    add("template with a NUL", "invalid", command=rng.choice(["a\x00b", "\x00", "{a}\x00"]))
    add(f"script of {SCRIPT_BYTES + 1} bytes", "invalid", script="s" * (SCRIPT_BYTES + 1))
    add(f"script of {SCRIPT_BYTES + 1} bytes in 2-byte chars", "invalid",
        script="\u00e9" * ((SCRIPT_BYTES + 1) // 2))
    add(f"script of {SCRIPT_BYTES} bytes (no such file)", "invalid", script="s" * SCRIPT_BYTES)
    add(f"trigger of {TRIGGER_CHARS} chars", "ok",
        trigger=(_word(rng) + "u" * TRIGGER_CHARS)[:TRIGGER_CHARS])
    add(f"trigger of {TRIGGER_CHARS + 1} chars", "invalid", trigger="u" * (TRIGGER_CHARS + 1))
    name = key()
    add(f"name of {NAME_CHARS} chars", "ok", name=(name + "-" + "n" * NAME_CHARS)[:NAME_CHARS])
    return out


def _views(rng: random.Random, key: Callable[[], str]) -> list[list[Hostile]]:
    """views.get: bad `id`, `offset`, `limit` and their mixes; valid paging and single rows."""
    bad: list[tuple[str, dict[str, Any], str]] = [
        ("empty id", {"view": "queue", "id": ""}, "invalid"),
        (f"queue id of {201} chars", {"view": "queue", "id": "q" * 201}, "invalid"),
        (f"jobs id of {NAME_CHARS + 1} chars", {"view": "jobs", "id": "j" * (NAME_CHARS + 1)},
         "invalid"),
        ("jobs id not a name", {"view": "jobs", "id": "a/b"}, "invalid"),
        ("id a number", {"view": "failed", "id": 5}, "invalid"),
        ("id null", {"view": "executed", "id": None}, "invalid"),
        ("id of the settings view", {"view": "settings", "id": RUN_JOB}, "invalid"),
        ("id with offset", {"view": "jobs", "id": RUN_JOB, "offset": 0}, "invalid"),
        ("id with limit", {"view": "jobs", "id": RUN_JOB, "limit": 1}, "invalid"),
        ("offset of the settings view", {"view": "settings", "offset": 0}, "invalid"),
        ("limit of the settings view", {"view": "settings", "limit": 1}, "invalid"),
        ("offset a string", {"view": "jobs", "offset": "0"}, "invalid"),
        ("limit true", {"view": "jobs", "limit": True}, "invalid"),
        ("limit null", {"view": "queue", "limit": None}, "invalid"),
        ("unknown job id", {"view": "jobs", "id": f"ghost-{_word(rng)}"}, "not_found"),
        ("unknown queue id", {"view": "queue", "id": str(uuid.uuid4())}, "not_found"),
        ("unknown executed id", {"view": "executed", "id": _word(rng)}, "not_found"),
        ("unknown failed id", {"view": "failed", "id": "../x"}, "not_found"),
    ]
    good: list[tuple[str, dict[str, Any], tuple[tuple[str, Any], ...]]] = [
        ("one job in full", {"view": "jobs", "id": RUN_JOB}, (("row.name", RUN_JOB),)),
        ("a job at the template cap in full", {"view": "jobs", "id": "hx-amp"},
         (("row.command", "{f}" * PLACEHOLDERS),)),
        ("jobs offset 0 limit 1", {"view": "jobs", "offset": 0, "limit": 1}, (("offset", 0),)),
        ("executed limit 10000", {"view": "executed", "limit": VIEW_LIMIT[1]}, ()),
        ("queue offset 1e9", {"view": "queue", "offset": VIEW_OFFSET[1]}, (("rows", []),)),
        ("failed offset 5 limit 5", {"view": "failed", "offset": 5, "limit": 5},
         (("offset", 5),)),
        ("settings", {"view": "settings"}, ()),
    ]
    out = [[Hostile("views", f"views.get {label}", "command", "views.get", orjson.dumps(args),
                    expect)] for label, args, expect in bad]
    out += [[Hostile("views", f"views.get {label}", "command", "views.get", orjson.dumps(args),
                     "ok", result=result)] for label, args, result in good]
    return out


def _ids(rng: random.Random, key: Callable[[], str]) -> list[list[Hostile]]:
    """Ids at their cap of 200 characters and one past: an entry id (`not_found`, as no
    entry has such an id, then `invalid`) and a notification id (stored, then `invalid`)."""
    name = rng.choice(["queue.remove", "queue.execute-now", "executed.remove",
                       "failed.execute", "failed.delete"])
    out = [[Hostile("caps", f"{name} id of {size} chars", "command", name,
                    orjson.dumps({"id": "i" * size}), expect)]
           for size, expect in ((ENTRY_ID_CHARS, "not_found"), (ENTRY_ID_CHARS + 1, "invalid"))]
    nid = (key() + "0" * NOTIFICATION_ID_CHARS)[:NOTIFICATION_ID_CHARS]  # still an hx- key
    out.append([Hostile("caps", f"notification id of {NOTIFICATION_ID_CHARS} chars",
                        "notification", "bad-input", orjson.dumps({"id": nid, "run": True}),
                        "logged", key=nid, enqueued=(RUN_JOB,))])
    mark = key()
    out.append([Hostile("caps", f"notification id of {NOTIFICATION_ID_CHARS + 1} chars",
                        "notification", "bad-input",
                        orjson.dumps({"mark": mark, "id": "n" * (NOTIFICATION_ID_CHARS + 1)}),
                        "invalid", key=mark)])
    return out


def _correlations(rng: random.Random, key: Callable[[], str]) -> list[list[Hostile]]:
    """CorrelationData over its cap: `invalid`, recorded as a Rejection each time (no
    deduplication: each of the two copies gets its reply and its record); at the cap: a
    normal command, recorded once, its copy answered with the stored reply."""
    out: list[list[Hostile]] = []
    for size in (CORRELATION_BYTES + 1, 4096, BIG):
        mark = key()
        out.append([Hostile("correlation", f"CorrelationData of {size} bytes", "command",
                            "views.get", orjson.dumps({"view": "jobs", "id": mark}), "invalid",
                            key=mark, correlation=rng.randbytes(size), copies=2)])
    mark = key()
    out.append([Hostile("correlation", "CorrelationData of 300 bytes on bad JSON", "command",
                        "job.add", b'{"mark":"' + mark.encode() + b'",', "invalid", key=mark,
                        correlation=rng.randbytes(300), copies=2)])
    out.append([Hostile("correlation", f"CorrelationData of {CORRELATION_BYTES} bytes",
                        "command", "job.update",
                        orjson.dumps({"name": IDLE_JOB, "enabled": True}), "ok",
                        correlation=rng.randbytes(CORRELATION_BYTES), copies=2,
                        result=(("name", IDLE_JOB),))])
    return out


def _topics(rng: random.Random, key: Callable[[], str]) -> list[list[Hostile]]:
    """Topic levels of 60 kB (trigger, command name, actor) and at their caps."""
    out: list[list[Hostile]] = []
    level = rng.choice(["x" * BIG, "\u00e9" * (BIG // 2)])  # no '/', '+', '#' or NUL
    for trigger, expect, what in ((level, "invalid", "60 kB"),
                                  ("u" * (TRIGGER_CHARS + 1), "invalid", "201-char"),
                                  (EDGE_TRIGGER, "logged", "200-char")):
        nid = key()
        out.append([Hostile("topics", f"notification on a {what} trigger level", "notification",
                            trigger, orjson.dumps({"id": nid}), expect, key=nid,
                            enqueued=("hx-edge",) if expect == "logged" else ())])
    out.append([Hostile("topics", "command name of 60 kB", "command", level,
                        b"{}", "unknown_command")])
    # Not the sender's name: the site's ACL refuses them (see the module's docstring).
    for actor, what in ((level, "of 60 kB"), ("a" * (ACTOR_CHARS + 1), "of 201 chars"),
                        ("a" * ACTOR_CHARS, "of 200 chars"), ("", "empty"),
                        (OTHER_OPERATOR, "of another operator (forged)")):
        mark = key()
        out.append([Hostile("topics", f"actor level {what}", "command", "views.get",
                            orjson.dumps({"view": "jobs", "id": mark}), DENIED, key=mark,
                            actor=actor)])
    out.append([Hostile("topics", f"actor level of {USER_CHARS} chars (the longest user name)",
                        "command", "job.update",
                        orjson.dumps({"name": IDLE_JOB, "enabled": True}), "ok",
                        actor=LONGEST_USER, result=(("name", IDLE_JOB),))])
    return out


def _amplification(rng: random.Random, key: Callable[[], str]) -> list[list[Hostile]]:
    """A 256-placeholder template against a 250 kB field: that job is skipped with its reason,
    the other jobs of the trigger run. At exactly the cap (128,000 bytes) it runs."""
    out: list[list[Hostile]] = []
    amp = ("hx-amp", OVER_CAP)
    whole = ("hx-whole", OVER_CAP)
    fills: list[tuple[str, str, tuple[str, ...], tuple[tuple[str, str], ...]]] = [
        ("a 250 kB field", "0" * AMP_FIELD, ("hx-amp-plain",), (amp, whole)),
        ("a 250 kB field of 2-byte chars", "\u00e9" * (AMP_FIELD // 2), ("hx-amp-plain",),
         (amp, whole)),
        (f"a field making exactly {COMMAND_BYTES} bytes", "0" * (COMMAND_BYTES // PLACEHOLDERS),
         ("hx-amp", "hx-amp-plain", "hx-whole"), ()),
        (f"a field making {COMMAND_BYTES} bytes of 2-byte chars",
         "\u00e9" * (COMMAND_BYTES // PLACEHOLDERS // 2),
         ("hx-amp", "hx-amp-plain", "hx-whole"), ()),
        ("a field making one character too many", "0" * (COMMAND_BYTES // PLACEHOLDERS + 1),
         ("hx-amp-plain", "hx-whole"), (amp,)),
        ("a field of 2-byte chars: under the cap in chars, over it in bytes",
         "\u00e9" * (COMMAND_BYTES // PLACEHOLDERS // 2 + 1), ("hx-amp-plain", "hx-whole"),
         (amp,)),
    ]
    for what, field_, enqueued, skipped in fills:
        nid = key()
        out.append([Hostile("amplification", f"256 placeholders x {what}", "notification",
                            AMP_TRIGGER, orjson.dumps({"id": nid, "f": field_}), "logged",
                            key=nid, enqueued=enqueued, skipped=skipped)])
    return out


def _nul(rng: random.Random, key: Callable[[], str]) -> list[list[Hostile]]:
    """A Command that would hold a NUL: that job skipped, the other job of the trigger runs. A
    NUL inside a non-string value is written as JSON (`\\u0000`): no NUL, it runs."""
    out: list[list[Hostile]] = []
    for field_ in ("a\x00b", "\x00", "x" * 100 + "\x00"):
        nid = key()
        out.append([Hostile("nul", "a Command with a NUL", "notification", NUL_TRIGGER,
                            orjson.dumps({"id": nid, "f": field_}), "logged", key=nid,
                            enqueued=("hx-nul-plain",), skipped=(("hx-nul", NUL_REASON),))])
    nid = key()
    out.append([Hostile("nul", "a NUL inside an object field (JSON-escaped)", "notification",
                        NUL_TRIGGER, orjson.dumps({"id": nid, "f": {"x": "\x00"}}), "logged",
                        key=nid, enqueued=("hx-nul", "hx-nul-plain"))])
    return out


REUSED_LATER = "original of a reused id (runs its job)"


def _conflict_originals(rng: random.Random, key: Callable[[], str]) -> list[list[Hostile]]:
    """Notifications whose ids come again later with another payload (`conflict_copies`,
    labelled REUSED_LATER), and one whose id comes again at once."""
    out = []
    for _ in range(3):
        nid = key()
        out.append([Hostile("conflicts", REUSED_LATER,
                            "notification", "bad-input",
                            orjson.dumps({"id": nid, "run": True, "v": 1}), "logged", key=nid,
                            enqueued=(RUN_JOB,))])
    # the same back to back (most likely in one batch: the original not stored yet)
    nid = key()
    original = orjson.dumps({"id": nid, "run": True, "v": 1})
    other = orjson.dumps({"id": nid, "run": True, "v": 2})
    out.append([
        Hostile("conflicts", "original of an id reused at once (runs its job)", "notification",
                "bad-input", original, "logged", key=nid, enqueued=(RUN_JOB,)),
        Hostile("conflicts", "id reused at once, another payload", "notification", "bad-input",
                other, "conflict", key=nid),
        Hostile("conflicts", "id reused at once, that payload again", "notification",
                "bad-input", other, "silent", key=nid),
        Hostile("conflicts", "id reused at once, the original again", "notification",
                "bad-input", original, "silent", key=nid),
    ])
    return out


def conflict_copies(originals: list[Hostile]) -> list[Hostile]:
    """For each original (already stored): another payload (a conflict, recorded), the same
    other payload again (one record per distinct copy: silent), the original again and with
    its keys reordered (redeliveries: silent), the original on another trigger (a conflict)."""
    out = []
    for original in originals:
        nid = original.key
        other = orjson.dumps({"id": nid, "run": True, "v": 2})
        for label, trigger, payload, expect in (
            ("reused id, another payload", "bad-input", other, "conflict"),
            ("reused id, the same other payload again", "bad-input", other, "silent"),
            ("reused id, the original again", "bad-input", original.payload, "silent"),
            ("reused id, the original with its keys reordered", "bad-input",
             orjson.dumps({"v": 1, "run": True, "id": nid}), "silent"),
            ("reused id, the original on another trigger", "other", original.payload,
             "conflict"),
        ):
            out.append(Hostile("conflicts", label, "notification", trigger, payload, expect,
                               key=nid))
    return out


def grows_past_event_cap(key: Callable[[], str]) -> list[Hostile]:
    """For a service whose max_payload_bytes is 1 MiB: a payload under it whose event is over
    the 2 MiB cap once stored (1e5 is written back as 100000.0): `too_large`; and a 1 MB
    payload that does not grow: stored."""
    nid = key()
    grows = b'{"id":"' + nid.encode() + b'","v":[' + b",".join([b"1e5"] * 250_000) + b"]}"
    big = key()
    return [
        Hostile("event-size", "a 1 MB payload whose event would be 2.25 MB", "notification",
                "bad-input", grows, "too_large", key=nid),
        Hostile("event-size", "a 1 MB payload whose event stays under 2 MiB", "notification",
                NONE_TRIGGER, orjson.dumps({"id": big, "f": "x" * 1_000_000}), "logged",
                key=big),
    ]


#: The classes, in the order the figures list them.
CLASSES = ("numbers", "strings", "nesting", "caps", "views", "correlation", "topics",
           "amplification", "nul", "conflicts", "job-limit", "event-size", "restart")

HOSTILE_CLASSES: list[Callable[[random.Random, Callable[[], str]], list[list[Hostile]]]] = [
    _numbers, _strings, _nesting, _caps, _ids, _views, _correlations, _topics, _amplification, _nul,
    _conflict_originals,
]


def hostile(rng: random.Random, rounds: int, key: Callable[[], str]) -> list[list[Hostile]]:
    """`rounds` times every class: groups of messages, each group to be sent in order."""
    return [group for _ in range(rounds) for make in HOSTILE_CLASSES for group in make(rng, key)]
