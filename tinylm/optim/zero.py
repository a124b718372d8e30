"""ZeRO stage 1 (DeepSpeed's "Zero Redundancy Optimizer"): Adam and AdamW whose state is
split over the ranks, so each rank keeps the moments of 1/N of the parameters.

Adam is elementwise: each element of a parameter is updated from its own gradient and
its own two moments. So the elements can be dealt out to the ranks, and rank r updates
only its share. One step, for each parameter group:

1. the local gradients of the group are laid end to end in one flat buffer, padded with
   zeros to a multiple of the world size N;
2. ``reduce_scatter(op="avg")`` leaves on rank r the *average over the ranks* of its
   1/N slice (its shard): the same numbers DDP's all-reduce would give, but each rank
   receives only the part it updates;
3. (with ``max_norm``) the global gradient norm is the square root of the sum over the
   ranks of each shard's sum of squares: one all-reduce of one number, then every shard
   is scaled by max_norm / (norm + 1e-6) when the norm is above ``max_norm``, as
   ``tinylm.nn.utils.clip_grad_norm_`` does for the whole model;
4. rank r runs the Adam update (the ``adam_update`` kernel) on its shard of the flat
   parameters, with the moments it alone holds;
5. ``all_gather`` puts the updated shards together on every rank, and they are copied
   back into each parameter's ``.data``.

So use it on the plain model (not inside ``DistributedDataParallel``): ``backward`` leaves
local gradients, and step 2 averages them. The result is the same as DDP + AdamW.

Differences from ``AdamW``: one step count per group (a parameter without a gradient
counts as a zero gradient, where AdamW would skip it; a group in which no parameter has
a gradient on this rank is skipped, so every rank must have gradients in the same groups,
or the ranks' collectives part ways), and no amsgrad. ``state_dict()`` gathers the moments onto every
rank and returns them in ``AdamW``'s own format, so a checkpoint saved on N ranks loads on
any number of ranks, or into a plain ``AdamW``; ``load_state_dict`` takes that format (from
``AdamW`` too) and keeps this rank's shard.

With one process (no process group started) this is AdamW with its moments in one flat
buffer per group.
"""

from __future__ import annotations

import math

import numpy as np

from tinylm import backends
from tinylm.autograd import no_grad
from tinylm.optim.adam import Adam, AdamW
from tinylm.optim.optimizer import Optimizer


def _default_process_group():
    from tinylm.nn.parallel import default_process_group

    return default_process_group()


