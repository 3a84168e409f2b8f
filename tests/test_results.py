"""The committed results: every figure regenerates from the committed CSVs and run folders."""
from pathlib import Path

import pytest

from analysis.cli import main as analysis

RESULTS = Path(__file__).resolve().parent.parent / "results"
SWEEPS = sorted(p.parent for p in RESULTS.glob("*/figures") if (p.parent / "runs.csv").exists())


LANDSCAPES = sorted(p.parent for p in RESULTS.glob("*/landscape/landscape.csv"))


def _figures(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".png", ".pdf"))


def _same_pixels(a: Path, b: Path) -> None:
    """The two PNGs have one size and at least 99.9% of their pixels equal (a renderer update may move
    a few anti-aliased edge pixels; a changed point, line, label or axis moves thousands)."""
    import matplotlib.image

    x, y = matplotlib.image.imread(a), matplotlib.image.imread(b)
    assert x.shape == y.shape, (a.name, x.shape, y.shape)
    equal = (x == y).all(axis=-1).mean()
    assert equal >= 0.999, f"{a.name}: only {equal:.4%} of the pixels match the committed figure"


@pytest.mark.parametrize("sweep", SWEEPS, ids=[s.name for s in SWEEPS])
def test_committed_figures_and_tables_regenerate_from_committed_csvs(sweep, tmp_path):
    committed = _figures(sweep / "figures")
    assert committed, f"{sweep}/figures is empty"
    # as scripts/reproduce.sh's `report` draws them
    assert analysis(["plot", "--runs", str(sweep / "runs.csv"), "--out", str(tmp_path), "--formats", "pdf,png",
                     "--paper"]) == 0
    regenerated = _figures(tmp_path)
    assert regenerated == committed
    for name in regenerated:
        if name.endswith(".png"):
            _same_pixels(tmp_path / name, sweep / "figures" / name)
    assert analysis(["table", "--runs", str(sweep / "runs.csv"), "--out", str(tmp_path / "tables")]) == 0
    for name in ("table.md", "table.tex"):
        assert (tmp_path / "tables" / name).read_text() == (sweep / "tables" / name).read_text(), name


@pytest.mark.parametrize("folder", LANDSCAPES, ids=[f.parent.name for f in LANDSCAPES])
def test_committed_landscape_figure_regenerates_from_its_csvs(folder, tmp_path):
    runs = folder.parent / "runs.csv"
    assert analysis(["plot", "--runs", str(runs), "--figures", "sparsity", "--landscape", str(folder),
                     "--out", str(tmp_path), "--formats", "pdf,png"]) == 0
    assert {"landscape.pdf", "landscape.png"} <= set(_figures(tmp_path)) and _figures(folder) == ["landscape.pdf",
                                                                                                  "landscape.png"]
    _same_pixels(tmp_path / "landscape.png", folder / "landscape.png")


def test_results_are_committed():
    assert SWEEPS, "no results/<sweep>/ with runs.csv and figures/ is committed"


def test_reproduction_md_is_generated_from_the_committed_results():
    import subprocess
    import sys

    script = RESULTS.parent / "scripts" / "reproduction_report.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_both_ways_pairs_each_masked_run_with_its_sparse_kernel_rerun(tmp_path, monkeypatch):
    import importlib.util
    import json

    import pandas as pd

    spec = importlib.util.spec_from_file_location("report", RESULTS.parent / "scripts" / "reproduction_report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    monkeypatch.setattr(report, "SWEEPS", {"sweep": "a sweep"})
    fixture = pd.read_csv(RESULTS.parent / "tests" / "fixtures" / "sweep" / "runs.csv")
    rigl = fixture[fixture.method == "rigl"].head(4).reset_index(drop=True)  # 0.8 and 0.9, seeds 0 and 1
    assert [(r.sparsity, r.seed) for r in rigl.itertuples()] == [(0.8, 0), (0.8, 1), (0.9, 0), (0.9, 1)]

    def execution(df, name):
        return [json.dumps({**json.loads(s), "execution": name}) for s in df.settings]

    masked = rigl.assign(test_accuracy=[90.0, 91.0, 92.0, 93.0], wall_time_s=[40, 60, 50, 50],
                         settings=execution(rigl, "masked"))
    sparse = rigl.assign(test_accuracy=[90.2, 90.9, 92.3, 93.0], wall_time_s=[20, 30, 25, 25],
                         settings=execution(rigl, "sparse"), run_id=rigl.run_id + "x", config_key=rigl.config_key + "x")
    dense = fixture[fixture.method == "dense"]  # only in the sweep: no pair, no line
    (tmp_path / "sweep" / "masked").mkdir(parents=True)
    masked.to_csv(tmp_path / "sweep" / "masked" / "runs.csv", index=False)
    pd.concat([dense, sparse]).to_csv(tmp_path / "sweep" / "runs.csv", index=False)
    lines = report.both_ways().splitlines()
    # differences +0.2, -0.1, +0.3, 0.0: mean 0.1, sample std sqrt(0.1 / 3) = 0.18, t = 1.095 on 3 degrees of
    # freedom, two-sided p = 2 (1 - F(t)) with F(t) = 1/2 + (u / (1 + u^2) + atan u) / pi, u = t / sqrt 3: 0.353
    assert lines[2:] == ["| `sweep` | rigl | 4 | 50 / 25 s | 2.00x | 91.50 / 91.60 | +0.10 ± 0.18 | 0.35 |",
                         "| `sweep` | all | 4 | 3.3 / 1.7 min in all | 2.00x | – | – | – |"]
