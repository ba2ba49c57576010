"""The browser console's HTTP server (`python -m att_jm.console`): it serves the built web app
(`console/dist`, made by `npm ci && npm run build` in `console/`) and its `config.json` on a
loopback port, nothing else. The console talks MQTT over WebSockets to the broker itself, with
the operator's own credentials; this server never sees them.
"""
