"""Character-level language models: sparse recurrent matrices, recurrent and attention FLOPs, the text
corpora, bits per character through the harness and analysis (issue 18, parts 2 and 4)."""
import json
import math

import pandas as pd
import pytest
import torch
from torch import nn

import methods
from analysis.plots import accuracy_vs_train_flops, make_figures
from analysis.runs import group_metric
from analysis.tables import markdown_table
from benchmark import data as data_module
from benchmark import train as train_module
from benchmark.cli import main
from benchmark.config import RunConfig
from benchmark.data import DataNotFoundError, load_dataset, train_batches
from benchmark.flops import forward_flops
from benchmark.models import CharGPT, CharGRU, build_model
from benchmark.presets import preset_config
from benchmark.results import run_row, summarize, summary_markdown
from benchmark.train import RunInterrupted, make_optimizer, train

FORTUNES = data_module.SYSTEM_DIRS["fortunes"][0]
needs_fortunes = pytest.mark.skipif(not (FORTUNES / "zippy").is_file(),
                                    reason=f"no fortunes corpus in {FORTUNES} (scripts/fetch_data.sh installs it)")


class Recurrent(nn.Module):
    def __init__(self, cell=nn.GRU):
        super().__init__()
        self.rnn = cell(4, 6, num_layers=2, batch_first=True)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


def test_recurrent_matrices_are_sparse_layers_with_exact_counts():
    model = Recurrent()
    s = methods.create("static", model, torch.optim.SGD(model.parameters(), 0.1), total_steps=5, sparsity=0.5,
                       distribution="uniform", dense_first=False)
    assert s.names == ["rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.weight_ih_l1", "rnn.weight_hh_l1", "fc"]
    assert s.sizes == [72, 108, 108, 108, 18]  # 3 gates x 6 units by 4 inputs, by 6 hidden, ...
    assert s.counts == [36, 54, 54, 54, 9]
    assert [int((w != 0).sum()) for w in s.weights] == [36, 54, 54, 54, 9]
    lstm = Recurrent(nn.LSTM)
    s = methods.create("static", lstm, torch.optim.SGD(lstm.parameters(), 0.1), total_steps=5, sparsity=0.75,
                       distribution="uniform", dense_first=False)
    assert s.sizes == [96, 144, 144, 144, 18] and s.counts == [24, 36, 36, 36, 4]  # 4 gates


def test_erk_treats_a_recurrent_matrix_as_a_dense_out_by_in_matrix():
    # (12, 4), (12, 4) and a (4, 8) Linear at 50%: raw densities 16/48, 16/48, 12/32; eps = 64 / 44;
    # ideal counts 23.27, 23.27, 17.45 -> 23, 23, 17 and the one left over to the largest remainder (17.45)
    model = nn.Sequential(nn.GRU(4, 4), nn.Identity())
    model.fc = nn.Linear(8, 4)
    s = methods.create("static", model, torch.optim.SGD(model.parameters(), 0.1), total_steps=5, sparsity=0.5,
                       distribution="erk")
    assert s.names == ["0.weight_ih_l0", "0.weight_hh_l0", "fc"]
    assert s.counts == [23, 23, 18]


def test_a_recurrent_matrix_without_weights_is_an_error_naming_the_fix():
    model = nn.Sequential(nn.GRU(1, 1), nn.Identity())
    model.fc = nn.Linear(20, 20)
    with pytest.raises(ValueError, match=r"recurrent matrix 0.weight_ih_l0 no active weight \(of 3\); use "
                                         r"distribution erk"):
        methods.create("static", model, torch.optim.SGD(model.parameters(), 0.1), total_steps=5, sparsity=0.9,
                       distribution="uniform", dense_first=False)


@pytest.mark.parametrize("method", ["static", "snip", "gmp", "set", "snfs", "rigl", "dsr", "deepr"])
def test_every_method_keeps_gru_masks_after_each_step(method):
    torch.manual_seed(0)
    model = CharGRU(vocab=16, embedding=4, hidden=8, readout=6)
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    x, y = torch.randint(16, (4, 10)), torch.randint(16, (4, 10))
    s = methods.create(method, model, optimizer, total_steps=6, sparsity=0.75, distribution="uniform",
                       dense_first=False, delta_t=2, gmp_start=0.0, gmp_stop=0.5, gmp_every=1,
                       init_batches=[(x, y)])
    gru = model.gru
    for _ in range(6):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        s.step()
        for weight, mask, count in zip(s.weights, s.masks, s.counts):
            assert int(mask.sum()) == count
            assert torch.equal(weight[~mask], torch.zeros(int((~mask).sum())))
        assert gru.weight_hh_l0 is s.weights[1]  # the module's own parameter, masked in place
    if method not in ("gmp", "dsr"):  # the others keep every layer at its target
        assert s.counts == [24, 48, 12, 6]  # 25% of 24 x 4, 24 x 8, 6 x 8, 4 x 6


