"""Same seed, same bits; a resumed run continues exactly as an uninterrupted one (CPU)."""
import io

import pytest
import torch

from conftest import continue_run

DYNAMIC_OPTIONS = dict(sparsity=0.8, distribution="erk", delta_t=20, gmp_every=10, total_steps=200)


def run(make_run, method, steps, seed=0, start=None):
    return continue_run(*make_run(method, "conv", "sgd", seed=seed, **DYNAMIC_OPTIONS), steps, start)


METHODS = ["static", "snip", "gmp", "set", "snfs", "rigl"]


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_gives_identical_masks_and_weights(make_run, method):
    a, _, sa = run(make_run, method, 200)
    b, _, sb = run(make_run, method, 200)
    assert all(torch.equal(x, y) for x, y in zip(sa.masks, sb.masks))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c, _, sc = run(make_run, method, 200, seed=1)
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))


@pytest.mark.parametrize("method", METHODS)
def test_state_dict_round_trip_continues_bit_identically(make_run, method):
    full, _, s_full = run(make_run, method, 200)
    half, opt, s_half = run(make_run, method, 110)
    buffer = io.BytesIO()
    torch.save({"model": half.state_dict(), "optimizer": opt.state_dict(), "sparsifier": s_half.state_dict()}, buffer)
    buffer.seek(0)
    # a fresh process would build the model from another init; the checkpoint must override all of it
    resumed, _, s_resumed = run(make_run, method, 90, seed=7, start=buffer)
    assert s_resumed.t == 200
    assert all(torch.equal(x, y) for x, y in zip(s_full.masks, s_resumed.masks))
    assert all(torch.equal(x, y) for x, y in zip(full.state_dict().values(), resumed.state_dict().values()))
