"""DeepR, deep rewiring (Bellec, Kappel, Maass & Legenstein, ICLR 2018): sign-constrained connections that
go dormant when they cross zero, replaced by random dormant ones."""
from __future__ import annotations

import math
from typing import Any

import torch

from .base import MaskChange, Sparsifier
from .dsr import grow_randomly
from .selection import keyed_generator


class DeepR(Sparsifier):
    """DeepR: each connection k has a fixed sign s_k and a magnitude theta_k >= 0 (w_k = s_k theta_k).

    After every optimizer step, each active connection of a sparse layer takes the rest of the
    paper's update, `theta <- theta - lr * l1 + sqrt(2 lr T) * N(0, 1)` (the L1 penalty and the
    temperature-T noise, `lr` the weight's current learning rate, noise keyed on (seed, step, layer));
    a connection whose theta fell below 0 (its weight crossed zero) goes dormant: weight and
    optimizer state 0. Then as many dormant connections, drawn uniformly at random (keyed), are
    activated at 0, so each layer's count never changes. Masked-out gradients are zeroed as for
    every method, so the optimizer (SGD with momentum or AdamW, not only the paper's plain SGD)
    moves active weights only. Signs are those of the initial weights on the initial mask and
    keyed random elsewhere, and are kept in the state dict. Layers the distribution makes dense
    train as ordinary dense layers.

    Hyper-parameters (read from the config when it has them): `deepr_l1` = 1e-5, the reference
    code's (github.com/guillaumeBellec/deep_rewiring, script_mnist_deep_rewiring.py); `deepr_temperature`
    T = 2.5e-11, the reference's noise (lr * N(0, 1e-5^2) per step at lr 0.5) in the paper's
    form. Rewiring runs after every step of the run; it costs no extra FLOPs (3 f_S per step).
    """

    name = "deepr"
    dynamic = True
    sparse_execution_helps = False  # it writes weights outside the optimizer: every layer stays masked-dense

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        c = self.config
        self.l1 = c.deepr_l1
        self.temperature = c.deepr_temperature
        self.rewired = [k < n for k, n in zip(self.targets, self.sizes)]
        # by index: optimizer.load_state_dict replaces the group dicts, whose lr the schedule sets
        self.groups = [next((j for j, g in enumerate(self.optimizer.param_groups) if any(p is w for p in g["params"])),
                            None) for w in self.weights]
        if None in self.groups:
            raise ValueError("deepr needs every sparse weight in the optimizer (it reads each one's learning rate)")
        self.positive = []
        for i, (w, m) in enumerate(zip(self.weights, self.masks)):
            coin = torch.rand(w.shape, generator=keyed_generator(c.seed, 0, i, "deepr-sign")).to(w.device) < 0.5
            self.positive.append(torch.where(m & (w != 0), w > 0, coin))

    def is_update_step(self, t: int) -> bool:
        return True

    @torch.no_grad()
    def after_optimizer_step(self, t: int) -> None:
        """The rest of the paper's update of each active magnitude: `- lr * l1 + sqrt(2 lr T) * N(0, 1)`."""
        for i, (w, m, positive) in enumerate(zip(self.weights, self.masks, self.positive)):
            if not self.rewired[i]:
                continue
            lr = self.optimizer.param_groups[self.groups[i]]["lr"]
            step = torch.full((self.counts[i],), -lr * self.l1, dtype=w.dtype)
            if self.temperature:
                noise = torch.randn(self.counts[i], generator=keyed_generator(self.config.seed, t, i, "deepr-noise"))
                step += math.sqrt(2 * lr * self.temperature) * noise
            step = step.to(w.device)
            w[m] += torch.where(positive[m], step, -step)

    @torch.no_grad()
    def update(self, t: int, grads: list[torch.Tensor | None] | None) -> dict[int, MaskChange]:
        """Connections whose weight crossed zero go dormant; as many dormant ones, drawn at random, wake up at 0."""
        changes = {}
        for i, (w, m, positive) in enumerate(zip(self.weights, self.masks, self.positive)):
            if not self.rewired[i]:
                continue
            dormant = m & torch.where(positive, w < 0, w > 0)
            died = int(dormant.sum())
            if died:
                new = grow_randomly(m & ~dormant, died, keyed_generator(self.config.seed, t, i, "deepr-grow"))
                changes[i] = self.change_from_mask(i, new, reset=dormant)
        return changes

    def extra_state(self) -> dict[str, Any]:
        return {"positive": [p.clone() for p in self.positive]}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.positive = [p.to(device=w.device, dtype=torch.bool) for p, w in zip(state["positive"], self.weights)]