def test_recurrent_and_attention_flops_by_hand():
    # per sample of 7 steps: 2 FLOPs per weight per step; gates stacked in the rows (3 x 6)
    # the tied output projection (4 -> 10, by the embedding's matrix) is dense work of its own module
    gru = CharGRU(vocab=10, embedding=4, hidden=6, readout=5)
    assert forward_flops(gru, (7,)) == {"readout1": 2 * 5 * 6 * 7, "readout2": 2 * 4 * 5 * 7, "output": 2 * 10 * 4 * 7,
                                        "gru.weight_ih_l0": 2 * 18 * 4 * 7, "gru.weight_hh_l0": 2 * 18 * 6 * 7}
    gpt = CharGPT(vocab=10, length=8, dim=8, heads=2, layers=1)
    flops = forward_flops(gpt, (8,))
    # QK^T and AV: 2 heads x (8 x 8 x 4) multiply-adds each, dense whatever the masks (causal ones included)
    assert flops["blocks.0.attention"] == 2 * 2 * (2 * 8 * 8 * 4)
    assert flops == {"blocks.0.qkv": 2 * 24 * 8 * 8, "blocks.0.attention": 2048.0, "blocks.0.proj": 2 * 8 * 8 * 8,
                     "blocks.0.fc1": 2 * 32 * 8 * 8, "blocks.0.fc2": 2 * 32 * 8 * 8, "head": 2 * 10 * 8 * 8}


