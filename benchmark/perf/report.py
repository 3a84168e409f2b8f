"""The text report of `python -m benchmark perf`."""
from __future__ import annotations

from typing import Any


def _mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def format_report(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"sparsebench perf: torch {m['torch']}, {m['device']}, {m['threads']} thread(s) of {m['cores']} cores, "
             f"{m['cpu']}; load average {m.get('load_before', '?')} before, {m.get('load_after', '?')} after", ""]
    for name, r in report["models"].items():
        t = r.get("training")
        if t:
            lines.append(f"{name}: training step, batch {r['batch_size']}, {r['distribution']} at sparsity "
                         f"{r['train_sparsity']:g}, {t['rounds']} rounds x {t['steps_per_round']} step(s) per variant, "
                         f"medians")
            lines.append(f"  {'variant':<16}{'step ms':>9}{'x dense':>9}{'FLOPs x':>9}{'sparsity code ms':>18}"
                         f"{'of a dense step':>17}")
            for label, row in t["variants"].items():
                added = row.get("added_ms")
                if added is None:
                    code, share = "-", "-"
                else:
                    code = f"{added:.3f}"
                    share = (f"{row['cost_dense_steps']:.2f} steps" if row["kind"] == "update"
                             else f"{100 * row['added_fraction']:+.2f}%")
                lines.append(f"  {label:<16}{row['step_ms']:>9.2f}{row['ratio']:>9.3f}{row['flops_multiplier']:>9.3f}"
                             f"{code:>18}{share:>17}")
            mem = t["memory"]
            dense_total = mem["dense_state_total"]
            held = ", ".join(
                f"{meth} +{_mib(v['held_total'])} ({v['ratio']:.2f}x, {v['bytes_per_sparse_weight']:.2f} B/weight)"
                for meth, v in mem["methods"].items())
            lines.append(f"  memory: dense training state {_mib(dense_total)} (weights, gradients, optimizer); "
                         f"sparsifier tensors: {held}")
            kinds = {}
            for v in mem["methods"].values():
                for kind, nbytes in v["held_bytes"].items():
                    kinds[kind] = max(kinds.get(kind, 0), nbytes)
            lines.append("    (" + ", ".join(f"{k} {_mib(b)}" for k, b in kinds.items() if b)
                         + "; activations are the same for every variant and not counted on CPU)")
            if "cuda_peak_bytes" in mem:
                peaks = mem["cuda_peak_bytes"]
                lines.append("  CUDA peak (max_memory_allocated, 3 isolated steps): " + ", ".join(
                    f"{k} {_mib(b)} ({b / peaks['dense']:.2f}x)" for k, b in peaks.items()))
        st = r.get("sparse_training")
        if st:
            lines.append(f"{name}: sparse-kernel training (execution=sparse), batch {r['batch_size']}, "
                         f"{r['distribution']}, against the plain dense step {st[0]['dense_step_ms']:.2f} ms")
            lines.append(f"  {'method':<10}{'sparsity':>9}{'FLOPs x':>9}{'step ms':>9}{'speedup':>9}{'update ms':>11}"
                         f"{'amortized':>11}{'max rel loss diff':>19}  layers on kernels")
            for row in st:
                update = f"{row['update_step_ms']:.2f}" if "update_step_ms" in row else "-"
                lines.append(f"  {row['method']:<10}{row['sparsity']:>9g}{row['flops_multiplier']:>9.3f}"
                             f"{row['step_ms']:>9.3f}{row['speedup']:>8.2f}x{update:>11}"
                             f"{row['speedup_amortized']:>10.2f}x{row['max_rel_loss_diff']:>19.1e}  "
                             f"{','.join(row['kernel_layers']) or '-'}")
        inf = r.get("inference")
        if inf:
            first = inf[0]
            conv_note = (f"; conv layers on CSR where faster than dense (of {first['conv_layers']})"
                         if first["conv_layers"] else "")
            lines.append(f"{name}: inference with sparse kernels (CSR Linear{conv_note}), latency medians, "
                         f"outputs vs masked dense model")
            lines.append(f"  {'sparsity':>8}{'FLOPs x':>9}{'batch':>7}{'dense ms':>10}{'sparse ms':>11}{'speedup':>9}"
                         f"{'max|diff|':>11}{'CSR convs':>11}  weights (CSR / dense)")
            for row in inf:
                convs = f"{len(row['sparse_conv_layers'])}/{row['conv_layers']}" if row["conv_layers"] else "-"
                lines.append(
                    f"  {row['sparsity']:>8g}{row['flops_multiplier']:>9.3f}{row['batch']:>7}{row['dense_ms']:>10.3f}"
                    f"{row['sparse_ms']:>11.3f}{row['speedup']:>8.2f}x{row['max_abs_diff']:>11.1e}{convs:>11}  "
                    f"{_mib(row['sparse_weight_bytes'])} / {_mib(row['dense_weight_bytes'])}")
        lines.append("")
    big = report.get("large_update")
    if big:
        lines.append(f"{big['method']} mask update on a {big['layer'][0]} x {big['layer'][1]} Linear layer "
                     f"({big['active']} active, drop fraction {big['drop_fraction']:.2f}): {big['update_ms']:.1f} ms, "
                     f"{big['ns_per_weight']:.1f} ns per weight (median of {big['updates']} updates)")
        lines.append("")
    lines.append("step ms / x dense: whole training step and its median per-round ratio to the plain dense step; "
                 "FLOPs x: the paper's count for that step;")
    lines.append("sparsity code: time in sparsifier.step() minus the optimizer.step() inside it, as a share of a "
                 "dense step (an update step's in dense steps; timed at the first update, whose drop fraction, "
                 "alpha, is the run's largest).")
    lines.append("speedup: median over rounds of dense / sparse latency (training: dense step / sparse-kernel step; "
                 "amortized: with one update step every delta_t); max|diff|: largest difference to the masked "
                 "dense model's outputs; max rel loss diff: sparse-kernel vs masked-dense training, a few steps "
                 "around an update.")
    return "\n".join(lines)
