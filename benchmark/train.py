"""One training run: data, model, method, per-step FLOPs, logs, checkpoints and final metrics.

A run directory holds `config.json`, `log.csv` (every `log_every` steps), `evals.csv` (test
evaluations), `updates.csv` (mask updates), `checkpoint.pt` (everything needed to resume
bit-identically) and, once finished, `metrics.json`. A dense run also saves `rewind.pt`, its model
state after `cfg.rewind_step(total)` steps, for the lottery runs of the same settings.

A lottery run (lottery-static, lottery-rigl) first needs its dense run (`cfg.pretrain_config()`),
in the folder beside its own (`run_dir.parent / <dense run id>`): it is reused when finished and
trained otherwise. The lottery run's masks keep each layer's largest |w| of the dense run's final
weights (`methods.ticket_masks`), its weights start from `rewind.pt`, and the dense run's training
FLOPs count in its own (`train_flops`, multipliers, the running total of `log.csv`) and are also
reported alone (`flops.pretrain_flops` of metrics.json, runs.csv's `pretrain_flops`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import methods

from . import distributed
from .checkpoints import CheckpointError, checkpoint_file, load_checkpoint, load_run_state, load_weights, rewind_file
from .checkpoints import save_atomic
from .claim import claim
from .config import RunConfig
from .data import DATASETS, TEXT_CORPORA, eval_batches, load_dataset, steps_per_epoch, train_batches
from .distributed import resolve_device
from .files import RERUN, read_json, write_text_atomic
from .flops import FlopCounter, FlopSummary, forward_flops, plan
from .logs import EVAL_COLUMNS, LOG_COLUMNS, UPDATE_COLUMNS, CsvLog
from .loggers import RunLogger
from .models import build_model, glorot_init
from .provenance import StaleRun, code_fingerprint, git_commit, recorded_code, resumed_code

class RunInterrupted(Exception):
    """Training stopped on request (Ctrl-C) after writing a checkpoint."""


def make_optimizer(cfg: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum and L2, Adam with L2 (the decay added to the gradient) or AdamW with
    decoupled decay; without `bias_decay`, 1-D parameters (biases, norm scales) are a second group without
    decay."""
    params: list = list(model.parameters())
    if not cfg.bias_decay:
        params = [{"params": [p for p in params if p.dim() > 1]},
                  {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay,
                           foreach=True)  # the same numbers as the per-tensor loop (tested), fewer Python calls


def lr_factor(cfg: RunConfig, epoch_steps: int) -> Callable[[int], float]:
    """Linear warm-up, then x lr_gamma at each milestone; milestones (not the warm-up) scale with the multiplier."""
    warmup = round(cfg.warmup_epochs * epoch_steps)
    dense = not cfg.method_class.uses_sparsity and cfg.dense_lr_milestones
    milestones = [round(m * epoch_steps * cfg.multiplier) for m in (cfg.dense_lr_milestones if dense else
                                                                     cfg.lr_milestones)]

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup) if warmup else 1.0
        return warm * cfg.lr_gamma ** sum(step >= m for m in milestones)

    return factor


@torch.no_grad()
def evaluate(model: nn.Module, batches, criterion, amp: bool = False) -> tuple[float, float]:
    """(mean loss, accuracy in %) of `model` in eval mode over `batches` (e.g. `eval_batches(data, "test")`):
    the one evaluation of the harness and its experiments. Each target element is one prediction (a language
    model's (batch, T) targets: per character)."""
    was_training = model.training
    model.eval()
    loss = torch.zeros(())
    correct = torch.zeros((), dtype=torch.long)
    seen = 0
    for x, y in batches:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        loss += criterion(out.float(), y).float().cpu() * y.numel()
        correct += (out.argmax(1) == y).sum().cpu()
        seen += y.numel()
    model.train(was_training)
    if not seen:
        raise ValueError("no batches to evaluate on")
    return loss.item() / seen, 100.0 * correct.item() / seen