def test_dry_run_and_flops_of_the_text_presets(capsys):
    assert main(["run", "--preset", "wikitext103-gru", "--methods", "static", "--sparsity", "0.9",
                 "--dry-run"]) == 0
    assert "200000" in capsys.readouterr().out
    assert main(["flops", "--preset", "fortunes-gpt", "--method", "static", "--sparsity", "0.9", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    # per sequence of 128: each block's qkv, proj, fc1, fc2 hold 12288, 4096, 16384, 16384 weights, the head
    # 16384, at 256 FLOPs per weight (dense: 29,360,128); attention 2 x 4,194,304 stays dense. At 90% uniform
    # the layers keep 1229, 410, 1638, 1638 (twice) and 1638 weights: 256 x 11468 = 2,935,808 sparse FLOPs.
    assert result["inference_multiplier"] == pytest.approx((8388608 + 2935808) / (8388608 + 29360128), rel=1e-12)


def test_text_models_refuse_image_datasets_and_back():
    with pytest.raises(ValueError, match="char-gru is a character-level language model and takes a text dataset"):
        RunConfig(dataset="digits", model="char-gru").validate()
    with pytest.raises(ValueError, match="lenet-300-100 takes images; a text dataset takes char-gru"):
        RunConfig(dataset="fortunes", model="lenet-300-100").validate()
    with pytest.raises(ValueError, match="label_smoothing must be 0 on a text dataset"):
        RunConfig(dataset="fortunes", model="char-gru-small", label_smoothing=0.1).validate()


def test_missing_or_altered_corpus_is_one_line_naming_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(data_module.SYSTEM_DIRS, "fortunes", [])
    monkeypatch.setattr(data_module, "REPO_DATA_DIR", tmp_path / "repo-data")
    monkeypatch.delenv("SPARSEBENCH_DATA", raising=False)
    with pytest.raises(DataNotFoundError, match=r"dataset 'fortunes' not found .*run `bash scripts/fetch_data.sh`"):
        load_dataset("fortunes", root=tmp_path / "none")
    assert not (tmp_path / "none").exists()
    folder = tmp_path / "root" / "fortunes"
    folder.mkdir(parents=True)
    for name in data_module.FORTUNE_FILES:
        (folder / name).write_text("not the corpus\n")
    with pytest.raises(DataNotFoundError, match=r"is not the pinned corpus \(630 bytes"):
        load_dataset("fortunes", root=tmp_path / "root")


def test_a_run_without_the_corpus_is_one_error_line_and_no_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(data_module.SYSTEM_DIRS, "fortunes", [])
    monkeypatch.setattr(data_module, "REPO_DATA_DIR", tmp_path / "repo-data")
    monkeypatch.delenv("SPARSEBENCH_DATA", raising=False)
    out = tmp_path / "out"
    assert main(["run", "--preset", "fortunes-gru", "--methods", "rigl", "--steps", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: dataset 'fortunes' not found") and "fetch_data.sh" in err
    assert not out.exists() and not (tmp_path / "repo-data").exists()


@needs_fortunes
def test_fortunes_sequences_predict_the_next_byte():
    bundle = load_dataset("fortunes")
    x, y = bundle.train
    assert bundle.train_size == 18075 and tuple(x.shape) == (18075, 128) and len(bundle.test[1]) == 2008
    assert bundle.input_shape == (128,) and bundle.num_classes == 256
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(x[1:, 0], y[:-1, -1])  # consecutive, no overlap
    assert bytes(x[0, :12].tolist()) == (FORTUNES / "art").read_bytes()[:12]
    bx, by = next(train_batches(bundle, 4, seed=0))
    assert bx.dtype == by.dtype == torch.int64 and tuple(by.shape) == (4, 128)


@needs_fortunes
@pytest.mark.parametrize("preset, counts, csr", [
    # 25% of (3 x 128) x 32, (3 x 128) x 128, 64 x 128, 32 x 64
    ("fortunes-gru", {"gru.weight_ih_l0": 3072, "gru.weight_hh_l0": 12288, "readout1": 2048, "readout2": 512}, 2),
    ("fortunes-gpt", {"blocks.0.qkv": 3072, "blocks.0.fc2": 4096, "head": 4096}, 9),
])
def test_text_presets_train_with_exact_counts_and_report_bpc(tmp_path, monkeypatch, capsys, preset, counts, csr):
    evaluated = train_module.eval_batches
    monkeypatch.setattr(train_module, "eval_batches", lambda *a: ((x[:32], y[:32]) for x, y in evaluated(*a)))
    cfg = preset_config(preset, method="rigl", sparsity=0.75, steps=4, delta_t=2, eval_every=4, log_every=2,
                        train_subset=128, val_fraction=0.0)
    metrics = train(cfg, tmp_path / "run")
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    for name, count in counts.items():
        mask = ckpt["sparsifier"]["masks"][name]
        assert int(mask.sum()) == count
        key = name if "weight_" in name else f"{name}.weight"
        assert int((ckpt["model"][key] != 0).sum()) <= count and not bool(ckpt["model"][key][~mask].any())
    assert metrics["test_bpc"] == metrics["test_loss"] / math.log(2)
    assert 0 < metrics["test_bpc"] < 8.5  # 8 bits is a uniform guess over 256 bytes
    row = run_row(cfg, metrics, "cpu")
    assert row["test_bpc"] == metrics["test_bpc"]
    # export: Linear layers as CSR, recurrent matrices dense with their zeros, outputs checked on random bytes
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "model.pt")]) == 0
    assert f"{csr} sparse layer(s) as CSR" in capsys.readouterr().out


@needs_fortunes
def test_an_interrupted_gru_run_resumes_bit_identically(tmp_path, monkeypatch):
    evaluated = train_module.eval_batches
    monkeypatch.setattr(train_module, "eval_batches", lambda *a: ((x[:32], y[:32]) for x, y in evaluated(*a)))
    cfg = preset_config("fortunes-gru", method="rigl", sparsity=0.9, steps=6, delta_t=2, log_every=1,
                        checkpoint_every=2, train_subset=128)
    whole = train(cfg, tmp_path / "whole")
    with pytest.raises(RunInterrupted, match="stopped after step 3 of 6"):
        train(cfg, tmp_path / "cut", stop_after=3)
    resumed = train(cfg, tmp_path / "cut")
    a, b = (torch.load(tmp_path / run / "checkpoint.pt", weights_only=True) for run in ("whole", "cut"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["sparsifier"]["masks"][k], b["sparsifier"]["masks"][k]) for k in a["sparsifier"]["masks"])
    assert resumed["test_bpc"] == whole["test_bpc"] and resumed["flops"] == whole["flops"]


def test_analysis_shows_bpc_for_language_models_lower_is_better():
    base = {"dataset": "fortunes", "model": "char-gru-small", "distribution": "uniform", "multiplier": 1.0,
            "seed": 0, "settings": "{}", "wall_time_s": 1.0, "train_flops_multiplier": 0.1,
            "inference_flops_multiplier": 0.1, "test_accuracy": 40.0}
    runs = pd.DataFrame([{**base, "run_id": "a", "method": "rigl", "sparsity": 0.9, "test_bpc": 2.5,
                          "config_key": "a"},
                         {**base, "run_id": "b", "method": "static", "sparsity": 0.9, "test_bpc": 2.75,
                          "config_key": "b"}])
    assert group_metric(runs, "test_accuracy") == "test_bpc"
    assert group_metric(runs.assign(test_bpc=float("nan")), "test_accuracy") == "test_accuracy"
    table = markdown_table(runs, "test_bpc")
    assert "Test bits per character as mean" in table and "90%: bpc" in table
    assert "**2.50**" in table and "**2.75**" not in table  # the lowest bpc is the best



def test_language_model_runs_are_drawn_as_bpc_against_flops(tmp_path):
    base = {"dataset": "fortunes", "model": "char-gru-small", "distribution": "uniform", "multiplier": 1.0,
            "seed": 0, "settings": "{}", "wall_time_s": 1.0, "test_accuracy": 40.0}
    runs = pd.DataFrame([
        {**base, "run_id": "a", "config_key": "a", "method": "rigl", "sparsity": 0.9, "test_bpc": 2.5,
         "train_flops_multiplier": 0.104, "inference_flops_multiplier": 0.1},
        {**base, "run_id": "b", "config_key": "b", "method": "dense", "sparsity": 0.0, "test_bpc": 2.0,
         "distribution": "none", "train_flops_multiplier": 1.0, "inference_flops_multiplier": 1.0}])
    written = make_figures(runs, out=tmp_path, formats=("png",), figures=("train-flops",), report=lambda _: None)
    assert [p.name for p in written] == ["bpc-vs-train-flops-fortunes-char-gru-small.png"]
    table = summary_markdown(summarize(runs.assign(test_loss=runs["test_bpc"] * math.log(2))))
    assert "| test accuracy (%) | test bpc | train FLOPs |" in table
    assert "| rigl | uniform | 0.9 | 1 | 40.00 | 2.500 | 0.104x |" in table
    fig = accuracy_vs_train_flops(runs, metric="test_bpc")
    assert "bits per character vs training FLOPs" in " ".join(t.get_text() for t in fig.texts)
    assert fig.axes[0].get_ylabel() == "test bits per character (lower is better)"


@pytest.mark.parametrize("model, counts", [
    # 90% uniform: (3 x 512) x 128, (3 x 512) x 512, 256 x 512, 128 x 256 weights keep 10%, rounded
    ("char-gru", [19661, 78643, 13107, 3277]),
    # per block: qkv 768 x 256, proj 256 x 256, fc1 1024 x 256, fc2 256 x 1024; the head 256 x 256
    ("char-gpt", [19661, 6554, 26214, 26214] * 6 + [6554]),
])
def test_the_paper_sized_text_models_take_a_step_with_exact_counts(model, counts):
    torch.manual_seed(0)
    net = build_model(model, 256, (16,))
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    s = methods.create("rigl", net, optimizer, total_steps=2, sparsity=0.9, distribution="uniform",
                       dense_first=False, delta_t=1, update_at_start=True)  # RigL updates after step 0
    x = torch.randint(256, (2, 16))
    nn.functional.cross_entropy(net(x), x.roll(-1, 1)).backward()
    assert s.step().updated
    assert s.counts == counts
    assert [int((w != 0).sum()) for w in s.weights] <= counts and all(
        not bool(w[~m].any()) for w, m in zip(s.weights, s.masks))


def test_char_gru_is_appendix_i_shape_with_the_embedding_as_its_output_matrix():
    net = build_model("char-gru", 256, (512,))
    shapes = {name: tuple(p.shape) for name, p in net.named_parameters()}
    assert shapes == {"embedding.weight": (256, 128), "gru.weight_ih_l0": (1536, 128), "gru.weight_hh_l0": (1536, 512),
                      "gru.bias_ih_l0": (1536,), "gru.bias_hh_l0": (1536,), "readout1.weight": (256, 512),
                      "readout1.bias": (256,), "readout2.weight": (128, 256), "readout2.bias": (128,),
                      "output.bias": (256,)}  # no output matrix of its own
    assert sum(p.numel() for p in net.parameters()) == 1183360
    small = {name: tuple(p.shape) for name, p in build_model("char-gru-small", 256, (128,)).named_parameters()}
    assert small["embedding.weight"] == (256, 32) and small["gru.weight_hh_l0"] == (384, 128)
    assert small["readout1.weight"] == (64, 128) and small["readout2.weight"] == (32, 64)
    # scores of a byte never seen in the input reach the embedding only through the shared output matrix
    torch.manual_seed(0)
    model = CharGRU(vocab=5, embedding=3, hidden=4, readout=2)
    seen = []
    model.readout2.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    model(torch.zeros(1, 6, dtype=torch.long))[:, 3].sum().backward()
    grad = model.embedding.weight.grad
    assert torch.equal(grad[3], seen[0][0].sum(0))  # d(sum_t h_t . E_3) / dE_3
    assert not grad[[1, 2, 4]].any()
    assert torch.equal(model.output.bias.grad, torch.tensor([0.0, 0.0, 0.0, 6.0, 0.0]))


def test_char_gru_dense_forward_flops_per_step_by_hand():
    # 2 FLOPs per weight per step: GRU 1536 x 128 and 1536 x 512, readout 256 x 512 and 128 x 256, and the
    # tied output 256 x 128 by the embedding matrix
    flops = forward_flops(build_model("char-gru", 256, (1,)), (1,))
    assert flops["output"] == 65536
    assert sum(flops.values()) == 2359296


def test_grad_clip_scales_the_applied_gradient_to_its_norm_masked_weights_left_out():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2, bias=False))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.0, weight_decay=0.0)
    s = methods.create("static", model, optimizer, total_steps=3, sparsity=0.5, distribution="uniform",
                       dense_first=False)
    weight, mask = model[0].weight, s.masks[0]
    assert int(mask.sum()) == 2
    before = weight.detach().clone()
    grad = torch.full((2, 2), 100.0)  # masked entries: they must not count in the norm
    grad[mask] = torch.tensor([12.0, 16.0])  # norm 20
    weight.grad = grad.clone()
    s.step(clip_norm=10.0)
    # clip_grad_norm_ scales by 10 / (20 + 1e-6): steps of 6 and 8 up to that epsilon
    step = before - weight.detach()
    assert step[mask].tolist() == pytest.approx([6.0, 8.0], rel=1e-6)
    assert not weight.detach()[~mask].any()
    weight.grad = grad.clone()
    s.step(clip_norm=30.0)  # below the limit: unchanged
    assert (before - weight.detach())[mask].tolist() == pytest.approx([18.0, 24.0], rel=1e-6)


