#!/usr/bin/env bash
# Start `llmtools serve` on a GGUF, send real requests with curl, check /health and /metrics,
# then stop it with SIGTERM (it drains and exits 0). Usage: serve_check.sh MODEL LOG HELDOUT
set -euo pipefail
model=$1 log=$2 heldout=$3
LLMTOOLS=${LLMTOOLS:-llmtools}
PYTHON=${PYTHON:-python3}
port=$($PYTHON -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
$LLMTOOLS serve "$model" --port "$port" --log "$log" --model-name triage -q &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "$base/health" >/dev/null 2>&1 && break
  sleep 0.5
done
echo "health: $(curl -s -o /dev/null -w '%{http_code}' "$base/health")"
n=0
while IFS= read -r line; do
  body=$($PYTHON -c 'import json,sys; r=json.loads(sys.argv[1]); print(json.dumps({"model":"triage","max_tokens":40,"messages":[{"role":"user","content":r["prompt"]}]}))' "$line")
  answer=$(curl -sf "$base/v1/chat/completions" -H 'Content-Type: application/json' -d "$body")
  n=$((n + 1))
  [ "$n" -le 1 ] && echo "first answer: $($PYTHON -c 'import json,sys; print(json.loads(sys.argv[1])["choices"][0]["message"]["content"].replace(chr(10)," | "))' "$answer")"
done < <(head -n 8 "$heldout")
curl -sf "$base/v1/completions" -H 'Content-Type: application/json' -d '{"model":"triage","prompt":"Category:","max_tokens":8}' >/dev/null
n=$((n + 1))
curl -sf -N "$base/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"model":"triage","stream":true,"max_tokens":16,"messages":[{"role":"user","content":"Hi"}]}' | grep -q 'data: \[DONE\]'
n=$((n + 1))
echo "requests sent: $n"
metrics=$(curl -sf "$base/metrics")
echo "metrics: $(grep -cE '^[a-z_]+' <<<"$metrics") sample lines; $(grep -E '^llmtools_requests_total' <<<"$metrics" | head -n 3 | tr '\n' ' ')"
kill -TERM $pid
wait $pid
trap - EXIT
echo "serve stopped cleanly; $(wc -l < "$log") requests logged"
