#!/usr/bin/env bash
# The numbers in README's "Performance" section: every kernel at three sizes, then both
# language models end to end, on every backend built here and on PyTorch if installed.
# Writes Markdown to benchmarks/results/report.md and CSV, JSON and PNG charts beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results
mkdir -p "$out"
{
  python -m tinylm.bench --sizes small,medium,large --repeat 10 --warmup 3 --out "$out"
  echo
  python -m tinylm.bench --train --train-size medium --repeat 6 --warmup 2 --out "$out"
} | tee "$out/report.md"
