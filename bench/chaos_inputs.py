"""Generated bad input for the chaos harness: malformed notifications and commands, each with
the outcome the contract promises (the error code of the reply, or of the recorded rejection).

Seeded: the same seed gives the same messages. No message depends on the service's state
except `not_found` ids (random, so never known) and `conflict` (a job the scenario added).
"""

from __future__ import annotations

import random
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass

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
