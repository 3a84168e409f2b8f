"""Sparse models for inference: real sparse kernels instead of masks, and a file format to ship them.

Training keeps weights dense and zeroes the masked ones, so it saves no time (the FLOP savings
of the paper are simulated). For inference the zeros can be skipped:

    from benchmark.export import export_sparse, load_sparse
    export_sparse("results/runs/rigl-s0.9-seed0-...", "rigl.sparse.pt")   # CSR weights, a few KB
    model = load_sparse("rigl.sparse.pt")                                 # Linear layers on sparse kernels
    model(x)

`python -m benchmark export RUN_DIR OUT` does the same from the command line and checks the
sparse model's outputs against the masked dense model's.

Kernels: on CPU with float32, sparse Linear layers run our C kernels (methods/csrc/sparse_kernels.c,
`methods.sparse_kernels.InferenceChain`), the kernel picked by batch size: below 4 samples a CSR
matrix-vector product per sample, above that the activations transposed once (batch last, padded to 16
samples) and each active weight accumulated over the batch in vector registers. An `nn.Sequential`
becomes a SparseSequential that runs each run of consecutive sparse Linear layers, with the ReLUs
between them, in one call: activations stay in the kernel's layout from the first layer to the last,
with no copy in between. Elsewhere (CUDA, other dtypes, no C compiler) they are torch CSR matmuls.
A sparse Conv2d unfolds its input (im2col) and does a torch CSR matmul: on CPU
that pays only at high sparsity and large batches (see `python -m benchmark perf`), so
`load_sparse` keeps convolutions dense unless asked (`convs="sparse"`). On CUDA a layer whose
mask is 2:4 semi-structured (at most 2 active weights in every 4 consecutive inputs) and whose
weights are fp16/bf16 uses `torch.sparse.to_sparse_semi_structured` instead (`semi_structured=True`);
runs trained with `--structure 2:4` get it by default (`load_sparse(..., device="cuda", dtype=torch.float16)`).
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from methods import sparse_kernels
from methods.base import layer_module

FORMAT = "sparsebench.sparse-model/1"



def _csr(weight: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The 2-D CSR form (out x everything else) of a weight, masked-out entries dropped."""
    dense = weight.detach().reshape(weight.shape[0], -1)
    if mask is not None:
        dense = dense.masked_fill(~mask.reshape(dense.shape).to(device=dense.device, dtype=torch.bool), 0)
    with warnings.catch_warnings():  # torch warns once that CSR support is "beta"; what we use is stable
        warnings.simplefilter("ignore", UserWarning)
        return dense.to_sparse_csr()


