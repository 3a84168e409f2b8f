"""What the suite knows by name before importing torch: the datasets (shapes, sizes, normalisation) and
the model names, so that the command line can list and check them in a fraction of a second.
`benchmark.data` loads the datasets and `benchmark.models` builds the models (tests check that its
`MODELS` are these names)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about a dataset before loading it."""

    num_classes: int
    input_shape: tuple[int, int, int]
    train_size: int
    test_size: int
    mean: tuple[float, ...]  # per-channel normalisation of pixel values scaled to [0, 1]
    std: tuple[float, ...]
    augment: bool = False  # random crop (reflect padding, data.CIFAR_PADDING) + horizontal flip in train_batches


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(10, (1, 8, 8), 1437, 360, (0.3049,), (0.3758,)),  # stats of its train split
    "mnist": DatasetInfo(10, (1, 28, 28), 60000, 10000, (0.1307,), (0.3081,)),
    "fashion-mnist": DatasetInfo(10, (1, 28, 28), 60000, 10000, (0.2860,), (0.3530,)),
    "cifar10": DatasetInfo(10, (3, 32, 32), 50000, 10000, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True),
    "cifar100": DatasetInfo(100, (3, 32, 32), 50000, 10000, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True),
    "imagenet": DatasetInfo(1000, (3, 224, 224), 1281167, 50000, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # Random class-dependent images (already normalised); train_subset=N generates N training images.
    "synthetic-cifar10": DatasetInfo(10, (3, 32, 32), 50000, 10000, (0.0,) * 3, (1.0,) * 3, True),
}
MODEL_NAMES = ("lenet-300-100", "lenet-5", "wrn-22-2", "resnet-50")  # and any wrn-D-K with (D - 4) % 6 == 0
