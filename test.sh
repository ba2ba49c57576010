#!/usr/bin/env bash
# The one test command: ./test.sh [pytest arguments]
#
# Sets up everything it needs on a fresh Debian machine with Python >= 3.11 and apt:
#   1. .venv with the package and its test extra (reinstalled when pyproject.toml changes);
#   2. mosquitto, its plugin headers, a C compiler and openssl (apt, needs root or sudo) when
#      missing (the secure site of `att-jm setup` needs them); the tests start their own
#      brokers on free loopback ports and never use a broker already running on 1883;
#      PostgreSQL's binaries (Debian's postgresql, apt) when there is no initdb: the store's
#      tests run on PostgreSQL too, on ATT_JM_TEST_POSTGRES or 127.0.0.1:5432 (user postgres,
#      trust) when it answers, else on a cluster they start themselves (tests/helpers/postgres.py);
#   3. the browser console's tests: Node.js and npm (apt) to build console/ (`npm ci`, pinned by
#      its package-lock.json, then `npm run build`), and Debian's chromium (apt), which
#      Playwright for Python (the test extra) drives;
#   4. runs `ruff check .`, `mypy` (strict, files from pyproject.toml) and `pytest -q "$@"`.
# Exit status: 0 only when all three pass. CI=true turns skips for missing tools into failures.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$ROOT"
VENV=$ROOT/.venv

say() { printf '==> %s\n' "$*"; }
die() { printf 'test.sh: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=tools/setup.sh
. "$ROOT/tools/setup.sh"

ensure_venv
ensure_build_tools
ensure_package test
ensure_mosquitto
ensure_postgres
ensure_console
ensure_chromium
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
