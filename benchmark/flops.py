"""FLOP accounting of sparse training, as in the RigL paper's appendix (spec section 5).

What is counted, per training SAMPLE (multiply by the batch size for a run's absolute FLOPs):

- `f_D`: forward FLOPs of the dense model; `f_S`: forward FLOPs of the sparse model, where
  each sparse conv/linear layer's FLOPs are multiplied by its density. Only convolution and
  fully connected layers are counted (measured with fvcore, one multiply-add = 2 FLOPs, biases
  not counted); batch norm, activations, pooling, residual additions, the loss and the cost of
  choosing drops/grows are left out, as in the paper. `extra_flops` reports those separately.
- A backward pass costs 2x the forward pass of what it differentiates, so one step costs
  `3 f_S`, or `2 f_S + f_D_model` when the step needs the dense gradient (SNFS every step,
  RigL on mask-update steps). Dense and small-dense: `3 f_D_model`; GMP: `3 f_S(t)` with the
  density of the current step.
- Training multiplier = the run's total training FLOPs / those of the full-width dense model
  trained for `reference_steps` steps (the run's length at 1x). Inference multiplier = final
  `f_S` / `f_D` of the full-width dense model.
- The per-step cost is summed from the live masks during a run (`FlopCounter.train_step` on
  each `StepInfo`), and from the schedule without training by `plan`; both go through
  `FlopAccumulator`, so they produce the same `FlopSummary`.
- SNIP's scoring pass at initialisation (dense forward + backward, `3 f_D_model` per scored
  sample) is reported separately (`init_flops`), never inside the training FLOPs, as the paper
  does not count it.

`benchmark.paper_flops` recomputes the paper's ImageNet/ResNet-50 FLOP multipliers with them.
"""
from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import methods

from .models import AttentionMatmuls, TiedOutput

# modules whose forward FLOPs are counted (attention's QK^T and AV matmuls and a tied embedding's output
# projection are dense work of their own modules)
COUNTED_MODULES = (nn.Linear, nn.modules.conv._ConvNd, AttentionMatmuls, TiedOutput)


