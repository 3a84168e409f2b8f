"""Tiny models and data shared by the tests."""
import pytest
import torch
from torch import nn

# Tiny models run fastest on one thread, and stay fast when other processes load the cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def inline_sweeps():
    """`run` without --workers trains in this process (tests inspect its output and patch its modules); the
    tests that need processes ask for --workers, and test_harness tests `auto_workers` itself."""
    import benchmark.sweep

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(benchmark.sweep, "auto_workers", lambda configs: 1)
        yield


def tiny_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))


def tiny_convnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 2 * 2, 10),
    )


MODELS = {"mlp": tiny_mlp, "conv": tiny_convnet}


def batch(seed: int = 0, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def train_step(model, sparsifier, optimizer, step: int):
    x, y = batch(step)
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    return sparsifier.step()


def continue_run(net, opt, sparsifier, steps: int, start=None):
    """Optionally load a checkpoint saved as {model, optimizer, sparsifier}, then train `steps` more steps."""
    if start is not None:
        checkpoint = torch.load(start, weights_only=True)
        net.load_state_dict(checkpoint["model"])
        opt.load_state_dict(checkpoint["optimizer"])
        sparsifier.load_state_dict(checkpoint["sparsifier"])
    for _ in range(steps):
        train_step(net, sparsifier, opt, sparsifier.t)
    return net, opt, sparsifier


@pytest.fixture
def make_run():
    """Build (model, optimizer, sparsifier) with a fixed init seed."""
    import methods

    def build(method="rigl", model="mlp", optimizer="sgd", seed=0, **overrides):
        torch.manual_seed(seed)
        net = MODELS[model]()
        opt = (
            torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
            if optimizer == "sgd"
            else torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=5e-4)
        )
        overrides.setdefault("total_steps", 300)
        sparsifier = methods.create(method, net, opt, init_batches=[batch(999)], **overrides)
        return net, opt, sparsifier

    return build