class _StopFlag:
    """Turns SIGINT into a flag the loop checks between steps, so state is saved consistently."""

    def __init__(self):
        self.set = False
        self.previous = None

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self.previous = None
        return self

    def _handle(self, *_):
        self.set = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


@dataclass
class RunSetup:
    """The objects of one run, before any data is seen."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    criterion: nn.Module
    sparsifier: methods.Sparsifier
    counter: FlopCounter
    width: float
    total_steps: int
    reference_steps: int


@functools.lru_cache(maxsize=32)
def _forward_flops(model: str, num_classes: int, input_shape: tuple[int, ...], width: float) -> dict[str, float]:
    """Per-module forward FLOPs of a model (cached: fvcore traces the model, which takes seconds for ResNet-50)."""
    return forward_flops(build_model(model, num_classes, input_shape, width), input_shape)


def setup_run(cfg: RunConfig, num_classes: int, input_shape: tuple[int, ...], epoch_steps: int,
              device: torch.device, init_batches: list, pretrain: Path | None = None) -> RunSetup:
    """Build model (narrowed for small-dense), optimizer, lr schedule, loss, method and FLOP counter.

    A lottery run takes its ticket from the finished dense run in `pretrain` and starts from its
    rewound weights; without `pretrain` (FLOP planning) the ticket comes from the initial weights,
    which gives the same per-layer counts.
    """
    total, reference_steps = cfg.total_steps(epoch_steps), cfg.reference_steps(epoch_steps)

    def build(width: float) -> nn.Module:
        return build_model(cfg.model, num_classes, input_shape, width)

    width = 1.0
    if cfg.method_class.narrows_model:
        width = cfg.width or methods.small_dense_width(build, cfg.sparsity_config())
    torch.manual_seed(cfg.seed)
    model = build(width)
    if cfg.init == "glorot":
        glorot_init(model)
    model = model.to(device, memory_format=torch.channels_last if cfg.channels_last else torch.preserve_format)
    masks = None
    if cfg.init_from:
        start = load_run_state(cfg.init_from, device)
        load_weights(model, start["model"], checkpoint_file(cfg.init_from))
        masks = start["sparsifier"]["masks"]
    if cfg.pretrain_config():
        trained = model.state_dict()
        if pretrain is not None:
            trained = load_run_state(pretrain, device)["model"]
            rewind = rewind_file(pretrain)
            load_weights(model, load_checkpoint(rewind, device), rewind)
        masks = methods.ticket_masks(model, trained, cfg.sparsity_config())
    optimizer = make_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, epoch_steps))
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    sparsifier = methods.create(cfg.method, model, optimizer, total_steps=total, config=cfg.sparsity_config(),
                                init_batches=init_batches, loss_fn=criterion, masks=masks)
    key = (cfg.model, num_classes, tuple(input_shape))
    reference = sum(_forward_flops(*key, 1.0).values())
    counter = FlopCounter(_forward_flops(*key, width), sparsifier.names, sparsifier.sizes, reference)
    return RunSetup(model, optimizer, scheduler, criterion, sparsifier, counter, width, total, reference_steps)


def pretrained(cfg: RunConfig, run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """A lottery run's dense run: its folder (beside `run_dir`) and metrics, trained first if unfinished."""
    dense = cfg.pretrain_config()
    if dense is None:
        return None
    folder = run_dir.parent / dense.run_id()
    done = folder / "metrics.json"
    with claim(folder, wait=True):  # a concurrent sweep may be training it: wait for it
        if not done.exists():
            return folder, train(dense, folder)
    metrics = read_json(done, RERUN)
    if recorded_code(metrics) != code_fingerprint():
        raise StaleRun(f"{cfg.run_id()} starts from dense run {folder}, which other training code finished "
                       f"(code {recorded_code(metrics)}, now {code_fingerprint()}); retrain it with --rerun-stale")
    return folder, metrics


