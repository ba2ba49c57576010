"""Snapshots give back what was stored: a user's JSON that looks like one of the library's
typed values (`{"_type_": ..., "_data_": ...}`: a job's `match`, a notification's payload, a
command's reply) is not decoded, only the fields the code itself sets to datetimes are; and
snapshots written before this rule decode to the values they always did."""

from __future__ import annotations

import ast
import inspect
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Mapper, StoredEvent

from att_jm.domain import executions, jobs, notifications, scheduler, seals
from att_jm.domain.commands import JobSpec
from att_jm.domain.executions import Execution
from att_jm.domain.ids import execution_id
from att_jm.domain.jobs import Job
from att_jm.domain.notifications import CommandRecord, Notification, Rejection
from att_jm.domain.scheduler import Scheduler
from att_jm.domain.seals import Ledger
from att_jm.log import transcoder
from att_jm.log.codec import StateCodec
from att_jm.log.transcoder import OrjsonTranscoder
from att_jm.store.app import PlainWritingMapper

AT = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
DOMAIN = Path(jobs.__file__).parent
MODULES = (jobs, executions, scheduler, seals, notifications)

#: JSON an operator may give as a job's `match` (or send in a notification) that looks like a
#: typed value: bad and good data, one that would decode "fine" to another type, an unknown type.
LOOKALIKES = {
    "uuid_hex-bad": {"_type_": "uuid_hex", "_data_": "x"},
    "uuid_hex-good": {"_type_": "uuid_hex", "_data_": "0b7c4c1e7d1e5a368f0e2f1f9c0f0a11"},
    "datetime_iso": {"_type_": "datetime_iso", "_data_": "2020-01-01"},
    "decimal_str": {"_type_": "decimal_str", "_data_": "1.5"},
    "unknown": {"_type_": "no_such_type", "_data_": [1, {"a": None}]},
}


def at(seconds: float) -> datetime:
    return AT + timedelta(seconds=seconds)


def mappers() -> dict[str, Mapper[UUID]]:
    """The service's mappers: plain (states stored as their JSON) and compact."""
    return {
        "plain": PlainWritingMapper(transcoder=OrjsonTranscoder()),
        "compact": Mapper(transcoder=OrjsonTranscoder(), compressor=StateCodec()),
    }


def reloaded(aggregate: Any, mapper: Mapper[UUID]) -> Any:
    """`aggregate` snapshotted (as archival does: `Snapshot.take`), stored and loaded back."""
    stored = mapper.to_stored_event(type(aggregate).Snapshot.take(aggregate))
    snapshot: Any = mapper.to_domain_event(stored)
    return snapshot.mutate(None)


def state_of(aggregate: Any) -> dict[str, Any]:
    state = dict(vars(aggregate))
    state.pop("_pending_events", None)
    return state


def datetimes(aggregate: Any) -> set[str]:
    return {key for key, value in vars(aggregate).items() if isinstance(value, datetime)}


def decode_as_before(data: bytes) -> Any:
    """The decoding of the transcoder before this fix (every typed-looking dict in a
    snapshot's `state` decoded): what snapshots written until now loaded as."""
    state = orjson.loads(data)
    if type(state) is not dict:
        return state

    def value_of(value: Any) -> Any:
        if type(value) is dict and len(value) == 2 and "_type_" in value and "_data_" in value:
            kind = value["_type_"]
            if kind == "datetime_iso":
                return datetime.fromisoformat(value["_data_"])
            if kind == "uuid_hex":
                return UUID(value["_data_"])
            if kind == "decimal_str":
                return Decimal(value["_data_"])
        return value

    if type(state.get("timestamp")) is dict:
        state["timestamp"] = value_of(state["timestamp"])
    inner = state.get("state")
    if type(inner) is dict:
        for key, value in inner.items():
            if type(value) is dict:
                inner[key] = value_of(value)
    return state


# Every aggregate of the domain, in the states it reaches ----------------------------------


