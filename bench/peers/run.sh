#!/usr/bin/env bash
# The same workloads against LiteLLM and Portkey: start both in front of the
# benchmark's mock upstream (on a fixed port, as LiteLLM's config names it),
# run the benchmark with them as peers beside direct, bare and tether, stop
# them. Arguments go to the benchmark, e.g. `bench/peers/run.sh --quick`.
# Installs them first (bench/peers/install.sh) when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
PEERS=target/peers
UPSTREAM_PORT="${UPSTREAM_PORT:-18080}"
LITELLM_PORT="${LITELLM_PORT:-4000}"
LITELLM_WORKERS="${LITELLM_WORKERS:-1}"
PORTKEY_PORT="${PORTKEY_PORT:-8787}"

if [ ! -x "$PEERS/litellm-venv/bin/litellm" ] || [ ! -d "$PEERS/portkey/node_modules/@portkey-ai/gateway" ]; then
  bench/peers/install.sh
fi

# LiteLLM routes the model by its config; it must not log much. It listens
# on loopback only, for the benchmark, so it may run without a master key.
cat > "$PEERS/litellm.yaml" <<YAML
model_list:
  - model_name: bench-model
    litellm_params:
      model: openai/bench-model
      api_base: http://127.0.0.1:$UPSTREAM_PORT/v1
      api_key: bench-key
litellm_settings:
  drop_params: true
  set_verbose: false
general_settings:
  dangerously_permit_weak_or_unset_master_key: true
YAML

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
LITELLM_LOG=ERROR "$PEERS/litellm-venv/bin/litellm" --config "$PEERS/litellm.yaml" \
  --host 127.0.0.1 --port "$LITELLM_PORT" --num_workers "$LITELLM_WORKERS" > "$PEERS/litellm.log" 2>&1 &
pids+=($!)
# Portkey is told the upstream per request (x-portkey-provider: openai,
# x-portkey-custom-host), which the benchmark adds for a peer named portkey*.
(cd "$PEERS/portkey" && exec node node_modules/@portkey-ai/gateway/build/start-server.js --port="$PORTKEY_PORT" --headless) \
  > "$PEERS/portkey.log" 2>&1 &
pids+=($!)

wait_for() {
  for _ in $(seq 1 120); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$3" 2>/dev/null || break
    sleep 1
  done
  echo "$2 did not start on port $1 (see $PEERS/$2.log)" >&2
  exit 1
}
wait_for "$LITELLM_PORT" litellm "${pids[0]}"
wait_for "$PORTKEY_PORT" portkey "${pids[1]}"

cargo run --release -p bench -- --upstream-port "$UPSTREAM_PORT" \
  --peer "litellm=http://127.0.0.1:$LITELLM_PORT" --peer "portkey=http://127.0.0.1:$PORTKEY_PORT" "$@"
