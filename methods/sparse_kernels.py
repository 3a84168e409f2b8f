"""The kernels of the sparse-kernel execution: a sparse Linear layer's forward, input gradient and weight
gradient at its active positions only.

A layer's weight W (out x in) is held as CSR (`rowptr` int64, `col` int32, `values`) plus the transposed
structure (`tptr`, `trow`, `tperm`: for each input, the rows of its active weights and their indices in
the CSR order). Activations are used transposed (batch last, contiguous): `XT` (in x n), `YT` (out x n).

On CPU with float32 the kernels are `csrc/sparse_kernels.c`, compiled on first use (or by
`scripts/setup.sh`) with the machine's C compiler at `-O3 -march=native` into a cache folder
(`SPARSEBENCH_KERNELS_DIR`, default `~/.cache/sparsebench`), and called through ctypes. Elsewhere (CUDA,
other dtypes, no compiler) the same three products run as torch ops: CSR matmuls and a gathered SDDMM.

The same library serves two more callers: the masked-dense step's masking by bool masks (`Masking`) and
the exported model's inference through runs of sparse Linear layers (`InferenceChain`).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

SOURCE = Path(__file__).parent / "csrc" / "sparse_kernels.c"
FLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-fPIC", "-shared", "-std=gnu11"]

_lib: ctypes.CDLL | None = None
_failed: str | None = None
_lock = threading.Lock()


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def cache_dir() -> Path:
    return Path(os.environ.get("SPARSEBENCH_KERNELS_DIR") or Path.home() / ".cache" / "sparsebench")


def library_path() -> Path:
    """Where the compiled kernels of this source, these flags and this CPU are cached."""
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode() + _cpu_flags().encode()).hexdigest()[:16]
    return cache_dir() / f"sparse_kernels-{key}.so"


def build(verbose: bool = False) -> Path:
    """Compile the kernels if this source/CPU has no cached library yet; the library's path.
    Raises RuntimeError (with the compiler's message) when there is no working C compiler."""
    path = library_path()
    if path.exists():
        return path
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise RuntimeError("no C compiler (cc, gcc or clang) found; install one (apt-get install gcc) or set CC")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:  # compile aside, then rename: safe under races
        target = Path(tmp) / path.name
        done = subprocess.run([compiler, *FLAGS, "-o", str(target), str(SOURCE)], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            raise RuntimeError(f"compiling {SOURCE} failed:\n{done.stderr.strip()}")
        os.replace(target, path)
    if verbose:
        print(f"sparse kernels built: {path}")
    return path


def library() -> ctypes.CDLL | None:
    """The compiled kernels, built on first use; None (with one warning) if they cannot be built."""
    global _lib, _failed
    if _lib is not None or _failed is not None:
        return _lib
    with _lock:
        if _lib is None and _failed is None:
            try:
                lib = ctypes.CDLL(str(build()))
            except (RuntimeError, OSError) as error:
                _failed = str(error)
                warnings.warn(f"sparse kernels unavailable, using torch's sparse ops instead: {error}", RuntimeWarning,
                              stacklevel=2)
                return None
            i64, ptr = ctypes.c_int64, ctypes.c_void_p
            lib.sk_forward.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr, ptr]
            lib.sk_infer_chain.argtypes = [i64, i64, i64, ptr, ctypes.POINTER(i64), ctypes.POINTER(ptr),
                                           ctypes.POINTER(ctypes.c_int32), ptr]
            lib.sk_input_grad.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr, ptr]
            lib.sk_weight_grad.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr]
            lib.sk_scatter.argtypes = [i64, ptr, ptr, ptr]
            lib.sk_transpose.argtypes = [i64, i64, i64, ptr, ptr]
            lib.sk_mask_mul.argtypes = [i64, ctypes.POINTER(ptr), ctypes.POINTER(ptr), ctypes.POINTER(i64)]
            for f in (lib.sk_forward, lib.sk_input_grad, lib.sk_weight_grad, lib.sk_scatter, lib.sk_transpose,
                      lib.sk_mask_mul):
                f.restype = None
            lib.sk_infer_chain.restype = ctypes.c_int
            _lib = lib
    return _lib


