"""Metrics for the people on call: the writer's stats block and the exporter.

- `att_jm.metrics.shared`: a small fixed-layout file next to the store (`<store>.stats`) that
  the writer updates with plain memory stores (its loop's heartbeat, commit latency, replies
  by code, the fault, the broker connection) and readers read. The only module of this
  package the writer imports: it must stay cheap to import and to call.
- `python -m att_jm.metrics` (`att_jm.metrics.exporter`): a separate process serving
  `/metrics` (the Prometheus text format) and `/healthz` on a loopback port, from that block,
  the store read-only (the log from its end at the exporter's start, the write side's index
  tables) and the relay's position file.

docs/metrics.md lists every metric.
"""