def job(match: Any = None) -> Job:
    """A job added, updated, removed and added again (created_at / updated_at moved)."""
    added = Job.add(JobSpec(name="backup", script="backup.sh", trigger="alarm",
                            match={"site": "paris"}, command="run {site}",
                            retry={"max_attempts": 3, "delay_seconds": 1.0, "backoff": 2.0}),
                    "alice", AT)
    added.update({"enabled": False, "match": {"x": [1, {"y": None}]}}, "bob", at(1))
    added.remove("bob", at(2))
    added.readd(JobSpec(name="backup", script="report.sh", trigger="alarm", match=match),
                "carol", at(3))
    added.collect_events()
    return added


def execution() -> Execution:
    """An entry that failed once (retried), was started again and succeeded."""
    entry = Execution.enqueue(
        execution_id("n-1", "backup"), "backup", "backup.sh", '{"id":"n-1"}', "alarm", "n-1",
        300.0, "channel-manager", AT, retry={"max_attempts": 2, "delay_seconds": 5.0,
                                             "backoff": 1.0})
    entry.start(at(1))
    assert entry.fail("boom", 1, 1.0, at(2))  # queued again, not before at(7)
    entry.start(at(8))
    entry.succeed("done", 0, 1.0, at(9))
    entry.collect_events()
    return entry


def a_scheduler() -> Scheduler:
    """Settings changed (with archival), a run dispatched and released, a cleanup recorded."""
    singleton = Scheduler.create(AT)
    singleton.change_settings(2.0, {"max_rows": 10}, None, "alice", at(1),
                              archive={"max_age_days": 30.0, "every_seconds": 600.0})
    singleton.dispatch("e-1", False, at(2))
    singleton.release("e-1", at(3))
    singleton.record_cleanup("executed", "c-1", 2, "scheduler", at(4))
    singleton.collect_events()
    return singleton


def ledger() -> Ledger:
    book = Ledger.create(AT)
    book.seal(3, "", "ab" * 32, 3, [[1, 3]], "0" * 24, at(1))
    book.open(None, 0, None, None, 0, at(2))
    book.close(at(3))
    book.collect_events()
    return book


def notification(payload: Any = None) -> Notification:
    received = Notification.receive(
        "n-1", "alarm", {"id": "n-1", "when": payload or {"site": "paris"}},
        [{"job": "backup", "execution_id": str(execution_id("n-1", "backup"))}], [], AT)
    received.collect_events()
    return received


def rejection() -> Rejection:
    refused = Rejection.reject(uuid4(), "notification", "att/x", "invalid", "not JSON",
                               b"\xffnot json", "channel-manager", AT)
    refused.collect_events()
    return refused


def command_record(match: Any = None) -> CommandRecord:
    record = CommandRecord.handled(uuid4(), "alice", "job.add", b"\x01\x02", {
        "ok": True, "result": {"name": "odd", "match": match or {"site": "paris"}}}, AT)
    record.collect_events()
    return record


AGGREGATES = {
    "job": job, "execution": execution, "scheduler": a_scheduler, "ledger": ledger,
    "notification": notification, "rejection": rejection, "command_record": command_record,
}


# The bug: a job's match that looks like a typed value ------------------------------------


@pytest.mark.parametrize("mapper", mappers().values(), ids=mappers().keys())
@pytest.mark.parametrize("lookalike", LOOKALIKES.values(), ids=LOOKALIKES.keys())
@pytest.mark.parametrize("nested", [False, True], ids=["match", "nested-match"])
def test_a_jobs_match_that_looks_like_a_typed_value_comes_back_from_its_snapshot_as_given(
        lookalike: dict[str, Any], nested: bool, mapper: Mapper[UUID]) -> None:
    match = {"k": dict(lookalike), "list": [dict(lookalike)]} if nested else dict(lookalike)
    original = job(match)
    loaded = reloaded(original, mapper)
    assert loaded.match == match
    assert type(loaded.match) is dict
    assert state_of(loaded) == state_of(original)
    assert isinstance(loaded.created_at, datetime)
    assert isinstance(loaded.updated_at, datetime)


