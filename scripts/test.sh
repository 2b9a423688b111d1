#!/usr/bin/env bash
# The whole test suite, on a fresh machine with Rust installed: installs what
# the tests need (redis-server; a Python venv with the official openai SDK for
# tests/sdk.rs; a venv with schemathesis and kubernetes-validate for the
# operations tests; Debian's chromium and playwright-core for tests/browser.rs),
# checks formatting and lints, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  echo "== installing redis-server (apt-get)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq redis-server >/dev/null
fi

# The SDK tests drive tether with the official OpenAI Python SDK, pinned here.
OPENAI_SDK_VERSION=3.54.0
SDK_VENV=target/sdk-venv
if ! "$SDK_VENV/bin/python" -c '' >/dev/null 2>&1; then
  echo "== creating $SDK_VENV"
  rm -rf "$SDK_VENV"
  if ! python3 -m venv "$SDK_VENV" >/dev/null 2>&1; then
    rm -rf "$SDK_VENV"
    echo "== installing python3-venv (apt-get)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$SDK_VENV"
  fi
fi
if ! "$SDK_VENV/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_SDK_VERSION')" 2>/dev/null; then
  echo "== installing openai==$OPENAI_SDK_VERSION into $SDK_VENV (pip)"
  "$SDK_VENV/bin/python" -m pip install -q --disable-pip-version-check "openai==$OPENAI_SDK_VERSION"
fi
TETHER_SDK_PYTHON="$(pwd)/$SDK_VENV/bin/python"
export TETHER_SDK_PYTHON

# The operations tests: schemathesis checks openapi.yaml against a live tether
# (tests/openapi.rs); kubernetes-validate checks examples/kubernetes against
# the Kubernetes schemas it ships (tests/kubernetes.rs). Pinned, own venv.
SCHEMATHESIS_VERSION=4.32.5
KUBERNETES_VALIDATE_VERSION=1.37.0
OPS_VENV=target/ops-venv
if ! "$OPS_VENV/bin/python" -c '' >/dev/null 2>&1; then
  echo "== creating $OPS_VENV"
  rm -rf "$OPS_VENV"
  python3 -m venv "$OPS_VENV"
fi
if ! "$OPS_VENV/bin/python" - "$SCHEMATHESIS_VERSION" "$KUBERNETES_VALIDATE_VERSION" 2>/dev/null <<'PY'
import sys
from importlib.metadata import version
sys.exit(version("schemathesis") != sys.argv[1] or version("kubernetes-validate") != sys.argv[2])
PY
then
  echo "== installing schemathesis==$SCHEMATHESIS_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION into $OPS_VENV (pip)"
  "$OPS_VENV/bin/python" -m pip install -q --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
TETHER_OPS_VENV="$(pwd)/$OPS_VENV"
export TETHER_OPS_VENV

# examples/node runs with the official openai npm package its lock file pins.
OPENAI_NODE_VERSION="$(node -p "require('./examples/node/package.json').dependencies.openai")"
if [ "$(node -p "try { require('./examples/node/node_modules/openai/package.json').version } catch { '' }")" != "$OPENAI_NODE_VERSION" ]; then
  echo "== npm ci in examples/node"
  (cd examples/node && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

# The browser test drives Debian's chromium with playwright-core (pinned in
# tests/browser/package.json; it downloads no browser of its own).
if [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium (apt-get)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium >/dev/null
fi
PLAYWRIGHT_WANTED="$(node -p "require('./tests/browser/package.json').dependencies['playwright-core']")"
PLAYWRIGHT_HAVE="$(node -p "require('./tests/browser/node_modules/playwright-core/package.json').version" 2>/dev/null || true)"
if [ "$PLAYWRIGHT_HAVE" != "$PLAYWRIGHT_WANTED" ]; then
  echo "== installing playwright-core@$PLAYWRIGHT_WANTED into tests/browser (npm)"
  (cd tests/browser && npm install --no-audit --no-fund --loglevel=error >/dev/null)
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (tether and the benchmark)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --all-targets --locked "$@"
# The benchmark's quick mode, in a debug build: it proves the harness end to
# end (every answer byte-exact, every recorded turn stored, resumes exact)
# and asserts nothing about speed.
echo "== benchmark harness (bench --quick)"
cargo run --locked --quiet -p bench -- --quick --json target/bench-quick.json >target/bench-quick.txt 2>&1 \
  || { tail -40 target/bench-quick.txt; exit 1; }
tail -3 target/bench-quick.txt
