#!/usr/bin/env bash
# Installs everything Hato's tests need (Debian packages and pip packages into .venv), then runs
# every quality gate (ruff, mypy, import layering, docs freshness) and the whole test suite.
# This is the README's test command; CI runs it through .ci/run on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3-venv python3-pip swaks postfix dovecot-imapd dovecot-pop3d fetchmail getmail6 mutt isync offlineimap3 dovecot-sieve sieve-connect opendkim opendkim-tools)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "installing Debian packages: ${missing[*]}"
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'

echo "== ruff"
.venv/bin/ruff check src tests bench
echo "== mypy"
.venv/bin/mypy
echo "== import layering"
.venv/bin/lint-imports
echo "== pytest"
set +e
.venv/bin/pytest "$@"
status=$?
set -e
if [ $status -eq 5 ]; then
  echo "no tests ran: failing" >&2
  exit 1
fi
exit $status