class SparseLinear(nn.Module):
    """`nn.Linear` with a CSR weight (int64 `crow`, int32 `col`, `values`), computed batch last (`W X^T + b`).

    On CPU with float32 the product is our C kernel (`methods.sparse_kernels.InferenceChain`, which also
    runs a whole run of sparse layers in one call, see SparseSequential); elsewhere a torch CSR matmul.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("crow", weight.crow_indices().to(torch.int64).contiguous())
        self.register_buffer("col", weight.col_indices().to(torch.int32).contiguous())
        self.register_buffer("values", weight.values().contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().reshape(-1).clone())

    @classmethod
    def from_dense(cls, layer: nn.Linear, mask: torch.Tensor | None = None) -> SparseLinear:
        return cls(_csr(layer.weight, mask), layer.bias)

    @property
    def weight(self) -> torch.Tensor:
        """The weight as a torch CSR tensor (int32 indices)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(self.crow.to(torch.int32), self.col, self.values,
                                           (self.out_features, self.in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run_chain(self, [(self, False)], False, x)

    def extra_repr(self) -> str:
        nnz = self.values.numel()
        return (f"in_features={self.in_features}, out_features={self.out_features}, nnz={nnz} "
                f"(density {nnz / (self.in_features * self.out_features):.4f}), bias={self.bias is not None}")

    def __getstate__(self) -> dict:
        return _without_chains(self)


def _without_chains(module: nn.Module) -> dict:
    """A module's state without its cached kernel arguments (rebuilt on the next call; pointers do not copy)."""
    state = module.__dict__.copy()
    state.pop("_chains", None)
    return state


def _run_chain(owner: nn.Module, layers: list[tuple[SparseLinear, bool]], flatten: bool, x: torch.Tensor) -> torch.Tensor:
    """Run SparseLinear `layers` (each with whether a ReLU follows) on `x` as one `InferenceChain`, cached on
    `owner` until one of the layers' tensors is replaced (`.to()`, `load_state_dict(assign=True)`, ...);
    `flatten`: `x` is first flattened from dim 1, as an `nn.Flatten()` before the first layer would."""
    key = tuple((relu, *map(id, layer._buffers.values())) for layer, relu in layers)
    chains = owner.__dict__.setdefault("_chains", {})
    cached = chains.get(id(layers[0][0]))
    if cached is None or cached[0] != key:
        chain = sparse_kernels.InferenceChain(
            [(layer.crow, layer.col, layer.values, layer.bias, relu) for layer, relu in layers], layers[0][0].in_features)
        chains[id(layers[0][0])] = cached = (key, chain)
    if flatten:
        return cached[1](x.reshape(x.shape[0], -1))
    y = cached[1](x.reshape(-1, layers[0][0].in_features))
    return y.reshape(*x.shape[:-1], y.shape[-1])


class SparseSequential(nn.Sequential):
    """`nn.Sequential` (same children, names and state) that runs each run of consecutive SparseLinear
    layers, with the ReLUs between and after them (and an `nn.Flatten()` right before), as one kernel
    call: activations stay batch last in the kernel's buffers from the first layer of the run to its
    last, with no copy or Python call in between."""

    def _plan(self) -> list:
        """The steps of forward: a module, or (flatten first?, [(SparseLinear, ReLU after?), ...]) of a run."""
        children = tuple(self._modules.values())
        planned = self.__dict__.get("_planned")
        if planned is None or len(planned[0]) != len(children) or any(a is not b for a, b in zip(planned[0], children)):
            steps = []
            for module in children:
                run = steps[-1] if steps and isinstance(steps[-1], tuple) else None
                if isinstance(module, SparseLinear):
                    if run is None:
                        flatten = bool(steps) and type(steps[-1]) is nn.Flatten and \
                            (steps[-1].start_dim, steps[-1].end_dim) == (1, -1)
                        if flatten:
                            steps.pop()
                        steps.append(run := (flatten, []))
                    run[1].append((module, False))
                elif type(module) is nn.ReLU and run is not None and not run[1][-1][1]:
                    run[1][-1] = (run[1][-1][0], True)
                else:
                    steps.append(module)
            self.__dict__["_planned"] = planned = (children, steps)
        return planned[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step in self._plan():
            x = _run_chain(self, step[1], step[0], x) if isinstance(step, tuple) else step(x)
        return x

    def __getstate__(self) -> dict:
        state = _without_chains(self)
        state.pop("_planned", None)
        return state


class SparseConv2d(nn.Module):
    """`nn.Conv2d` (groups 1, zero padding) with a CSR weight: im2col, then a sparse matmul."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, kernel_size, stride, padding, dilation):
        super().__init__()
        self.out_channels = weight.shape[0]
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.register_buffer("weight", weight)
        self.register_buffer("bias", None if bias is None else bias.detach().reshape(-1, 1).clone())

    @classmethod
    def supports(cls, layer: nn.Module) -> bool:
        return (isinstance(layer, nn.Conv2d) and layer.groups == 1 and layer.padding_mode == "zeros"
                and not isinstance(layer.padding, str))

    @classmethod
    def from_dense(cls, layer: nn.Conv2d, mask: torch.Tensor | None = None) -> SparseConv2d:
        return cls(_csr(layer.weight, mask), layer.bias, layer.kernel_size, layer.stride, layer.padding,
                   layer.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        out_h, out_w = (
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, p, d, k, s in zip((height, width), self.padding, self.dilation, self.kernel_size, self.stride)
        )
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)  # (B, C*kh*kw, L)
        cols = cols.transpose(0, 1).reshape(cols.shape[1], -1)  # (C*kh*kw, B*L)
        out = torch.sparse.mm(self.weight, cols) if self.bias is None else torch.addmm(self.bias, self.weight, cols)
        return out.view(self.out_channels, batch, out_h, out_w).transpose(0, 1)

    def extra_repr(self) -> str:
        nnz = self.weight.values().numel()
        return (f"out_channels={self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, nnz={nnz} (density {nnz / self.weight.shape[0] / self.weight.shape[1]:.4f})")


def is_2_4(mask: torch.Tensor) -> bool:
    """Whether a 2-D-able mask has at most 2 active entries in every 4 consecutive inputs."""
    flat = mask.reshape(mask.shape[0], -1)
    return flat.shape[1] % 4 == 0 and bool((flat.reshape(flat.shape[0], -1, 4).sum(-1) <= 2).all())


class SemiStructuredLinear(nn.Module):
    """`nn.Linear` whose 2:4 weight runs on CUDA's semi-structured sparse kernels (fp16/bf16)."""

    def __init__(self, layer: nn.Linear, mask: torch.Tensor):
        super().__init__()
        from torch.sparse import to_sparse_semi_structured

        weight = layer.weight.detach().masked_fill(~mask.to(device=layer.weight.device, dtype=torch.bool), 0)
        self.weight = nn.Parameter(to_sparse_semi_structured(weight), requires_grad=False)
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone(), requires_grad=False)

    @classmethod
    def supports(cls, layer: nn.Module, mask: torch.Tensor) -> bool:
        weight = getattr(layer, "weight", None)
        return (isinstance(layer, nn.Linear) and weight.is_cuda and weight.dtype in (torch.float16, torch.bfloat16)
                and min(weight.shape) >= 64 and weight.shape[0] % 64 == 0 and weight.shape[1] % 64 == 0
                and is_2_4(mask))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def sparsify(model: nn.Module, masks: Mapping[str, torch.Tensor], *, convs: bool | Mapping[str, bool] = False,
             semi_structured: bool = False, copy_model: bool = True) -> nn.Module:
    """A copy of `model` in eval mode whose masked Linear (and, if `convs`, Conv2d) layers use sparse kernels.

    `masks` maps module names to boolean masks (a sparsifier's `dict(zip(s.names, s.masks))`);
    fully dense layers stay as they are; an `nn.Sequential` holding sparse Linear layers becomes a
    SparseSequential (runs of them in one kernel call). `convs` is a bool or {module name: bool}. With
    `semi_structured=True`, CUDA fp16/bf16 Linear layers whose mask is 2:4 use semi-structured kernels.
    """
    model = copy.deepcopy(model) if copy_model else model
    model.eval()
    for name, mask in masks.items():
        layer, _ = layer_module(model, name)
        if bool(mask.all()) or isinstance(layer, nn.RNNBase):  # recurrent matrices stay masked-dense
            continue
        if semi_structured and SemiStructuredLinear.supports(layer, mask):
            _set_module(model, name, SemiStructuredLinear(layer, mask))
        elif isinstance(layer, nn.Linear):
            _set_module(model, name, SparseLinear.from_dense(layer, mask))
        elif SparseConv2d.supports(layer) and (convs.get(name, False) if isinstance(convs, Mapping) else convs):
            _set_module(model, name, SparseConv2d.from_dense(layer, mask))
    return _chain_sequentials(model)


def _chain_sequentials(model: nn.Module) -> nn.Module:
    """`model` with every `nn.Sequential` in it (itself included) that has a SparseLinear child made a
    SparseSequential with the same children."""
    root = model
    for name, module in list(model.named_modules()):
        if type(module) is nn.Sequential and any(isinstance(m, SparseLinear) for m in module.children()):
            chained = SparseSequential(OrderedDict(module.named_children()))
            chained.training = module.training
            if name:
                _set_module(model, name, chained)
            else:
                root = chained
    return root


def _weight(model: nn.Module, name: str) -> torch.Tensor:
    """The weight of sparse layer `name` (a Linear/Conv module, or a recurrent matrix)."""
    module, parameter = layer_module(model, name)
    return getattr(module, parameter)


def _weight_key(model: nn.Module, name: str) -> str:
    """The state_dict key of sparse layer `name`'s weight."""
    return f"{name}.weight" if layer_module(model, name)[1] == "weight" else name


def masked_dense(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """A copy of `model` in eval mode with masked-out weights set to zero (the reference for sparse outputs)."""
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, mask in masks.items():
            weight = _weight(model, name)
            weight.masked_fill_(~mask.to(device=weight.device, dtype=torch.bool), 0)
    return model


# ----- files ----------------------------------------------------------------------------------


def load_run(source: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, Any]]:
    """(model with the run's final weights, {layer: mask}, meta) of a run folder or its checkpoint.pt."""
    from .checkpoints import checkpoint_file, load_run_state, load_weights
    from .data import DATASETS
    from .files import read_run_config
    from .models import build_model

    checkpoint = checkpoint_file(source)
    record, cfg = read_run_config(checkpoint.parent)
    info = DATASETS[cfg.dataset]
    meta = {"model": cfg.model, "num_classes": info.num_classes, "input_shape": list(info.input_shape),
            "width": float(record["width"]), "run_id": record["run_id"], "method": cfg.method,
            "structure": cfg.structure}
    state = load_run_state(checkpoint, torch.device(device))
    model = build_model(meta["model"], meta["num_classes"], tuple(meta["input_shape"]), meta["width"]).to(device)
    load_weights(model, state["model"], checkpoint)
    masks = {name: mask.to(torch.bool) for name, mask in state["sparsifier"]["masks"].items()}
    return model.eval(), masks, meta


def export_sparse(source: str | os.PathLike, path: str | os.PathLike) -> dict[str, Any]:
    """Write the final sparse model of a run (folder or checkpoint.pt) to `path`; return a summary.

    The file is a `torch.save`d dict (loadable with `weights_only=True`): the model's name and
    shape, its dense tensors, and each sparse Linear/Conv2d weight as CSR components
    (`crow_indices`, `col_indices`, `values`, `shape`). Read it back with `load_sparse`.
    """
    from .checkpoints import save_atomic

    model, masks, meta = load_run(source)
    sparse_names = [n for n, m in masks.items() if not bool(m.all())
                    and isinstance(layer_module(model, n)[0], (nn.Linear, nn.Conv2d))]
    layers = {}
    for name in sparse_names:
        weight = _weight(model, name)
        csr = _csr(weight, masks[name])
        layers[name] = {"crow_indices": csr.crow_indices().clone(), "col_indices": csr.col_indices().clone(),
                        "values": csr.values().clone(), "shape": list(weight.shape)}
    skip = {_weight_key(model, n) for n in sparse_names}
    dense = {k: v.detach().clone() for k, v in model.state_dict().items() if k not in skip}
    # a masked layer that stays dense (Conv1d/3d, recurrent matrices...) is stored with its zeros
    for name, mask in masks.items():
        key = _weight_key(model, name)
        if key in dense:
            dense[key] = dense[key].masked_fill(~mask, 0)
    payload = {"format": FORMAT, **meta, "dense": dense, "sparse": layers}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(payload, path)
    nnz = sum(int(layer["values"].numel()) for layer in layers.values())
    total = sum(masks[n].numel() for n in sparse_names)
    return {"path": str(path), "bytes": path.stat().st_size, "sparse_layers": sparse_names, "nnz": nnz,
            "sparse_weights": total, **meta}


def load_sparse(path: str | os.PathLike, *, convs: str = "dense", device: str | torch.device = "cpu",
                semi_structured: bool | None = None, dtype: torch.dtype | None = None) -> nn.Module:
    """The model of an `export_sparse` file, in eval mode, its sparse Linear layers on CSR kernels.

    `convs="dense"` (default) runs sparse convolutions as ordinary (zero-filled) Conv2d, which is
    faster on CPU at the batch sizes and sparsities we measured; `"sparse"` runs them as im2col +
    CSR matmul. `semi_structured` (default: whether the run trained with structure 2:4) puts CUDA fp16/bf16
    Linear layers with a 2:4 mask on semi-structured kernels; `dtype` converts the model (e.g. torch.float16).
    """
    from .models import build_model

    if convs not in ("dense", "sparse"):
        raise ValueError(f"convs must be 'dense' or 'sparse', got {convs!r}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever a damaged or foreign file raises, the answer is the same
        raise ValueError(f"{path} is not a readable sparse model file ({type(err).__name__}); "
                         "write one with `python -m benchmark export RUN_DIR OUT`") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a sparse model file of format {FORMAT}; write one with "
                         "`python -m benchmark export RUN_DIR OUT`")
    model = build_model(payload["model"], payload["num_classes"], tuple(payload["input_shape"]), payload["width"])
    weights = {}
    for name, layer in payload["sparse"].items():
        shape = layer["shape"]
        try:  # check_invariants: a damaged file raises here instead of crashing a kernel later
            csr = torch.sparse_csr_tensor(layer["crow_indices"], layer["col_indices"], layer["values"],
                                          (shape[0], math.prod(shape[1:])), check_invariants=True)
        except RuntimeError as err:
            raise ValueError(f"{path}: layer {name} has invalid CSR data ({str(err).splitlines()[0]}); "
                             "export the run again") from None
        weights[name] = csr
    state = dict(payload["dense"])
    for name, csr in weights.items():
        state[f"{name}.weight"] = csr.to_dense().reshape(payload["sparse"][name]["shape"])
    model.load_state_dict(state)
    model = model.to(device, dtype).eval()
    masks = {name: (state[f"{name}.weight"] != 0) for name in weights}
    if semi_structured is None:
        semi_structured = payload.get("structure") == "2:4"
    return sparsify(model, masks, convs=convs == "sparse", semi_structured=semi_structured, copy_model=False)


# ----- command line ---------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `export` subcommand."""
    parser = subparsers.add_parser(
        "export",  # its one-line help is in benchmark.cli.LAZY_COMMANDS
        description="Write the final model of a run (folder or checkpoint.pt) as a file of CSR weights, then "
                    "load it back and check its outputs against the masked dense model. Load it in Python with "
                    "benchmark.export.load_sparse(path).")
    parser.add_argument("source", metavar="RUN_DIR", help="a run folder (results/runs/<run id>) or its checkpoint.pt")
    parser.add_argument("out", metavar="OUT", help="file to write (e.g. model.sparse.pt)")
    parser.add_argument("--batch-size", type=int, default=8, help="random inputs used for the output check (default 8)")
    return parser


def _check_out_file(out: str) -> None:
    """ValueError naming the fix unless OUT can be a file: not empty, not a folder, in a folder that can be made."""
    from .files import check_out_dir

    if not out or Path(out).is_dir():
        raise ValueError(f"OUT {out!r} is {'a folder' if out else 'empty'}; pass a file name such as model.sparse.pt")
    check_out_dir(Path(out).parent, "OUT's folder")


def run(args: argparse.Namespace) -> int:
    """`python -m benchmark export RUN_DIR OUT`."""
    if args.batch_size < 1:
        raise ValueError("--batch-size must be >= 1 (random inputs for the output check)")
    _check_out_file(args.out)
    summary = export_sparse(args.source, args.out)
    model, masks, meta = load_run(args.source)
    reference = masked_dense(model, masks)
    loaded = load_sparse(args.out)
    generator = torch.Generator().manual_seed(0)
    if len(meta["input_shape"]) == 1:  # a language model: random byte sequences
        x = torch.randint(meta["num_classes"], (args.batch_size, *meta["input_shape"]), generator=generator)
    else:
        x = torch.randn(args.batch_size, *meta["input_shape"], generator=generator)
    with torch.no_grad():
        diff = (loaded(x) - reference(x)).abs().max().item()
    dense_bytes = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    print(f"wrote {summary['path']}: {summary['model']} of run {summary['run_id']} ({summary['method']}), "
          f"{len(summary['sparse_layers'])} sparse layer(s) as CSR, {summary['nnz']} of {summary['sparse_weights']} "
          f"weights stored; {summary['bytes'] / 1024:.1f} KiB (dense state {dense_bytes / 1024:.1f} KiB)")
    print(f"check: max |sparse - masked dense| = {diff:.3g} on {args.batch_size} random inputs"
          f"{'' if diff <= 1e-5 else ' (above 1e-5!)'}")
    print("load: from benchmark.export import load_sparse; model = load_sparse(path)")
    return 0 if diff <= 1e-5 else 1