def plan_run(cfg: RunConfig) -> FlopSummary:
    """FLOPs of a run from its settings alone: no dataset, no training (SNIP scores one random batch,
    which fixes its per-layer counts; `snip_scope=global` counts depend on data and are only estimated;
    DSR's per-layer counts depend on the weights, so its plan keeps the initial ones). A lottery run's
    plan adds the planned FLOPs of its dense run, as its training does."""
    info = DATASETS[cfg.dataset]
    train_size = cfg.train_subset or round(info.train_size * (1 - cfg.val_fraction))
    if train_size < cfg.batch_size:  # as training would (steps_per_epoch)
        raise ValueError(f"batch size {cfg.batch_size} exceeds the {train_size} training examples of {cfg.dataset}")
    epoch_steps = train_size // cfg.batch_size
    init = [_planning_batch(cfg.dataset)] if cfg.method_class.needs_init_batches else []
    run = setup_run(cfg, info.num_classes, info.input_shape, epoch_steps, torch.device("cpu"), init)
    summary = plan(run.sparsifier, run.counter, run.reference_steps,
                   snip_init_samples=cfg.snip_batches * cfg.batch_size if init else 0, batch_size=cfg.batch_size)
    dense = cfg.pretrain_config()
    if dense is None:
        return summary
    pretrain = plan_run(dense).train_flops_per_sample
    summary = run.counter.summary(summary.train_flops_per_sample + pretrain,
                                  run.sparsifier.planned_counts(run.total_steps), run.reference_steps, summary.steps,
                                  batch_size=cfg.batch_size)
    return with_pretraining(summary, pretrain)


