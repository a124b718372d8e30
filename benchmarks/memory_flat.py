"""Does a long run keep its memory flat? Trains with ``python -m tinylm.train``'s own loop
(evaluations, samples, checkpoints, metrics.csv and loss.png included) and prints the
resident set size (RSS) after a short and after a long stretch of steps.

    python benchmarks/memory_flat.py                      # RSS after 200 and 2,000 steps
    python benchmarks/memory_flat.py --early 50 --late 500 --max-growth 5 -- --hidden-dim 64

Flags after ``--`` go to ``tinylm.train`` (default: a small character LSTM, so 2,000 steps
take a few minutes on 2 cores). With ``--max-growth P`` the exit status is 1 when RSS grew
by more than P percent between the two points.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from tinylm import train

SMALL_MODEL = ["--embedding-dim", "32", "--hidden-dim", "128", "--n-layers", "2", "--batch-size", "16",
               "--seq-len", "32", "--sample-tokens", "100"]


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--early", type=int, default=200, help="first measurement, after this many steps")
    parser.add_argument("--late", type=int, default=2000, help="second measurement (and the run's length)")
    parser.add_argument("--eval-every", type=int, default=250, help="evaluate, sample and checkpoint every N steps")
    parser.add_argument("--max-growth", type=float, help="exit 1 if RSS grew by more than this many percent")
    args, train_flags = parser.parse_known_args()
    train_flags = [f for f in train_flags if f != "--"] or SMALL_MODEL
    measured: dict[int, int] = {}
    original = train.Trainer.train_step

    def step_and_measure(self):
        loss = original(self)
        if self.step in (args.early, args.late):
            measured[self.step] = rss_bytes()
        return loss

    train.Trainer.train_step = step_and_measure
    with tempfile.TemporaryDirectory() as folder:
        train.main([*train_flags, "--steps", str(args.late), "--eval-every", str(args.eval_every),
                    "--out", str(Path(folder) / "run")])
    early, late = measured[args.early], measured[args.late]
    growth = 100.0 * (late - early) / early
    print(f"RSS after {args.early} steps: {early / 2**20:.1f} MiB; after {args.late}: {late / 2**20:.1f} MiB "
          f"({growth:+.2f}%)")
    return 1 if args.max_growth is not None and growth > args.max_growth else 0


if __name__ == "__main__":
    sys.exit(main())
