"""`trace.get`: an execution's lineage over MQTT (what `att-jm audit trace` shows), read-only.

The real service and broker: the reply equals the audit verb's JSON for the same store, a
failed attempt and its re-execution are in it, nothing is recorded, and the roles hold (an
auditor may ask, the channel manager may not).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers.mqtt import MqttTestError, TestClient
from helpers.postgres import BOTH_BACKENDS
from helpers.service import Service
from helpers.site import SecureSite
from helpers.store import count_events

from att_jm.domain.ids import execution_id

from .conftest import Operator, new_id

P = "att"


@BOTH_BACKENDS
def test_the_trace_of_a_failed_then_reexecuted_entry_is_the_audit_s(operator: Operator) -> None:
    operator.ok("settings.set", {"interval_seconds": 0})
    operator.add_job("flaky", "always-fail", "t", command="{channel}")
    nid = new_id()
    operator.notify("t", {"id": nid, "channel": "one"})
    entry = str(execution_id(nid, "flaky"))
    operator.wait_view("failed", lambda v: v["total"] == 1)
    operator.ok("failed.execute", {"id": entry})
    operator.wait_view("failed", lambda v: v["total"] == 1 and v["rows"][0]["attempt"] == 2)
    records = count_events(operator.service.store, "att_jm:CommandRecord.Handled")

    trace = operator.ok("trace.get", {"id": entry})

    assert trace["execution_id"] == entry
    assert trace["notification"]["id"] == nid
    assert [a["ended"]["result"] for a in trace["attempts"]] == [2, 2]
    assert [a["action"] for a in trace["actions"]] == ["failed.execute"]
    audit = subprocess.run(
        [sys.executable, "-m", "att_jm", "audit", "trace", entry, "--json",
         "--store", str(operator.service.store)],
        capture_output=True, text=True, check=True,
    )
    assert trace == json.loads(audit.stdout)  # the same lineage as the auditor's verb
    assert count_events(operator.service.store, "att_jm:CommandRecord.Handled") == records


def test_an_unknown_or_malformed_id_is_an_error(operator: Operator) -> None:
    assert operator.error("trace.get", {"id": new_id()})["code"] == "not_found"
    assert operator.error("trace.get", {"id": ""})["code"] == "invalid"
    assert operator.error("trace.get", {"id": "x", "extra": 1})["code"] == "invalid"


def test_an_auditor_may_ask_and_the_channel_manager_may_not(
    secure_site: SecureSite, secure_service: Service,
) -> None:
    with TestClient(secure_site.url("auditor")) as auditor:
        reply = auditor.request(f"{P}/job-manager/commands/auditor/trace.get", {"id": new_id()})
        assert reply["error"]["code"] == "not_found"  # answered, not refused
    with TestClient(secure_site.url("channel-manager")) as channel_manager, \
            pytest.raises(MqttTestError, match="Not authorized"):
        channel_manager.publish(f"{P}/job-manager/commands/channel-manager/trace.get",
                                {"id": new_id()})
