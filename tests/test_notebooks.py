"""The notebooks, exactly as committed (no parameters or environment variables changed), run top to
bottom on the committed results in kernels of this interpreter, show what those results hold, and
write nothing; they are committed without outputs."""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
RESULTS = REPO / "results"
LANDSCAPE = RESULTS / "fashion-mnist-lenet300" / "landscape"
NAMES = ("tradeoff_curves", "loss_landscape")


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def _files() -> dict[Path, tuple[int, int]]:
    """(size, modification time) of every file in the working tree outside .git, .venv and caches."""
    skip = {".git", ".venv", "data", "__pycache__", ".pytest_cache"}
    found = {}
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in skip]
        for name in files:
            stat = (Path(root) / name).stat()
            found[Path(root) / name] = (stat.st_size, stat.st_mtime_ns)
    return found


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_clean_and_thin(name):
    nb = _read(name)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), "commit the notebook without outputs"
    assert "parameters" in code[0].metadata.get("tags", [])
    assert "OUT = None" in code[0].source and "environ" not in code[0].source
    source = "\n".join(c.source for c in code)
    assert "def " not in source and "plt.subplots" not in source  # drawing lives in the analysis package


@pytest.fixture(scope="module")
def executed():
    """Both notebooks as committed, executed concurrently in two kernels (started in notebooks/, as
    Jupyter does), each asked afterwards for its interpreter; with the working tree's files before and
    after."""
    before = _files()
    notebooks = {name: _read(name) for name in NAMES}
    backend = os.environ.pop("MPLBACKEND", None)  # the kernel's own default (inline figures), whatever runs pytest

    async def run(nb) -> str:
        client = NotebookClient(nb, kernel_name="python3", timeout=600,
                                resources={"metadata": {"path": str(NOTEBOOKS)}})
        try:
            await client.async_execute(cleanup_kc=False)
            reply = await client.kc.execute_interactive(
                "", user_expressions={"exe": "__import__('sys').executable"}, timeout=60)
            return reply["content"]["user_expressions"]["exe"]["data"]["text/plain"].strip("'")
        finally:
            await client._async_cleanup_kernel()

    async def run_all():
        return await asyncio.gather(*(run(nb) for nb in notebooks.values()))

    try:
        interpreters = asyncio.run(run_all())
    finally:
        if backend is not None:
            os.environ["MPLBACKEND"] = backend
    return notebooks, dict(zip(NAMES, interpreters)), before, _files()


def _outputs(nb, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == kind]


def _text(nb) -> str:
    return "".join(o.get("text", "") for o in _outputs(nb, "stream"))


def _images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_notebooks_run_in_this_interpreter_and_write_nothing(executed):
    notebooks, interpreters, before, after = executed
    for name, nb in notebooks.items():
        assert not _outputs(nb, "error"), name
        assert interpreters[name] == sys.executable, name
        assert "OUT is None: nothing written" in _text(nb), name
    assert after == before  # nothing under results/ (or anywhere else) written, changed or removed


def test_tradeoff_notebook_reads_every_committed_sweep_and_shows_the_chosen_one(executed):
    notebooks, *_ = executed
    nb = notebooks["tradeoff_curves"]
    files = sorted(RESULTS.glob("*/runs.csv"))
    every = sum(len(pd.read_csv(f)) for f in files)
    fmnist = pd.read_csv(RESULTS / "fashion-mnist-lenet300" / "runs.csv")
    fmnist = fmnist[(fmnist.dataset == "fashion-mnist") & (fmnist.model == "lenet-300-100")]
    text = _text(nb)
    assert f"{every} runs in {len(files)} files (" in text and len(files) >= 4 and every > 200
    assert f"{len(fmnist)} runs after the filter, {len(fmnist)} run folders; groups:" in text
    assert f"  fashion-mnist / lenet-300-100: {len(fmnist)} runs\n" in text
    assert _images(nb) == 5  # train FLOPs, sparsity, inference FLOPs, layer density, mask updates
    markdown = [o for o in _outputs(nb, "display_data") if "text/markdown" in o.get("data", {})]
    assert markdown and markdown[0]["data"]["text/markdown"].startswith("### fashion-mnist / lenet-300-100")
    # the results table holds the committed table of that sweep
    committed = (RESULTS / "fashion-mnist-lenet300" / "tables" / "table.md").read_text()
    assert markdown[0]["data"]["text/markdown"].strip() == committed.strip()


def test_landscape_notebook_plots_the_committed_study(executed):
    notebooks, *_ = executed
    nb = notebooks["loss_landscape"]
    frame = pd.read_csv(LANDSCAPE / "landscape.csv")
    restart = pd.read_csv(LANDSCAPE / "restart" / "restart.csv")
    assert _images(nb) == 2
    assert (f"{len(frame)} points on paths {sorted(frame['path'].unique())}; endpoints: ('gmp', 'static'); "
            f"batch-norm statistics re-estimated: False; restarts: {sorted(restart['method'].unique())}") in _text(nb)
    assert len(frame) == 71 and sorted(restart["method"].unique()) == ["rigl", "static"]
