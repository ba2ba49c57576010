"""Shared test helpers: a real mosquitto broker, a small MQTT v5 client, the real service process.

Import them as `from helpers.broker import Broker` (pytest puts `tests/` on `sys.path` because
`tests/` has a `conftest.py` and no `__init__.py`). The fixtures built on them live in
`tests/conftest.py`: `broker`, `broker_factory`, `mqtt`, `service_factory`, `scripts_dir`.
"""
