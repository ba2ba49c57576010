#!/usr/bin/env bash
# Quick start: ./run.sh [att-jm serve flags]
#
# Sets up and runs the ATT Job Manager on a fresh Debian machine with Python >= 3.11 and apt:
#   1. .venv with the package (reinstalled when pyproject.toml changes); mosquitto, its
#      development headers, a C compiler and openssl from apt when missing (needs root/sudo);
#   2. `att-jm setup`: the site under ./var (on the first run one user per role with a random
#      password, printed once and kept 0600 in var/secrets/; the broker's password file, ACL,
#      client-id plugin, TLS certificates and config; var/att-jm.toml, which every `att-jm`
#      verb run from the checkout reads);
#   3. the project's own mosquitto from var/broker/mosquitto.conf (made from ./mosquitto.conf),
#      never a foreign one: on ATT_JM_BROKER_PORT when set (an error if it is taken), else on
#      1883 when free, else on a free port it announces; TLS on ATT_JM_BROKER_TLS_PORT / 8883 /
#      a free one; anonymous clients refused;
#   4. the browser console (docs/console.md): built from console/ (Node.js and npm from apt
#      when missing; `npm ci` pinned by its package-lock.json, `npm run build`), the broker's
#      WebSocket listener on ATT_JM_BROKER_WS_PORT / 9001 / a free port, and its server
#      (`python -m att_jm.console`) on ATT_JM_CONSOLE_PORT / 8090 / a free port, all on
#      127.0.0.1; its address and the operator's credentials are printed
#      (ATT_JM_CONSOLE=off: none of this);
#   5. `att-jm serve --config var/att-jm.toml "$@"`.
# With --mqtt-url (or ATT_JM_MQTT_URL) the service uses that broker instead and none is
# started: docs/security.md, "Your own broker", says what that broker needs.
# Stop it with Ctrl-C or SIGTERM: the service stops cleanly, then the broker it started.
# Safe to run again: everything it creates is reused (users and passwords are kept).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV=$ROOT/.venv
VAR=$ROOT/var

