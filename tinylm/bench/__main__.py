"""``python -m tinylm.bench``: kernels (and with ``--train``, whole models) on every
backend available here and on PyTorch, checked, timed, and reported."""

from __future__ import annotations

import sys
from pathlib import Path

from tinylm import cli
from tinylm.bench import machine, report
from tinylm.bench.kernels import CASES, parse_sizes, run_kernels
from tinylm.memory import keep_freed_memory

ALL_BACKENDS = ["numpy", "cython", "cupy", "cuda", "torch"]


def parse_args(argv=None):
    p = cli.ArgumentParser(prog="python -m tinylm.bench", description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--kernels", default=",".join(CASES), help=f"comma-separated, from: {', '.join(CASES)}")
    p.add_argument("--backends", default=",".join(ALL_BACKENDS),
                   help="comma-separated; those not usable here are left out (default: all)")
    p.add_argument("--sizes", default="small,medium,large",
                   help="presets tiny, small, medium, large, or shapes like 64x32x256 (each kernel's dims)")
    p.add_argument("--repeat", type=cli.positive_int, default=10,
                   help="timed runs per measurement (with --train: rounds, each timing 3 calls per backend)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    p.add_argument("--threads", type=cli.positive_int, help="threads for BLAS, OpenMP and PyTorch (default: all)")
    p.add_argument("--train", action="store_true", help="benchmark whole models instead of kernels")
    p.add_argument("--train-size", choices=["tiny", "small", "medium"], default="small",
                   help="model and batch size for --train (medium: the default training run's sizes)")
    p.add_argument("--no-memory", action="store_true", help="--train: skip the peak-memory processes")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel training under mpiexec: tokens/s of 1 and 2 processes, the all-reduce time "
                   "per step and the share hidden behind backward, all-reduce bandwidth by message size")
    p.add_argument("--out", default="bench-results", help="folder for the CSV, JSON and PNG files")
    return p.parse_args(argv)


def bench_distributed(out: Path) -> dict:
    import json

    from tinylm.bench.distributed import markdown, run_distributed

    facts = machine.header()
    results = run_distributed()
    print(report.header_markdown(facts, None) + "\n\n" + markdown(results))
    out.mkdir(parents=True, exist_ok=True)
    (out / "distributed.json").write_text(json.dumps({"machine": facts, **results}, indent=2) + "\n")
    return results


def main(argv=None) -> dict:
    args = parse_args(argv)
    keep_freed_memory()  # as tinylm.train does (tinylm/memory.py); the training workers call it too
    names = [k.strip() for k in args.kernels.split(",") if k.strip()]
    unknown = [k for k in names if k not in CASES]
    if unknown:
        raise ValueError(f"--kernels: unknown {', '.join(unknown)}; choose from {', '.join(CASES)}")
    backend_names = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in backend_names if b not in ALL_BACKENDS]
    if bad:
        raise ValueError(f"--backends: unknown {', '.join(bad)}; choose from {', '.join(ALL_BACKENDS)}")
    if "numpy" not in backend_names:
        backend_names.insert(0, "numpy")  # the reference every speedup is measured against
    size_specs = parse_sizes(args.sizes)
    if args.distributed:
        return bench_distributed(Path(args.out))
    if args.threads:
        machine.set_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    facts = machine.header()
    roofs = machine.measure_roofs(quick=all(name == "tiny" for name, _ in size_specs)
                                  or args.train_size == "tiny" and args.train)
    print(report.header_markdown(facts, roofs) + "\n")
    kernel_rows, training_rows = [], []
    if args.train:
        from tinylm.bench.training import run_training

        training_rows = run_training(backend_names, args.train_size, args.repeat, args.warmup, not args.no_memory,
                                     args.threads)
        print(report.training_markdown(training_rows))
        report.write_csv(out / "training.csv", training_rows)
        report.training_chart(out, training_rows)
    else:
        kernel_rows = run_kernels(names, size_specs, backend_names, args.warmup, args.repeat, roofs)
        print(report.kernels_markdown(kernel_rows))
        report.write_csv(out / "kernels.csv", kernel_rows)
        report.kernel_charts(out, kernel_rows)
    report.write_json(out / ("training.json" if args.train else "kernels.json"), facts, roofs,
                      kernel_rows, training_rows)
    print(f"\nCSV, JSON and charts in {out}/")
    wrong = [r for r in kernel_rows + training_rows if not r["correct"]]
    if wrong:
        raise RuntimeError(f"{len(wrong)} result(s) disagree with the reference; see the table")
    return {"kernels": kernel_rows, "training": training_rows}


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="python -m tinylm.bench"))
