"""The relay's tunables and the settings it takes from the writer."""

from __future__ import annotations

from typing import Final

POSITION_SUFFIX: Final = ".events.pos"
PAGE: Final = 1000  # rows per read
WANTED: Final = 64  # most positions waiting for an answer (`w<N>` lines)
WINDOW: Final = 4000  # most messages published and not yet acknowledged
SAVE_EVERY: Final = 0.2  # seconds between two writes of the position file
LOG_POLL: Final = 0.5  # the log is read at least this often, hint or not
VIEW_PERIOD: Final = 0.25  # seconds between two publications of one view (coalescing)
VIEWS_RETRY: Final = 1.0  # after the views file could not be read
DRAIN_SECONDS: Final = 5.0  # at a stop: how long to wait for the last PUBACKs
#: The settings the relay reads from its environment (the writer sets them from its own).
RELAY_SETTINGS: Final = (
    "mqtt_url", "store", "topic_prefix", "client_id", "log_format", "views_db", "view_rows",
    "view_max_bytes", "mqtt_username", "mqtt_password_file", "secrets_dir", "tls_ca_file",
    "tls_cert_file", "tls_key_file", "mqtt_fast_paths", "relay_nice",
)