def _planning_batch(dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of 2 random inputs (images, or byte sequences of a text dataset) and zero targets for SNIP's
    plan-time scoring."""
    shape = DATASETS[dataset].input_shape
    if dataset in TEXT_CORPORA:
        return torch.randint(256, (2, *shape)), torch.zeros(2, *shape, dtype=torch.long)
    return torch.randn(2, *shape), torch.zeros(2, dtype=torch.long)


def with_pretraining(summary: FlopSummary, per_sample: float) -> FlopSummary:
    """A lottery run's summary (its training FLOPs already include the dense run's) with the dense run's
    training FLOPs also reported alone, as `pretrain_flops`."""
    return dataclasses.replace(summary, pretrain_flops=per_sample * summary.batch_size)


@dataclass
class LoopState:
    """Where a run's loop stands: what a checkpoint holds beyond the model, optimizer, lr schedule,
    masks and FLOP counter (plain values only, so checkpoints load with `weights_only=True`)."""

    step: int = 0  # iterations done
    elapsed: float = 0.0  # seconds of training so far
    best: float | None = None  # best test accuracy of the evaluations so far
    loss_sum: float = 0.0  # training loss summed over the samples since the last log row
    correct: int = 0  # correct predictions since the last log row
    seen: int = 0  # samples since the last log row
    last_eval: tuple | None = None  # (step, test loss, test accuracy, val loss, val accuracy)
    diverged_at: int | None = None  # the step whose training loss was not finite

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> LoopState:
        """The state a checkpoint saved; KeyError naming what it lacks."""
        missing = {"step", "elapsed", "best", "loss_sum", "correct", "seen"} - saved.keys()
        if missing:
            raise KeyError(f"loop state without {', '.join(sorted(missing))}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if k == "last_eval" and v is not None else v) for k, v in saved.items()
                      if k in known})


class Loop:
    """The training loop of one run: steps, logs, evaluations, checkpoints, divergence and interruption."""

    def __init__(self, cfg: RunConfig, run: RunSetup, data, run_dir: Path, device: torch.device,
                 logger: RunLogger | None = None):
        self.cfg, self.run, self.data, self.run_dir, self.device = cfg, run, data, run_dir, device
        self.replicas = distributed.current()
        self.main = self.replicas.main
        self.logger = logger if self.main else None
        self.epoch_steps = steps_per_epoch(data, cfg.batch_size)
        self.flops = run.counter.accumulator()
        self.state = LoopState()
        self.checkpoint = run_dir / "checkpoint.pt"
        self.logs = {name: CsvLog(run_dir / f"{name}.csv", columns, enabled=self.main)
                     for name, columns in (("log", LOG_COLUMNS), ("evals", EVAL_COLUMNS), ("updates", UPDATE_COLUMNS))}

    def resume(self) -> None:
        """Load the run folder's checkpoint (the run restarts where it stopped), or start the folder anew."""
        run, path = self.run, self.checkpoint
        if path.exists():
            started_by = resumed_code(self.run_dir)
            if started_by not in (None, code_fingerprint()):
                raise StaleRun(f"{self.run_dir} was started by other training code (code {started_by}, now "
                               f"{code_fingerprint()}); restart it from step 0 with --rerun-stale")
            ckpt = load_checkpoint(path, self.device)
            try:
                run.model.load_state_dict(ckpt["model"])
                run.optimizer.load_state_dict(ckpt["optimizer"])
                run.scheduler.load_state_dict(ckpt["scheduler"])
                run.sparsifier.load_state_dict(ckpt["sparsifier"])
                self.flops.load_state_dict(ckpt["flops"])
                self.state = LoopState.from_dict(ckpt["state"])
            except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as err:
                raise CheckpointError(f"checkpoint {path} does not match this run ({str(err).splitlines()[0]}); "
                                      "delete it to restart that run from step 0") from None
        elif self.main:
            record = run_record(self.cfg, self.device, run.width, run.total_steps, self.replicas.world_size)
            write_text_atomic(self.run_dir / "config.json", json.dumps(record, indent=2))
        for log in self.logs.values():
            log.start(self.state.step)

    def log(self, name: str, row: dict[str, Any]) -> None:
        """A row of log.csv, evals.csv or updates.csv (`name`), also sent to the experiment logger if any."""
        self.logs[name].append(row)
        if self.logger is not None:
            self.logger.log(name, row)

    def save(self) -> None:
        if self.main:
            run = self.run
            save_atomic({"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
                         "scheduler": run.scheduler.state_dict(), "sparsifier": run.sparsifier.state_dict(),
                         "flops": self.flops.state_dict(), "state": dataclasses.asdict(self.state)}, self.checkpoint)

    def evaluate(self, step: int) -> None:
        """Test (and validation) loss and accuracy after `step`, logged and kept as the last evaluation."""
        model, data, criterion, amp = self.run.model, self.data, self.run.criterion, self.cfg.amp
        test_loss, test_acc = evaluate(model, eval_batches(data, "test"), criterion, amp)
        val_loss, val_acc = (evaluate(model, eval_batches(data, "val"), criterion, amp) if data.val is not None
                             else (None, None))
        self.log("evals", dict(step=step, epoch=round(step / self.epoch_steps, 4), test_loss=test_loss,
                                       test_accuracy=test_acc, val_loss=val_loss, val_accuracy=val_acc))
        self.state.best = max(test_acc, self.state.best or 0.0)
        self.state.last_eval = (step, test_loss, test_acc, val_loss, val_acc)

    def run_steps(self, progress: Callable[[int, int], None] | None, stop_after: int | None) -> None:
        """Train from the state's step to the end (or to a divergence, or an interruption)."""
        cfg, run, state, replicas, device = self.cfg, self.run, self.state, self.replicas, self.device
        model, optimizer, scheduler, criterion, sparsifier = (run.model, run.optimizer, run.scheduler, run.criterion,
                                                              run.sparsifier)
        total, flops = run.total_steps, self.flops
        log_every = cfg.log_every
        checkpoint_every = -(-cfg.checkpoint_every // log_every) * log_every
        eval_every = cfg.eval_every or self.epoch_steps
        rewind_at = cfg.rewind_step(total) if cfg.method_class.saves_rewind_point else None
        net = model
        if replicas.parallel:
            net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        model.train()
        batches = train_batches(self.data, cfg.batch_size, cfg.seed, start_step=state.step)
        loss_sum = torch.tensor(state.loss_sum, device=device)
        correct = torch.tensor(state.correct, device=device)
        started = time.perf_counter() - state.elapsed
        end = state.step if state.diverged_at else total  # a diverged run stays stopped on resume
        with _StopFlag() as stop:
            for t in range(state.step, end):
                if t == rewind_at and self.main:
                    save_atomic(model.state_dict(), self.run_dir / "rewind.pt")
                x, y = map(replicas.shard, next(batches))
                if cfg.channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=torch.bfloat16) if cfg.amp else contextlib.nullcontext():
                    out = net(x)
                    loss = criterion(out, y)
                for group in optimizer.param_groups:  # optimizer.zero_grad(set_to_none=True), without its wrappers
                    for p in group["params"]:
                        p.grad = None
                loss.backward()
                info = sparsifier.step(clip_norm=cfg.grad_clip)
                if info.stepped:  # the lr follows optimizer steps (an update iteration may replace one)
                    scheduler.step()
                flops.step(info)
                loss_sum += loss.detach().float() * y.numel()  # per prediction: a sample, or a character
                correct += (out.argmax(1) == y).sum()
                state.seen += y.numel()
                step = t + 1
                state.step, state.elapsed = step, time.perf_counter() - started
                if info.updated and cfg.check_replicas:
                    replicas.check(f"masks after the update at step {step}", sparsifier.masks)
                if info.updated:
                    self.log("updates", dict(step=step, grown=info.grown,
                                                     grown_fraction=info.grown / sum(info.counts),
                                                     density=sparsifier.global_density()))
                logged = step % log_every == 0 or step == total
                if logged:
                    totals = replicas.all_sum(torch.stack([loss_sum, correct.float(),
                                                           torch.tensor(float(state.seen), device=device)]))
                    train_loss = totals[0].item() / totals[2].item()
                    self.log("log", dict(
                        step=step, epoch=round(step / self.epoch_steps, 4), lr=scheduler.get_last_lr()[0],
                        train_loss=train_loss, train_accuracy=100 * totals[1].item() / totals[2].item(),
                        density=sparsifier.global_density(), train_flops=flops.total * cfg.batch_size,
                        wall_time_s=round(state.elapsed, 3)))
                    loss_sum.zero_()
                    correct.zero_()
                    state.seen = 0
                # A non-finite training loss will not recover: evaluate, save and stop the run there.
                diverged = logged and not math.isfinite(train_loss)
                if diverged:
                    state.diverged_at = step
                if step % eval_every == 0 or step == total or diverged:
                    self.evaluate(step)
                if progress:
                    progress(step, total)
                # Under torchrun all ranks must stop at the same step: they agree at log steps.
                interrupted = step == stop_after or ((logged or not replicas.parallel) and replicas.any(stop.set, device))
                if step % checkpoint_every == 0 or step == total or interrupted or diverged:
                    state.loss_sum, state.correct = loss_sum.item(), correct.item()
                    self.save()
                if diverged:
                    break
                if interrupted and step < total:
                    raise RunInterrupted(f"stopped after step {step} of {total}; checkpoint saved in {self.run_dir}")