say() { printf 'run.sh: %s\n' "$*" >&2; }
die() { printf 'run.sh: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=tools/setup.sh
. "$ROOT/tools/setup.sh"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# A port for the broker: the one asked for (which must be free), else the default when free,
# else a free one (announced by the caller).
choose_port() {
  local asked=$1 default=$2 what=$3
  if [ -n "$asked" ]; then
    listening "$asked" && die "$what port $asked (asked for) is taken: free it or choose another"
    echo "$asked"
  elif ! listening "$default"; then
    echo "$default"
  else
    free_port
  fi
}

# The service's broker URL when given: --mqtt-url beats ATT_JM_MQTT_URL.
given_url() {
  local url=${ATT_JM_MQTT_URL:-} previous=""
  for arg in "$@"; do
    case $arg in
      --mqtt-url=*) url=${arg#--mqtt-url=} ;;
    esac
    if [ "$previous" = "--mqtt-url" ]; then url=$arg; fi
    previous=$arg
  done
  echo "$url"
}

ensure_venv
ensure_build_tools
ensure_package
ensure_mosquitto
console_on() { [ "${ATT_JM_CONSOLE:-on}" != "off" ]; }
metrics_on() { [ "${ATT_JM_METRICS:-on}" != "off" ]; }
if console_on; then ensure_console; fi
mkdir -p "$VAR"

if [ -n "$(given_url "$@")" ]; then
  say "broker $(given_url "$@") given: not starting one (see docs/security.md, \"Your own broker\")"
  "$VENV/bin/att-jm" setup --var "$VAR" --scripts "$ROOT/scripts" >&2
  exec "$VENV/bin/att-jm" serve --config "$VAR/att-jm.toml" "$@"
fi

PORT=$(choose_port "${ATT_JM_BROKER_PORT:-}" 1883 "MQTT")
TLS_PORT=$(choose_port "${ATT_JM_BROKER_TLS_PORT:-}" 8883 "MQTT over TLS")
if [ "$PORT" != "${ATT_JM_BROKER_PORT:-1883}" ]; then
  say "*** 127.0.0.1:1883 is taken by another program: this site's broker listens on port $PORT ***"
fi
WS_PORT="" CONSOLE_PORT=""
if console_on; then
  WS_PORT=$(choose_port "${ATT_JM_BROKER_WS_PORT:-}" 9001 "MQTT over WebSockets")
  CONSOLE_PORT=$(choose_port "${ATT_JM_CONSOLE_PORT:-}" 8090 "console")
fi
METRICS_PORT=""
if metrics_on; then METRICS_PORT=$(choose_port "${ATT_JM_METRICS_PORT:-}" 9108 "metrics"); fi
# `att-jm setup` writes the broker's WebSocket listener on ATT_JM_BROKER_WS_PORT (none if empty).
ATT_JM_BROKER_WS_PORT=$WS_PORT "$VENV/bin/att-jm" setup --var "$VAR" --port "$PORT" \
  --tls-port "$TLS_PORT" --scripts "$ROOT/scripts"

MOSQUITTO_PID="" CONSOLE_PID="" METRICS_PID=""
stop_metrics() {
  if [ -n "$METRICS_PID" ] && kill -0 "$METRICS_PID" 2>/dev/null; then
    kill -TERM "$METRICS_PID" 2>/dev/null || true
    wait "$METRICS_PID" 2>/dev/null || true
  fi
}
stop_console() {
  if [ -n "$CONSOLE_PID" ] && kill -0 "$CONSOLE_PID" 2>/dev/null; then
    kill -TERM "$CONSOLE_PID" 2>/dev/null || true
    wait "$CONSOLE_PID" 2>/dev/null || true
  fi
}
stop_broker() {
  if [ -n "$MOSQUITTO_PID" ] && kill -0 "$MOSQUITTO_PID" 2>/dev/null; then
    say "stopping the broker (pid $MOSQUITTO_PID)"
    kill -TERM "$MOSQUITTO_PID" 2>/dev/null || true
    wait "$MOSQUITTO_PID" 2>/dev/null || true
  fi
}
log=$VAR/broker/mosquitto.log
say "starting mosquitto on 127.0.0.1:$PORT and TLS :$TLS_PORT (config $VAR/broker/mosquitto.conf, log $log)"
"$(find_mosquitto)" -c "$VAR/broker/mosquitto.conf" </dev/null >>"$VAR/broker/mosquitto.out" 2>&1 &
MOSQUITTO_PID=$!
trap 'stop_metrics; stop_console; stop_broker' EXIT
tries=0
until listening "$PORT"; do
  if ! kill -0 "$MOSQUITTO_PID" 2>/dev/null; then
    tail -n 20 "$log" "$VAR/broker/mosquitto.out" >&2 2>/dev/null || true
    die "mosquitto exited at start (log: $log)"
  fi
  tries=$((tries + 1))
  [ "$tries" -lt 200 ] || die "mosquitto did not listen on 127.0.0.1:$PORT within 10 s (log: $log)"
  sleep 0.05
done

cat >&2 <<EOF
run.sh: the Job Manager is starting. In a second terminal, from $ROOT (the README's Quick start):
  . .venv/bin/activate
  att-jm jobs                       # every att-jm verb finds var/att-jm.toml (as user operator)
  notify() {  # publish a notification as the Channel Manager
    mosquitto_pub -V mqttv5 -q 1 -h 127.0.0.1 -p $PORT -i channel-manager -u channel-manager \\
      -P "\$(cat var/secrets/channel-manager.password)" \\
      -t "att/channel-manager/notifications/\$1" -m "\$2"; }
  notify channel-up '{"id": "n-1", "channel": "BBC One"}'
EOF

if console_on; then
  "$VENV/bin/python" -m att_jm.console --port "$CONSOLE_PORT" \
    --broker-ws "ws://127.0.0.1:$WS_PORT" --topic-prefix att </dev/null \
    >>"$VAR/console.log" 2>&1 &
  CONSOLE_PID=$!
  tries=0
  until listening "$CONSOLE_PORT"; do
    kill -0 "$CONSOLE_PID" 2>/dev/null || die "the console's server exited at start (log: $VAR/console.log)"
    tries=$((tries + 1))
    [ "$tries" -lt 200 ] || die "the console did not listen on 127.0.0.1:$CONSOLE_PORT within 10 s"
    sleep 0.05
  done
  cat >&2 <<EOF
run.sh: the console (docs/console.md): open http://127.0.0.1:$CONSOLE_PORT/ and log in as
  user operator, password $(cat "$VAR/secrets/operator.password")
  (read-only: user auditor, password in var/secrets/auditor.password); the page talks MQTT
  over WebSockets to ws://127.0.0.1:$WS_PORT with those credentials (log: var/console.log)
EOF
fi

if metrics_on; then
  "$VENV/bin/python" -m att_jm.metrics --config "$VAR/att-jm.toml" --port "$METRICS_PORT" \
    </dev/null >>"$VAR/metrics.log" 2>&1 &
  METRICS_PID=$!
  tries=0
  until listening "$METRICS_PORT"; do
    kill -0 "$METRICS_PID" 2>/dev/null || die "the metrics exporter exited at start (log: $VAR/metrics.log)"
    tries=$((tries + 1))
    [ "$tries" -lt 200 ] || die "the metrics exporter did not listen on 127.0.0.1:$METRICS_PORT within 10 s"
    sleep 0.05
  done
  say "metrics (docs/metrics.md): http://127.0.0.1:$METRICS_PORT/metrics and /healthz (log: var/metrics.log)"
fi

# The service runs as a child so the broker can be stopped after it: SIGINT/SIGTERM are
# passed on as SIGTERM (a clean stop), and run.sh exits with the service's exit code.
"$VENV/bin/att-jm" serve --config "$VAR/att-jm.toml" "$@" </dev/null &
service_pid=$!
trap 'kill -TERM "$service_pid" 2>/dev/null || true' INT TERM
status=0
while :; do
  status=0
  wait "$service_pid" || status=$?
  kill -0 "$service_pid" 2>/dev/null || break  # still running: wait was interrupted by a signal
done
exit "$status"
