"""The presets: named starting points of a run's settings (the paper's protocols and CPU-sized ones).

Presets are not part of the code that trains: a run is defined by its settings, whichever preset
they came from, so editing a preset never changes what an existing run folder means.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import methods

from .config import RunConfig


def _paper_imagenet() -> dict[str, Any]:
    steps = 32000
    return dict(dataset="imagenet", model="resnet-50", steps=steps, batch_size=4096, lr=1.6, momentum=0.9,
                nesterov=True, weight_decay=1e-4, label_smoothing=0.1, warmup_epochs=5, lr_milestones=(30, 70, 90),
                lr_gamma=0.1, delta_t=100, t_end=25000 / steps, gmp_start=10000 / steps, gmp_stop=25000 / steps,
                gmp_every=1000, epochs=100)


def _paper_mobilenet(model: str) -> dict[str, Any]:
    """The paper's ImageNet protocol for a MobileNet, as google-research/rigl's `imagenet_train_eval.py` runs
    `--model_architecture mobilenet_v1/v2`: ResNet-50's steps, batch, lr and mask schedule, with the
    MobileNet lr schedule (8 warm-up epochs, x0.1 at epochs 40, 75 and 95); the stem conv is never masked
    (`dense_first`) and depthwise convs stay dense (`methods.base.default_layer`)."""
    return {**_paper_imagenet(), "model": model, "warmup_epochs": 8, "lr_milestones": (40, 75, 95),
            "dense_first": True}


def _paper_cifar10() -> dict[str, Any]:
    steps_per_epoch = 50000 / 128
    steps = round(250 * steps_per_epoch)  # 97,656
    return dict(dataset="cifar10", model="wrn-22-2", epochs=250, batch_size=128, lr=0.1, weight_decay=5e-4,
                lr_milestones=tuple(round(k * 30000 / steps_per_epoch, 3) for k in (1, 2, 3)), lr_gamma=0.2,
                distribution="erk", delta_t=100, t_end=75000 / steps, gmp_start=20000 / steps,
                gmp_stop=75000 / steps, gmp_every=1000)


def _paper_mnist() -> dict[str, Any]:
    """Appendix B's schedule (the shortened preset keeps its other choices as they were)."""
    steps = 120000
    return dict(dataset="mnist", model="lenet-300-100", epochs=200, batch_size=100, lr=0.2, weight_decay=1e-4,
                lr_milestones=(75, 95), lr_gamma=1 / 3, delta_t=100, t_end=50000 / steps,
                gmp_start=2000 / steps, gmp_stop=30000 / steps, gmp_every=500)


# What google-research/rigl's rigl/mnist/mnist_train_eval.py does beyond appendix B's schedule
# (REPRODUCTION.md's table of differences names the file and lines of each).
RIGL_MNIST_CODE = dict(
    inputs="unit",  # TensorFlow's MNIST reader: pixels / 255, no standardisation
    init="glorot",  # tf.layers / masked_fully_connected defaults: Glorot-uniform kernels, zero biases
    bias_decay=False,  # l2_regularizer on kernels only: 1e-4 * sum(w^2) / 2 = weight decay 1e-4 on weights
    dense_lr_milestones=(60, 70, 80),  # the dense baseline's lr drops; every other method's are at 75 and 95
    skip_step_on_update=None,  # RigL's update replaces the optimizer step (tf.cond); SET, SNFS, static step
    update_at_start=True,  # the first update at step 0
    distribution="custom", layer_sparsity=(0.98, 0.882, 0.0),  # end_sparsity 0.98, x sparsity_scale 0.9, dense
)


