"""The committed results: every figure regenerates from the committed CSVs and run folders."""
from pathlib import Path

import pytest

from analysis.cli import main as analysis

RESULTS = Path(__file__).resolve().parent.parent / "results"
SWEEPS = sorted(p.parent for p in RESULTS.glob("*/figures") if (p.parent / "runs.csv").exists())


@pytest.mark.parametrize("sweep", SWEEPS, ids=[s.name for s in SWEEPS])
def test_committed_figures_regenerate_from_committed_csvs(sweep, tmp_path):
    committed = sorted(p.name for p in (sweep / "figures").iterdir() if p.suffix in (".png", ".pdf"))
    assert committed, f"{sweep}/figures is empty"
    assert analysis(["plot", "--runs", str(sweep / "runs.csv"), "--out", str(tmp_path), "--formats", "pdf,png"]) == 0
    regenerated = sorted(p.name for p in tmp_path.iterdir())
    assert regenerated == committed
    assert all((tmp_path / name).stat().st_size > 1000 for name in regenerated)


def test_results_are_committed():
    assert SWEEPS, "no results/<sweep>/ with runs.csv and figures/ is committed"
