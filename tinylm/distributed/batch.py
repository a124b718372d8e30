"""How the processes of a data-parallel run share a step: ``mpiexec -n N python -m tinylm.train``.

Every rank draws the same global batch (the trainer's generator is seeded alike
everywhere) and keeps its own rows of it: rank r of N takes rows [r·b, (r + 1)·b) of the
B rows, b = B / N. Its loss is scaled so that the ranks' gradients, averaged by
``DistributedDataParallel``, are the gradient of the whole batch's mean loss:

    loss_r = N · (Σ over rank r's target tokens of ℓ) / (target tokens of the whole batch)
    (1/N) Σ_r ∇loss_r = ∇ (Σ over all target tokens of ℓ) / (target tokens of the whole batch)

(the count is the whole batch's, known on every rank since every rank drew it: with
translation's padding, ranks hold different numbers of real target tokens, so each
rank's own mean would weigh them wrongly). Dropout draws its mask per global row
(``tinylm.random.global_batch_rows``), so the run is the same computation as one
process on the whole batch, up to the order of summation, whatever N is.

With one process every method is the identity and the loss is the plain mean.
"""

from __future__ import annotations

import contextlib

import numpy as np

from tinylm.nn import functional as F


class BatchShare:
    """This rank's share of every global batch of ``batch_size`` rows."""

    def __init__(self, batch_size: int, world: int = 1, rank: int = 0):
        if batch_size % world:
            raise ValueError(f"--batch-size {batch_size} is the global batch: it must divide evenly over the "
                             f"{world} processes (a multiple of {world})")
        self.world, self.rank, self.total = world, rank, batch_size
        self.local = batch_size // world
        self.first = rank * self.local

    def take(self, inputs, targets, state):
        """This rank's rows of a global batch: inputs and targets (B, ...), and forward's state
        (None, a carried state that is already this rank's, or a translation's Source)."""
        if self.world == 1:
            return inputs, targets, state
        rows = slice(self.first, self.first + self.local)
        if hasattr(state, "lengths"):  # a Source: padded ids (B, S) and lengths (B,)
            state = type(state)(state.ids[rows], state.lengths[rows])
        return inputs[rows], targets[rows], state

    def rows(self):
        """The context in which this rank's forward runs: dropout masks drawn per global row."""
        if self.world == 1:
            return contextlib.nullcontext()
        from tinylm.random import global_batch_rows

        return global_batch_rows(self.first, self.local, self.total)

    def loss(self, logits, targets, all_targets):
        """(the loss to call backward on, the whole batch's mean loss as a float). ``targets``
        are this rank's (b, ...), ``all_targets`` the whole batch's: positions whose target is
        negative (IGNORE, -100) count for nothing, as in ``F.cross_entropy``."""
        flat_logits, flat_targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
        if self.world == 1:
            loss = F.cross_entropy(flat_logits, flat_targets)  # (B·T, V) against (B·T,)
            return loss, loss.item()
        import tinylm.distributed as dist

        counted = int((np.asarray(all_targets) >= 0).sum())  # the whole batch's target tokens
        total = F.cross_entropy(flat_logits, flat_targets, reduction="sum")
        summed = np.array([total.item()])
        dist.all_reduce(summed)  # every rank's sum: the value to report
        if counted == 0:  # nothing to predict: NaN, as the mean over no tokens is, and the trainer stops
            return total * float("nan"), float("nan")
        return total * (self.world / counted), float(summed[0]) / counted

    def agree(self, flag: bool) -> bool:
        """Rank 0's answer, on every rank: whether to stop now (a time limit, Ctrl-C) must be one
        decision, or the ranks would part ways and wait for each other forever."""
        if self.world == 1:
            return flag
        import tinylm.distributed as dist

        answer = np.array([int(flag)], dtype=np.int64)
        dist.broadcast(answer, src=0)
        return bool(answer[0])

    def gather(self, array, axis: int) -> np.ndarray:
        """Every rank's rows of ``array`` along its batch ``axis``, in rank order: a carried
        state written into a checkpoint whole, so it does not depend on the number of processes."""
        if self.world == 1:
            return array
        import tinylm.distributed as dist

        moved = np.ascontiguousarray(np.moveaxis(array, axis, 0))  # (b, ...)
        out = np.empty((self.world * moved.shape[0], *moved.shape[1:]), dtype=moved.dtype)
        dist.all_gather(out, moved)
        return np.moveaxis(out, 0, axis)

    def scatter(self, array, axis: int) -> np.ndarray:
        """This rank's rows of a whole-batch ``array`` along ``axis`` (a checkpoint's carried state)."""
        if self.world == 1:
            return array
        index = [slice(None)] * array.ndim
        index[axis] = slice(self.first, self.first + self.local)
        return np.ascontiguousarray(array[tuple(index)])
