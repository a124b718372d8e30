"""A run's metrics.csv (one row per logging step) and its picture, loss.png."""

from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path

from tinylm.checkpoint import CheckpointError


def append_metrics(path: Path, row: dict, columns: list[str]) -> None:
    """Append ``row`` to metrics.csv, whose ``columns`` are the task's (``tinylm.tasks``);
    a column the row lacks is left empty (validation scores between evaluations)."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        if new:
            writer.writeheader()
        writer.writerow(row)


def read_metrics(path: Path) -> list[dict]:
    """The rows of metrics.csv as numbers; validation columns are None between evaluations."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: (float(v) if v != "" else None) for k, v in row.items()} for row in csv.DictReader(f)]


def kept_metrics(path: Path, rows: int | None, last_step: int, columns: list[str]) -> bytes:
    """metrics.csv as a resume from ``last_step`` keeps it: the header and the first
    ``rows`` rows, byte for byte, without the rows written after the checkpoint or a
    stop's extra row. (``rows`` None, for checkpoints older than its count: the rows up
    to ``last_step``.) A CheckpointError naming the file if it does not hold them."""
    if not path.exists():
        if rows:
            raise CheckpointError(f"{path} is missing; the checkpoint counts {rows} rows in it")
        return b""
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
        table = list(csv.reader(io.StringIO(text, newline="")))
        if table and table[0] != columns:
            raise ValueError(f"its header is not {','.join(columns)}")
        if rows is None:
            rows = sum(1 for row in table[1:] if len(row) == len(columns) and float(row[0]) <= last_step)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    lines = data.splitlines(keepends=True)  # the csv module ends rows with \r\n; kept as they are
    if len(lines) < 1 + rows:
        raise CheckpointError(f"{path} holds {len(lines) - 1} rows; the checkpoint counts {rows}")
    return b"".join(lines[: 1 + rows])


def plot_losses(run_dir: Path, rows: list[dict]) -> None:
    """loss.png: the training loss (mean over each logging interval) and the validation
    loss, by step, from the rows of metrics.csv."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not rows:
        return
    evaluated = [r for r in rows if r["val_loss"] is not None]
    figure = Figure(figsize=(7, 4))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    axes.plot([r["step"] for r in rows], [r["train_loss"] for r in rows], "-", label="training")
    axes.plot([r["step"] for r in evaluated], [r["val_loss"] for r in evaluated], "s-", label="validation")
    axes.set_xlabel("step")
    axes.set_ylabel("cross-entropy (nats per token)")
    axes.set_title(f"tinylm: {run_dir.name}")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    temporary = run_dir / "loss.tmp.png"
    figure.savefig(temporary, dpi=100)
    temporary.replace(run_dir / "loss.png")


class LossPlotter:
    """Draws loss.png in a child process, so a long run's memory stays flat.

    matplotlib keeps caches (text layouts, fonts, paths) that grow with every new picture
    (``benchmarks/memory_flat.py`` shows it; the figures are in benchmarks/NOTES.md). So
    matplotlib is imported once, when the plotter is
    made (its memory is then part of the run's from the first step), and each picture is
    drawn in a ``fork`` of the process, which inherits it for free and takes whatever
    it grows away when it exits. The rows are read before the fork, so the child never
    sees a row the parent is still appending. One child at a time, waited for before the
    next and at ``close()``. Where ``fork`` does not exist or fails (no memory or
    processes left), the picture is drawn here.
    """

    def __init__(self):
        import matplotlib.backends.backend_agg  # noqa: F401  (imported here, before the first step)
        import matplotlib.figure  # noqa: F401

        self.child: int | None = None

    def draw(self, run_dir: Path) -> None:
        self.close()
        rows = read_metrics(run_dir / "metrics.csv")
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except (AttributeError, OSError):
            plot_losses(run_dir, rows)
            return
        if pid == 0:  # the child: draw, then leave without running the parent's exit handlers
            status = 1
            try:
                plot_losses(run_dir, rows)
                status = 0
            finally:
                os._exit(status)
        self.child = pid

    def close(self) -> None:
        """Wait for the picture being drawn, if any; a failed drawing is said on stderr."""
        if self.child is not None:
            _, status = os.waitpid(self.child, 0)
            self.child = None
            if status != 0:
                print("tinylm: drawing loss.png failed (metrics.csv has every number)", file=sys.stderr)
