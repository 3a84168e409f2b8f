"""The execution seam: how sparse layers compute is chosen per run by `execution`, behind one interface
that no method touches."""
import pytest
import torch

import methods
from benchmark.presets import preset_config
from methods.execution import EXECUTIONS, MaskedDense
from methods.sparse_execution import SparseKernels


class Recording(MaskedDense):
    """Masked-dense execution that records what the sparsifier asks of it."""

    name = "recording"

    def __init__(self, sparsifier):
        super().__init__(sparsifier)
        self.calls = []

    def before_optimizer_step(self, grads):
        self.calls.append("before")
        super().before_optimizer_step(grads)

    def after_optimizer_step(self):
        self.calls.append("after")
        super().after_optimizer_step()

    def apply_changes(self, changes):
        self.calls.append(f"changes {sorted(changes)}")
        super().apply_changes(changes)


def test_an_execution_is_chosen_by_the_setting_and_sees_every_step_and_update(make_run, monkeypatch):
    from conftest import train_step

    monkeypatch.setitem(EXECUTIONS, "recording", Recording)
    runs = {}
    for execution in ("masked", "recording"):
        net, opt, s = make_run("rigl", "mlp", "sgd", sparsity=0.9, delta_t=2, total_steps=6, execution=execution)
        assert type(s.execution) is EXECUTIONS[execution]
        for t in range(4):
            train_step(net, s, opt, t)
        runs[execution] = (net, s)
    calls = runs["recording"][1].execution.calls
    # one update, after step 2 (every delta_t = 2 until t_end = 0.75 * 6 = 4); uniform keeps layer 0 dense
    assert calls == ["before", "after"] * 3 + ["changes [1, 2]"] + ["before", "after"]
    for a, b in zip(runs["masked"][0].parameters(), runs["recording"][0].parameters()):
        assert torch.equal(a, b)  # the same training through the seam


def test_an_unknown_execution_is_refused():
    with pytest.raises(ValueError, match="execution must be one of masked, sparse, auto; got execution='kernels'"):
        methods.make_config(execution="kernels")


@pytest.mark.parametrize("method, chosen", [("rigl", SparseKernels), ("static", SparseKernels), ("gmp", SparseKernels),
                                            ("snfs", SparseKernels), ("dense", MaskedDense), ("deepr", MaskedDense)])
def test_auto_trains_on_kernels_the_methods_they_speed_up_and_keys_runs_by_what_it_chose(make_run, method, chosen):
    _, _, s = make_run(method, "mlp", "sgd", sparsity=0.9, execution="auto")
    assert type(s.execution) is chosen
    sparsity = 0.0 if method == "dense" else 0.9
    auto = preset_config("fashion-mnist-lenet300", method=method, sparsity=sparsity, execution="auto")
    explicit = preset_config("fashion-mnist-lenet300", method=method, sparsity=sparsity, execution=chosen.name)
    assert auto.config_key() == explicit.config_key() and auto.settings()["execution"] == chosen.name


def test_the_execution_auto_chose_per_method_does_not_label_a_summary_row():
    import json

    import pandas as pd

    from benchmark.results import protocol_labels

    def row(method, execution):
        return {"dataset": "fashion-mnist", "model": "lenet-300-100", "method": method, "distribution": "erk",
                "sparsity": 0.9, "multiplier": 1.0, "settings": json.dumps({"lr": 0.1, "execution": execution})}

    df = pd.DataFrame([row("dense", "masked"), row("rigl", "sparse"), row("set", "sparse")])
    assert protocol_labels(df).tolist() == ["", "", ""]
    both = pd.DataFrame([row("rigl", "masked"), row("rigl", "sparse")])  # one method both ways: told apart
    assert protocol_labels(both).tolist() == ["execution=masked", "execution=sparse"]
    # two protocols (lr 0.1 masked, lr 0.2 on kernels): the lr tells them apart, the execution would split the
    # second protocol's rigl from its dense run
    other = {"settings": json.dumps({"lr": 0.2, "execution": "sparse"})}
    two = pd.DataFrame([row("rigl", "masked"), row("dense", "masked"), {**row("rigl", "sparse"), **other},
                        {**row("dense", "masked"), "settings": json.dumps({"lr": 0.2, "execution": "masked"})}])
    assert protocol_labels(two).tolist() == ["lr=0.1", "lr=0.1", "lr=0.2", "lr=0.2"]
