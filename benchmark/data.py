"""Datasets as normalised float32 NCHW tensors on a device, with deterministic, restartable batches.

Small datasets live whole on the device (no DataLoader workers); ImageNet goes through a DataLoader.
Data is looked for, in order, under: the `root` argument, $SPARSEBENCH_DATA, the repo's data/
folder, offline system copies; failing that torchvision downloads it into the first writable root.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import gzip
import hashlib
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from .catalog import DATASETS, FORTUNE_FILES, TEXT_CORPORA, DatasetInfo, TextCorpus  # noqa: F401 (re-exported)

Split = tuple[Tensor, Tensor] | Dataset  # (images, labels) tensors, or a Dataset for imagenet
Root = str | os.PathLike | None

REPO_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SYSTEM_DIRS = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],  # offline copies (Debian)
               "fortunes": [Path("/usr/share/games/fortunes")]}
CIFAR_PADDING = 4


class DataNotFoundError(ValueError):
    """A dataset is neither on disk nor downloadable; the message is one line saying how to get it."""


TORCHVISION_CLASSES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}
IDX_DATASETS = ("mnist", "fashion-mnist")  # MNIST-format files: <root>/<name>/ or torchvision's <root>/<class>/raw/
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}  # torchvision's layout


@dataclass
class DataBundle:
    """A loaded dataset: its splits and what a model needs to know about it."""

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    train: Split
    val: Split | None
    test: Split
    train_size: int
    augment: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def _keyed_generator(*key: object) -> torch.Generator:
    """A CPU generator seeded by a stable hash of `key` (the same on every run and machine)."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (the MNIST format; gzip-compressed when the name ends in .gz)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dtypes = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in dtypes:
        raise ValueError(f"{path} is not an idx file")
    ndim = data[3]
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, offset=4))
    return np.frombuffer(data, dtypes[data[2]], math.prod(shape), offset=4 + 4 * ndim).reshape(shape)


# ---- finding and reading the files ----

def _roots(root: Root) -> list[Path]:
    """Folders that may hold datasets, in search order."""
    candidates = [root, os.environ.get("SPARSEBENCH_DATA"), REPO_DATA_DIR]
    return [Path(r).expanduser() for r in candidates if r]


def _idx_files(folder: Path) -> dict[str, Path] | None:
    """The four MNIST-format files in `folder` (.gz or not), or None when any is missing."""
    files = {}
    for part in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        found = [p for p in (folder / part, folder / f"{part}.gz") if p.is_file()]
        if not found:
            return None
        files[part] = found[0]
    return files


def _read_idx_folder(folder: Path) -> tuple[np.ndarray, ...]:
    f = _idx_files(folder)
    return (read_idx(f["train-images-idx3-ubyte"])[:, None], read_idx(f["train-labels-idx1-ubyte"]),
            read_idx(f["t10k-images-idx3-ubyte"])[:, None], read_idx(f["t10k-labels-idx1-ubyte"]))


def _read_cifar(name: str, root: Path) -> tuple[np.ndarray, ...]:
    import torchvision

    cls = getattr(torchvision.datasets, TORCHVISION_CLASSES[name])
    train, test = cls(str(root), train=True), cls(str(root), train=False)
    return (train.data.transpose(0, 3, 1, 2), np.array(train.targets),
            test.data.transpose(0, 3, 1, 2), np.array(test.targets))


def _places(name: str, roots: list[Path]) -> list[Path]:
    """Where `name`'s files may be under `roots`, in search order; torchvision's layout last per root."""
    if name in IDX_DATASETS:
        return [p for r in roots for p in (r / name, r / TORCHVISION_CLASSES[name] / "raw")]
    if name in CIFAR_FOLDERS:
        return [r / CIFAR_FOLDERS[name] for r in roots]
    if name in TEXT_CORPORA:
        return [r / TEXT_CORPORA[name].folder for r in roots]
    return [r / "imagenet" for r in roots]


def _present(name: str, place: Path) -> bool:
    if name in IDX_DATASETS:
        return _idx_files(place) is not None
    if name == "imagenet":
        return (place / "train").is_dir() and (place / "val").is_dir()
    if name in TEXT_CORPORA:
        corpus = TEXT_CORPORA[name]
        return all((place / f).is_file() for f in (*corpus.files, *filter(None, [corpus.test])))
    return place.is_dir()


def _one_line(err: BaseException, limit: int = 200) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _writable(folder: Path) -> bool:
    """Whether `folder` can be written in, or created in its nearest existing parent folder."""
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    return existing.is_dir() and os.access(existing, os.W_OK)


