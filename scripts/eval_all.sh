#!/usr/bin/env bash
# Reproduce a table: run a grid (resumable: finished cells are skipped), then print its table and draw its plots.
#   bash scripts/eval_all.sh                          # the embedded tiny grid: no downloads, a few minutes on a CPU
#   bash scripts/eval_all.sh configs/llava15_7b.yaml  # a paper grid (GPU, weights and datasets)
# Extra arguments go to `fastervlm table` (e.g. --paper llava15_7b). OUT overrides the output folder.
set -euo pipefail
CONFIG="${1:-default}"
shift || true
NAME="$(python -c 'import sys; from fastervlm.eval.grid import load_config; print(load_config(sys.argv[1]).name)' "$CONFIG")"
OUT="${OUT:-results/$NAME}"
# A failed cell leaves no result: report it but still print what finished, then exit non-zero.
status=0
fastervlm eval run "$CONFIG" --out "$OUT" || status=$?
fastervlm table "$OUT" "$@"
fastervlm table "$OUT" --format csv --out "$OUT/table.csv" "$@"
fastervlm table "$OUT" --format latex --out "$OUT/table.tex" "$@"
fastervlm plot "$OUT" --out "$OUT/plots/scores"
echo "results: $OUT (table.csv, table.tex, plots/)"
exit "$status"