def test_a_run_passes_grad_clip_to_every_step(tmp_path, monkeypatch):
    norms = []
    step = methods.Sparsifier.step
    monkeypatch.setattr(methods.Sparsifier, "step",
                        lambda self, *a, **k: norms.append(k.get("clip_norm")) or step(self, *a, **k))
    train(preset_config("digits-lenet300", method="static", sparsity=0.9, steps=3, log_every=1, grad_clip=2.5),
          tmp_path / "run")
    assert norms == [2.5, 2.5, 2.5]


def test_adam_adds_l2_to_the_gradient_where_adamw_decays_the_weight():
    cfgs = [preset_config("wikitext103-gru", optimizer=name) for name in ("adam", "adamw")]
    weights = []
    for cfg in cfgs:
        model = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            model.weight.fill_(1.0)
        optimizer = make_optimizer(cfg, model)
        model.weight.grad = torch.zeros(1, 1)
        optimizer.step()
        weights.append(model.weight.item())
    # Adam: gradient 5e-4 * 1, first step lr * g / (|g| + 1e-8); AdamW: w * (1 - lr * 5e-4), no gradient step
    assert weights[0] == pytest.approx(1 - 7e-4 * 5e-4 / (5e-4 + 1e-8), abs=1e-7)
    assert weights[1] == pytest.approx(1 - 7e-4 * 5e-4, abs=1e-7)


def test_the_wikitext_preset_is_appendix_i(capsys):
    cfg = preset_config("wikitext103-gru")
    assert (cfg.dataset, cfg.model, cfg.optimizer, cfg.distribution) == ("wikitext103", "char-gru", "adam", "uniform")
    assert (cfg.lr, cfg.weight_decay, cfg.grad_clip, cfg.batch_size, cfg.steps) == (7e-4, 5e-4, 10.0, 32, 200000)
    assert data_module.DATASETS["wikitext103"].input_shape == (512,)  # sequence length
    assert cfg.sparsity == 0.75 and (cfg.alpha, cfg.delta_t, cfg.t_end, cfg.anneal) == (0.1, 100, 1.0, "cosine")
    assert (cfg.gmp_start * 200000, cfg.gmp_stop * 200000, cfg.gmp_every) == (50000, 150000, 1000)
    assert main(["run", "--preset", "wikitext103-gru", "--methods", "static", "--dry-run"]) == 0
    assert "static-s0.75-seed0-" in capsys.readouterr().out  # the preset's sparsity when --sparsity is left out