def _snfs_mnist() -> dict[str, Any]:
    """TimDettmers/sparse_learning's mnist_cifar/main.py defaults (the SNFS paper's LeNet-300-100 runs):
    100 epochs on the 54k images left after a 10% validation hold-out (540 steps per epoch), lr 0.1 x0.1
    every 25k steps, wd 5e-4 on every parameter, the same density in every layer, masks updated at the
    end of every epoch with a drop fraction annealed from 0.5 by cosine."""
    steps_per_epoch = 54000 // 100
    return dict(dataset="mnist", model="lenet-300-100", epochs=100, batch_size=100, lr=0.1, weight_decay=5e-4,
                val_fraction=0.1, lr_milestones=(25000 / steps_per_epoch, 50000 / steps_per_epoch), lr_gamma=0.1,
                distribution="uniform", dense_first=False, dense_last=False, delta_t=steps_per_epoch, t_end=1.0,
                alpha=0.5)


def _paper_char_lm() -> dict[str, Any]:
    """Section 4.2 and Appendix I's character-level GRU on WikiText-103 (model `char-gru`): Adam at lr 7e-4
    with L2 5e-4, sequences of 512 bytes (the dataset's), batches of 32, gradients clipped at norm 10, 75%
    uniform sparsity, 200k steps, GMP from step 50k to 150k every 1000, drop fraction 0.1 annealed by cosine
    every 100 steps, mask updates until the end of training."""
    steps = 200000
    return dict(dataset="wikitext103", model="char-gru", steps=steps, batch_size=32, optimizer="adam", lr=7e-4,
                weight_decay=5e-4, grad_clip=10.0, sparsity=0.75, distribution="uniform", dense_first=False,
                alpha=0.1, delta_t=100, t_end=1.0, gmp_start=50000 / steps, gmp_stop=150000 / steps,
                gmp_every=1000, log_every=500, eval_every=10000, epochs=0)


# The CPU sweeps of LeNet-300-100 train on sparse kernels the methods they speed up (README, "Which runs use it")
CPU_EXECUTION = dict(execution="auto")


# CPU-sized character models on Debian's fortunes corpus (T = 128 bytes): minutes per run on one thread.
_FORTUNES_LM = dict(dataset="fortunes", steps=1500, batch_size=32, optimizer="adamw", lr=3e-3, weight_decay=0.0,
                    distribution="uniform", dense_first=False, delta_t=50, t_end=0.75, gmp_every=50, log_every=50,
                    eval_every=500, epochs=0)

