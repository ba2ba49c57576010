"""The seal hash chain and the Ledger aggregate: exactly what docs/audit.md documents."""

from __future__ import annotations

import hashlib
import struct
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from att_jm.domain.seals import LEDGER_ID, Ledger
from att_jm.log.chain import (
    SealHasher,
    content_digest,
    expected_positions,
    read_seal,
    row_digest,
    seal_digests,
    split_digests,
)
from att_jm.log.rows import Row

AT = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
ROW = Row(7, "6f1c7a5252a44c1e9d7e0a7d3b1f2c11", 3, "att_jm:Job.Added", b'{"name":"x"}')


def test_the_content_digest_is_sha256_of_the_length_prefixed_fields_and_the_state() -> None:
    by_hand = hashlib.sha256(
        struct.pack(">I", 32) + ROW.originator_id.encode() + struct.pack(">q", 3)
        + struct.pack(">I", 16) + b"att_jm:Job.Added" + b'{"name":"x"}'
    ).digest()
    assert row_digest(ROW) == by_hand
    assert content_digest(ROW.originator_id, 3, ROW.topic, ROW.state) == by_hand


@pytest.mark.parametrize("change", [
    {"originator_id": "6f1c7a5252a44c1e9d7e0a7d3b1f2c12"},
    {"originator_version": 4},
    {"topic": "att_jm:Job.Updated"},
    {"state": b'{"name":"y"}'},
])
def test_changing_any_hashed_field_changes_the_digest(change: dict[str, object]) -> None:
    assert row_digest(ROW._replace(**change)) != row_digest(ROW)  # type: ignore[arg-type]


def test_a_seal_hash_chains_the_previous_hash_and_each_position_with_its_digest() -> None:
    previous = "ab" * 32
    hasher = SealHasher(previous)
    rows = [ROW, ROW._replace(position=8, originator_version=4)]
    hasher.add_rows(rows)
    by_hand = hashlib.sha256(bytes.fromhex(previous))
    for row in rows:
        by_hand.update(struct.pack(">q", row.position) + row_digest(row))
    assert hasher.hash == by_hand.hexdigest()
    assert hasher.count == 2
    assert hasher.digests == "".join(row_digest(r)[:4].hex() for r in rows)


def test_moving_a_row_to_another_position_changes_the_seal_hash() -> None:
    one, two = SealHasher(""), SealHasher("")
    one.add(7, row_digest(ROW))
    two.add(8, row_digest(ROW))
    assert one.hash != two.hash


def test_the_positions_a_seal_covers_are_kept_as_runs() -> None:
    hasher = SealHasher("")
    for position in (3, 4, 5, 9, 10, 12):
        hasher.add(position, b"\0" * 32)
    assert hasher.ranges == [[3, 5], [9, 10], [12, 12]]
    assert list(expected_positions(hasher.ranges)) == [3, 4, 5, 9, 10, 12]
    assert split_digests(hasher.digests) == ["00000000"] * 6


def sealed_row(ledger: Ledger) -> Row:
    event = ledger.collect_events()[-1]
    state = {key: value for key, value in vars(event).items()
             if key not in ("originator_id", "originator_version")}
    state["timestamp"] = {"_type_": "datetime_iso", "_data_": event.timestamp.isoformat()}
    return Row(50, LEDGER_ID.hex, event.originator_version, Ledger.Sealed.TOPIC,
               orjson.dumps(state))


def test_a_stored_seal_reads_back_as_the_message_the_service_publishes() -> None:
    ledger = Ledger.create(AT)
    ledger.seal(40, "", "cd" * 32, 2, [[39, 40]], "0011223344556677", AT)
    row = sealed_row(ledger)
    seal = read_seal(row, 1)
    assert seal.message() == {"position": 40, "hash": "cd" * 32, "previous": "", "count": 2,
                              "at": "2026-03-02T08:00:00.000Z"}
    assert seal.event_position == 50
    assert seal.ranges == ((39, 40),)
    assert seal_digests(row) == ["00112233", "44556677"]


def test_a_malformed_seal_is_reported_as_such() -> None:
    row = Row(50, LEDGER_ID.hex, 2, "att_jm:Ledger.Sealed", b'{"position": 3}')
    with pytest.raises(ValueError, match="malformed seal at position 50"):
        read_seal(row, 1)


def test_the_ledger_accepts_only_a_seal_that_continues_its_chain() -> None:
    ledger = Ledger.create(AT)
    ledger.seal(10, "", "aa" * 32, 1, [[10, 10]], "00000000", AT)
    assert (ledger.position, ledger.hash, ledger.seals) == (10, "aa" * 32, 1)
    with pytest.raises(ValueError, match="does not continue the chain"):
        ledger.seal(20, "", "bb" * 32, 1, [[20, 20]], "00000000", AT)
    with pytest.raises(ValueError, match="not after 10"):
        ledger.seal(10, "aa" * 32, "bb" * 32, 1, [[10, 10]], "00000000", AT)
    with pytest.raises(ValueError, match="digest characters"):
        ledger.seal(20, "aa" * 32, "bb" * 32, 2, [[19, 20]], "00000000", AT)
    ledger.seal(20, "aa" * 32, "bb" * 32, 1, [[20, 20]], "00000000", AT)
    assert ledger.seals == 2
    assert Ledger.Sealed.TOPIC == "att_jm:Ledger.Sealed"


def test_the_open_and_close_marks_record_without_changing_the_ledgers_state() -> None:
    ledger = Ledger.create(AT)
    ledger.open(None, 0, None, None, 3, AT)
    ledger.seal(10, "", "aa" * 32, 1, [[10, 10]], "00000000", AT)
    before = {k: v for k, v in vars(ledger).items() if not k.startswith("_")}
    ledger.close(AT)
    ledger.open(12, 2, 13, 14, 2, AT)
    assert {k: v for k, v in vars(ledger).items() if not k.startswith("_")} == before
    events: list[Any] = list(ledger.collect_events()[1:])
    opened, _, closed, again = events
    assert type(opened).TOPIC == "att_jm:Ledger.Opened"
    assert (closed.position, closed.hash, closed.actor) == (10, "aa" * 32, "sealer")
    assert type(closed).TOPIC == "att_jm:Ledger.Closed"
    assert (again.closed, again.appended, again.first, again.last, again.unsealed) == (
        12, 2, 13, 14, 2)
