"""`python -m att_jm` is the `att-jm` command."""

from att_jm.cli import main

raise SystemExit(main())
