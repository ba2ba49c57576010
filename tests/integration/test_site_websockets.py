"""`att-jm setup` keeps the broker's WebSocket listener that an earlier set-up chose.

`./run.sh` asks for it (ATT_JM_BROKER_WS_PORT); an operator who later runs `att-jm setup`
by hand, without it, must not lose the browser console's listener; `--ws-port 0` removes it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from att_jm.site.broker import WS_PORT_VARIABLE
from att_jm.site.local import Site, setup


def websocket_listeners(site: Site) -> list[str]:
    lines = site.broker_conf.read_text().splitlines()
    return [lines[i - 1] for i, line in enumerate(lines) if line.strip() == "protocol websockets"]


def test_a_later_set_up_keeps_the_websocket_listener_and_0_removes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(WS_PORT_VARIABLE, raising=False)
    var = tmp_path / "var"
    assert setup(var, port=18830, tls_port=18831).ws_port is None
    assert websocket_listeners(Site(var.resolve())) == []

    monkeypatch.setenv(WS_PORT_VARIABLE, "19001")  # as ./run.sh runs it
    assert setup(var, port=18830, tls_port=18831).ws_port == 19001
    monkeypatch.delenv(WS_PORT_VARIABLE)
    site = Site(var.resolve())
    assert websocket_listeners(site) == ["listener 19001 127.0.0.1"]

    assert setup(var, port=18830, tls_port=18831).ws_port == 19001  # by hand: kept
    assert websocket_listeners(site) == ["listener 19001 127.0.0.1"]
    assert setup(var, port=18830, tls_port=18831, ws_port=19002).ws_port == 19002
    assert websocket_listeners(site) == ["listener 19002 127.0.0.1"]
    assert setup(var, port=18830, tls_port=18831, ws_port=0).ws_port is None
    assert websocket_listeners(site) == []
    assert setup(var, port=18830, tls_port=18831).ws_port is None  # and stays removed
    assert WS_PORT_VARIABLE not in os.environ
