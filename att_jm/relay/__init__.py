"""The relay: a second process that publishes the log on `P/job-manager/events/{type}` and
the views on `P/job-manager/views/{name}`.

The writer stores events and keeps the views; this process tails the store file
(read-only, WAL: it never blocks the writer) and publishes every row after its position,
in log order, at QoS 1 (ContentType application/json, not retained), as
`att_jm.log.messages.row_message` builds it; and it publishes each view (retained) when it
changed, at most every `VIEW_PERIOD` s each, read from the views file in one read
transaction. So the writer's core is spared building those packets (a view of 1,000 rows
takes milliseconds) and handling their PUBACKs, and a notification or a command never
waits behind a view publication.

- Position: `<store>.events.pos` holds the last position whose PUBACK (and every earlier
  one's) has arrived. It is written as a temp file + `os.replace` (no fsync), at most every
  `SAVE_EVERY` s and at exit. On start the relay resumes after it (clamped to the log's end),
  or after `--after` when there is no such file. At least once, in order: a crash of either
  process republishes at most the un-confirmed tail (same `position`: consumers drop
  duplicates) and loses nothing. One relay per store at a time (a lock next to the file).
- Wake-ups: stdin is a pipe from the writer, one line per commit (the position just
  committed: a hint, the relay always reads to the log's end) and `v` once the views took
  a batch; the relay waits with select() on it and on its MQTT socket, and reads the log
  and the views' positions every `LOG_POLL` s anyway.
- Answers: a line `w<N>` is a hint that also asks to be told once position N is confirmed
  (its PUBACK and every earlier one's arrived); the relay then writes the line `<N>` to its
  stdout (a pipe the writer reads), at once when it is not connected (nothing to wait
  for). The writer asks this before it starts a script on an idle queue (see
  `att_jm.service.held`); it waits a few milliseconds at most, answer or not.
- Views: every view is published on each (re)connect (a broker restarted from an older
  save holds older retained ones), then whenever its position changed; never while
  disconnected (no backlog of stale views), and once more, changed ones, at a stop. Each
  table view message is at most `view_max_bytes` (and what the broker takes), see
  `projections.reader`.
- Rows it cannot publish as they are: a row no message can be made of (state not JSON, not
  an object, a timestamp that does not parse, text that is not UTF-8, ...) is published as
  `att_jm.log.messages.undecodable_message` (`"data": null`, `"error"`) and logged once
  (`relay.row_undecodable`); a message over EVENT_MESSAGE_MAX_BYTES, or over the broker's
  Maximum Packet Size (its CONNACK), is published cut (`att_jm.log.messages.cut_message`,
  `relay.event_cut`), or skipped when even that does not fit (`relay.event_skipped`). So no
  row stops the relay or makes the broker drop it, and positions still advance in order.
  Events are read and published only while connected (the broker's limit is known); at a
  CONNACK with a smaller limit, the queued publishes over it are dropped and the log is
  read again from the first of them (`relay.rewound`).
- Stop: EOF on stdin (the writer stopped or died) or SIGTERM/SIGINT: publish what remains up
  to the log's end and wait for the PUBACKs, for at most `DRAIN_SECONDS` in all; record the
  position, disconnect normally, exit 0 (what did not make it goes out at the next start).
- Logs (structlog, stderr, `process: relay` on every line): `relay.started` (the position
  it resumes after, its source, the log's end), `relay.stopping`, `relay.stopped`
  (position, published, unconfirmed, refused), `relay.publish_refused`, `relay.failed`,
  `relay.row_undecodable`, `relay.event_cut`, `relay.event_skipped`, `relay.rewound`.

`python -m att_jm.relay [--after N]`, settings from the environment (ATT_JM_MQTT_URL,
ATT_JM_STORE, ATT_JM_TOPIC_PREFIX, ATT_JM_CLIENT_ID, ATT_JM_LOG_FORMAT, the credentials and
TLS files), client id `<client id>.events` (a client id of the service's user).
`att_jm.relay.handle.EventsRelay` is its handle in the writer, which starts it: with the
runner, the only code that starts processes.
"""
