# Shared set-up steps of run.sh and test.sh (sourced, not run). The caller defines
# say/die and ROOT, VENV before sourcing it.
#   ensure_venv                 .venv with Python >= 3.11 (installs python3-venv with apt if needed)
#   ensure_package EXTRAS       pip install -e ".EXTRAS" again whenever pyproject.toml, setup.py
#                               or att_jm/_start.c changes (it builds the C part)
#   find_mosquitto / ensure_mosquitto
#                               the broker binary, installed with mosquitto-clients from apt
#   find_initdb / ensure_postgres
#                               PostgreSQL's initdb and pg_ctl (Debian's postgresql from apt) for
#                               the tests' own cluster; the packaged service is not started

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

# ensure_package [EXTRAS]: the package (with EXTRAS, e.g. "test") installed editable.
ensure_package() {
  local extras=${1:-} spec=. stamp want
  [ -z "$extras" ] || spec=".[$extras]"
  stamp=$VENV/.att-jm-installed${extras:+-$extras}
  want=$(cat "$ROOT/pyproject.toml" "$ROOT/setup.py" "$ROOT/att_jm/_start.c" "$ROOT/tools/setup.sh" \
    | sha256sum | cut -d' ' -f1)
  if [ -x "$VENV/bin/att-jm" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  say "installing att-jm$spec into .venv"
  (cd "$ROOT" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$spec" \
    </dev/null) || die "pip install -e '$spec' failed (see above)"
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

# The broker and its clients (mosquitto_pub, mosquitto_passwd), from apt when missing.
ensure_mosquitto() {
  if find_mosquitto >/dev/null && command -v mosquitto_passwd >/dev/null 2>&1 \
    && command -v mosquitto_pub >/dev/null 2>&1; then
    return 0
  fi
  say "installing mosquitto and mosquitto-clients (apt)"
  apt_install mosquitto mosquitto-clients
  find_mosquitto >/dev/null || die "mosquitto still not found after apt-get install"
}

# Debian's initdb (/usr/lib/postgresql/<version>/bin, not on PATH), else one on PATH.
find_initdb() {
  local candidate
  candidate=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)
  first_executable "$candidate" "$(command -v initdb || true)"
}

# The PostgreSQL tests (tests/helpers/postgres.py) use ATT_JM_TEST_POSTGRES or a server on
# 127.0.0.1:5432, else start a cluster of their own with initdb and pg_ctl (as the postgres
# user when run as root): those binaries from apt when missing. apt_install keeps the packaged
# cluster from starting, so nothing takes 5432 behind the tests' back.
ensure_postgres() {
  find_initdb >/dev/null && return 0
  say "installing postgresql (apt): the tests start a PostgreSQL cluster of their own"
  apt_install postgresql
  find_initdb >/dev/null || die "initdb still not found after apt-get install postgresql"
}

# What the package's C part (att_jm/_start.c: a C compiler and the Python headers of the venv's
# Python) and `att-jm setup` (the broker's client-id plugin, the TLS certificates: mosquitto's
# plugin headers, openssl) need, from apt when missing. Before ensure_package, which builds the
# C part (the venv must exist).
ensure_build_tools() {
  local missing=() include
  command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
  include=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  [ -f "$include/Python.h" ] || missing+=(python3-dev)
  [ -f /usr/include/mosquitto_broker.h ] || missing+=(mosquitto-dev)
  # the plugin includes <mosquitto.h> too, which Debian ships apart (mosquitto-dev does not
  # depend on it)
  [ -f /usr/include/mosquitto.h ] || missing+=(libmosquitto-dev)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} (apt): the package's C part, the broker's client-id plugin, TLS certificates"
    apt_install "${missing[@]}"
  fi
}

# --- The browser console (docs/console.md) ---------------------------------------------------
#   ensure_node                 node and npm (Debian's nodejs and npm from apt when missing)
#   ensure_console              console/: `npm ci` from package-lock.json when it changed, then
#                               `npm run build` into console/dist when any input changed
#   ensure_chromium             Debian's chromium for the browser tests (apt when missing)

ensure_node() {
  if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    return 0
  fi
  say "installing nodejs and npm (apt): the browser console is built with them"
  apt_install nodejs npm
  command -v npm >/dev/null 2>&1 || die "npm still not found after apt-get install npm"
}

# A digest of the files named (missing ones count as empty).
digest_of() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }

ensure_console() {
  local dir=$ROOT/console want
  ensure_node
  want=$(digest_of "$dir/package.json" "$dir/package-lock.json")
  if [ ! -d "$dir/node_modules/mqtt" ] \
    || [ "$(cat "$dir/node_modules/.att-jm-lock" 2>/dev/null)" != "$want" ]; then
    say "installing the console's npm packages (npm ci, pinned by console/package-lock.json)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error </dev/null) \
      || die "npm ci in console/ failed (see above)"
    echo "$want" >"$dir/node_modules/.att-jm-lock"
  fi
  want=$(cd "$dir" && find src build.mjs package-lock.json -type f -print0 | sort -z \
    | xargs -0 cat | sha256sum | cut -d' ' -f1)
  if [ ! -f "$dir/dist/index.html" ] || [ "$(cat "$dir/dist/.att-jm-sources" 2>/dev/null)" != "$want" ]; then
    say "building the console (npm run build: console/dist)"
    (cd "$dir" && npm run --silent build </dev/null) || die "building the console failed (see above)"
    echo "$want" >"$dir/dist/.att-jm-sources"
  fi
}

# The first of its arguments that is an executable file.
first_executable() {
  local candidate
  for candidate in "$@"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] && { echo "$candidate"; return 0; }
  done
  return 1
}

find_chromium() {
  first_executable /usr/bin/chromium /usr/bin/chromium-browser "$(command -v chromium || true)"
}

ensure_chromium() {
  find_chromium >/dev/null && return 0
  say "installing chromium (apt): the browser console's tests drive it"
  apt_install chromium
  find_chromium >/dev/null || die "chromium still not found after apt-get install chromium"
}