def train(cfg: RunConfig, run_dir: Path, progress: Callable[[int, int], None] | None = None,
          stop_after: int | None = None, logger: RunLogger | None = None) -> dict[str, Any]:
    """Train one run in `run_dir`, resuming from its checkpoint if there is one; return its metrics.

    `progress(step, total)` is called after every step. `stop_after=k` stops after step k as an
    interruption would (checkpoint written, RunInterrupted raised): tests use it to cut runs.
    `logger` also receives every row of the run's CSV logs and, at the end, its metrics (it is
    closed then); it only reads what the loop records.
    """
    replicas = distributed.current()
    if cfg.batch_size % replicas.world_size:
        raise ValueError(f"--batch-size {cfg.batch_size} (the global batch) must be divisible by the "
                         f"{replicas.world_size} data-parallel processes")
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    data = load_dataset(cfg.dataset, cfg.data_root or None, val_fraction=cfg.val_fraction,
                        standardize=cfg.inputs == "standardized",
                        train_subset=cfg.train_subset or None, device=device)
    epoch_steps = steps_per_epoch(data, cfg.batch_size)
    first = train_batches(data, cfg.batch_size, cfg.seed)
    # SNIP scores the whole global batch on every rank, so every rank computes the same masks.
    init_batches = [next(first) for _ in range(cfg.snip_batches)] if cfg.method_class.needs_init_batches else []
    dense_run, dense_metrics = pretrained(cfg, run_dir) or (None, None)
    run = setup_run(cfg, data.num_classes, data.input_shape, epoch_steps, device, init_batches, dense_run)
    loop = Loop(cfg, run, data, run_dir, device, logger)
    if dense_metrics:
        loop.flops.total = dense_metrics["flops"]["train_flops_per_sample"]  # a resumed run loads its total
    run_dir.mkdir(parents=True, exist_ok=True)  # only now that data, model and method are ready
    loop.resume()
    loop.run_steps(progress, stop_after)
    metrics = final_metrics(cfg, run.sparsifier, loop.flops, loop.state, run.reference_steps, run.width,
                            len(init_batches) * cfg.batch_size, dense_metrics)
    metrics["replica_fingerprints"] = replicas.check("final weights and masks",
                                                     [*run.model.parameters(), *run.sparsifier.masks])
    if replicas.main:
        write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    if loop.logger is not None:
        loop.logger.finish(metrics)
    return metrics


