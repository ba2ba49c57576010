"""docs/asyncapi.yaml documents the whole contract: every command, view, error code and channel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"

COMMANDS = {
    "job.add": {"name", "script", "trigger", "match", "command", "timeout_seconds", "enabled",
                "retry"},
    "job.update": {"name", "script", "trigger", "match", "command", "timeout_seconds", "enabled",
                   "retry"},
    "job.remove": {"name"},
    "queue.remove": {"id"},
    "queue.execute-now": {"id"},
    "executed.remove": {"id"},
    "failed.execute": {"id"},
    "failed.delete": {"id"},
    "settings.set": {"interval_seconds", "executed_cleanup", "failed_cleanup", "archive"},
    "cleanup.run": {"table"},
    "views.get": {"view", "offset", "limit", "id"},
    "trace.get": {"id"},
}
VIEWS = {"jobs", "queue", "executed", "failed", "settings"}
ERROR_CODES = {"invalid", "not_found", "conflict", "unknown_command", "too_large", "internal",
               "forbidden", "rate_limited"}
ADDRESSES = {
    "{prefix}/channel-manager/notifications/{trigger}",
    "{prefix}/job-manager/commands/{actor}/{command}",
    "{prefix}/job-manager/replies/{actor}/{reply}",
    "{prefix}/job-manager/views/{view}",
    "{prefix}/job-manager/events/{type}",
    "{prefix}/job-manager/status",
    "{prefix}/job-manager/seals",
}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def resolve(doc: dict[str, Any], node: Any) -> Any:
    """Follow local `$ref`s (`#/a/b`) until a node that is not a reference."""
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert isinstance(ref, str) and ref.startswith("#/"), ref
        node = doc
        for part in ref[2:].split("/"):
            assert isinstance(node, dict) and part in node, f"unresolved $ref {ref}"
            node = node[part]
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def properties(doc: dict[str, Any], schema: Any) -> set[str]:
    schema = resolve(doc, schema)
    names = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        names |= properties(doc, part)
    return names


def channel_messages(doc: dict[str, Any], channel: str) -> dict[str, Any]:
    return {
        key: resolve(doc, message) for key, message in doc["channels"][channel]["messages"].items()
    }


def test_document_is_asyncapi_3_with_every_channel_of_the_contract(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert {channel["address"] for channel in doc["channels"].values()} == ADDRESSES
    assert doc["components"]["parameters"]["prefix"]["default"] == "att"


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    found = list(refs(doc))
    assert len(found) > 20  # the document is made of references: none found proves nothing
    for ref in found:
        assert isinstance(resolve(doc, {"$ref": ref}), dict), ref


def test_operations_only_use_messages_of_their_channel(doc: dict[str, Any]) -> None:
    for name, operation in doc["operations"].items():
        assert operation["action"] in {"send", "receive"}, name
        channel = operation["channel"]["$ref"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(f"{channel}/messages/"), (name, message)


def test_every_command_has_a_message_with_its_arguments(doc: dict[str, Any]) -> None:
    commands = doc["channels"]["commands"]
    assert set(commands["parameters"]["command"]["enum"]) == set(COMMANDS)
    by_name = {message["name"]: message for message in channel_messages(doc, "commands").values()}
    assert set(by_name) == set(COMMANDS)
    for command, arguments in COMMANDS.items():
        assert properties(doc, by_name[command]["payload"]) == arguments, command
    received = doc["operations"]["receiveCommand"]["messages"]
    assert len(received) == len(COMMANDS)


def test_commands_are_requests_with_a_reply(doc: dict[str, Any]) -> None:
    reply = doc["operations"]["receiveCommand"]["reply"]
    assert reply["channel"]["$ref"] == "#/channels/replies"
    assert reply["address"]["location"] == "$message.header#/ResponseTopic"
    request = resolve(doc, {"$ref": "#/components/messageTraits/request"})
    assert {"ResponseTopic", "CorrelationData"} <= properties(doc, request["headers"])


def test_reply_envelope_lists_every_error_code(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert set(schemas["ErrorCode"]["enum"]) == ERROR_CODES
    assert properties(doc, schemas["OkReply"]) == {"ok", "result"}
    assert properties(doc, schemas["ErrorReply"]) == {"ok", "error"}


def test_every_view_has_a_message_with_its_rows(doc: dict[str, Any]) -> None:
    views = doc["channels"]["views"]
    assert set(views["parameters"]["view"]["enum"]) == VIEWS
    by_name = {message["name"]: message for message in channel_messages(doc, "views").values()}
    assert set(by_name) == VIEWS
    for view in VIEWS - {"settings"}:
        assert {"view", "position", "total", "rows"} <= properties(doc, by_name[view]["payload"])
    assert {"view", "position", "settings"} <= properties(doc, by_name["settings"]["payload"])


@pytest.mark.parametrize(
    ("schema", "fields"),
    [
        (
            "JobRow",
            "name script trigger match command timeout_seconds enabled created_at updated_at",
        ),
        (
            "QueueRow",
            "id job command trigger notification_id enqueued_at state started_at attempt feedback",
        ),
        (
            "HistoryRow",
            "id job command trigger notification_id enqueued_at started_at "
            "finished_at attempt result feedback",
        ),
        ("Event", "position type at data"),
        ("Seal", "position hash previous count at"),
        ("Notification", "id"),
    ],
)
def test_payload_schemas_have_the_contract_fields(
    doc: dict[str, Any], schema: str, fields: str
) -> None:
    definition = doc["components"]["schemas"][schema]
    assert set(definition["required"]) == set(fields.split())


def test_status_is_online_or_offline_with_the_pid(doc: dict[str, Any]) -> None:
    status = doc["components"]["schemas"]["Status"]
    assert status["properties"]["state"]["enum"] == ["online", "offline"]
    assert "pid" in status["properties"]
