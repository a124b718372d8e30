"""What the launcher tells us, and how a failing rank ends the job.

**The launcher.** ``mpiexec -n 4 python -m tinylm.train`` starts four processes; the
launcher tells each, through environment variables, that it is one of several and which.
Each MPI family has its own names:

==========================  ===========================================
launcher                    variables
==========================  ===========================================
MPICH's hydra ``mpiexec``   ``PMI_RANK``, ``PMI_SIZE``
Intel MPI (hydra too)       ``PMI_RANK``, ``MPI_LOCALRANKID``
Open MPI ``mpirun``         ``OMPI_COMM_WORLD_RANK``, ``OMPI_COMM_WORLD_SIZE``
PMIx launchers (prterun)    ``PMIX_RANK``
Slurm ``srun``              ``SLURM_PROCID``, ``SLURM_NTASKS``
==========================  ===========================================

**A failing rank.** Collectives block until every rank arrives. If one rank dies of an
uncaught exception, the others wait for it forever, unless someone ends them. MPI's answer
is ``MPI_Abort``: it asks the launcher to kill every rank of the job. ``install_failure_handler``
makes Python call it on the way out of any uncaught exception, ``KeyboardInterrupt`` and
``sys.exit`` with a non-zero code, so a failing rank ends the whole job within seconds
with one line that says which rank failed and why.

A rank killed outright (SIGKILL, the kernel's out-of-memory killer) runs no Python at all;
there the launcher must notice. MPICH's hydra ``mpiexec`` does, with no flag needed: when a
rank dies of a signal, or exits non-zero without having finalised MPI, it kills the others
at once ("BAD TERMINATION ... CLEANING UP REMAINING PROCESSES"). What hydra does *not*
catch is a rank that leaves through MPI's normal exit (``MPI_Finalize``, which mpi4py calls
at exit) while others wait in a collective: that job hangs. This is why ``sys.exit`` is
wrapped below. For a job that could hang for any other reason, hydra's backstop is the
environment variable ``MPIEXEC_TIMEOUT=SECONDS``: past it, hydra ends every rank (exit 255).
(MPICH 5's hydra takes no ``-timeout`` flag.)
"""

from __future__ import annotations

import os
import sys
import time
from typing import NoReturn

ABORT_GRACE_S = 1.0  # abort(): the launcher's time to forward our last lines before MPI_Abort

_LAUNCHERS = (  # (launcher, variables that must all be set)
    ("Open MPI", ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE")),
    ("MPICH hydra", ("PMI_RANK", "PMI_SIZE")),
    ("Intel MPI", ("PMI_RANK", "MPI_LOCALRANKID")),
    ("PMIx", ("PMIX_RANK",)),
    ("Slurm srun", ("SLURM_PROCID", "SLURM_NTASKS")),
)


def launcher() -> str | None:
    """The name of the MPI launcher whose variables are set, or None."""
    for name, variables in _LAUNCHERS:
        if all(os.environ.get(v, "").strip() for v in variables):
            return name
    return None


def launched_by_mpi() -> bool:
    """Whether an MPI launcher (mpiexec/mpirun of MPICH, Open MPI or Intel MPI, or Slurm's
    srun) started this process, by the environment variables it sets (table above)."""
    return launcher() is not None


def _rank_for_messages() -> int:
    """This process's rank for an error message: the group's, or else the launcher's."""
    from tinylm import distributed

    if distributed.is_initialized():
        return distributed.get_rank()
    for variable in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"):
        value = os.environ.get(variable, "")
        if value.strip().isdigit():
            return int(value)
    return 0


def abort(message: str, code: int = 1) -> NoReturn:
    """Print ``tinylm.distributed: rank R: message`` to stderr and end every rank of the job
    (``MPI_Abort`` with ``code``). Without MPI initialised, end this process with ``code``."""
    print(f"tinylm.distributed: rank {_rank_for_messages()}: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        # Our output reaches the terminal through the launcher, which stops forwarding it the
        # moment it tears the job down; on a busy machine the line above was lost without this.
        time.sleep(ABORT_GRACE_S)
        mpi.COMM_WORLD.Abort(code)
    os._exit(code)


def _exit_code(code) -> int:
    """The process exit code ``sys.exit(code)`` gives: None is 0, an int itself, else 1."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def install_failure_handler() -> None:
    """Make an uncaught exception, ``KeyboardInterrupt`` or ``sys.exit`` with a non-zero code
    on this rank end every rank (``abort``) after printing its usual traceback or message.

    Uncaught exceptions reach ``sys.excepthook``; ``SystemExit`` never does (Python handles
    it before the hook), so ``sys.exit`` is wrapped: a non-zero code aborts at once (``finally``
    blocks on the way out do not run). A bare ``raise SystemExit(2)`` slips past both: that
    rank finalises MPI and the others, if they wait in a collective, hang until
    ``MPIEXEC_TIMEOUT`` (module docstring); use ``sys.exit`` in distributed code.
    Calling it again changes nothing."""
    if getattr(sys.excepthook, "tinylm_failure_handler", False):
        return
    previous_hook, previous_exit = sys.excepthook, sys.exit

    def excepthook(kind, value, traceback):
        previous_hook(kind, value, traceback)  # the traceback, as without us
        if issubclass(kind, KeyboardInterrupt):
            abort("interrupted (KeyboardInterrupt); ending every rank", 130)
        abort(f"uncaught {kind.__name__}: {value}; ending every rank", 1)

    def exit(code=None):  # noqa: A001 (sys.exit's name)
        status = _exit_code(code)
        if status != 0:
            if code is not None and not isinstance(code, int):
                print(code, file=sys.stderr)  # what sys.exit("message") prints
            abort(f"exit with code {status}; ending every rank", status)
        previous_exit(code)

    excepthook.tinylm_failure_handler = True
    exit.tinylm_failure_handler = True
    sys.excepthook, sys.exit = excepthook, exit
