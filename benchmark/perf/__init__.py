"""`python -m benchmark perf`: what sparse training really costs, and what real sparse kernels save.

Masks simulate the paper's FLOP savings: a masked model trains at dense speed, plus the work of
the sparsity code. This command measures, in one process, on synthetic batches of each model's
input shape:

* training: the plain dense PyTorch step (forward, loss, backward, `optimizer.step()`, no
  sparsity code) against each method's ordinary step (`sparsifier.step()` instead of
  `optimizer.step()`) and each dynamic method's mask-update step. Variants run interleaved,
  round by round (A B C ... A B C ...), after a warm-up, so machine drift hits all alike; the
  tables give medians and the median over rounds of each round's ratio to dense. Whole-step
  ratios are noisy on a shared machine, so the work the sparsity code adds is also timed
  directly: `sparsifier.step()` minus the `optimizer.step()` inside it, in the same steps;
* memory: the exact sizes of the tensors each sparsifier holds (bool masks, mask multipliers,
  cached active positions, SNFS's momentum) against the dense training state (weights, gradients,
  optimizer state); on CUDA also `torch.cuda.max_memory_allocated` of a few isolated steps;
* inference: the model with random masks of each `--sparsities` level (the preset's
  distribution) run with real sparse kernels (`benchmark.export.sparsify`: CSR matmuls for
  Linear layers, and for Conv2d layers where that is measured to be faster than the dense conv)
  against the dense model, at batch 1 and 256, beside the FLOP multiplier; outputs are checked
  against the masked dense model (max abs difference).

The package: `setups` (what each model is timed with, from the presets), `training`, `inference`,
`report` and `cli`.
"""
from .cli import add_parser, run

__all__ = ["add_parser", "run"]
