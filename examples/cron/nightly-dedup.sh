#!/usr/bin/env bash
# Nightly incremental dedup: every INCOMING/*.jsonl[.gz] not yet processed is deduplicated
# against the persistent index in STATE/ (and against itself), then added to the index.
#   nightly-dedup.sh INCOMING CLEAN STATE
# Exit codes are llmtools's: 0 ok, 3 a batch had bad lines (it is left unprocessed), ...
set -euo pipefail
incoming=$1 clean=$2 state=$3
LLMTOOLS=${LLMTOOLS:-llmtools}
mkdir -p "$clean" "$state/rejects" "$state/done"
shopt -s nullglob
for batch in "$incoming"/*.jsonl "$incoming"/*.jsonl.gz; do
  name=$(basename "$batch"); name=${name%.gz}; name=${name%.jsonl}
  [ -e "$state/done/$name" ] && continue
  # -o is atomic and the index is saved only after a successful run, so a failed night can
  # simply be re-run.
  "$LLMTOOLS" dedup --index "$state/dedup-index.npz" --id-field id \
      --rejects "$state/rejects/$name.jsonl" -o "$clean/$name.jsonl" -v "$batch"
  touch "$state/done/$name"
done
