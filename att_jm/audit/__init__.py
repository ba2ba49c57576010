"""Audit of the event log, from the log alone, while the service runs: `att-jm audit ...`.

Modules, each owning one thing:
- `rows`: the only audit module that knows the store's SQL: stored rows, read-only and paged.
- `records`: the public form of a stored row (`{"position", "type", "at", "data"}`).
- `filters`: the `log` filters (time, type, job, execution, notification, actor).
- `replay`: point-in-time views, replayed into in-memory `projections.views.Views`.
- `trace`: the lineage of one execution.
- `backtest`: a draft job evaluated against stored notifications.
- `chain`: the seal hash chain (pure); `verify`: tamper evidence; `witness`: seals against
  a witness's copy.
- `transfer`: export to and import from JSON Lines.
- `render`: tables and text; `progress`: the progress bar on a terminal.
- `commands`: the verbs, wiring the above to argv options and output streams.
"""
