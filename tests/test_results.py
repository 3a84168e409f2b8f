"""The committed results: every figure regenerates from the committed CSVs and run folders."""
from pathlib import Path

import pytest

from analysis.cli import main as analysis

RESULTS = Path(__file__).resolve().parent.parent / "results"
SWEEPS = sorted(p.parent for p in RESULTS.glob("*/figures") if (p.parent / "runs.csv").exists())


LANDSCAPES = sorted(p.parent for p in RESULTS.glob("*/landscape/landscape.csv"))


def _figures(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".png", ".pdf"))


@pytest.mark.parametrize("sweep", SWEEPS, ids=[s.name for s in SWEEPS])
def test_committed_figures_and_tables_regenerate_from_committed_csvs(sweep, tmp_path):
    committed = _figures(sweep / "figures")
    assert committed, f"{sweep}/figures is empty"
    # as scripts/reproduce.sh's `report` draws them
    assert analysis(["plot", "--runs", str(sweep / "runs.csv"), "--out", str(tmp_path), "--formats", "pdf,png",
                     "--paper"]) == 0
    regenerated = _figures(tmp_path)
    assert regenerated == committed
    assert all((tmp_path / name).stat().st_size > 1000 for name in regenerated)
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
    assert (tmp_path / "landscape.png").stat().st_size > 1000


def test_results_are_committed():
    assert SWEEPS, "no results/<sweep>/ with runs.csv and figures/ is committed"


def test_reproduction_md_is_generated_from_the_committed_results():
    import subprocess
    import sys

    script = RESULTS.parent / "scripts" / "reproduction_report.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