def _download(name: str, roots: list[Path]) -> Path:
    """Download `name` with torchvision into the first writable root; return where it now is. A failed
    download leaves no trace: what it added to the root is removed, and the root too if it made it."""
    import torchvision

    root = next((r for r in roots if _writable(r)), None)
    if root is None:
        raise OSError("no writable data folder to download into")
    made = next((p for p in reversed([root, *root.absolute().parents]) if not p.exists()), None)
    root.mkdir(parents=True, exist_ok=True)
    before = set(root.iterdir())
    try:
        if name in TEXT_CORPORA:
            corpus = TEXT_CORPORA[name]
            if not corpus.url:
                raise OSError(f"{name} has no download")
            torchvision.datasets.utils.download_and_extract_archive(corpus.url, str(root), md5=corpus.md5,
                                                                    remove_finished=True)
        else:
            getattr(torchvision.datasets, TORCHVISION_CLASSES[name])(str(root), train=True, download=True)
    except BaseException:
        for entry in [made] if made else set(root.iterdir()) - before:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        raise
    return _places(name, [root])[-1]


def _locate(name: str, root: Root) -> Path:
    """The folder holding `name`, downloading it if needed; DataNotFoundError if it cannot be had."""
    roots = _roots(root)
    places = _places(name, roots) + SYSTEM_DIRS.get(name, [])
    for place in places:
        if _present(name, place):
            return place
    if name == "imagenet":
        reason = "it cannot be downloaded automatically"
        how = ("put an ImageFolder copy (train/ and val/, one folder per class) in <data-root>/imagenet "
               "and pass --data-root or set SPARSEBENCH_DATA")
    else:
        try:
            return _download(name, roots)
        except Exception as err:  # torchvision raises RuntimeError, URLError, OSError, ...
            reason = f"download failed ({_one_line(err)})"
        fetch = "run `bash scripts/fetch_data.sh`, " if name in IDX_DATASETS else ""
        if name in TEXT_CORPORA:
            fetch = f"{TEXT_CORPORA[name].fetch}, "
        how = f"{fetch}pass --data-root, set SPARSEBENCH_DATA, or run on a machine with internet so torchvision can download it"
    looked = ", ".join(str(p) for p in places)
    raise DataNotFoundError(f"dataset {name!r} not found (looked in {looked}) and {reason}; to get it, {how}")


# ---- building the bundle ----

def _normalise(images: np.ndarray, scale: float, info: DatasetInfo) -> Tensor:
    """uint8/float images (N, C, H, W) in [0, scale] -> normalised float32 tensor."""
    x = torch.from_numpy(np.array(images, dtype=np.float32)).div_(scale)  # a copy, then in place
    mean, std = torch.tensor(info.mean).view(1, -1, 1, 1), torch.tensor(info.std).view(1, -1, 1, 1)
    return x.sub_(mean).div_(std)


def _labels(y: np.ndarray) -> Tensor:
    return torch.as_tensor(np.asarray(y, dtype=np.int64))