class _Shard:
    """What a rank keeps for one parameter group: the group's layout (``sizes``, the
    padded ``length``, a multiple of the world size), its shard's bounds, the step count
    and the moments of the shard."""

    def __init__(self, params: list, world_size: int, rank: int):
        self.sizes = [p.numel() for p in params]
        total = sum(self.sizes)
        self.length = -(-total // world_size) * world_size  # rounded up to a multiple of N
        self.shard_size = self.length // world_size
        self.start = rank * self.shard_size
        xp = backends.get_array_module(params[0].data)
        self.xp = xp
        self.dtype = params[0].dtype
        self.step = 0
        self.exp_avg = xp.zeros(self.shard_size, dtype=self.dtype)
        self.exp_avg_sq = xp.zeros(self.shard_size, dtype=self.dtype)

    def flatten(self, arrays) -> object:
        """The arrays laid end to end, zero-padded to ``length``."""
        flat = self.xp.zeros(self.length, dtype=self.dtype)
        offset = 0
        for array, size in zip(arrays, self.sizes):
            if array is not None:
                flat[offset:offset + size] = array.reshape(-1)
            offset += size
        return flat

    def unflatten(self, flat, shapes) -> list:
        """The pieces of ``flat`` (views) with the given shapes, padding dropped."""
        pieces, offset = [], 0
        for shape, size in zip(shapes, self.sizes):
            pieces.append(flat[offset:offset + size].reshape(shape))
            offset += size
        return pieces


class ZeroRedundancyAdam(Optimizer):
    """Adam with its moments sharded over the ranks (ZeRO stage 1); see the module docstring.

    ``ZeroRedundancyAdam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
    max_norm=None, process_group=None)``: ``params`` as for ``Adam`` (parameters, or
    groups with their own ``lr`` and ``weight_decay``); a group holds one dtype on one device.
    ``step()`` returns the global gradient norm (before clipping) when ``max_norm`` is set,
    else None (or the closure's loss, when a closure is given).
    """

    decoupled = False
    _dense_class = Adam

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 max_norm: float | None = None, process_group=None):
        name = type(self).__name__
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"{name}: invalid lr={lr}, betas={betas}, eps={eps} or weight_decay={weight_decay}")
        if max_norm is not None and not max_norm > 0:
            raise ValueError(f"{name}: max_norm must be > 0 (or None for no clipping), got {max_norm}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=False))
        self.max_norm = max_norm
        self.process_group = process_group if process_group is not None else _default_process_group()
        group = self.process_group
        self.world_size = 1 if group is None else int(group.get_world_size())
        self.rank = 0 if group is None else int(group.get_rank())
        self.shards: list[_Shard] = [self._new_shard(index) for index in range(len(self.param_groups))]

    def add_param_group(self, param_group: dict) -> None:
        """As ``Optimizer.add_param_group``; the new group gets its own flat buffer and shard."""
        super().add_param_group(param_group)
        if hasattr(self, "shards"):  # not during __init__, which makes them all at once
            self.shards.append(self._new_shard(len(self.param_groups) - 1))

    def _new_shard(self, index: int) -> _Shard:
        g = self.param_groups[index]
        kinds = {(p.dtype, p.device) for p in g["params"]}
        if len(kinds) > 1:
            raise ValueError(f"{type(self).__name__}: parameter group {index} mixes dtypes or devices "
                             f"{sorted(map(str, kinds))}; a group is one flat buffer: give each kind its own group")
        if g.get("amsgrad"):
            raise ValueError(f"{type(self).__name__}: amsgrad is not supported")
        return _Shard(g["params"], self.world_size, self.rank)

    # ---- the collectives (a single process needs none)
    def _reduce_scatter_avg(self, flat):
        if self.world_size == 1:
            return flat.copy()
        out = backends.get_array_module(flat).empty(flat.shape[0] // self.world_size, dtype=flat.dtype)
        self.process_group.reduce_scatter(out, flat, op="avg")
        return out

    def _all_gather(self, shard):
        if self.world_size == 1:
            return shard
        out = backends.get_array_module(shard).empty(shard.shape[0] * self.world_size, dtype=shard.dtype)
        self.process_group.all_gather(out, shard)
        return out

    def _all_reduce_sum(self, value: float) -> float:
        if self.world_size == 1:
            return value
        box = np.array([value], dtype=np.float64)
        self.process_group.all_reduce(box, op="sum")
        return float(box[0])

    # ---- the update
    def step(self, closure=None):
        """Average the gradients (reduce-scatter), optionally clip them by the global norm,
        update this rank's shard and all-gather the parameters (see the module docstring)."""
        loss = self._evaluate(closure)
        work = []
        for group, shard in zip(self.param_groups, self.shards):
            grads = [None if p.grad is None else p.grad.data for p in group["params"]]
            if all(g is None for g in grads):
                continue
            work.append((group, shard, self._reduce_scatter_avg(shard.flatten(grads))))
        norm = None
        if self.max_norm is not None:
            local = sum(float((g.astype(np.float64, copy=False) ** 2).sum()) for _, _, g in work)
            norm = math.sqrt(self._all_reduce_sum(local))
            coefficient = self.max_norm / (norm + 1e-6)
            if coefficient < 1.0:
                for _, _, g in work:
                    g *= g.dtype.type(coefficient)
        update = backends.kernel("adam_update")
        with no_grad():
            for group, shard, grad in work:
                params = group["params"]
                flat = shard.flatten([p.data for p in params])
                mine = flat[shard.start:shard.start + shard.shard_size].copy()
                shard.step += 1
                beta1, beta2 = group["betas"]
                update(mine, grad, shard.exp_avg, shard.exp_avg_sq, shard.step, group["lr"], beta1, beta2,
                       group["eps"], group["weight_decay"], self.decoupled)
                gathered = self._all_gather(mine)
                for p, piece in zip(params, shard.unflatten(gathered, [p.shape for p in params])):
                    p.data[...] = piece
                    p._version_box[0] += 1
        if loss is not None:
            return loss
        return norm

    # ---- checkpoints, in AdamW's format
    def _dense(self) -> Adam:
        """A plain Adam/AdamW over the same parameters and settings, to borrow its format."""
        return self._dense_class([dict(g) for g in self.param_groups])

    def _gather_full(self, shard: _Shard, array):
        return self._all_gather(array)[:sum(shard.sizes)]

    def state_dict(self) -> dict:
        """``AdamW.state_dict()``'s format with the full moments, gathered from every rank.
        A collective: every rank must call it (each gets the whole dict)."""
        dense = self._dense()
        for group, shard in zip(self.param_groups, self.shards):
            if shard.step == 0:
                continue
            shapes = [p.shape for p in group["params"]]
            averages = shard.unflatten(self._gather_full(shard, shard.exp_avg), shapes)
            squares = shard.unflatten(self._gather_full(shard, shard.exp_avg_sq), shapes)
            for p, m, v in zip(group["params"], averages, squares):
                dense.state[id(p)] = {"step": shard.step, "exp_avg": m, "exp_avg_sq": v}
        return dense.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        """Load ``state_dict()``'s (or ``AdamW``'s, or torch's) format, saved on any number of
        ranks, and keep this rank's shard of the moments. Within a group every parameter
        must have the same step count (or none: fresh moments)."""
        name = type(self).__name__
        dense = self._dense()
        dense.load_state_dict(state_dict)  # all the checking and converting happens there
        shards = []
        for index, group in enumerate(dense.param_groups):
            params = group["params"]
            shard = _Shard(params, self.world_size, self.rank)
            states = [dense.state.get(id(p)) for p in params]
            steps = {s["step"] for s in states if s is not None}
            if len(steps) > 1 or (steps and any(s is None for s in states)):
                raise ValueError(f"{name}.load_state_dict: parameter group {index} has step counts "
                                 f"{[None if s is None else s['step'] for s in states]}; a sharded group keeps one")
            if steps:
                shard.step = steps.pop()
                end = shard.start + shard.shard_size
                shard.exp_avg = shard.flatten([s["exp_avg"] for s in states])[shard.start:end].copy()
                shard.exp_avg_sq = shard.flatten([s["exp_avg_sq"] for s in states])[shard.start:end].copy()
            shards.append(shard)
        for mine, loaded in zip(self.param_groups, dense.param_groups):
            mine.update({k: v for k, v in loaded.items() if k != "params"})
        self.shards = shards

    def shard_elements(self) -> int:
        """How many moment elements this rank holds (per moment): about 1/N of the model."""
        return sum(shard.exp_avg.size for shard in self.shards)


class ZeroRedundancyAdamW(ZeroRedundancyAdam):
    """AdamW (decoupled weight decay) with its moments sharded over the ranks (ZeRO stage 1).

    ``ZeroRedundancyAdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
    max_norm=None, process_group=None)``; see ``ZeroRedundancyAdam``.
    """

    decoupled = True
    _dense_class = AdamW

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2,
                 max_norm: float | None = None, process_group=None):
        super().__init__(params, lr, betas, eps, weight_decay, max_norm, process_group)


__all__ = ["ZeroRedundancyAdam", "ZeroRedundancyAdamW"]
