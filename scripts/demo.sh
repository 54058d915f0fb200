#!/usr/bin/env bash
# Installs Hato into .venv and starts it for the demo domain example.test on loopback:
# embedded store, self-signed certificate, unprivileged ports. The README's first command.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv python3-pip >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e .

DIR=${HATO_DEMO_DIR:-demo}
if [ ! -f "$DIR/hato.toml" ]; then
  .venv/bin/hato quickstart --demo "$DIR"
else
  echo "Using the existing demo in $DIR/ (delete it to start afresh)."
fi
exec .venv/bin/hato serve --config "$DIR/hato.toml"
