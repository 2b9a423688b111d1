#!/usr/bin/env bash
# Install the peer gateways the benchmark compares tether with, pinned, into
# target/peers/ (nothing global): LiteLLM's proxy from PyPI into a venv, and
# Portkey's gateway from npm. Run once; bench/peers/run.sh starts them.
set -euo pipefail
cd "$(dirname "$0")/../.."
LITELLM_VERSION="${LITELLM_VERSION:-1.106.2}"
PORTKEY_VERSION="${PORTKEY_VERSION:-1.15.2}"
PEERS=target/peers
mkdir -p "$PEERS"

litellm_version() {
  "$PEERS/litellm-venv/bin/python" -c "import importlib.metadata as m; print(m.version('litellm'))" 2>/dev/null
}
if [ "$(litellm_version)" != "$LITELLM_VERSION" ]; then
  echo "== LiteLLM $LITELLM_VERSION (pip, into $PEERS/litellm-venv)"
  python3 -m venv "$PEERS/litellm-venv"
  "$PEERS/litellm-venv/bin/python" -m pip install -q --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION"
fi

echo "== Portkey gateway $PORTKEY_VERSION (npm, into $PEERS/portkey)"
mkdir -p "$PEERS/portkey"
# @hono/node-server after 1.14.2 hands the gateway immutable response
# headers and every proxied chat completion fails with "TypeError:
# immutable" (Portkey-AI/gateway issue 1389): pin it.
cat > "$PEERS/portkey/package.json" <<JSON
{
  "name": "tether-bench-portkey",
  "private": true,
  "dependencies": { "@portkey-ai/gateway": "$PORTKEY_VERSION" },
  "overrides": { "@hono/node-server": "1.14.2" }
}
JSON
(cd "$PEERS/portkey" && npm install --silent --no-audit --no-fund)
echo "installed: litellm $(litellm_version), portkey $PORTKEY_VERSION"
