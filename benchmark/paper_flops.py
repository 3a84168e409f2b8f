"""The paper's ImageNet/ResNet-50 FLOP multipliers (and the reference code's MobileNet-v1 FLOPs), recomputed with
`python -m benchmark flops`'s code path.

Every row of `analysis/data/paper-results.csv` that has both multipliers is planned with
`plan_run(preset_config("imagenet-resnet50", ...))`, exactly what the CLI runs, and compared.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .presets import preset_config
from .train import plan_run

PAPER_RESULTS = Path(__file__).resolve().parent.parent / "analysis" / "data" / "paper-results.csv"
MATCH_TOLERANCE = 0.02

# Rows that no faithful setting reproduces within MATCH_TOLERANCE, keyed by (method, sparsity, multiplier).
PAPER_DISCREPANCIES: dict[tuple[str, float, float], str] = {
    ("gmp", 0.9, 1.0): "paper prints test 0.10x, the cost of an all-sparse model; with the first layer dense, "
                       "as its 80% row and the reference code have it, the definition gives 0.13x (the same "
                       "misprint the csv already corrects for the uniform 90% rows)",
    ("gmp", 0.9, 1.5): "the same misprinted test 0.10x as the 1x row; the train multiplier matches",
    ("small-dense", 0.8, 5.0): "the paper's 1.01x implies 0.202x per step; the parameter-matched width (0.427) "
                               "costs 0.189x (0.94x at 5x); no single width rule gives 0.20x here and 0.12x at 90%",
    ("small-dense", 0.9, 1.0): "the paper's 0.12x is width 0.34, which the reference colab gets by matching the "
                               "ERK model's size in bits (1-bit masks); the parameter-matched width is 0.292 "
                               "(0.092x); with --width 0.34 the project gives 0.12x",
    ("small-dense", 0.9, 5.0): "as the 1x row: width 0.34 (size in bits), not 0.292 (parameters)",
}


def paper_rows(csv_path: str | Path = PAPER_RESULTS) -> pd.DataFrame:
    """The paper's ImageNet/ResNet-50 rows that have both FLOP multipliers."""
    df = pd.read_csv(csv_path)
    rows = df[(df.dataset == "imagenet") & (df.model == "resnet50") & df.train_flops_x.notna() & df.test_flops_x.notna()]
    return rows.reset_index(drop=True)


def paper_table(csv_path: str | Path = PAPER_RESULTS) -> pd.DataFrame:
    """The project's train/test multipliers beside the paper's, one row per paper row.

    Columns: method, distribution, sparsity, multiplier, train_x, paper_train_x, train_diff,
    test_x, paper_test_x, test_diff, match, explanation, note; `attrs["dense_forward"]` holds f_D.
    """
    records, dense_forward = [], None
    for row in paper_rows(csv_path).itertuples():
        distribution = row.distribution if row.distribution in ("uniform", "erk") else "uniform"
        cfg = preset_config("imagenet-resnet50", method=row.method, sparsity=float(row.sparsity),
                            distribution=distribution, multiplier=float(row.train_multiplier))
        summary = plan_run(cfg)
        dense_forward = summary.dense_forward
        train_diff = summary.train_multiplier - row.train_flops_x
        test_diff = summary.inference_multiplier - row.test_flops_x
        match = max(abs(train_diff), abs(test_diff)) <= MATCH_TOLERANCE + 1e-9
        key = (row.method, float(row.sparsity), float(row.train_multiplier))
        records.append(dict(
            method=row.method, distribution=row.distribution, sparsity=float(row.sparsity),
            multiplier=float(row.train_multiplier),
            train_x=summary.train_multiplier, paper_train_x=float(row.train_flops_x), train_diff=train_diff,
            test_x=summary.inference_multiplier, paper_test_x=float(row.test_flops_x), test_diff=test_diff,
            match=bool(match), explanation="" if match else PAPER_DISCREPANCIES.get(key, "unexplained"),
            note=row.note if isinstance(row.note, str) else ""))
    table = pd.DataFrame.from_records(records)
    table.attrs["dense_forward"] = dense_forward
    return table


def format_table(df: pd.DataFrame) -> str:
    """`paper_table` as Markdown, with the reason for each row that does not match."""
    lines = ["| method | distribution | sparsity | M | train x (project) | train x (paper) "
             "| test x (project) | test x (paper) | match |", "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for r in df.itertuples():
        mark = "yes"
        if not r.match:
            notes.append(f"[{len(notes) + 1}] {r.method} {r.sparsity:g} {r.multiplier:g}x: {r.explanation}")
            mark = f"no [{len(notes)}]"
        lines.append(f"| {r.method} | {r.distribution} | {r.sparsity:g} | {r.multiplier:g} | {r.train_x:.3f} | "
                     f"{r.paper_train_x:.2f} | {r.test_x:.3f} | {r.paper_test_x:.2f} | {mark} |")
    lines += ["", f"Dense ResNet-50 forward: {df.attrs['dense_forward']:.4g} FLOPs per 224x224 image (conv and "
                  f"linear layers, multiply-add = 2). Match: train and test within {MATCH_TOLERANCE} of the paper."]
    return "\n".join(lines + ([""] + notes if notes else []))


# MobileNet-v1 inference FLOPs (MFLOPs per 224x224 image) of the reference code's counting notebook
# (google-research/rigl rigl/imagenet_resnet/colabs/MobileNet_Counting.ipynb, its printed outputs): depthwise
# convs dense, the stem dense under uniform ("random") and inside the ERK budget; dense: 1141.544 MFLOPs.
# The paper's MobileNet figure gives accuracies against these costs; paper-results.csv holds no MobileNet row.
REFERENCE_MOBILENET_V1_DENSE = 1141.544
REFERENCE_MOBILENET_V1: dict[tuple[str, float], float] = {
    ("uniform", 0.75): 330.769, ("uniform", 0.85): 222.666, ("uniform", 0.9): 168.614, ("uniform", 0.95): 114.563,
    ("erk", 0.75): 599.144, ("erk", 0.85): 439.152, ("erk", 0.9): 334.134, ("erk", 0.95): 205.281,
}
MOBILENET_TOLERANCE = 0.005


def mobilenet_table() -> pd.DataFrame:
    """The project's MobileNet-v1 inference multipliers (`plan_run` of preset imagenet-mobilenet-v1, static)
    beside the reference notebook's, one row per (distribution, sparsity) of `REFERENCE_MOBILENET_V1`.
    The stem is in the ERK budget as in the notebook (`dense_first=False` there), dense under uniform."""
    records = []
    for (distribution, sparsity), mflops in REFERENCE_MOBILENET_V1.items():
        cfg = preset_config("imagenet-mobilenet-v1", method="static", sparsity=sparsity, distribution=distribution,
                            dense_first=distribution == "uniform")
        test_x, reference_x = plan_run(cfg).inference_multiplier, mflops / REFERENCE_MOBILENET_V1_DENSE
        records.append(dict(distribution=distribution, sparsity=sparsity, test_x=test_x, reference_x=reference_x,
                            diff=test_x - reference_x))
    return pd.DataFrame.from_records(records)
