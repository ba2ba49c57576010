"""`verify --witness`: the log's seals against the copy an outside witness kept.

A witness subscribes to `P/job-manager/seals` and keeps every seal message (JSON Lines). A log
rewritten as a whole, with every seal recomputed, verifies on its own; its seals differ from the
witness's from the first rewritten event on, or the log lacks seals the witness holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from att_jm.audit.verify import Finding, Verification
from att_jm.log.chain import Seal
from att_jm.log.rows import AuditError


def load_witness(path: str) -> list[dict[str, Any]]:
    """The seals a witness kept: JSON Lines of seal messages (or one JSON array of them)."""
    try:
        text = Path(path).read_bytes()
    except OSError as error:
        raise AuditError(f"cannot read the witness file {path}: {error.strerror}") from None
    try:
        if text.lstrip().startswith(b"["):
            items = orjson.loads(text)
        else:
            items = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    except orjson.JSONDecodeError as error:
        raise AuditError(f"witness file {path} is not JSON Lines of seals: {error}") from None
    seals = []
    for item in items if isinstance(items, list) else []:
        if not (isinstance(item, dict) and isinstance(item.get("position"), int)
                and isinstance(item.get("hash"), str)):
            raise AuditError(f"witness file {path}: not a seal: {str(item)[:200]}")
        seals.append(item)
    return seals


def check_witness(result: Verification, witness: list[dict[str, Any]], path: str) -> None:
    """Compare the log's seals with a witness's copy; differences go to the findings."""
    ours = {seal.position: seal for seal in result.seals}
    seen: dict[int, dict[str, Any]] = {}
    for item in witness:
        seen.setdefault(item["position"], item)
    matched = 0
    archived = result.archived
    floor, anchored = 0, 0
    if archived is not None and not archived["archives"]:  # verified from the anchor only
        anchor = archived["anchor"]
        floor = int(anchor["position"])
        ours.setdefault(floor, Seal(anchor["seal"]["number"], 0, floor, "",
                                    anchor["seal"]["hash"], 0, (), ""))
    for position, item in sorted(seen.items()):
        seal = ours.get(position)
        if position < floor:  # in the archives, not given: `verify --archive` compares it
            anchored += 1
            continue
        if seal is not None and position == floor and seal.hash == item["hash"]:
            matched += 1
            continue
        if seal is None:
            result.findings.append(Finding("witness", position, (
                f"the witness holds a seal up to position {position} (hash "
                f"{item['hash'][:16]}) that the log does not have: the log was rewritten "
                "or cut")))
        elif seal.hash != item["hash"] or seal.previous != item.get("previous", seal.previous):
            result.findings.append(Finding("witness", position, (
                f"seal #{seal.number} up to position {position}: the log says "
                f"{seal.hash[:16]}, the witness {item['hash'][:16]}: the log was rewritten")))
        else:
            matched += 1
    newest = max(seen) if seen else 0
    result.witness = {
        "file": path, "seals": len(seen), "matched": matched, "newest": newest,
        "newer_in_log": sum(1 for s in result.seals if s.position > newest),
        "archived": anchored,
    }