PRESETS: dict[str, dict[str, Any]] = {
    "fashion-mnist-lenet300": dict(dataset="fashion-mnist", model="lenet-300-100", epochs=10, batch_size=100,
                                   lr=0.1, weight_decay=5e-4, lr_milestones=(5, 7.5), lr_gamma=0.1,
                                   distribution="erk", dense_first=False, **CPU_EXECUTION),
    "fashion-mnist-lenet5": dict(dataset="fashion-mnist", model="lenet-5", epochs=10, batch_size=100, lr=0.05,
                                 weight_decay=5e-4, lr_milestones=(5, 7.5), lr_gamma=0.1, distribution="erk"),
    "digits-lenet300": dict(dataset="digits", model="lenet-300-100", epochs=20, batch_size=50, lr=0.1,
                            weight_decay=5e-4, delta_t=20, log_every=10, checkpoint_every=100, dense_first=False),
    "mnist-lenet300": {**_paper_mnist(), **RIGL_MNIST_CODE, **CPU_EXECUTION},
    "mnist-lenet300-short": {**_paper_mnist(), "epochs": 20, "lr_milestones": (7.5, 9.5), "gmp_every": 50,
                             "dense_first": False, **CPU_EXECUTION},
    "mnist-lenet300-snfs": {**_snfs_mnist(), **CPU_EXECUTION},
    "cifar10-wrn22-2": _paper_cifar10(),
    "imagenet-resnet50": _paper_imagenet(),
    "imagenet-mobilenet-v1": _paper_mobilenet("mobilenet-v1"),
    "imagenet-mobilenet-v2": _paper_mobilenet("mobilenet-v2"),
    "wikitext103-gru": _paper_char_lm(),
    "fortunes-gru": {**_FORTUNES_LM, "model": "char-gru-small"},
    "fortunes-gpt": {**_FORTUNES_LM, "model": "char-gpt-tiny"},
}
PRESET_NOTES = {
    "fashion-mnist-lenet300": "the default (what `run` trains without --preset). CPU-sized: 10 epochs, SGD 0.1 "
                              "decayed x0.1 at epochs 5 and 7.5, ERK (= ER for an MLP); the first layer is sparse under "
                              "uniform too (it holds 88% of the weights); like the mnist-lenet300 presets, sparse kernels "
                              "for the methods they speed up",
    "fashion-mnist-lenet5": "CPU-sized conv net, ERK by default",
    "digits-lenet300": "seconds on a CPU: scikit-learn's 8x8 digits, for smoke tests (first layer sparse)",
    "mnist-lenet300": "paper appendix B as the reference code runs it: 200 epochs (120k steps), layer sparsities "
                      "0.98/0.882/dense, [0, 1] pixels, Glorot init, L2 on weights, dense lr drops at 60/70/80, "
                      "RigL's updates in place of a step",
    "mnist-lenet300-snfs": "the SNFS paper's LeNet-300-100 protocol (sparse_learning's defaults): 100 epochs, "
                           "lr 0.1 x0.1 every 25k steps, wd 5e-4, 10% held out, uniform density, updates every epoch",
    "mnist-lenet300-short": "appendix B's schedule shortened 10x for CPUs: 20 epochs, lr milestones and GMP's "
                            "interval scaled by 1/10, t_end and GMP's start/stop kept as fractions; first layer "
                            "sparse; the suite's earlier settings (standardised inputs, PyTorch init, decay on all)",
    "cifar10-wrn22-2": "paper protocol (250 epochs at batch 128, ERK)",
    "imagenet-resnet50": "paper protocol (32k steps at batch 4096); needs an ImageFolder root",
    "imagenet-mobilenet-v1": "paper section 4.1: MobileNet-v1 on ResNet-50's schedule with the reference code's "
                             "MobileNet lr (8 warm-up epochs, x0.1 at 40/75/95); stem and depthwise convs dense; "
                             "--model mobilenet-v1-A for width A (big-sparse: 1.98 at 75%); needs an ImageFolder root",
    "imagenet-mobilenet-v2": "the same for MobileNet-v2 (expansion 6)",
    "wikitext103-gru": "Appendix I's character-level GRU on WikiText-103 (shared embedding 128, state 512, readout "
                       "256 and 128; Adam with L2, clipping at norm 10, 75% uniform over the GRU and readout "
                       "matrices, masks updated to the end); bits per character",
    "fortunes-gru": "CPU-sized character GRU (state 128) on Debian's fortunes corpus: 1500 Adam steps of 32 x 128 "
                    "bytes; bits per character",
    "fortunes-gpt": "CPU-sized GPT-style character model (2 blocks, dimension 64, 4 heads) on the fortunes corpus, "
                    "its Linear layers sparse, attention matmuls dense; 1500 Adam steps",
}
DEFAULT_PRESET = "fashion-mnist-lenet300"


def preset_sparsity(name: str) -> float:
    """The sparsity preset `name` runs at when none is given: its own, or RunConfig's default (0.9)."""
    return PRESETS.get(name, {}).get("sparsity", RunConfig.sparsity)


def preset_config(name: str, **overrides: Any) -> RunConfig:
    """A validated RunConfig from preset `name` with `overrides` on top. Given `layer_sparsity`, the
    distribution is custom and `sparsity` becomes the overall sparsity those layer sparsities give (so does an
    N:M `structure`'s); a preset's own layer sparsities go when another distribution is given."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; see `python -m benchmark run --help`")
    custom = methods.distributions.CUSTOM
    if overrides.get("layer_sparsity") and "distribution" not in overrides:
        overrides["distribution"] = custom
    settings = {**PRESETS[name], **overrides, "preset": name}
    if overrides.get("distribution", custom) != custom and "layer_sparsity" not in overrides:
        settings["layer_sparsity"] = ()
    config = RunConfig(**settings)
    config.validate()
    if (config.distribution == custom or config.structure) and config.method_class.uses_sparsity:
        config.sparsity = config.implied_sparsity()
    return config
