"""Writing a benchmark report: Markdown on stdout, CSV, JSON and PNG charts."""

from __future__ import annotations

import csv
import json
from pathlib import Path


def _fmt(value, digits=3) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def header_markdown(machine: dict, roofs: dict) -> str:
    lines = [
        f"tinylm benchmark, {machine['date']}",
        f"- CPU: {machine['cpu']}, {machine['cores']} cores; BLAS: {machine['blas']}"
        + "; the cython backend holds it at 1 thread and runs its products on its own threads",
        f"- OpenMP in the Cython kernels: {'on' if machine['openmp'] else 'off'}, {machine['openmp_threads']} threads; "
        f"PyTorch threads: {machine['torch_threads'] or '—'}",
        f"- Python {machine['python']}, NumPy {machine['numpy']}, CuPy {machine['cupy'] or 'not installed'}, "
        f"PyTorch {machine['torch'] or 'not installed'}; GPU: {machine['gpu'] or 'none'}",
    ]
    if roofs:
        lines.append(f"- roofs measured now: sgemm {roofs['sgemm_gflops']:.1f} GFLOP/s, "
                     f"copy {roofs['copy_gbs']:.1f} GB/s")
    return "\n".join(lines)


def kernels_markdown(rows: list[dict]) -> str:
    lines = ["| kernel | size | shape | backend | correct | median ms | min ms | max ms | vs numpy "
             "| GFLOP/s or GB/s | of roof |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        rate = r.get("gflops") if "gflops" in r else r.get("gbs")
        unit = " GFLOP/s" if "gflops" in r else (" GB/s" if "gbs" in r else "")
        lines.append(
            f"| {r['kernel']} | {r['size']} | {r['shape']} | {r['backend']} | "
            f"{'yes' if r['correct'] else '**WRONG**'} | "
            f"{_fmt(r.get('median_s', 0) * 1e3 if r.get('median_s') else None)} | "
            f"{_fmt(r.get('min_s', 0) * 1e3 if r.get('min_s') else None)} | "
            f"{_fmt(r.get('max_s', 0) * 1e3 if r.get('max_s') else None)} | "
            f"{_fmt(r.get('speedup_vs_numpy'), 2)}x | {_fmt(rate)}{unit if rate else ''} | "
            f"{'—' if r.get('roof_fraction') is None else format(100 * r['roof_fraction'], '.0f') + '%'} |")
    return "\n".join(lines)


def training_markdown(rows: list[dict]) -> str:
    lines = ["| model | backend | first two losses agree | train tok/s | vs numpy | eval tok/s "
             "| sample tok/s (batch 1) | peak RSS MiB | growth MiB |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['backend']} | {'yes' if r['correct'] else '**NO**'} | "
            f"{r['train_tokens_per_s']:,.0f} | {_fmt(r.get('train_speedup_vs_numpy'), 2)}x | "
            f"{r['eval_tokens_per_s']:,.0f} | {r['sample_tokens_per_s']:,.1f} | "
            f"{_fmt(r.get('peak_rss_mib'), 4)} | {_fmt(r.get('training_growth_mib'), 3)} |")
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: Path, machine: dict, roofs: dict, kernel_rows: list[dict], training_rows: list[dict]) -> None:
    path.write_text(json.dumps({"machine": machine, "roofs": roofs, "kernels": kernel_rows, "training": training_rows},
                               indent=2) + "\n")


def kernel_charts(out: Path, rows: list[dict]) -> list[Path]:
    """One PNG per kernel: median time per backend, grouped by size (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for kernel in dict.fromkeys(r["kernel"] for r in rows):
        mine = [r for r in rows if r["kernel"] == kernel and r.get("median_s")]
        if not mine:
            continue
        sizes = list(dict.fromkeys(f"{r['size']}\n{r['shape']}" for r in mine))
        names = list(dict.fromkeys(r["backend"] for r in mine))
        figure, axes = plt.subplots(figsize=(7, 4))
        width = 0.8 / len(names)
        for i, backend in enumerate(names):
            values = {f"{r['size']}\n{r['shape']}": r["median_s"] * 1e3 for r in mine if r["backend"] == backend}
            xs = [j + i * width for j, s in enumerate(sizes) if s in values]
            axes.bar(xs, [values[s] for s in sizes if s in values], width, label=backend)
        axes.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(sizes))], sizes)
        axes.set_yscale("log")
        axes.set_ylabel("median time (ms, log scale)")
        axes.set_title(f"{kernel} ({mine[0]['dims']})")
        axes.legend()
        figure.tight_layout()
        path = out / f"kernel_{kernel}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


def training_chart(out: Path, rows: list[dict]) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return None
    models = list(dict.fromkeys(r["model"] for r in rows))
    names = list(dict.fromkeys(r["backend"] for r in rows))
    figure, axes = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(names)
    for i, backend in enumerate(names):
        values = {r["model"]: r["train_tokens_per_s"] for r in rows if r["backend"] == backend}
        axes.bar([j + i * width for j, m in enumerate(models) if m in values],
                 [values[m] for m in models if m in values], width, label=backend)
    axes.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(models))], models)
    axes.set_ylabel("training tokens per second")
    axes.set_title("end-to-end training throughput")
    axes.legend()
    figure.tight_layout()
    path = out / "training_throughput.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
