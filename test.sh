#!/usr/bin/env bash
# The one test command: ./test.sh [pytest arguments]
#
# Sets up everything it needs on a fresh Debian machine with Python >= 3.11 and apt:
#   1. .venv with the package and its test extra (reinstalled when pyproject.toml changes);
#   2. mosquitto (apt, needs root or sudo) when it is missing; the tests start their own
#      brokers on free loopback ports and never use a broker already running on 1883;
#   3. runs `ruff check .`, `mypy` (strict, files from pyproject.toml) and `pytest -q "$@"`.
# Exit status: 0 only when all three pass. CI=true turns skips for missing tools into failures.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$ROOT"
VENV=$ROOT/.venv

say() { printf '==> %s\n' "$*"; }
die() { printf 'test.sh: error: %s\n' "$*" >&2; exit 1; }

# Run a command as root: directly, through sudo, or fail with a message.
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
# the packaged mosquitto would otherwise start on 127.0.0.1:1883 with Debian's defaults.
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

find_python() {
  local candidate
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && is_py311 "$candidate"; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

ensure_venv() {
  if [ -x "$VENV/bin/python" ] && is_py311 "$VENV/bin/python" && [ -x "$VENV/bin/pip" ]; then
    return 0
  fi
  local python
  python=$(find_python) || die "Python >= 3.11 not found (Debian: apt-get install python3)"
  say "creating .venv with $python ($("$python" --version 2>&1))"
  rm -rf "$VENV"
  if ! "$python" -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    say "installing python3-venv (Debian ships venv/ensurepip separately)"
    apt_install python3-venv
    "$python" -m venv "$VENV" || die "could not create .venv"
  fi
}

ensure_package() {
  local stamp=$VENV/.att-jm-installed want
  want=$(cat pyproject.toml "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  say "installing att-jm[test] into .venv"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]' </dev/null \
    || die "pip install -e '.[test]' failed (see above)"
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

ensure_mosquitto() {
  if find_mosquitto >/dev/null && command -v mosquitto_passwd >/dev/null 2>&1; then
    return 0
  fi
  say "installing mosquitto (apt)"
  apt_install mosquitto mosquitto-clients
  find_mosquitto >/dev/null || die "mosquitto still not found after apt-get install"
}

ensure_venv
ensure_package
ensure_mosquitto
export PATH="$VENV/bin:$PATH"

failed=()
say "ruff check ."
ruff check . || failed+=("ruff")

say "mypy (strict)"
mypy || failed+=("mypy")

say "pytest -q $*"
status=0
pytest -q "$@" </dev/null || status=$?
if [ "$status" -eq 5 ]; then
  echo "test.sh: pytest collected no tests (exit code 5): that is a failure here" >&2
  failed+=("pytest (no tests)")
elif [ "$status" -ne 0 ]; then
  failed+=("pytest (exit $status)")
fi

if [ ${#failed[@]} -gt 0 ]; then
  printf 'test.sh: FAILED: %s\n' "${failed[*]}" >&2
  exit 1
fi
say "all checks passed"
