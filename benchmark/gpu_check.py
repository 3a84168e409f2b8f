"""GPU readiness check: each method trained a few hundred steps on CIFAR-shaped synthetic data.

    python -m benchmark.gpu_check [--models wrn-22-2,resnet-50] [--steps 300] [--device cuda]

Runs go through the harness (`benchmark.train.train`) with bf16 autocast and channels-last, and
the table gives steps/s and peak CUDA memory per method beside dense, and whether every run's
masks stayed exact (active counts equal the targets, masked weights zero).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

import methods

from .parser import Parser
from .presets import preset_config
from .checkpoints import load_checkpoint
from .train import train

METHODS = "dense,static,snip,gmp,set,snfs,rigl"


def masks_exact(run_dir: Path, device: torch.device) -> bool:
    """Masked weights are zero in the final checkpoint."""
    ckpt = load_checkpoint(run_dir / "checkpoint.pt", device)
    return all(bool((ckpt["model"][f"{name}.weight"][~mask] == 0).all())
               for name, mask in ckpt["sparsifier"]["masks"].items())


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m benchmark.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="wrn-22-2,resnet-50")
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup-steps", type=int, default=20,
                        help="untimed dense steps per model before the timed runs (0: none)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--no-amp", action="store_true", help="train in float32")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"gpu_check: torch {torch.__version__}, {name}, {args.steps} steps at batch {args.batch_size}, "
          f"sparsity {args.sparsity}, ERK, {'fp32' if args.no_amp else 'bf16 autocast'}, channels-last")
    print(f"{'model':10s} {'method':12s} {'steps/s':>8s} {'x dense':>8s} {'peak MiB':>9s} {'x dense':>8s} "
          f"{'train FLOPs x':>13s} {'masks exact':>11s}")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            def config(method: str, steps: int):
                return preset_config("cifar10-wrn22-2", method=method, model=model, dataset="synthetic-cifar10",
                                     sparsity=args.sparsity if methods.method_class(method).uses_sparsity else 0.0,
                                     steps=steps,
                                     epochs=1, batch_size=args.batch_size, train_subset=steps * args.batch_size,
                                     delta_t=50, gmp_every=10, lr_milestones=(), device=args.device,
                                     amp=not args.no_amp, channels_last=True, log_every=min(50, steps),
                                     eval_every=steps)

            if args.warmup_steps:  # cuDNN autotuning, kernel loading and the allocator's growth, untimed
                train(config(methods.Dense.name, args.warmup_steps), Path(tmp) / f"warmup-{model}")
            dense = None
            for method in args.methods.split(","):
                cfg = config(method, args.steps)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                run_dir = Path(tmp) / cfg.run_id()
                m = train(cfg, run_dir)
                dense = dense or m
                peak = m["peak_memory_mib"] or float("nan")
                dense_peak = dense["peak_memory_mib"] or float("nan")
                print(f"{model:10s} {method:12s} {m['steps_per_s']:8.1f} {m['steps_per_s'] / dense['steps_per_s']:8.2f} "
                      f"{peak:9.0f} {peak / dense_peak:8.2f} {m['flops']['train_multiplier']:13.3f} "
                      f"{str(masks_exact(run_dir, device)):>11s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