class Structure:
    """The CSR and transposed structure of one layer's active positions (sorted flat `positions`)."""

    def __init__(self, positions: torch.Tensor, shape: tuple[int, int]):
        out, inp = shape
        self.shape = (out, inp)
        self.positions = positions  # int64, ascending: CSR order
        rows = torch.div(positions, inp, rounding_mode="floor")
        cols = positions - rows * inp
        self.rowptr = torch.zeros(out + 1, dtype=torch.int64, device=positions.device)
        self.rowptr[1:] = torch.bincount(rows, minlength=out).cumsum(0)
        self.col = cols.to(torch.int32)
        self.tperm = torch.argsort(cols * out + rows)  # CSC order: by input, then row
        self.trow = rows.index_select(0, self.tperm).to(torch.int32)
        self.tptr = torch.zeros(inp + 1, dtype=torch.int64, device=positions.device)
        self.tptr[1:] = torch.bincount(cols, minlength=inp).cumsum(0)
        self._rows64 = rows
        self.nnz = positions.numel()

    def tensors(self) -> list[torch.Tensor]:
        """What the structure holds (memory accounting)."""
        return [self.positions, self.rowptr, self.col, self.tperm, self.trow, self.tptr, self._rows64]

    def csr(self, values: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # CSR support is "beta"
            return torch.sparse_csr_tensor(self.rowptr, self.col.long(), values, self.shape)


def _fast(*tensors: torch.Tensor) -> bool:
    """Whether the compiled kernels take these tensors (float32 on CPU, library built)."""
    if _lib is None and library() is None:
        return False
    return all(t.dtype is torch.float32 and t.is_cpu for t in tensors)


def _p(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def transposed(x: torch.Tensor) -> torch.Tensor:
    """`x.t().contiguous()` of a 2-D tensor; free when `x` is a transposed view of a contiguous tensor."""
    xt = x.t()
    if xt.is_contiguous():
        return xt
    if _fast(x) and x.stride(1) == 1:
        rows, cols = x.shape
        out = torch.empty(cols, rows, dtype=x.dtype)
        _lib.sk_transpose(rows, cols, x.stride(0), _p(x), _p(out))
        return out
    return xt.contiguous()


def forward(s: Structure, values: torch.Tensor, xt: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """YT = W XT (+ bias per row): (out x n) from XT (in x n, contiguous)."""
    out, n = s.shape[0], xt.shape[1]
    if _fast(values, xt):
        yt = torch.empty(out, n, dtype=xt.dtype)
        b = None if bias is None else bias.detach().contiguous()
        _lib.sk_forward(out, n, _p(s.rowptr), _p(s.col), _p(values), _p(xt), _p(b), _p(yt))
        return yt
    w = s.csr(values)
    return torch.sparse.mm(w, xt) if bias is None else torch.addmm(bias.detach().reshape(-1, 1), w, xt)


class InferenceChain:
    """Inference through consecutive sparse Linear layers, each given as `(rowptr, col, values, bias, relu)`
    (its weight as CSR: `rowptr` int64, `col` int32; `bias` 1-D or None; `relu`: a ReLU follows), the
    first with `in_features` inputs. Calling it on X (n x in) gives Y (n x out), a transposed view (the
    layers work batch last).

    On CPU with float32 it is one call of the C kernels for the whole chain, its arguments prepared here
    once: it holds the tensors it was given, so build a new chain when they are replaced or moved."""

    def __init__(self, layers: Sequence[tuple], in_features: int):
        self.layers = [tuple(layer) for layer in layers]
        self.dims = [in_features, *(layer[0].numel() - 1 for layer in self.layers)]
        tensors = [t for layer in self.layers for t in layer[:4] if t is not None]
        self.fast = (_fast(*(t for layer in self.layers for t in layer[2:4] if t is not None))
                     and all(t.is_contiguous() and t.is_cpu for t in tensors))
        if self.fast:
            self._args = (len(self.layers), (ctypes.c_int64 * len(self.dims))(*self.dims),
                          (ctypes.c_void_p * (4 * len(self.layers)))(*(_p(t) for layer in self.layers
                                                                        for t in layer[:4])),
                          (ctypes.c_int32 * len(self.layers))(*(bool(layer[4]) for layer in self.layers)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.dims[0]:
            raise ValueError(f"expected inputs of shape (n, {self.dims[0]}), got {tuple(x.shape)}")
        if self.fast and x.dtype is torch.float32 and x.device.type == "cpu":
            if x.stride(1) != 1:
                x = x.contiguous()
            n = x.shape[0]
            yt = torch.empty(self.dims[-1], max(n, 16))
            layers, dims, ptrs, relu = self._args
            if _lib.sk_infer_chain(layers, n, x.stride(0), x.data_ptr(), dims, ptrs, relu, yt.data_ptr()):
                raise MemoryError(f"sparse inference: no memory for a batch of {n}")
            return yt[:, :n].t()
        xt = x.t()
        for (rowptr, col, values, bias, relu), shape in zip(self.layers, zip(self.dims[1:], self.dims)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # CSR support is "beta"
                w = torch.sparse_csr_tensor(rowptr.to(col.dtype), col, values, shape)
            xt = torch.sparse.mm(w, xt) if bias is None else torch.addmm(bias.unsqueeze(1), w, xt)
            if relu:
                xt = xt.relu_()
        return xt.t()


def input_grad(s: Structure, values: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """DXT = W^T GT: (in x n) from GT (out x n, contiguous)."""
    inp, n = s.shape[1], gt.shape[1]
    if _fast(values, gt):
        dxt = torch.empty(inp, n, dtype=gt.dtype)
        _lib.sk_input_grad(inp, n, _p(s.tptr), _p(s.trow), _p(s.tperm), _p(values), _p(gt), _p(dxt))
        return dxt
    return torch.zeros(inp, n, dtype=gt.dtype, device=gt.device).index_add_(
        0, s.col.long(), gt.index_select(0, s._rows64) * values.unsqueeze(1))


def weight_grad(s: Structure, gt: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
    """The gradient of the active values: dv[k] = GT[row k] . XT[col k] (SDDMM), in CSR order."""
    if _fast(gt, xt):
        dv = torch.empty(s.nnz, dtype=gt.dtype)
        _lib.sk_weight_grad(s.shape[0], gt.shape[1], _p(s.rowptr), _p(s.col), _p(gt), _p(xt), _p(dv))
        return dv
    return (gt.index_select(0, s._rows64) * xt.index_select(0, s.col.long())).sum(1)


def scatter(s: Structure, values: torch.Tensor, weight: torch.Tensor) -> None:
    """weight.flatten()[positions] = values (the dense weight mirrors the active values)."""
    if _fast(values, weight) and weight.is_contiguous():
        _lib.sk_scatter(s.nnz, _p(s.positions), _p(values), _p(weight))
    else:
        weight.view(-1).index_copy_(0, s.positions, values) if weight.is_contiguous() else \
            weight.copy_(weight.reshape(-1).index_copy(0, s.positions, values).view(weight.shape))


class Masking:
    """Multiplies tensors by fixed bool `masks` in place (`tensors[j].mul_(masks[j])`), with exactly the
    values of a multiply by the masks' 0/1 copies in the tensors' dtype, without holding such copies.

    Prepared once per list of masks (their pointers, for the C kernel): when every tensor is contiguous
    float32 on CPU, one kernel call does all (torch's multiply by a bool tensor is about 7x slower than
    by a float one on CPU); otherwise `torch._foreach_mul_`. Build a new one when a mask is replaced."""

    def __init__(self, masks: Sequence[torch.Tensor]):
        self.masks = list(masks)
        n = len(self.masks)
        self._sizes = [m.numel() for m in self.masks]
        self._args = None
        if n and (_lib is not None or library() is not None) and all(
                m.dtype is torch.bool and m.device.type == "cpu" and m.is_contiguous() for m in self.masks):
            self._args = ((ctypes.c_void_p * n)(*(m.data_ptr() for m in self.masks)),
                          (ctypes.c_int64 * n)(*self._sizes))

    def __call__(self, tensors: Sequence[torch.Tensor]) -> None:
        if self._args is not None and all(
                t.dtype is torch.float32 and t.device.type == "cpu" and t.is_contiguous() and t.numel() == size
                for t, size in zip(tensors, self._sizes)):
            n = len(self._sizes)
            _lib.sk_mask_mul(n, (ctypes.c_void_p * n)(*(t.data_ptr() for t in tensors)), *self._args)
        elif self.masks:
            torch._foreach_mul_(list(tensors), self.masks)


def mask_mul_(tensors: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> None:
    """`tensors[j].mul_(masks[j])` for bool masks of the tensors' shapes, as `Masking` does."""
    Masking(masks)(tensors)
