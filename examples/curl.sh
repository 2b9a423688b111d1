#!/usr/bin/env bash
# tether with curl: a chat kept as a session, its history read back, and a
# streamed answer resumed after a dropped connection.
#
#   TETHER_URL=http://localhost:8080 OPENAI_API_KEY=sk-... examples/curl.sh
#
# Environment: TETHER_URL (default http://localhost:8080), OPENAI_API_KEY
# (passed through to the upstream; it is also your tenant in tether), MODEL
# (default gpt-4o-mini), SESSION (default example-chat), DROP_AFTER (default 2).
set -euo pipefail
TETHER_URL="${TETHER_URL:-http://localhost:8080}"
TETHER_URL="${TETHER_URL%/}"
MODEL="${MODEL:-gpt-4o-mini}"
SESSION="${SESSION:-example-chat}"
DROP_AFTER="${DROP_AFTER:-2}"
AUTH="Authorization: Bearer ${OPENAI_API_KEY:?set OPENAI_API_KEY}"
BODY='{"model":"'"$MODEL"'","messages":[{"role":"user","content":"Say hello"}]}'

echo "session $SESSION: asking \"Say hello\" (the session rides in the path)"
curl -sS --fail-with-body "$TETHER_URL/s/$SESSION/v1/chat/completions" \
  -H "$AUTH" -H "Content-Type: application/json" -d "$BODY"
echo

echo "history:"
curl -sS --fail-with-body "$TETHER_URL/tether/history/$SESSION" -H "$AUTH"
echo

echo "streaming, keeping the first $DROP_AFTER events, then dropping the connection:"
headers="$(mktemp)"
trap 'rm -f "$headers"' EXIT
STREAM_BODY='{"model":"'"$MODEL"'","stream":true,"messages":[{"role":"user","content":"Tell me a story"}]}'
# head closes the pipe after DROP_AFTER events, and curl's connection with it.
curl -sSN "$TETHER_URL/s/$SESSION/v1/chat/completions" -D "$headers" \
  -H "$AUTH" -H "Content-Type: application/json" -d "$STREAM_BODY" 2>/dev/null \
  | grep --line-buffered '^data: ' | head -n "$DROP_AFTER" || true
STREAM_ID="$(tr -d '\r' <"$headers" | awk -F': ' 'tolower($1) == "x-stream-id" {print $2}')"
echo "stream $STREAM_ID: dropped after $DROP_AFTER events"

echo "resumed after $DROP_AFTER events:"
curl -sSN --fail-with-body "$TETHER_URL/tether/streams/$STREAM_ID?after=$DROP_AFTER" -H "$AUTH"

echo "stream status:"
curl -sS --fail-with-body "$TETHER_URL/tether/streams/$STREAM_ID/status" -H "$AUTH"
echo
