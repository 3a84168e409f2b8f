#!/usr/bin/env bash
# The sweeps behind REPRODUCTION.md. Every command is resumable: run this script again after an
# interruption and finished runs are skipped, interrupted ones resume from their checkpoints.
# Usage: bash scripts/reproduce.sh [fmnist-lenet300|new-methods|landscape|mnist-lenet300|mnist-lenet300-full|
#                                   mnist-execution|mnist-snfs|fmnist-lenet5|fortunes-gru|all]
# (default all). Figures and tables of each sweep go to results/<sweep>/figures and results/<sweep>/tables.
set -euo pipefail
cd "$(dirname "$0")/.."

report() {  # summary, figures and tables of one sweep folder
  $py -m benchmark summarize --runs "$1/runs.csv"
  $py -m analysis plot --runs "$1/runs.csv" --out "$1/figures" --formats pdf,png --paper
  $py -m analysis table --runs "$1/runs.csv" --out "$1/tables"
}
timed() {  # note the start; `finished OUT TARGET` then appends the target's wall clock to OUT/sweep-times.csv
  started=$(date +%s)
}
finished() {
  mkdir -p "$1"
  [[ -f $1/sweep-times.csv ]] || echo "target,started_utc,wall_s,workers,commit" > "$1/sweep-times.csv"
  echo "$2,$(date -u -d "@$started" +%FT%TZ),$(( $(date +%s) - started )),$workers,$(git rev-parse --short=12 HEAD)" \
    >> "$1/sweep-times.csv"
}
py=.venv/bin/python
workers=${WORKERS:-2}
sweep=${1:-all}
SPARSITIES=0.8,0.9,0.95,0.98
PAPER_MNIST_LAYERS=0.98,0.882,0  # the paper's MNIST LeNet-300-100 layer sparsities (overall 0.9653)

if [[ $sweep == fmnist-lenet300 || $sweep == all ]]; then
  timed
  out=results/fashion-mnist-lenet300
  $py -m benchmark run --preset fashion-mnist-lenet300 --methods dense,small-dense,static,snip,gmp,set,snfs,rigl \
      --sparsity $SPARSITIES --seeds 3 \
      --distribution erk --workers "$workers" --out $out
  $py -m benchmark run --preset fashion-mnist-lenet300 --methods rigl,static --sparsity $SPARSITIES --seeds 3 \
      --distribution uniform --workers "$workers" --out $out
  $py -m benchmark run --preset fashion-mnist-lenet300 --methods rigl --sparsity $SPARSITIES --seeds 3 \
      --distribution erk --multiplier 2 --workers "$workers" --out $out
  finished $out fmnist-lenet300
  report $out
fi
if [[ $sweep == new-methods || $sweep == all ]]; then  # reuses the dense runs above for the lottery tickets
  timed
  out=results/fashion-mnist-lenet300
  $py -m benchmark run --preset fashion-mnist-lenet300 --methods dsr,deepr,lottery-static,lottery-rigl \
      --sparsity 0.9 --seeds 3 --distribution erk --workers "$workers" --out $out
  finished $out new-methods
  report $out
fi
if [[ $sweep == landscape || $sweep == all ]]; then  # gmp and static at 0.9, seed 0, from the sweep above
  timed
  runs=results/fashion-mnist-lenet300/runs
  gmp=$(ls -d $runs/gmp-s0.9-seed0-* | head -n 1)
  static=$(ls -d $runs/static-s0.9-seed0-* | head -n 1)
  $py -m analysis landscape "$gmp" "$static" --out results/fashion-mnist-lenet300/landscape \
      --restart-from "$static" --restart-steps 3000
  finished results/fashion-mnist-lenet300/landscape landscape
fi
if [[ $sweep == mnist-lenet300 || $sweep == all ]]; then
  timed
  out=results/mnist-lenet300-short
  $py -m benchmark run --preset mnist-lenet300-short --methods rigl,set,snfs,static,snip,gmp,dense \
      --sparsity 0.9,0.95,0.98 --seeds 3 --distribution erk --workers "$workers" --out $out
  $py -m benchmark run --preset mnist-lenet300-short --methods rigl,set,snfs,static,snip,gmp \
      --layer-sparsity $PAPER_MNIST_LAYERS --seeds 3 --workers "$workers" --out $out
  finished $out mnist-lenet300
  report $out
fi
if [[ $sweep == mnist-lenet300-full || $sweep == all ]]; then  # the paper's protocol as its code runs it
  timed                                                         # (layer sparsities 0.98/0.882/dense): ~15 CPU-min a run
  out=results/mnist-lenet300
  $py -m benchmark run --preset mnist-lenet300 --methods dense,small-dense,static,snip,gmp,set,snfs,rigl,dsr,deepr \
      --seeds 3 --workers "$workers" --out $out
  finished $out mnist-lenet300-full
  report $out
fi
if [[ $sweep == mnist-execution || $sweep == all ]]; then  # one full-protocol run both ways, at once on 2 cores
  timed                                                     # (one process each: the same machine load for both)
  out=results/mnist-lenet300/execution  # beside the sweep: a rerun of one of its runs, not a sweep of its own
  for execution in masked sparse; do
    $py -m benchmark run --preset mnist-lenet300 --methods rigl --seed 0 --execution $execution --workers 1 \
        --out $out &
  done
  wait
  finished $out mnist-execution
fi
if [[ $sweep == mnist-snfs || $sweep == all ]]; then  # the SNFS paper's LeNet-300-100 protocol, densities 10/5/2%
  timed
  out=results/mnist-lenet300-snfs
  $py -m benchmark run --preset mnist-lenet300-snfs --methods snfs,set,dsr,deepr --sparsity 0.9,0.95,0.98 \
      --seeds 3 --workers "$workers" --out $out
  finished $out mnist-snfs
  report $out
fi
if [[ $sweep == fmnist-lenet5 || $sweep == all ]]; then
  timed
  out=results/fashion-mnist-lenet5
  $py -m benchmark run --preset fashion-mnist-lenet5 --methods rigl,set,static,snip,gmp,dense --sparsity 0.9,0.95 \
      --seeds 2 --distribution erk --workers "$workers" --out $out
  finished $out fmnist-lenet5
  report $out
fi
if [[ $sweep == fortunes-gru || $sweep == all ]]; then  # section 4.2's model family, CPU-sized (bits per character)
  timed
  out=results/fortunes-gru
  $py -m benchmark run --preset fortunes-gru --methods rigl,set,static,dense --sparsity 0.75,0.9 \
      --workers "$workers" --out $out
  finished $out fortunes-gru
  report $out
fi
