#!/usr/bin/env bash
# One-shot monitoring for cron: evaluate serve's request log against a reference window and
# exit 1 (printing the alert records) when an alert fires; print nothing and exit 0 otherwise.
#   watch-alert.sh REQUEST_LOG [REFERENCE]
set -uo pipefail
log=$1 reference=${2:-}
LLMTOOLS=${LLMTOOLS:-llmtools}
args=(--once --window 1h -q
      --alert 'error_rate > 0.05'
      --alert 'p95_latency_ms > 2000'
      --alert 'psi(prompt_tokens) > 0.2')
[ -n "$reference" ] && [ -e "$reference" ] && args+=(--reference "$reference")
out=$("$LLMTOOLS" watch "${args[@]}" "$log")
rc=$?
if [ "$rc" -ne 0 ]; then
  grep '"alert"' <<<"$out" || true
fi
exit "$rc"
