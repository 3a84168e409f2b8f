"""The notebooks run top to bottom on the fixtures (parameters from SPARSEBENCH_* variables) in a
kernel of this interpreter, and are committed without outputs."""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
FIXTURES = REPO / "tests" / "fixtures"
NAMES = ("tradeoff_curves", "loss_landscape")


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_clean_and_thin(name):
    nb = _read(name)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), "commit the notebook without outputs"
    assert "parameters" in code[0].metadata.get("tags", [])
    assert "os.environ.get(\"SPARSEBENCH_" in code[0].source
    source = "\n".join(c.source for c in code)
    assert "def " not in source and "plt.subplots" not in source  # drawing lives in the analysis package


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Both notebooks executed concurrently (two kernels), with a last cell reporting the kernel's Python."""
    tmp = tmp_path_factory.mktemp("notebooks")
    env = {
        "SPARSEBENCH_RUNS": str(FIXTURES / "sweep" / "runs.csv"),
        "SPARSEBENCH_FIGURES": str(tmp / "figures"),
        "SPARSEBENCH_TABLES": str(tmp / "tables"),
        "SPARSEBENCH_LANDSCAPE": str(FIXTURES / "landscape" / "landscape.csv"),
        "SPARSEBENCH_RESTART": str(FIXTURES / "landscape" / "restart.csv"),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernels inherit the environment
    notebooks = {name: _read(name) for name in NAMES}
    for nb in notebooks.values():
        nb.cells.append(nbformat.v4.new_code_cell("import sys; print('KERNEL', sys.executable)"))

    async def run_all():
        clients = [NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(NOTEBOOKS)}})
                   for nb in notebooks.values()]
        await asyncio.gather(*(c.async_execute() for c in clients))

    try:
        asyncio.run(run_all())
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return notebooks, tmp


def _outputs(nb, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == kind]


def _images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_notebooks_run_in_this_interpreter(executed):
    notebooks, _ = executed
    for name, nb in notebooks.items():
        assert not _outputs(nb, "error"), name
        text = "".join(o.get("text", "") for o in _outputs(nb, "stream"))
        assert f"KERNEL {sys.executable}" in text, name


def test_tradeoff_notebook_draws_and_saves_every_figure_and_table(executed):
    notebooks, tmp = executed
    nb = notebooks["tradeoff_curves"]
    assert _images(nb) == 5  # train FLOPs, sparsity, inference FLOPs, layer density, mask updates
    markdown = [o for o in _outputs(nb, "display_data") if "text/markdown" in o.get("data", {})]
    assert markdown and "### digits / lenet-300-100" in markdown[0]["data"]["text/markdown"]
    assert len(list((tmp / "figures").glob("*-digits-lenet-300-100.png"))) == 5
    assert len(list((tmp / "figures").glob("*-digits-lenet-300-100.pdf"))) == 5
    assert (tmp / "tables" / "table.md").is_file() and (tmp / "tables" / "table.tex").is_file()


def test_landscape_notebook_plots_the_fixture(executed):
    notebooks, tmp = executed
    nb = notebooks["loss_landscape"]
    assert _images(nb) == 2
    text = "".join(o.get("text", "") for o in _outputs(nb, "stream"))
    assert "71 points on paths ['bezier-dense', 'bezier-sparse', 'linear']" in text
    assert (tmp / "figures" / "landscape.png").is_file() and (tmp / "figures" / "landscape-accuracy.pdf").is_file()
