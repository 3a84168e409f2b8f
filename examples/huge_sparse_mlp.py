"""Train, with RigL on sparse kernels, an MLP whose dense training state would not fit in memory.

    python examples/huge_sparse_mlp.py                          # 3 hidden layers of 40,000 units, 99% sparse
    python examples/huge_sparse_mlp.py --execution masked       # refused: the dense state does not fit

The model is built from compact layers (`methods.compact`): every sparse layer holds only its active
weights, so memory and time scale with the active count. Prints the dense model's size and the memory
its dense training state would need, the per-layer active counts, step times, test accuracy and the
process's peak resident memory (ru_maxrss). Bad input: one `error:` line, exit code 2.
"""
from __future__ import annotations

import argparse
import itertools
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark.config import RunConfig
from benchmark.data import DATASETS, eval_batches, load_dataset, train_batches
from benchmark.memory import available_bytes, check_fits, dense_state_bytes
from benchmark.parser import Parser
from benchmark.train import evaluate
from methods.compact import CompactRigL, compact_mlp


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="examples/huge_sparse_mlp.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist", "digits"])
    p.add_argument("--hidden", type=int, default=40000, help="units per hidden layer (default 40000)")
    p.add_argument("--layers", type=int, default=3, help="hidden layers (default 3)")
    p.add_argument("--sparsity", type=float, default=0.99, help="overall sparsity, ERK across layers (default 0.99)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--delta-t", type=int, default=100, help="steps between RigL updates (default 100)")
    p.add_argument("--alpha", type=float, default=0.3, help="RigL's initial drop fraction (default 0.3)")
    p.add_argument("--block-mib", type=int, default=256, help="memory of one block of the grow gradient (MiB)")
    p.add_argument("--test-examples", type=int, default=10000, help="evaluate on the first N test images (default all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default="")
    p.add_argument("--execution", default="sparse", choices=["sparse", "masked"],
                   help="sparse: compact layers on sparse kernels; masked: the harness's dense tensors (refused "
                        "when they do not fit)")
    args = p.parse_args(argv)
    for name in ("hidden", "layers", "steps", "batch_size", "delta_t", "block_mib", "test_examples", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0 <= args.sparsity < 1 or not 0 <= args.alpha <= 1 or not args.lr > 0 or not 0 <= args.momentum < 1:
        p.error("need --sparsity in [0, 1), --alpha in [0, 1], --lr > 0 and --momentum in [0, 1)")
    return args


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30  # ru_maxrss is in KiB on Linux


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    cfg = RunConfig(model=f"mlp-{args.hidden}x{args.layers}", dataset=args.dataset, method="rigl",
                    sparsity=args.sparsity, momentum=args.momentum, execution=args.execution)
    params, dense_bytes = dense_state_bytes(cfg)
    print(f"{cfg.model} on {args.dataset}: {params:,} weights dense; dense training state (weights, gradients, "
          f"momentum) {dense_bytes / 2**30:.1f} GiB; {available_bytes(torch.device('cpu')) / 2**30:.1f} GiB available")
    try:
        if args.execution == "masked":
            check_fits(cfg, torch.device("cpu"))
            print("it fits: train it with the harness, python -m benchmark run --model "
                  f"{cfg.model} --dataset {args.dataset}")
            return 0
        data = load_dataset(args.dataset, args.data_root or None)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    info = DATASETS[args.dataset]
    sizes = [info.input_shape[0] * info.input_shape[1] * info.input_shape[2], *[args.hidden] * args.layers,
             info.num_classes]
    started = time.process_time()
    model = compact_mlp(sizes, args.sparsity, "erk", seed=args.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, foreach=True)
    rigl = CompactRigL(model, optimizer, total_steps=args.steps, delta_t=args.delta_t, alpha=args.alpha,
                       block_bytes=args.block_mib * 2**20)
    counts = rigl.counts()
    print(f"built in {time.process_time() - started:.1f} s CPU: active weights per sparse layer "
          f"{', '.join(f'{c:,}' for c in counts)} ({sum(counts):,} = {sum(counts) / params:.3%} of the weights); "
          f"peak memory so far {peak_rss_gib():.2f} GiB")
    criterion = torch.nn.CrossEntropyLoss()
    batches = train_batches(data, args.batch_size, args.seed)
    times: dict[bool, list[float]] = {False: [], True: []}
    for step in range(1, args.steps + 1):
        x, y = next(batches)
        t0 = time.process_time()
        loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        updated = rigl.step()
        times[updated].append(time.process_time() - t0)
        if updated or step % 10 == 0 or step == args.steps:
            print(f"step {step}: loss {loss.item():.4f}{' (mask update)' if updated else ''}, counts exact "
                  f"{rigl.counts() == counts}, {times[updated][-1]:.2f} s CPU, peak memory {peak_rss_gib():.2f} GiB",
                  flush=True)
    test = itertools.islice(eval_batches(data, "test", batch_size=args.batch_size), -(-args.test_examples // args.batch_size))
    test_loss, test_acc = evaluate(model, test, criterion)
    plain, update = times[False], times[True]
    print(f"steps: {len(plain)} ordinary at {sum(plain) / len(plain):.3f} s CPU each (batch {args.batch_size}, "
          f"{args.threads} thread(s))" + (f", {len(update)} with a mask update at {sum(update) / len(update):.2f} s"
                                          if update else ""))
    print(f"test accuracy {test_acc:.2f}% (loss {test_loss:.4f}) on {min(args.test_examples, data.test[1].numel())} "
          f"test images after {args.steps} steps; "
          f"per-layer counts exact: {rigl.counts() == counts}; peak resident memory {peak_rss_gib():.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
