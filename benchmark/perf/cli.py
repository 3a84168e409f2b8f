"""`python -m benchmark perf`: its flags and what runs."""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import torch

import methods

from ..presets import preset_config
from .inference import measure_inference
from .report import format_report
from .setups import TIMERS, model_setup, set_timer
from .sparse_training import measure_sparse_training, wants_sparse_training
from .training import measure_large_update, measure_training

DEFAULT_MODELS = "lenet-300-100,lenet-5,wrn-22-2"
DEFAULT_METHODS = "static,snip,gmp,set,rigl,snfs"
DEFAULT_SPARSITIES = "0.8,0.9,0.95,0.98"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `perf` subcommand."""
    parser = subparsers.add_parser(
        "perf",  # its one-line help is in benchmark.cli.LAZY_COMMANDS
        description="Time the plain dense training step against every method's step (interleaved rounds, medians), "
                    "the sparsity code's own work, memory, and inference with real sparse kernels, on synthetic "
                    "batches. The paper's FLOP savings are simulated by masks; this shows what runs.")
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"comma list (default {DEFAULT_MODELS})")
    parser.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma list (default {DEFAULT_METHODS})")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--rounds", type=int, default=0,
                        help="interleaved rounds per model (default 0: as many as --budget allows, at least 1)")
    parser.add_argument("--budget", type=float, default=110.0,
                        help="seconds of timed rounds the automatic round count aims at, all models together "
                             "(default 110; set-up and warm-up come on top: the default command takes about 2 minutes "
                             "on 2 CPU cores)")
    parser.add_argument("--sparsities", default=DEFAULT_SPARSITIES,
                        help=f"inference sparsities (default {DEFAULT_SPARSITIES})")
    parser.add_argument("--train-sparsity", type=float, default=0.9, help="sparsity of the timed training (default 0.9)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch CPU threads (default: the machine's cores)")
    parser.add_argument("--timer", default="wall", choices=sorted(TIMERS),
                        help="what steps are timed with: wall (time.perf_counter, default) or cpu (time.process_time: "
                             "the process's CPU time, steadier when other processes load the cores; with several "
                             "threads it adds up their time)")
    parser.add_argument("--skip", default="",
                        help="comma list of parts to skip: training, sparse-training, inference")
    return parser


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load() -> str | None:
    """The 1-minute load average (other processes make timings noisy), where the OS reports it."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return None


def _parse_list(text: str, what: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise ValueError(f"--{what} is empty")
    return values


def run(args: argparse.Namespace) -> int:
    """`python -m benchmark perf`: measure and print (text or --json)."""
    from ..distributed import resolve_device

    model_names = _parse_list(args.models, "models")
    setups = {name: model_setup(name) for name in model_names}
    method_names = _parse_list(args.methods, "methods")
    for m in method_names:
        methods.method_class(m)
        if methods.method_class(m).dense_baseline:
            raise ValueError(f"--methods: {m} is the baseline itself (the plain dense step is always timed)")
    try:
        sparsities = [float(s) for s in _parse_list(args.sparsities, "sparsities")]
    except ValueError:
        raise ValueError(f"--sparsities takes comma-separated numbers in [0, 1), got {args.sparsities!r}") from None
    for s in [*sparsities, args.train_sparsity]:
        methods.distributions.check_sparsity(s)
    skip = set(_parse_list(args.skip, "skip")) if args.skip else set()
    if skip - {"training", "sparse-training", "inference"}:
        raise ValueError(f"--skip takes training, sparse-training and/or inference, got {args.skip!r}")
    if args.rounds < 0 or not (math.isfinite(args.budget) and args.budget > 0) or args.threads < 1:
        raise ValueError("--rounds must be >= 0, --budget a number of seconds > 0 and --threads >= 1")
    device = resolve_device(args.device)
    previous_threads = torch.get_num_threads()
    set_timer(args.timer)
    torch.set_num_threads(args.threads)
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if args.json else (lambda msg: print(msg, flush=True))
    rounds = args.rounds or None
    parts = [p for p in ("training", "sparse-training", "inference") if p not in skip]
    share = args.budget / max(1, len(model_names) * len(parts))
    report = {"machine": {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                          "threads": args.threads, "torch": torch.__version__,
                          "cpu": _cpu_name(), "cores": os.cpu_count()},
              "settings": {"methods": method_names, "sparsities": sparsities, "train_sparsity": args.train_sparsity,
                           "rounds": args.rounds, "budget_s": args.budget, "timer": args.timer},
              "models": {}}
    report["machine"]["load_before"] = _load()
    started = time.perf_counter()
    try:
        for name, setup in setups.items():
            cfg = preset_config(setup.preset)
            entry = {"preset": setup.preset, "input_shape": list(setup.input_shape), "batch_size": setup.batch_size,
                     "distribution": cfg.distribution, "train_sparsity": args.train_sparsity}
            log(f"{name}:")
            if "training" in parts:
                entry["training"] = measure_training(name, setup, method_names, args.train_sparsity, device, rounds,
                                                     share, log)
            if "sparse-training" in parts and wants_sparse_training(name, setup):
                entry["sparse_training"] = measure_sparse_training(name, setup, method_names, sparsities, device,
                                                                   rounds, share, log)
            elif "sparse-training" in parts:
                log("  sparse-kernel training: skipped (most of its sparse weights are not in Linear layers, "
                    "the only ones sparse kernels train)")
            if "inference" in parts:
                entry["inference"] = measure_inference(name, setup, sparsities, device, rounds, share, log)
            report["models"][name] = entry
        if "training" in parts and "rigl" in method_names:
            log("rigl update on a 4096 x 4096 layer:")
            report["large_update"] = measure_large_update("rigl", args.train_sparsity, device)
    finally:
        torch.set_num_threads(previous_threads)
        set_timer("wall")
    report["wall_time_s"] = time.perf_counter() - started
    report["machine"]["load_after"] = _load()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print()
        print(format_report(report))
        print(f"({report['wall_time_s']:.0f} s)")
    return 0
