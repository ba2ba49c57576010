#!/usr/bin/env bash
# Quick start: ./run.sh [att-jm serve flags]
#
# Sets up and runs the ATT Job Manager on a fresh Debian machine with Python >= 3.11 and apt:
#   1. .venv with the package (reinstalled when pyproject.toml changes);
#   2. mosquitto (apt, needs root or sudo) when it is missing;
#   3. a local broker from ./mosquitto.conf on 127.0.0.1:1883, with its persistence and log
#      under ./var/mosquitto/, unless something already listens there (then that broker is
#      reused, as it is) or the service is pointed elsewhere (--mqtt-url / ATT_JM_MQTT_URL);
#   4. `att-jm serve "$@"`, with the store in ./var/att-jm.db and scripts from ./scripts
#      unless flags or ATT_JM_* variables say otherwise.
# Stop it with Ctrl-C or SIGTERM: the service stops cleanly, then the broker it started.
# Safe to run again: everything it creates is reused.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV=$ROOT/.venv
BROKER_DIR=$ROOT/var/mosquitto
DEFAULT_URL=mqtt://127.0.0.1:1883

say() { printf 'run.sh: %s\n' "$*" >&2; }
die() { printf 'run.sh: error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root or sudo to run: $*"
  fi
}

# apt-get install without starting the packaged services (policy-rc.d answers "not now"):
# the packaged mosquitto would otherwise take 127.0.0.1:1883 with Debian's defaults, which
# drop queued messages (max_queued_messages 1000) and save sessions only every 30 minutes.
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* yourself"
  local policy=/usr/sbin/policy-rc.d added=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
    added=1
  fi
  local status=0
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
      </dev/null || status=$?
  if [ -n "$added" ]; then as_root rm -f "$policy"; fi
  [ "$status" -eq 0 ] || die "apt-get install $* failed"
}

is_py311() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }

ensure_venv() {
  if [ -x "$VENV/bin/python" ] && is_py311 "$VENV/bin/python" && [ -x "$VENV/bin/pip" ]; then
    return 0
  fi
  local python="" candidate
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && is_py311 "$candidate"; then
      python=$candidate
      break
    fi
  done
  [ -n "$python" ] || die "Python >= 3.11 not found (Debian: apt-get install python3)"
  say "creating .venv with $python"
  rm -rf "$VENV"
  if ! "$python" -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    say "installing python3-venv (Debian ships venv/ensurepip separately)"
    apt_install python3-venv
    "$python" -m venv "$VENV" || die "could not create .venv"
  fi
}

ensure_package() {
  local stamp=$VENV/.att-jm-run-installed want
  want=$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)
  if [ -x "$VENV/bin/att-jm" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  say "installing att-jm into .venv"
  (cd "$ROOT" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e . </dev/null) \
    || die "pip install -e . failed (see above)"
  echo "$want" >"$stamp"
}

find_mosquitto() {
  local candidate
  for candidate in /usr/sbin/mosquitto /usr/local/sbin/mosquitto "$(command -v mosquitto || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/1883") 2>/dev/null; }

# The service's broker URL: --mqtt-url beats ATT_JM_MQTT_URL beats the default.
target_url() {
  local url=${ATT_JM_MQTT_URL:-$DEFAULT_URL} previous=""
  for arg in "$@"; do
    case $arg in
      --mqtt-url=*) url=${arg#--mqtt-url=} ;;
    esac
    if [ "$previous" = "--mqtt-url" ]; then url=$arg; fi
    previous=$arg
  done
  echo "$url"
}

# Who the broker runs as. mosquitto started as root drops to user `mosquitto`, which must be
# able to write the persistence directory, or it runs on with persistence quietly off.
broker_user_line() {
  if [ "$(id -u)" -ne 0 ]; then
    return 0  # not root: mosquitto keeps running as the invoking user
  fi
  if id mosquitto >/dev/null 2>&1; then
    chown mosquitto: "$BROKER_DIR"
    if command -v runuser >/dev/null 2>&1 &&
      runuser -u mosquitto -- test -w "$BROKER_DIR" -a -x "$BROKER_DIR" 2>/dev/null; then
      echo "user mosquitto"
      return 0
    fi
  fi
  say "user mosquitto cannot reach $BROKER_DIR: the broker runs as root"
  echo "user root"
}

MOSQUITTO_PID=""
stop_broker() {
  if [ -n "$MOSQUITTO_PID" ] && kill -0 "$MOSQUITTO_PID" 2>/dev/null; then
    say "stopping the broker (pid $MOSQUITTO_PID)"
    kill -TERM "$MOSQUITTO_PID" 2>/dev/null || true
    wait "$MOSQUITTO_PID" 2>/dev/null || true
  fi
}

start_broker() {
  local mosquitto=$1 conf=$BROKER_DIR/mosquitto.conf log=$BROKER_DIR/mosquitto.log
  mkdir -p "$BROKER_DIR"
  # The runtime copy: the shipped settings with absolute paths for this checkout.
  {
    echo "# Generated by run.sh from $ROOT/mosquitto.conf on every start: edit that file instead."
    sed -e "s|^persistence_location .*|persistence_location $BROKER_DIR/|" "$ROOT/mosquitto.conf"
    broker_user_line
  } >"$conf"
  say "starting mosquitto on 127.0.0.1:1883 (config $conf, log $log)"
  "$mosquitto" -c "$conf" </dev/null >>"$log" 2>&1 &
  MOSQUITTO_PID=$!
  trap stop_broker EXIT
  local tries=0
  until listening; do
    if ! kill -0 "$MOSQUITTO_PID" 2>/dev/null; then
      tail -n 20 "$log" >&2 || true
      die "mosquitto exited at start (log: $log)"
    fi
    tries=$((tries + 1))
    [ "$tries" -lt 200 ] || die "mosquitto did not listen on 127.0.0.1:1883 within 10 s (log: $log)"
    sleep 0.05
  done
}

ensure_venv
ensure_package
mkdir -p "$ROOT/var"
export ATT_JM_STORE="${ATT_JM_STORE:-$ROOT/var/att-jm.db}"
export ATT_JM_SCRIPTS="${ATT_JM_SCRIPTS:-$ROOT/scripts}"

url=$(target_url "$@")
if [ "$url" != "$DEFAULT_URL" ] && [ "$url" != "mqtt://localhost:1883" ]; then
  say "broker $url given: not starting a local one"
  exec "$VENV/bin/att-jm" serve "$@"
fi
if listening; then
  say "something already listens on 127.0.0.1:1883: reusing that broker as it is"
  say "(the settings the service relies on are in mosquitto.conf: persistence, max_queued_messages 0)"
  exec "$VENV/bin/att-jm" serve "$@"
fi

mosquitto=$(find_mosquitto) || {
  say "installing mosquitto (apt)"
  apt_install mosquitto mosquitto-clients
  mosquitto=$(find_mosquitto) || die "mosquitto still not found after apt-get install"
}
start_broker "$mosquitto"

# The service runs as a child so the broker can be stopped after it: SIGINT/SIGTERM are
# passed on as SIGTERM (a clean stop), and run.sh exits with the service's exit code.
"$VENV/bin/att-jm" serve "$@" </dev/null &
service_pid=$!
trap 'kill -TERM "$service_pid" 2>/dev/null || true' INT TERM
status=0
while :; do
  status=0
  wait "$service_pid" || status=$?
  kill -0 "$service_pid" 2>/dev/null || break  # still running: wait was interrupted by a signal
done
exit "$status"
