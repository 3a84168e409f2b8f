#!/usr/bin/env bash
# The sweeps behind REPRODUCTION.md. Every command is resumable: run this script again after an
# interruption and finished runs are skipped, interrupted ones resume from their checkpoints.
# Usage: bash scripts/reproduce.sh [fmnist-lenet300|mnist-lenet300|fmnist-lenet5|all] (default all)
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
workers=${WORKERS:-2}
sweep=${1:-all}
SPARSITIES=0.8,0.9,0.95,0.98

if [[ $sweep == fmnist-lenet300 || $sweep == all ]]; then
  out=results/fashion-mnist-lenet300
  $py -m benchmark run --preset fashion-mnist-lenet300 --methods dense,small-dense,static,snip,gmp,set,snfs,rigl \
      --sparsity $SPARSITIES --seeds 3 \
      --distribution erk --workers "$workers" --out $out
  $py -m benchmark run --preset fashion-mnist-lenet300 --methods rigl,static --sparsity $SPARSITIES --seeds 3 \
      --distribution uniform --workers "$workers" --out $out
  $py -m benchmark run --preset fashion-mnist-lenet300 --methods rigl --sparsity $SPARSITIES --seeds 3 \
      --distribution erk --multiplier 2 --workers "$workers" --out $out
  $py -m benchmark summarize --runs $out/runs.csv
fi
if [[ $sweep == mnist-lenet300 || $sweep == all ]]; then
  out=results/mnist-lenet300-short
  $py -m benchmark run --preset mnist-lenet300-short --methods rigl,set,snfs,static,snip,gmp,dense \
      --sparsity 0.9,0.95,0.98 --seeds 3 --distribution erk --workers "$workers" --out $out
  $py -m benchmark summarize --runs $out/runs.csv
fi
if [[ $sweep == fmnist-lenet5 || $sweep == all ]]; then
  out=results/fashion-mnist-lenet5
  $py -m benchmark run --preset fashion-mnist-lenet5 --methods rigl,set,static,snip,gmp,dense --sparsity 0.9,0.95 \
      --seeds 2 --distribution erk --workers "$workers" --out $out
  $py -m benchmark summarize --runs $out/runs.csv
fi