def _tensor_splits(name: str, root: Root, info: DatasetInfo, seed: int, n_synthetic: int) -> tuple[Split, Split]:
    """(train, test) tensors of a dataset held in memory; synthetic data has n_synthetic training images."""
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = _normalise(digits.images[:, None], 16.0, info)
        y = _labels(digits.target)
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))  # fixed train/test split
        train, test = perm[: info.train_size], perm[info.train_size:]
        return (x[train], y[train]), (x[test], y[test])
    if name == "synthetic-cifar10":
        g = _keyed_generator("synthetic", seed)
        prototypes = torch.randn(info.num_classes, *info.input_shape, generator=g)

        def sample(n: int) -> Split:
            y = torch.randint(info.num_classes, (n,), generator=g)
            return prototypes[y] + torch.randn(n, *info.input_shape, generator=g), y

        return sample(n_synthetic), sample(min(info.test_size, n_synthetic))
    place = _locate(name, root)
    stat = [(p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(place.iterdir())]
    return _file_splits(name, place, info, tuple(stat))


@functools.lru_cache(maxsize=2)
def _file_splits(name: str, place: Path, info: DatasetInfo, stat: tuple) -> tuple[Split, Split]:
    """(train, test) tensors read from the files in `place`; kept for the next run of the process (a sweep
    trains its runs one after another) while the files' names, sizes and times (`stat`) are unchanged."""
    try:
        x_train, y_train, x_test, y_test = _read_idx_folder(place) if name in IDX_DATASETS else _read_cifar(name, place)
    except Exception as err:
        raise DataNotFoundError(f"dataset {name!r} at {place} is unreadable ({_one_line(err)}); "
                                "delete it so that it is fetched again, or point --data-root elsewhere") from None
    return ((_normalise(x_train, 255.0, info), _labels(y_train)),
            (_normalise(x_test, 255.0, info), _labels(y_test)))


def _sequences(data: bytes, length: int) -> Split:
    """(inputs, targets) of consecutive non-overlapping sequences of `length` bytes and the byte after each
    position; both are uint8 views of one (N, length + 1) tensor (`train_batches` makes batches int64)."""
    n = (len(data) - 1) // length
    flat = torch.frombuffer(bytearray(data[: n * length + 1]), dtype=torch.uint8)
    windows = flat.unfold(0, length + 1, length)
    return windows[:, :-1], windows[:, 1:]


def _text_splits(name: str, root: Root, info: DatasetInfo) -> tuple[Split, Split]:
    """(train, test) sequences of a text corpus (TEXT_CORPORA), its pinned checksum checked."""
    corpus = TEXT_CORPORA[name]
    place = _locate(name, root)
    try:
        data = b"".join((place / f).read_bytes() for f in corpus.files)
        test = (place / corpus.test).read_bytes() if corpus.test else b""
    except OSError as err:
        raise DataNotFoundError(f"dataset {name!r} at {place} is unreadable ({_one_line(err)}); "
                                "reinstall it or point --data-root elsewhere") from None
    if corpus.sha256 and hashlib.sha256(data).hexdigest() != corpus.sha256:
        raise DataNotFoundError(f"dataset {name!r} at {place} is not the pinned corpus ({len(data)} bytes, another "
                                f"SHA-256); {corpus.fetch} to get the version this suite pins")
    if not corpus.test:
        cut = len(data) - round(corpus.test_fraction * len(data))
        data, test = data[:cut], data[cut:]
    length = info.input_shape[0]
    return _sequences(data, length), _sequences(test, length)


def _imagenet_splits(root: Root, info: DatasetInfo) -> tuple[Dataset, Dataset, Dataset]:
    """(train with augmentation, train without, val) ImageFolders."""
    from torchvision import datasets, transforms as T

    place = _locate("imagenet", root)
    norm = [T.ToTensor(), T.Normalize(info.mean, info.std)]
    train = datasets.ImageFolder(str(place / "train"), T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), *norm]))
    plain = T.Compose([T.Resize(256), T.CenterCrop(224), *norm])
    train_plain = copy.copy(train)  # shares the file list; only the transform differs
    train_plain.transform = plain
    return train, train_plain, datasets.ImageFolder(str(place / "val"), plain)


def _take(split: Split, idx: Tensor) -> Split:
    if isinstance(split, Dataset):
        return Subset(split, idx.tolist())
    x, y = split
    return x.index_select(0, idx), y.index_select(0, idx)


def _length(split: Split) -> int:
    return len(split) if isinstance(split, Dataset) else len(split[1])


def _to(split: Split | None, device: torch.device) -> Split | None:
    """Tensor splits moved to `device`; Datasets stay as they are."""
    if split is None or isinstance(split, Dataset):
        return split
    return split[0].to(device), split[1].to(device)