def run_record(cfg: RunConfig, device: torch.device, width: float, total: int, world_size: int) -> dict[str, Any]:
    """config.json: every setting, plus what else decides the numbers (code, library, device, replicas).

    `batch_size` is the global batch: each of the `world_size` processes trains on `per_rank_batch`
    of it, and no learning rate is rescaled.
    """
    return {"run_id": cfg.run_id(), "config_key": cfg.config_key(), "config": dataclasses.asdict(cfg), "width": width,
            "total_steps": total, "commit": git_commit(), "code": code_fingerprint(), "torch": torch.__version__,
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "world_size": world_size, "per_rank_batch": cfg.batch_size // world_size}


def final_metrics(cfg: RunConfig, sparsifier: methods.Sparsifier, flops, state: LoopState,
                  reference_steps: int, width: float, init_samples: int,
                  pretrain: dict[str, Any] | None = None) -> dict[str, Any]:
    """metrics.json of a finished run; `pretrain` is a lottery run's dense run's metrics."""
    step, test_loss, test_acc, val_loss, val_acc = state.last_eval
    summary = flops.summary(reference_steps, sparsifier.counts, init_samples, cfg.batch_size)
    lottery = {}
    if pretrain:
        summary = with_pretraining(summary, pretrain["flops"]["train_flops_per_sample"])
        lottery = {"pretrain_run": pretrain["run_id"], "rewind_step": cfg.rewind_step(step)}
    total_params = methods.parameter_count(sparsifier.model)
    device = sparsifier.weights[0].device
    return {
        "run_id": cfg.run_id(),
        "test_accuracy": test_acc,
        "best_test_accuracy": state.best,
        "test_loss": test_loss,
        "test_bpc": test_loss / math.log(2) if cfg.dataset in TEXT_CORPORA else None,
        "val_accuracy": val_acc,
        "val_loss": val_loss,
        "steps": step,
        "diverged_at_step": state.diverged_at,
        "width": width,
        "global_density": sparsifier.global_density(),
        "layer_density": sparsifier.densities(),
        "active_params": total_params - sum(sparsifier.sizes) + sum(sparsifier.counts),
        "total_params": total_params,
        "flops": dataclasses.asdict(summary),
        **lottery,
        "wall_time_s": state.elapsed,
        "steps_per_s": step / state.elapsed if state.elapsed else None,
        "peak_memory_mib": (torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None,
        "commit": git_commit(),
        "code": code_fingerprint(),
        "torch": torch.__version__,
    }
