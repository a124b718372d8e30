"""Run under ``mpiexec -n 2``: rank 1 fails while rank 0 waits in a collective.

``python failing.py MODE``, MODE one of:

- ``raise``: rank 1 raises an uncaught exception;
- ``exit``: rank 1 calls ``sys.exit(3)``;
- ``interrupt``: rank 1 raises KeyboardInterrupt (what Ctrl-C does);
- ``kill``: rank 1 kills itself with SIGKILL, so no Python runs on its way out.

Without the failure handler, or a launcher that notices, rank 0 would wait in its
all_reduce for ever; tests/test_distributed.py checks that the job ends within seconds.
"""

import os
import signal
import sys
import time

import numpy as np

from tinylm import distributed as dist


def main() -> None:
    mode = sys.argv[1]
    dist.init_process_group("mpi")
    dist.barrier()
    if dist.get_rank() == 1:
        time.sleep(0.5)  # let rank 0 enter its all_reduce first
        if mode == "raise":
            raise ValueError("rank 1 fails on purpose")
        if mode == "exit":
            sys.exit(3)
        if mode == "interrupt":
            raise KeyboardInterrupt
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise SystemExit(f"failing.py: unknown mode {mode!r}")
    print("rank 0 waits in all_reduce", flush=True)
    dist.all_reduce(np.ones(4))
    print("rank 0 left all_reduce: this should not happen", flush=True)


if __name__ == "__main__":
    main()
