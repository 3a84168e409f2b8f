"""The public interface: create(), errors that name the fix, small-dense, autocast, torch.compile."""
import pytest
import torch
from torch import nn

import methods
from conftest import batch, tiny_mlp, train_step


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1)


@pytest.mark.parametrize("kwargs,message", [
    (dict(sparsity=1.0), r"sparsity must be a number in \[0, 1\)"),
    (dict(sparsity=-0.2), r"sparsity must be a number in \[0, 1\)"),
    (dict(distribution="normal"), "distribution must be one of uniform, er, erk"),
    (dict(total_steps=0), "total_steps must be a positive int"),
    (dict(total_steps=-5), "total_steps must be a positive int"),
    (dict(delta_t=0), "delta_t must be a positive number of steps"),
    (dict(t_end=1.5), r"t_end must be a fraction of training in \(0, 1\]"),
    (dict(gmp_start=0.8, gmp_stop=0.5), "need 0 <= gmp_start < gmp_stop <= 1"),
    (dict(anneal="exp"), "anneal must be one of cosine, constant, linear"),
    (dict(drop_fraction=0.3), "unknown sparsity setting.s. drop_fraction; known settings: alpha"),
])
def test_bad_settings_raise_value_error_naming_the_fix(kwargs, message):
    model = tiny_mlp()
    kwargs = {"total_steps": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        methods.create("rigl", model, sgd(model), **kwargs)


def test_unknown_method_lists_known_methods():
    model = tiny_mlp()
    with pytest.raises(ValueError, match="unknown method 'rigl2'; known methods: dense, small-dense, static, snip, gmp, set, snfs, rigl"):
        methods.create("rigl2", model, sgd(model), total_steps=10)


def test_model_without_sparsifiable_layer_is_refused():
    model = nn.Sequential(nn.Flatten(), nn.LayerNorm(64))
    with pytest.raises(ValueError, match="no Conv/Linear layer to sparsify; pass include="):
        methods.create("static", model, sgd(model), total_steps=10)


def test_include_filter_chooses_layers_and_first_layer_default_follows_distribution():
    model = tiny_mlp()
    s = methods.create("static", model, sgd(model), total_steps=10, sparsity=0.5,
                       include=lambda name, module: isinstance(module, nn.Linear) and name != "5")
    assert s.names == ["1", "3"]
    assert s.densities() == {"1": 1.0, "3": 0.5}  # uniform keeps the first layer dense
    s = methods.create("static", model, sgd(model), total_steps=10, sparsity=0.5, distribution="uniform",
                       dense_first=False, dense_last=True)
    assert s.densities() == {"1": 0.5, "3": 0.5, "5": 1.0}
    assert s.global_density() == pytest.approx((1024 + 256 + 160) / (2048 + 512 + 160))


def test_load_state_dict_of_another_method_or_model_is_refused():
    model = tiny_mlp()
    rigl = methods.create("rigl", model, sgd(model), total_steps=10)
    static = methods.create("static", model, sgd(model), total_steps=10)
    with pytest.raises(ValueError, match="sparsifier state is for method 'static'"):
        rigl.load_state_dict(static.state_dict())
    other = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="load a checkpoint of the same run"):
        methods.create("static", other, sgd(other), total_steps=10).load_state_dict(static.state_dict())


def test_small_dense_width_matches_the_sparse_parameter_count():
    def build(width):
        h1, h2 = max(1, round(300 * width)), max(1, round(100 * width))
        return nn.Sequential(nn.Linear(784, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(), nn.Linear(h2, 10))

    config = methods.SparsityConfig(sparsity=0.9, distribution="erk")
    target = methods.sparse_parameter_count(build(1.0), config)
    assert target == round(0.1 * 266200) + 410  # active weights plus the dense biases
    width = methods.small_dense_width(build, config)
    best = min(abs(methods.parameter_count(build(h / 300)) - target) for h in range(1, 301))
    assert abs(methods.parameter_count(build(width)) - target) == best
    assert 0.05 < width < 0.15


def test_masks_stay_exact_under_bf16_autocast():
    torch.manual_seed(0)
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    s = methods.create("rigl", model, opt, total_steps=60, sparsity=0.9, delta_t=10)
    for t in range(60):
        x, y = batch(t)
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        s.step()
        assert [int(m.sum()) for m in s.masks] == s.targets
        assert all(torch.all(w[~m] == 0) for w, m in zip(s.weights, s.masks))


def test_grad_scaler_path_unscales_and_steps():
    torch.manual_seed(0)
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    s = methods.create("snfs", model, opt, total_steps=20, sparsity=0.9, delta_t=5)
    x, y = batch(0)
    scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
    expected = model[1].weight.grad / 1024.0
    s.step(scaler=scaler)
    scaler.update()
    assert torch.allclose(s.momentum[0], 0.1 * expected)  # the gradient momentum sees unscaled gradients


def test_torch_compile_model_trains_with_exact_masks():
    torch.manual_seed(0)
    model = tiny_mlp()
    compiled = torch.compile(model, backend="aot_eager")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    s = methods.create("rigl", model, opt, total_steps=40, sparsity=0.9, delta_t=10)
    for t in range(40):
        train_step(compiled, s, opt, t)
    assert [int(m.sum()) for m in s.masks] == s.targets
    assert all(torch.all(w[~m] == 0) for w, m in zip(s.weights, s.masks))


def test_given_masks_start_the_run_and_set_the_targets():
    torch.manual_seed(0)
    model = tiny_mlp()
    source = methods.create("snip", model, sgd(model), total_steps=10, sparsity=0.7, distribution="erk",
                            init_batches=[batch(0)])
    masks = dict(zip(source.names, source.masks))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rigl = methods.create("rigl", model, opt, total_steps=60, sparsity=0.9, delta_t=10, masks=masks)
    assert all(torch.equal(a, b) for a, b in zip(rigl.masks, source.masks))
    assert rigl.targets == source.counts
    for t in range(60):
        train_step(model, rigl, opt, t)
    assert rigl.counts == source.counts
    with pytest.raises(ValueError, match="gmp builds its own masks"):
        methods.create("gmp", model, sgd(model), total_steps=10, masks=masks)
    with pytest.raises(ValueError, match="one mask per sparse layer"):
        methods.create("static", model, sgd(model), total_steps=10, masks={"1": masks["1"]})
