"""Methods whose mask never changes after step 0: dense, small-dense, static and SNIP."""
from __future__ import annotations

import torch

from .base import Batch, Sparsifier
from .selection import keyed_generator, topk_mask


class Dense(Sparsifier):
    """All weights active, always (the dense baseline; `sparsity` is ignored)."""

    name = "dense"
    accepts_masks = False
    uses_sparsity = False
    dense_baseline = True
    saves_rewind_point = True
    sparse_execution_helps = False  # no sparse layer: nothing for kernels to do

    def target_counts(self) -> list[int]:
        return list(self.sizes)

    def initial_masks(self, init_batches: list[Batch]) -> list[torch.Tensor]:
        return [torch.ones(w.shape, dtype=torch.bool) for w in self.weights]


class SmallDense(Dense):
    """Dense training of a narrower model with about the sparse model's parameter count.

    The narrowing happens when the model is built (see `methods.small_dense_width`); the
    sparsifier itself is dense.
    """

    name = "small-dense"
    uses_sparsity = True
    structured = True  # dense; its width matches the structured model's parameter count
    saves_rewind_point = False
    narrows_model = True


class Static(Sparsifier):
    """A random mask with exact per-layer counts, fixed for the whole run."""

    name = "static"
    structured = True


class Snip(Sparsifier):
    """SNIP (Lee et al. 2019): keep the weights of largest saliency |g * w| at initialisation.

    `snip_scope="layer"` keeps each layer's count from the distribution (the RigL paper's
    variant); `"global"` ranks all non-dense layers together under one threshold (the SNIP
    paper's). The gradient is summed over `init_batches`; the model's buffers (batch-norm
    statistics) and gradients are left as they were.
    """

    name = "snip"
    accepts_masks = False
    needs_init_batches = True
    structured = True

    def initial_masks(self, init_batches: list[Batch]) -> list[torch.Tensor]:
        if not init_batches:
            raise ValueError("snip needs init_batches=[(inputs, targets), ...] to score weights at initialisation")
        saliency = self._saliency(init_batches)
        if self.config.nm():  # the N of every M of largest saliency (snip_scope global is refused with structure)
            return [self.structured_mask(i, s, keyed_generator(self.config.seed, 0, i, "snip"))
                    for i, s in enumerate(saliency)]
        if self.config.snip_scope == "layer":
            return [
                topk_mask(s, k, keyed_generator(self.config.seed, 0, i, "snip"))
                for i, (s, k) in enumerate(zip(saliency, self.targets))
            ]
        pooled = [i for i, (k, n) in enumerate(zip(self.targets, self.sizes)) if k < n]
        keep = topk_mask(
            torch.cat([saliency[i].flatten() for i in pooled]),
            sum(self.targets[i] for i in pooled),
            keyed_generator(self.config.seed, 0, -1, "snip"),
        )
        masks = [torch.ones(w.shape, dtype=torch.bool) for w in self.weights]
        for i, part in zip(pooled, keep.split([self.sizes[i] for i in pooled])):
            masks[i] = part.view(self.weights[i].shape).cpu()
        return masks

    def _saliency(self, init_batches: list[Batch]) -> list[torch.Tensor]:
        """|g * w| with g the gradient of the loss summed over `init_batches`."""
        params = dict(self.model.named_parameters())
        buffers = {k: v.clone() for k, v in self.model.state_dict().items() if k not in params}
        saved_grads = {name: p.grad for name, p in params.items()}
        self.model.zero_grad(set_to_none=True)
        for inputs, targets in init_batches:
            self.loss_fn(self.model(inputs), targets).backward()
        saliency = [(w.grad * w).abs().detach().cpu() for w in self.weights]
        for name, p in params.items():
            p.grad = saved_grads[name]
        self.model.load_state_dict(buffers, strict=False)
        return saliency
