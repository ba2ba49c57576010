"""The ingest baseline: a bare paho v5 subscriber that commits each drained batch, then acks.

Usage: python -m bench.baseline_subscriber PORT TOPIC_FILTER DB_PATH COUNT DONE_TOPIC

It subscribes at QoS 1 with manual ack on a persistent session, drains whatever
arrived, INSERTs the payloads into SQLite (WAL, synchronous=FULL) under a
unique key, commits once per drained batch, acknowledges the batch, and
publishes on DONE_TOPIC after committing the COUNT-th message.
"""

from __future__ import annotations

import hashlib
import queue
import sqlite3
import sys
import threading
from typing import Any

from paho.mqtt.client import Client, ConnectFlags, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from att_jm.mqtt.common import set_tcp_nodelay  # the same TCP_NODELAY hook as the service


def main(port: int, topic_filter: str, db_path: str, count: int, done_topic: str) -> None:
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS inbox (key BLOB PRIMARY KEY, payload BLOB)")
    inbox: queue.SimpleQueue[MQTTMessage] = queue.SimpleQueue()
    ready = threading.Event()
    client = Client(CallbackAPIVersion.VERSION2, client_id="bench-baseline",
                    protocol=MQTTProtocolVersion.MQTTv5, manual_ack=True)
    client.on_socket_open = set_tcp_nodelay

    def on_connect(c: Client, u: Any, f: ConnectFlags, rc: ReasonCode, p: Any) -> None:
        c.subscribe(topic_filter, qos=1)
        ready.set()

    client.on_connect = on_connect
    client.on_message = lambda c, u, m: inbox.put(m)
    connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves __init__ unannotated
    connect.SessionExpiryInterval = 3600
    connect.ReceiveMaximum = 100
    client.connect("127.0.0.1", port, clean_start=False, properties=connect)
    client.loop_start()
    ready.wait(10)
    client.publish(done_topic + "/ready", b"1", qos=1)
    committed = 0
    while committed < count:
        batch = [inbox.get()]
        while True:
            try:
                batch.append(inbox.get_nowait())
            except queue.Empty:
                break
        db.execute("BEGIN")
        db.executemany(
            "INSERT OR IGNORE INTO inbox VALUES (?, ?)",
            [(hashlib.blake2b(m.payload, digest_size=16).digest(), m.payload) for m in batch],
        )
        db.execute("COMMIT")
        for message in batch:
            client.ack(message.mid, message.qos)
        committed += len(batch)
    client.publish(done_topic, str(committed).encode(), qos=1).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