# ----- measuring forward FLOPs ------------------------------------------------------------


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode and restore each one's own training flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _example_input(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    """A zero batch of one sample on the model's device, in its floating dtype."""
    tensors = [*model.parameters(), *model.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    if any(isinstance(m, nn.Embedding) for m in model.modules()):  # a language model: token ids
        return torch.zeros(1, *input_shape, device=device, dtype=torch.long)
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.get_default_dtype())
    return torch.zeros(1, *input_shape, device=device, dtype=dtype)


def _analysis(model: nn.Module, input_shape: Sequence[int], handles: Mapping[str, Any] | None = None):
    """fvcore's FlopCountAnalysis of one sample, with every fvcore and tracer warning silenced."""
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, _example_input(model, input_shape))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    if handles:
        analysis.set_op_handle(**handles)
    return analysis


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence Python warnings (jit tracing's deprecation and tracer warnings) and fvcore's logger."""
    logger = logging.getLogger("fvcore")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def forward_flops(model: nn.Module, input_shape: Sequence[int]) -> dict[str, float]:
    """Per-sample forward FLOPs of every conv/linear module, by its name in `model.named_modules()`.

    Measured by fvcore on one zero sample of shape `input_shape` (C, H, W, or features), in eval
    mode, without gradients; every module's training flag is restored afterwards. fvcore counts
    a multiply-add as one flop, the paper as two, so its counts are doubled. Biases, batch norm,
    activations, pooling, additions and the loss are NOT included (the paper leaves them out;
    see `extra_flops`). A module called several times in one forward pass is charged for every
    call; a module never called gets 0.
    """
    with _eval_mode(model), torch.no_grad(), _quiet():
        by_module = _analysis(model, input_shape).by_module()
    flops = {
        name: 2.0 * float(by_module.get(name, 0))
        for name, module in model.named_modules()
        if isinstance(module, COUNTED_MODULES)
    }
    return {**flops, **recurrent_flops(model, input_shape)}


def recurrent_flops(model: nn.Module, input_shape: Sequence[int]) -> dict[str, float]:
    """Per-sample forward FLOPs of every recurrent matrix (weight_ih_l*, weight_hh_l* of nn.GRU/LSTM/RNN), by
    sparse layer name ("gru.weight_hh_l0"): 2 FLOPs per weight per time step, every gate's rows included
    (a GRU's matrices stack its 3 gates, an LSTM's 4), for the time steps of one forward pass of one zero
    sample. The gates' elementwise work (sigmoid, tanh, products) and biases are left out like activations."""
    steps: dict[str, int] = {}
    hooks = [module.register_forward_hook(
        lambda m, inputs, _out, name=name: steps.__setitem__(name, steps.get(name, 0)
                                                             + inputs[0].shape[1 if m.batch_first else 0]))
        for name, module in model.named_modules() if isinstance(module, nn.RNNBase)]
    if not hooks:
        return {}
    try:
        with _eval_mode(model), torch.no_grad():
            model(_example_input(model, input_shape))
    finally:
        for hook in hooks:
            hook.remove()
    recurrent = methods.sparse_layers(model, lambda _name, module: isinstance(module, nn.RNNBase))
    return {name: 2.0 * w.numel() * steps.get(name.rpartition(".")[0], 0) for name, w in recurrent}


def dense_forward(model: nn.Module, input_shape: Sequence[int]) -> float:
    """`f_D`: per-sample forward FLOPs of all conv/linear layers of `model`, fully dense."""
    return sum(forward_flops(model, input_shape).values())


def _elementwise(scale_out: float = 1.0) -> Callable:
    def handle(inputs, outputs) -> float:
        from fvcore.nn.jit_handles import get_shape

        return scale_out * math.prod(get_shape(outputs[0]) or [0])

    return handle


def _max_pool(inputs, outputs) -> float:
    from fvcore.nn.jit_handles import get_shape

    kernel = inputs[1].toIValue()
    if kernel is None:  # a list built in the graph: read its constant elements
        kernel = [v.toIValue() for v in inputs[1].node().inputs()]
    if isinstance(kernel, int):
        kernel = [kernel, kernel]
    return math.prod(get_shape(outputs[0]) or [0]) * math.prod(kernel)


def extra_flops(model: nn.Module, input_shape: Sequence[int]) -> dict[str, float]:
    """Per-sample forward FLOPs the paper leaves out, by operator (never part of the paper numbers).

    Elementary operations, one per arithmetic op (not multiply-add pairs): batch norm in eval
    mode (scale and shift, 2 per element, fvcore's count; training-mode batch norm costs more),
    ReLU and residual/elementwise additions (1 per output element), max pooling (kernel area
    comparisons per output element), average pooling (1 per input element). Measured like
    `forward_flops`; operators fvcore cannot count are absent. Conv/linear ops are excluded.
    """
    handles = {
        "aten::relu": _elementwise(), "aten::relu_": _elementwise(),
        "aten::add": _elementwise(), "aten::add_": _elementwise(),
        "aten::max_pool2d": _max_pool,
    }
    with _eval_mode(model), torch.no_grad(), _quiet():
        by_operator = _analysis(model, input_shape, handles).by_operator()
    layers = {"conv", "linear", "addmm"}  # the conv/linear layers: reported by forward_flops, not here
    return {op: float(n) for op, n in by_operator.items() if n and op not in layers}


# ----- per-step accounting -------------------------------------------------------------------


def absolute_flops(per_sample: float, batch_size: int) -> float:
    """A run's absolute FLOPs from a per-sample number (paper: 3 * 8.2e9 * 4096 * 32000 = 3.2e18)."""
    return per_sample * batch_size


@dataclass
class FlopSummary:
    """The FLOPs of one run, per training sample unless named otherwise (JSON via dataclasses.asdict)."""

    steps: int  # optimizer steps of the run
    reference_steps: int  # steps of the same run at multiplier 1 (the denominator's length)
    dense_forward: float  # f_D of the full-width dense reference model
    model_dense_forward: float  # f_D of the model trained (narrower for small-dense)
    sparse_forward: float  # final f_S: inference FLOPs per sample
    train_flops_per_sample: float  # sum over all steps of the per-sample step cost
    train_multiplier: float  # train_flops_per_sample / (reference_steps * 3 * dense_forward)
    inference_multiplier: float  # sparse_forward / dense_forward
    init_flops: float = 0.0  # absolute FLOPs of SNIP's scoring pass: 3 * model_dense_forward * samples scored
    init_flops_per_sample: float | None = 0.0  # init_flops / batch_size (None if batch_size unknown)
    pretrain_flops: float = 0.0  # absolute FLOPs of a lottery run's dense pre-training, INCLUDED in train_flops
    batch_size: int | None = None
    train_flops: float | None = None  # absolute: train_flops_per_sample * batch_size

    def total_flops(self) -> float | None:
        """Absolute training plus initialisation FLOPs (None without a batch size)."""
        return None if self.train_flops is None else self.train_flops + self.init_flops


class FlopCounter:
    """Per-sample FLOPs of a model's forward pass and training steps for given mask counts.

    Built once per run from `module_flops` (`forward_flops` of the model being trained), the
    sparsifier's layer `names` and `sizes` (in the sparsifier's order) and `reference_forward`,
    the f_D of the full-width dense model (default: this model's own f_D; pass the width-1 model's
    for small-dense). Conv/linear modules that are not sparse layers always count fully.
    """

    def __init__(self, module_flops: Mapping[str, float], names: Sequence[str], sizes: Sequence[int],
                 reference_forward: float | None = None):
        missing = [n for n in names if n not in module_flops]
        if missing:
            raise ValueError(
                f"no forward FLOPs for sparse layer(s) {missing}: forward_flops measures conv/linear modules "
                "only; pass module_flops with an entry (FLOPs per sample) for every sparse layer"
            )
        if len(names) != len(sizes):
            raise ValueError(f"{len(names)} layer names but {len(sizes)} sizes")
        self.names, self.sizes = list(names), [int(s) for s in sizes]
        self.layer_flops = [float(module_flops[n]) for n in self.names]
        sparse = set(self.names)
        self.fixed_flops = sum(float(f) for n, f in module_flops.items() if n not in sparse)
        self.model_dense_forward = self.fixed_flops + sum(self.layer_flops)
        self.reference_forward = float(reference_forward if reference_forward is not None else self.model_dense_forward)
        self._per_weight = [f / s for f, s in zip(self.layer_flops, self.sizes)]
        self._cache: dict[tuple[int, ...], float] = {}

    @classmethod
    def for_sparsifier(cls, sparsifier: methods.Sparsifier, input_shape: Sequence[int],
                       reference_forward: float | None = None,
                       module_flops: Mapping[str, float] | None = None) -> FlopCounter:
        """A counter for `sparsifier.model`, measuring its forward FLOPs unless `module_flops` is given."""
        if module_flops is None:
            module_flops = forward_flops(sparsifier.model, input_shape)
        return cls(module_flops, sparsifier.names, sparsifier.sizes, reference_forward)

    def forward(self, counts: Sequence[int]) -> float:
        """`f_S`: forward FLOPs per sample with `counts[i]` active weights in sparse layer i."""
        key = tuple(counts)
        value = self._cache.get(key)
        if value is None:
            if len(key) != len(self.sizes):
                raise ValueError(f"got {len(key)} counts for {len(self.sizes)} sparse layers")
            value = self.fixed_flops + sum(p * c for p, c in zip(self._per_weight, key))
            if len(self._cache) < 4096:
                self._cache[key] = value
        return value

    def train_step(self, counts: Sequence[int], dense_backward: bool) -> float:
        """Per-sample FLOPs of one training step: `3 f_S`, or `2 f_S + f_D_model` with a dense backward."""
        f_s = self.forward(counts)
        return 2 * f_s + self.model_dense_forward if dense_backward else 3 * f_s

    def dense_step(self) -> float:
        """`3 f_D` of the full-width dense model: one step of the multiplier's denominator."""
        return 3 * self.reference_forward

    def accumulator(self) -> FlopAccumulator:
        """A running total of training FLOPs for a real run (or a plan)."""
        return FlopAccumulator(self)

    def summary(self, train_flops_per_sample: float, final_counts: Sequence[int], reference_steps: int,
                steps: int, snip_init_samples: int = 0, batch_size: int | None = None) -> FlopSummary:
        """The FlopSummary of a run that spent `train_flops_per_sample` over `steps` steps and ended
        with `final_counts` active weights; `reference_steps` = the run's steps at multiplier 1."""
        if reference_steps <= 0:
            raise ValueError(f"reference_steps must be the run's positive step count at 1x, got {reference_steps}")
        f_s = self.forward(final_counts)
        init = 3 * self.model_dense_forward * snip_init_samples
        return FlopSummary(
            steps=int(steps),
            reference_steps=int(reference_steps),
            dense_forward=self.reference_forward,
            model_dense_forward=self.model_dense_forward,
            sparse_forward=f_s,
            train_flops_per_sample=float(train_flops_per_sample),
            train_multiplier=train_flops_per_sample / (reference_steps * self.dense_step()),
            inference_multiplier=f_s / self.reference_forward,
            init_flops=init,
            init_flops_per_sample=(init / batch_size) if batch_size else (0.0 if init == 0 else None),
            batch_size=batch_size,
            train_flops=absolute_flops(train_flops_per_sample, batch_size) if batch_size else None,
        )


class FlopAccumulator:
    """Sum of per-sample training FLOPs over steps; `add` each step's `StepInfo` during a run.

        acc = counter.accumulator()
        for ...:
            info = sparsifier.step()
            acc.step(info)
        summary = acc.summary(reference_steps, sparsifier.counts)
    """

    def __init__(self, counter: FlopCounter):
        self.counter = counter
        self.total = 0.0
        self.steps = 0

    def add(self, counts: Sequence[int], dense_backward: bool, n: int = 1) -> float:
        """Add `n` steps with these counts; returns the per-sample FLOPs of one such step."""
        flops = self.counter.train_step(counts, dense_backward)
        self.total += n * flops
        self.steps += n
        return flops

    def step(self, info: methods.StepInfo) -> float:
        """Add one step from the `StepInfo` that `sparsifier.step()` returned."""
        return self.add(info.counts, info.dense_backward)

    def summary(self, reference_steps: int, final_counts: Sequence[int], snip_init_samples: int = 0,
                batch_size: int | None = None) -> FlopSummary:
        """The FlopSummary of the steps added so far."""
        return self.counter.summary(self.total, final_counts, reference_steps, self.steps,
                                    snip_init_samples, batch_size)

    def state_dict(self) -> dict[str, Any]:
        """Save next to the checkpoint, so a resumed run keeps counting."""
        return {"total": self.total, "steps": self.steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.total, self.steps = float(state["total"]), int(state["steps"])


def plan(sparsifier: methods.Sparsifier, counter: FlopCounter, reference_steps: int,
         snip_init_samples: int = 0, batch_size: int | None = None) -> FlopSummary:
    """The FLOPs of the whole run of `sparsifier`, from its schedule alone (nothing is trained).

    Steps t = 0 .. total_steps - 1 cost `counter.train_step(planned_counts(t), uses_dense_gradient(t))`.
    Counts are re-read only after update steps (they change nowhere else) and runs of equal steps
    are added at once, so 160k steps take well under a second; the total equals the per-step sum.
    The final `f_S` uses `planned_counts(total_steps)`, the masks after the last step.
    `snip_init_samples`: samples SNIP scored at init, reported as `init_flops` (not training FLOPs).
    """
    acc = counter.accumulator()
    counts = sparsifier.planned_counts(0)
    run_dense, run_length = False, 0  # a run of consecutive steps with the same counts and backward
    for t in range(sparsifier.total_steps):
        if t > 0 and sparsifier.is_update_step(t - 1):
            if run_length:
                acc.add(counts, run_dense, n=run_length)
                run_length = 0
            counts = sparsifier.planned_counts(t)
        dense = bool(sparsifier.uses_dense_gradient(t))
        if dense != run_dense and run_length:
            acc.add(counts, run_dense, n=run_length)
            run_length = 0
        run_dense = dense
        run_length += 1
    if run_length:
        acc.add(counts, run_dense, n=run_length)
    return acc.summary(reference_steps, sparsifier.planned_counts(sparsifier.total_steps),
                       snip_init_samples, batch_size)
