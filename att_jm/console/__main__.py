"""`python -m att_jm.console`: serve the browser console (see `att_jm.console.server`)."""

from att_jm.console.server import main

raise SystemExit(main())
