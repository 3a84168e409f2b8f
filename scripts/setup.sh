#!/usr/bin/env bash
# Create .venv, install sparsebench into it, editable, with its `sparsebench` command in .venv/bin
# (with test tools and TensorBoard when given --dev), and install the datasets that exist offline
# on this kind of machine.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
if [[ "${1:-}" == "--dev" ]]; then extras="[dev]"; fi
[[ -x .venv/bin/python ]] || python3 -m venv .venv
echo "setup: installing sparsebench${extras} into .venv (torch is large; the first time takes minutes)"
.venv/bin/python -m pip install -q -e ".${extras}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
# the sparse-kernel execution's C kernels (methods/csrc), compiled once for this CPU into ~/.cache/sparsebench
.venv/bin/python -c "from methods import sparse_kernels; sparse_kernels.build(verbose=True)" \
  || echo "setup: the sparse kernels did not build (no C compiler?); execution=sparse will use torch's sparse ops"
bash scripts/fetch_data.sh
echo "setup: done; the command line is .venv/bin/sparsebench (the same as .venv/bin/python -m benchmark / -m analysis)"