@pytest.mark.parametrize("lookalike", LOOKALIKES.values(), ids=LOOKALIKES.keys())
def test_a_lookalike_in_any_users_field_of_a_snapshot_is_left_alone(
        lookalike: dict[str, Any]) -> None:
    mapper = mappers()["plain"]
    for original in (notification(dict(lookalike)), command_record(dict(lookalike))):
        assert state_of(reloaded(original, mapper)) == state_of(original)


@pytest.mark.parametrize("lookalike", LOOKALIKES.values(), ids=LOOKALIKES.keys())
def test_a_snapshot_of_an_aggregate_topic_not_listed_still_decodes_no_users_field(
        lookalike: dict[str, Any]) -> None:
    transcoder = OrjsonTranscoder()
    snapshot = {"timestamp": AT, "topic": "att_jm:Unknown",
                "state": {"_created_on": AT, "updated_at": at(1), "match": dict(lookalike)}}
    assert transcoder.decode(transcoder.encode(snapshot)) == snapshot


# What today's snapshots hold still loads as it did ---------------------------------------


@pytest.mark.parametrize("make", AGGREGATES.values(), ids=AGGREGATES.keys())
def test_every_aggregate_comes_back_from_its_snapshot_as_it_was(make: Any) -> None:
    for mapper in mappers().values():
        original = make()
        loaded = reloaded(original, mapper)
        assert type(loaded) is type(original)
        assert (loaded.id, loaded.version) == (original.id, original.version)
        assert state_of(loaded) == state_of(original)
        assert datetimes(loaded) == datetimes(original)


@pytest.mark.parametrize("make", AGGREGATES.values(), ids=AGGREGATES.keys())
def test_a_snapshot_the_encoder_writes_decodes_as_it_did_before_the_fix(make: Any) -> None:
    # The encoder is unchanged: snapshots stored until now are these bytes.
    snapshot = type(make()).Snapshot.take(make())
    data = mappers()["plain"].to_stored_event(snapshot).state
    assert OrjsonTranscoder().decode(data) == decode_as_before(data)


#: Snapshots as the service stored them before this fix (taken from a store: a job added,
#: matched and run, removed and added again; the scheduler and the execution then).
STORED = {
    "att_jm:Job": (
        b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-05T23:48:15.195594+00:00"},'
        b'"topic":"att_jm:Job","state":{"_created_on":{"_type_":"datetime_iso","_data_":'
        b'"2026-04-01T00:00:00+00:00"},"_modified_on":{"_type_":"datetime_iso","_data_":'
        b'"2026-04-01T00:00:01+00:00"},"name":"odd","script":"backup.sh","trigger":"t",'
        b'"match":null,"command":null,"timeout_seconds":300.0,"enabled":true,"retry":null,'
        b'"removed":false,"created_at":{"_type_":"datetime_iso","_data_":'
        b'"2026-04-01T00:00:01+00:00"},"updated_at":{"_type_":"datetime_iso","_data_":'
        b'"2026-04-01T00:00:01+00:00"}}}'),
    "att_jm:Execution": (
        b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-05T23:48:15.197098+00:00"},'
        b'"topic":"att_jm:Execution","state":{"_created_on":{"_type_":"datetime_iso","_data_":'
        b'"2026-04-01T00:00:00+00:00"},"_modified_on":{"_type_":"datetime_iso","_data_":'
        b'"2026-04-01T00:00:01+00:00"},"job":"odd","script":"backup.sh","command":'
        b'"{\\"id\\":\\"n-1\\",\\"a\\":1}","trigger":"alarm","notification_id":"n-1",'
        b'"timeout_seconds":300.0,"status":"executed","front":false,"attempt":1,"started_at":'
        b'{"_type_":"datetime_iso","_data_":"2026-04-01T00:00:00+00:00"},"finished_at":'
        b'{"_type_":"datetime_iso","_data_":"2026-04-01T00:00:01+00:00"},"result":3,'
        b'"feedback":"done","previous_feedback":null,"retry":null,"not_before":null}}'),
    "att_jm:Scheduler": (
        b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-05T23:48:15.196318+00:00"},'
        b'"topic":"att_jm:Scheduler","state":{"_created_on":{"_type_":"datetime_iso","_data_":'
        b'"2026-04-01T00:00:00+00:00"},"_modified_on":{"_type_":"datetime_iso","_data_":'
        b'"2026-04-01T00:00:01+00:00"},"interval_seconds":5.0,"cleanup":{"executed":'
        b'{"max_rows":1000,"max_age_days":7.0,"every_seconds":3600.0},"failed":{"max_rows":'
        b'1000,"max_age_days":7.0,"every_seconds":3600.0}},"running":null,"last_finished_at":'
        b'{"_type_":"datetime_iso","_data_":"2026-04-01T00:00:01+00:00"},"last_cleanup":{}}}'),
}


