"""`python -m att_jm.metrics`: serve /metrics and /healthz (see `att_jm.metrics.exporter`)."""

from att_jm.metrics.exporter import main

raise SystemExit(main())
