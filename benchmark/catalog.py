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
    input_shape: tuple[int, ...]  # (C, H, W) of an image, (T,) of a text sequence
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
    # Text (TextCorpus): sequences of T bytes predicting the next T; 256 classes, the byte values.
    "fortunes": DatasetInfo(256, (128,), 18075, 2008, (), ()),
    # train_size: an estimate for planning without the files; a run takes the loaded split's count
    "wikitext103": DatasetInfo(256, (512,), 1054000, 2500, (), ()),
}


@dataclass(frozen=True)
class TextCorpus:
    """A character-level corpus: its folder and files, how to get them, and what they must hold."""

    folder: str  # under a data root
    files: tuple[str, ...]  # concatenated in this order
    test_fraction: float  # the last fraction of the bytes is the test split (0: the `test` file is)
    test: str = ""
    url: str = ""  # a zip archive holding `folder` (torchvision's downloader checks its md5)
    md5: str = ""
    sha256: str = ""  # of the concatenated files, when they are pinned
    fetch: str = ""  # how to install it offline


# Debian's fortunes and fortunes-min (1:1.99.1-7.3): 2,570,797 bytes of English quotations, jokes, poems and
# definitions, every cookie file but ascii-art, in name order; the last 10% of the bytes are the test split.
FORTUNE_FILES = [
    "art", "computers", "cookie", "debian", "definitions", "disclaimer", "drugs", "education", "ethnic", "food",
    "fortunes", "goedel", "humorists", "kids", "knghtbrd", "law", "linux", "linuxcookie", "literature", "love",
    "magic", "medicine", "men-women", "miscellaneous", "news", "paradoxum", "people", "perl", "pets",
    "platitudes", "politics", "pratchett", "riddles", "science", "songs-poems", "sports", "startrek", "tao",
    "translate-me", "wisdom", "work", "zippy",
]
TEXT_CORPORA = {
    "fortunes": TextCorpus("fortunes", tuple(FORTUNE_FILES), 0.1,
                           sha256="c4febaf6a1433088e17c01a9875ef2b52b2af1d0dde6751f480fdf53cb75d66c",
                           fetch="run `bash scripts/fetch_data.sh` (or `apt-get install fortunes`)"),
    # WikiText-103 (Merity et al. 2016); the archive's md5 is torchtext's
    "wikitext103": TextCorpus("wikitext-103", ("wiki.train.tokens",), 0.0, test="wiki.test.tokens",
                              url="https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip",
                              md5="9ddaacaf6af0710eda8c456decff7832",
                              fetch="put wiki.train.tokens and wiki.test.tokens in <data-root>/wikitext-103/"),
}

MODEL_NAMES = ("lenet-300-100", "lenet-5", "wrn-22-2", "resnet-50", "mobilenet-v1", "mobilenet-v2", "char-gru",
               "char-gru-small", "char-gpt", "char-gpt-tiny")
# Model names built from a pattern, with what they mean (`benchmark list`, the unknown-model error).
MODEL_FAMILIES = {
    "wrn-D-K": "WideResNet of any depth D = 6n+4 and widen factor K",
    "mobilenet-v1-A, mobilenet-v2-A": "MobileNets at width multiplier A (e.g. mobilenet-v1-1.98, the paper's "
                                      "big-sparse width at 75%)",
    "mlp-HxL": "an MLP of L hidden layers of H units (e.g. mlp-40000x3, trainable on compact sparse layers only)",
}