@pytest.mark.parametrize("topic", STORED.keys())
def test_snapshots_stored_before_the_fix_load_their_datetimes(topic: str) -> None:
    data = STORED[topic]
    decoded = OrjsonTranscoder().decode(data)
    assert decoded == decode_as_before(data)
    typed = {key for key, value in decoded["state"].items() if isinstance(value, datetime)}
    assert typed == transcoder.TYPED_STATE_FIELDS[topic] & decoded["state"].keys()
    assert not any(type(value) is dict and "_type_" in value
                   for value in decoded["state"].values())
    stored = StoredEvent(uuid4(), 3, "eventsourcing.domain:Snapshot", data)
    for mapper in mappers().values():
        if mapper.compressor is not None:
            stored = StoredEvent(stored.originator_id, 3, stored.topic,
                                 mapper.compressor.compress(data))
        snapshot: Any = mapper.to_domain_event(stored)
        aggregate = snapshot.mutate(None)
        assert topic == aggregate.TOPIC
        assert aggregate.modified_on == datetime(2026, 4, 1, 0, 0, 1, tzinfo=UTC)


# The list of typed fields follows the domain's code ------------------------------------


def aggregate_classes() -> list[type[Aggregate]]:
    return [cls for module in MODULES for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, Aggregate) and cls is not Aggregate
            and cls.__module__ == module.__name__]


def test_every_aggregate_of_the_domain_has_its_typed_fields_listed() -> None:
    topics = {cls.TOPIC for cls in aggregate_classes()}  # type: ignore[attr-defined]
    assert topics == set(transcoder.TYPED_STATE_FIELDS)


def datetime_fields(cls: type[Aggregate]) -> set[str]:
    """The attributes the class's code sets to a datetime: annotated `datetime` in its
    `__init__`, or assigned an event's `timestamp` / the aggregate's `created_on` (in its
    events' `apply`, or in `_EndsInTable` and such helpers of its module)."""
    tree = ast.parse(Path(inspect.getfile(cls)).read_text())
    found: set[str] = set()
    scopes = [node for node in tree.body
              if isinstance(node, ast.ClassDef) and (node.name == cls.__name__
                                                     or node.name.startswith("_"))]
    for scope in scopes:
        for node in ast.walk(scope):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Attribute)
                    and "datetime" in ast.unparse(node.annotation)):
                found.add(node.target.attr)
            if isinstance(node, ast.Assign) and ast.unparse(node.value) in (
                    "self.timestamp", "self.created_on", "self.modified_on"):
                found.update(target.attr for target in node.targets
                             if isinstance(target, ast.Attribute))
    return found


@pytest.mark.parametrize("cls", aggregate_classes(), ids=lambda cls: cls.__name__)
def test_the_fields_the_domain_sets_to_datetimes_are_the_listed_ones(
        cls: type[Aggregate]) -> None:
    listed = transcoder.TYPED_STATE_FIELDS[cls.TOPIC]  # type: ignore[attr-defined]
    assert datetime_fields(cls) <= listed
    # and nothing else is: a listed field the code no longer sets is a stale entry
    assert listed - {"_created_on", "_modified_on"} <= datetime_fields(cls)
