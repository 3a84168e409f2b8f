import dataclasses
import gzip
import itertools
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from benchmark import data
from benchmark.data import (DATASETS, DataBundle, DataNotFoundError, crop_flip, eval_batches, load_dataset,
                            read_idx, steps_per_epoch, train_batches)

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def take(iterator, n):
    return list(itertools.islice(iterator, n))


def equal_batches(a, b):
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


def indexed_bundle(n=50):
    """A bundle whose example i has label i, so batches show which examples they hold."""
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1)
    y = torch.arange(n)
    return DataBundle("indexed", n, (1, 1, 1), (x, y), None, (x, y), n)


def write_idx(path, array):
    """An idx file (big-endian header), gzip-compressed when the name ends in .gz."""
    codes = {np.dtype("uint8"): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}
    payload = struct.pack(">BBBB", 0, 0, codes[array.dtype], array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.tobytes()
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(payload)


def write_mnist_folder(folder, n_train=6, n_test=4, gz=False):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("t10k", n_test)):
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{part}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{part}-labels-idx1-ubyte{suffix}", np.arange(n, dtype=np.uint8) % 10)


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No data anywhere but under tmp_path, and torchvision downloads fail as without internet."""
    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://example, got:\n"
                           f"{urllib.error.URLError('no network')}\n")
    monkeypatch.delenv("SPARSEBENCH_DATA", raising=False)
    monkeypatch.setattr(data, "REPO_DATA_DIR", tmp_path / "repo-data")
    monkeypatch.setattr(data, "SYSTEM_DIRS", {})
    for cls in ("MNIST", "FashionMNIST", "CIFAR10", "CIFAR100"):
        monkeypatch.setattr(getattr(torchvision.datasets, cls), "download", offline)
    return tmp_path


def test_digits_sizes_and_shapes():
    bundle = load_dataset("digits")
    (x, y), (xt, yt) = bundle.train, bundle.test
    assert (bundle.num_classes, bundle.input_shape, bundle.train_size, bundle.val) == (10, (1, 8, 8), 1437, None)
    assert x.shape == (1437, 1, 8, 8) and xt.shape == (360, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (1437,) and yt.shape == (360,) and y.dtype == torch.int64
    assert set(y.tolist()) == set(range(10))
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01
    assert torch.equal(load_dataset("digits").train[0], x)  # the split is fixed


def test_val_fraction_and_train_subset():
    full = load_dataset("digits")
    held = load_dataset("digits", val_fraction=0.2)
    assert held.train_size == 1437 - 287 and len(held.val[1]) == 287
    tiny = load_dataset("digits", val_fraction=0.2, train_subset=100)
    assert tiny.train_size == 100 and torch.equal(tiny.val[0], held.val[0])  # subsetting keeps the hold-out
    # train and val are disjoint parts of the training set
    rows = {tuple(r.tolist()) for r in full.train[0].flatten(1)}
    assert all(tuple(r.tolist()) in rows for r in held.val[0].flatten(1))
    assert len(rows) == len(rows | {tuple(r.tolist()) for r in held.train[0].flatten(1)})
    with pytest.raises(ValueError, match="train_subset"):
        load_dataset("digits", train_subset=5000)
    with pytest.raises(ValueError, match="val_fraction"):
        load_dataset("digits", val_fraction=1.0)


def test_unknown_dataset_lists_known_names():
    with pytest.raises(ValueError, match="unknown dataset 'svhn'") as err:
        load_dataset("svhn")
    assert all(name in str(err.value) for name in DATASETS)


def test_epoch_is_a_permutation_cut_into_consecutive_batches():
    bundle = indexed_bundle(50)
    assert steps_per_epoch(bundle, 16) == 3 and steps_per_epoch(bundle, 16, drop_last=False) == 4
    batches = take(train_batches(bundle, 16, seed=0), 6)
    epoch0, epoch1 = [torch.cat([y for _, y in batches[i:i + 3]]) for i in (0, 3)]
    assert len(set(epoch0.tolist())) == 48 and len(set(epoch1.tolist())) == 48
    assert not torch.equal(epoch0, epoch1)
    last = take(train_batches(bundle, 16, seed=0, drop_last=False), 4)
    assert [len(y) for _, y in last] == [16, 16, 16, 2]
    assert sorted(torch.cat([y for _, y in last]).tolist()) == list(range(50))


@pytest.mark.parametrize("drop_last", [True, False])
def test_restart_yields_the_same_batches_across_epochs(drop_last):
    bundle = load_dataset("digits")
    steps = steps_per_epoch(bundle, 100, drop_last)
    fresh = take(train_batches(bundle, 100, seed=3, drop_last=drop_last), 2 * steps + 2)
    for k in (steps - 2, steps, steps + 1):  # before, at and after the epoch boundary
        resumed = take(train_batches(bundle, 100, seed=3, start_step=k, drop_last=drop_last), len(fresh) - k)
        assert equal_batches(resumed, fresh[k:])


def test_seeds_give_different_orders():
    bundle = indexed_bundle(50)
    a, b, c = (take(train_batches(bundle, 10, seed=s), 5) for s in (0, 0, 1))
    assert equal_batches(a, b) and not equal_batches(a, c)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trip(tmp_path, suffix):
    for array in (np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
                  np.array([7, -1, 2**30], dtype=">i4"),
                  np.linspace(0, 1, 6, dtype=">f4").reshape(3, 2)):
        path = tmp_path / f"a{suffix}"
        write_idx(path, array)
        out = read_idx(path)
        assert out.shape == array.shape and np.array_equal(out, array)
    (tmp_path / "junk").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(tmp_path / "junk")


@pytest.mark.parametrize("layout, gz", [("fashion-mnist", True), ("FashionMNIST/raw", False), ("FashionMNIST/raw", True)])
def test_idx_layouts_under_root_come_first(isolated, layout, gz):
    write_mnist_folder(isolated / "root" / layout, gz=gz)
    bundle = load_dataset("fashion-mnist", root=isolated / "root")
    assert bundle.train[0].shape == (6, 1, 28, 28) and bundle.test[0].shape == (4, 1, 28, 28)
    assert bundle.train[1].tolist() == list(range(6))


def test_env_var_and_repo_data_are_searched(isolated, monkeypatch):
    write_mnist_folder(isolated / "repo-data" / "MNIST" / "raw", n_train=5)
    assert load_dataset("mnist").train_size == 5
    write_mnist_folder(isolated / "env" / "mnist", n_train=7)
    monkeypatch.setenv("SPARSEBENCH_DATA", str(isolated / "env"))
    assert load_dataset("mnist").train_size == 7


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason=f"no offline Fashion-MNIST in {FASHION_DIR} (scripts/fetch_data.sh installs it)")
def test_fashion_mnist_from_system_copy(monkeypatch):
    monkeypatch.delenv("SPARSEBENCH_DATA", raising=False)
    bundle = load_dataset("fashion-mnist")
    assert bundle.train_size == 60000 and len(bundle.test[1]) == 10000
    assert bundle.train[0].shape[1:] == (1, 28, 28)
    assert abs(bundle.train[0].mean().item()) < 1e-3


@pytest.mark.skipif(not (data.REPO_DATA_DIR / "MNIST" / "raw").is_dir(), reason="no MNIST in data/MNIST/raw (scripts/fetch_data.sh installs it)")
def test_mnist_from_repo_data(monkeypatch):
    monkeypatch.delenv("SPARSEBENCH_DATA", raising=False)
    bundle = load_dataset("mnist")
    assert bundle.train_size == 60000 and len(bundle.test[1]) == 10000
    assert abs(bundle.train[0].mean().item()) < 1e-3


@pytest.mark.parametrize("name", ["cifar10", "mnist", "imagenet"])
def test_missing_dataset_raises_one_line(isolated, name):
    empty = isolated / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError) as err:
        load_dataset(name, root=empty)
    message = str(err.value)
    assert "\n" not in message and repr(name) in message and str(empty) in message
    assert "SPARSEBENCH_DATA" in message
    if name != "imagenet":
        assert "download failed" in message and "no network" in message


def test_crop_flip_takes_crops_of_the_reflect_padded_images():
    x = torch.randn(8, 3, 32, 32)
    out = crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert torch.equal(out, crop_flip(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, crop_flip(x, torch.Generator().manual_seed(1)))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4), mode="reflect")
    found = []  # (row offset, column offset, flipped) of each output image
    for image, result in zip(padded, out):
        found += [(i, j, flip) for i in range(9) for j in range(9) for flip in (False, True)
                  if torch.equal(result, image[:, i:i + 32, j:j + 32].flip(-1) if flip else image[:, i:i + 32, j:j + 32])]
    assert len(found) == len(x)
    assert len({(i, j) for i, j, _ in found}) > 1 and 0 < sum(flip for *_, flip in found) < len(x)


def test_cifar_like_batches_are_augmented_reproducibly():
    bundle = load_dataset("synthetic-cifar10", train_subset=64)
    assert bundle.augment and bundle.train_size == 64 and bundle.input_shape == (3, 32, 32)
    fresh = take(train_batches(bundle, 16, seed=5), 6)
    assert all(x.shape == (16, 3, 32, 32) and y.shape == (16,) for x, y in fresh)
    assert equal_batches(take(train_batches(bundle, 16, seed=5, start_step=3), 3), fresh[3:])
    plain = take(train_batches(dataclasses.replace(bundle, augment=False), 16, seed=5), 6)
    assert all(torch.equal(yp, ya) and not torch.equal(xp, xa) for (xp, yp), (xa, ya) in zip(plain, fresh))


def test_synthetic_data_is_seeded():
    a, b, c = (load_dataset("synthetic-cifar10", train_subset=32, val_fraction=0.25, seed=s) for s in (0, 0, 1))
    assert a.train_size == 32 and len(a.val[1]) >= 1 and len(a.test[1]) > 0
    assert torch.equal(a.train[0], b.train[0]) and not torch.equal(a.train[0], c.train[0])


def test_eval_batches_cover_the_split_in_order():
    bundle = load_dataset("digits", val_fraction=0.1)
    for split in ("train", "val", "test"):
        xs, ys = zip(*eval_batches(bundle, split, batch_size=100))
        x, y = getattr(bundle, split)
        assert torch.equal(torch.cat(xs), x) and torch.equal(torch.cat(ys), y)
    with pytest.raises(ValueError, match="no val split"):
        next(eval_batches(load_dataset("digits"), "val"))


def test_imagenet_folder_through_a_dataloader(isolated):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for cls in ("n01", "n02"):
            (isolated / "imagenet" / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(isolated / "imagenet" / split / cls / f"{i}.png")
    bundle = load_dataset("imagenet", root=isolated, val_fraction=0.25)
    assert (bundle.train_size, len(bundle.val), len(bundle.test)) == (6, 2, 4)
    fresh = take(train_batches(bundle, 2, seed=0, num_workers=0), 4)
    assert all(x.shape == (2, 3, 224, 224) and x.dtype == torch.float32 for x, _ in fresh)
    resumed = take(train_batches(bundle, 2, seed=0, start_step=2, num_workers=0), 2)
    assert all(torch.equal(yr, yf) for (_, yr), (_, yf) in zip(resumed, fresh[2:]))
    val = list(eval_batches(bundle, "val", batch_size=3, num_workers=0))
    assert [x.shape for x, _ in val] == [(2, 3, 224, 224)]
    test = list(eval_batches(bundle, "test", batch_size=3, num_workers=0))
    assert torch.cat([y for _, y in test]).tolist() == [0, 0, 1, 1]