def load_dataset(name: str, root: Root = None, *, val_fraction: float = 0.0,
                 train_subset: int | None = None, device: str | torch.device = "cpu", seed: int = 0,
                 standardize: bool = True) -> DataBundle:
    """Load dataset `name` (a key of DATASETS) onto `device`.

    standardize: subtract the dataset's channel means and divide by its standard deviations; False
    keeps pixels scaled to [0, 1] (TensorFlow's MNIST reader, the RigL reference code's inputs).
    val_fraction: hold out this fraction of the training set as `val` (no augmentation).
    train_subset: keep only this many training examples (after the hold-out).
    seed: keys the hold-out/subset permutation and synthetic data; batch order is train_batches' seed.
    ImageNet splits stay Datasets on the CPU; its batches are moved to `device` as they are made.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if train_subset is not None and train_subset < 1:
        raise ValueError(f"train_subset must be a positive number of examples, got {train_subset}")
    info, device = DATASETS[name], torch.device(device)
    if not standardize:
        info = dataclasses.replace(info, mean=(0.0,) * len(info.mean), std=(1.0,) * len(info.std))
    if name == "imagenet":
        train, val_source, test = _imagenet_splits(root, info)
    elif name in TEXT_CORPORA:
        train, test = _text_splits(name, root, info)
        val_source = train
    else:
        # synthetic data: generate no more than the hold-out and train_subset keep
        n_synthetic = info.train_size if train_subset is None else math.ceil(train_subset / (1 - val_fraction))
        train, test = _tensor_splits(name, root, info, seed, n_synthetic)
        val_source = train
    val = None
    if val_fraction or train_subset:
        n = _length(train)
        perm = torch.randperm(n, generator=_keyed_generator("split", seed))
        n_val = round(val_fraction * n)
        keep = perm[n_val:]
        if train_subset is not None:
            if train_subset > len(keep):
                raise ValueError(f"train_subset={train_subset} exceeds the {len(keep)} training examples of {name}")
            keep = keep[:train_subset]
        val = _take(val_source, perm[:n_val]) if n_val else None
        train = _take(train, keep)
    return DataBundle(name, info.num_classes, info.input_shape, _to(train, device), _to(val, device),
                      _to(test, device), _length(train), info.augment, device)


# ---- batches ----

def crop_flip(x: Tensor, generator: torch.Generator, padding: int = CIFAR_PADDING) -> Tensor:
    """Random crop of each image after reflect-padding by `padding`, and a random horizontal flip.

    Runs on x's device; the offsets and flips are drawn from the CPU `generator`.
    """
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4, mode="reflect")
    dy, dx = torch.randint(2 * padding + 1, (2, n, 1), generator=generator).to(x.device)
    flip = (torch.rand(n, 1, generator=generator) < 0.5).to(x.device)
    across = torch.arange(w, device=x.device)
    rows = dy + torch.arange(h, device=x.device)  # (n, h)
    cols = dx + torch.where(flip, w - 1 - across, across)  # (n, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chan = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


def steps_per_epoch(bundle: DataBundle, batch_size: int, drop_last: bool = True) -> int:
    """Number of training batches in one epoch."""
    steps = bundle.train_size // batch_size if drop_last else -(-bundle.train_size // batch_size)
    if steps < 1:
        raise ValueError(f"batch size {batch_size} exceeds the {bundle.train_size} training examples of {bundle.name}")
    return steps


def _loader_batches(dataset: Dataset, batch_size: int, order: list[int] | None, num_workers: int | None,
                    device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches of `dataset` (in `order`, or in index order) from a DataLoader, moved to `device`."""
    workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
    loader = DataLoader(dataset, batch_size, sampler=order, num_workers=workers, pin_memory=device.type == "cuda")
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def _indices(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """A batch with byte-valued (uint8) text sequences as int64 token ids and targets; others unchanged."""
    return (x.long(), y.long()) if x.dtype == torch.uint8 else (x, y)


def train_batches(bundle: DataBundle, batch_size: int, seed: int, start_step: int = 0, drop_last: bool = True,
                  num_workers: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless training batches (x, y) on the bundle's device, from step `start_step` on.

    Epoch e visits the training set in the order of a permutation drawn from a generator keyed on
    (seed, e); its batches are consecutive slices of it. Augmentation (CIFAR) is keyed on (seed, step).
    So starting at step k yields exactly the batches an uninterrupted iterator yields from step k.
    ImageNet goes through a DataLoader (`num_workers`, default min(8, CPUs)); there a restart gives the
    same images in the same batches, but their random crops and flips come from the worker processes'
    generators and differ after a mid-epoch restart.
    """
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    steps = steps_per_epoch(bundle, batch_size, drop_last)
    epoch, first = divmod(start_step, steps)
    step = start_step
    while True:
        perm = torch.randperm(bundle.train_size, generator=_keyed_generator("epoch", seed, epoch))
        order = perm[first * batch_size: steps * batch_size]
        if isinstance(bundle.train, Dataset):
            batches = _loader_batches(bundle.train, batch_size, order.tolist(), num_workers, bundle.device)
        else:
            order = order.to(bundle.device)
            batches = (_take(bundle.train, idx) for idx in order.split(batch_size))
        for x, y in batches:
            if bundle.augment:
                x = crop_flip(x, _keyed_generator("augment", seed, step))
            yield _indices(x, y)
            step += 1
        epoch, first = epoch + 1, 0


def eval_batches(bundle: DataBundle, split: str = "test", batch_size: int = 1000,
                 num_workers: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches (x, y) of split "train", "val" or "test" in order, without augmentation
    (ImageNet's "train" split keeps its training transforms)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r}; splits: train, val, test")
    data = getattr(bundle, split)
    if data is None:
        raise ValueError(f"{bundle.name} has no {split} split; load it with val_fraction > 0")
    if isinstance(data, Dataset):
        yield from _loader_batches(data, batch_size, None, num_workers, bundle.device)
    else:
        x, y = data
        yield from map(_indices, x.split(batch_size), y.split(batch_size))
