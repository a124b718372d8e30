"""``DistributedDataParallel``: data-parallel training, gradients averaged in buckets while
backward is still running (torch's design, "DDP: bucketing and overlapping").

Every rank holds the same model and takes its own share of each batch. After backward
each rank has the gradient of *its* loss; averaging those over the ranks gives the
gradient of the mean loss over the whole batch, so every rank's optimizer then makes the
same step and the copies stay identical.

Averaging one gradient at a time would send many small messages, and averaging all of
them after backward would leave the network idle while backward computes. So the
parameters are split into *buckets* of about ``bucket_cap_mb`` megabytes, in reverse
registration order (the order backward tends to finish them: the output layer's
gradients are complete first). Each parameter carries a post-accumulate-grad hook
(``Tensor.register_post_accumulate_grad_hook``); when it fires, the parameter's complete
gradient is copied into its slot of its bucket's flat buffer, and when a bucket's last
gradient is in, one asynchronous all-reduce (``op="avg"``) of the whole flat buffer is
launched, and backward goes on computing the earlier layers' gradients meanwhile.

Buckets are launched strictly in bucket order (a bucket that is ready early waits for
the ones before it), because a collective must be issued in the same order on every
rank, and backward need not finish the parameters in the same order everywhere.

When is the averaging finished? The hook that launches the *last* bucket then waits for
every bucket's all-reduce and writes the averaged values back into each ``.grad``. That
hook runs during the same ``backward`` call, so when ``loss.backward()`` returns, every
``.grad`` already holds the average and the optimizer can read it, as with torch.

Unused parameters (torch's ``find_unused_parameters``): a parameter that gets no gradient
in a backward never fires its hook, so its bucket would never be launched. With
``find_unused_parameters=True`` each forward walks the graph behind the outputs; the
parameters it cannot reach are marked ready when backward starts (its first gradient):
they take part with their ``.grad`` as it is then (a sum kept from ``no_sync`` steps, or
None after the loop's ``zero_grad``: zeros). One more small all-reduce at the
end tells every rank which parameters had a gradient anywhere: a parameter with none on
any rank keeps ``.grad`` None (so the optimizer skips it, as in torch); one that had a
gradient on some rank gets the average, counting the others as zeros. With the default
``False`` the graph is not walked (it costs a pass over the graph every step), and a
forward that finds the previous backward's averaging unfinished raises an error naming
the parameters that got no gradient (when every rank missed the same ones; ranks that miss
different parameters wait in different all-reduces, and hang: use the option then).

``no_sync()`` is for gradient accumulation: backward inside it only adds into the local
``.grad``; the next backward outside it averages the accumulated sums. (What counts, as in
torch, is where the *forward* ran.) Only the first backward after a forward averages: a
second one through the same graph (``retain_graph=True``) only accumulates locally, and so
does a backward through the bare module, not through the wrapper's forward.

The collectives come from ``tinylm.distributed`` (or the ``process_group`` given: any
object with its ``get_rank``, ``get_world_size``, ``broadcast`` and ``all_reduce``).
With one process, or when no process group has been started, the wrapper changes nothing:
it calls the module and registers no hooks.
"""

from __future__ import annotations

import contextlib

import numpy as np

from tinylm import backends
from tinylm.autograd import Tensor, is_grad_enabled
from tinylm.nn.module import Module


def default_process_group():
    """``tinylm.distributed`` when a process group has been started, else None (one process)."""
    try:
        from tinylm import distributed
    except ImportError:  # a tinylm without the distributed package runs one process
        return None
    return distributed if distributed.is_initialized() else None


def _contiguous(tensor: Tensor):
    """The tensor's array, made C-contiguous in place if it was not (collectives need that)."""
    if not tensor.data.flags.c_contiguous:
        tensor.data = backends.get_array_module(tensor.data).ascontiguousarray(tensor.data)
    return tensor.data


def broadcast_module_state(module: Module, group, src: int = 0, buffers_only: bool = False) -> None:
    """Copy every parameter (unless ``buffers_only``) and buffer of ``module`` from rank ``src``
    to all ranks, in place, so that every rank starts from the same weights."""
    tensors = [] if buffers_only else list(module.parameters())
    tensors += list(module.buffers())
    for tensor in tensors:
        group.broadcast(_contiguous(tensor), src=src)


class _Bucket:
    """Parameters whose gradients are averaged together, through one flat buffer.

    ``offsets[i]`` is where ``params[i]``'s gradient starts in ``flat``. ``pending`` counts
    the gradients this backward still waits for; ``work`` is the launched all-reduce.
    """

    def __init__(self, params: list, xp, dtype):
        self.params = params
        self.offsets = []
        size = 0
        for p in params:
            self.offsets.append(size)
            size += p.numel()
        self.flat = xp.zeros(size, dtype=dtype)
        self.pending = len(params)
        self.work = None


class DistributedDataParallel(Module):
    """Wrap ``module`` for data-parallel training (torch's ``DistributedDataParallel``).

    ``DistributedDataParallel(module, bucket_cap_mb=25, broadcast_buffers=True,
    find_unused_parameters=False, process_group=None)``

    - At construction the parameters and buffers are broadcast from rank 0.
    - ``forward(*args, **kwargs)`` calls ``module`` (with ``broadcast_buffers`` it first
      broadcasts the buffers from rank 0 again, as torch does); everything else of the
      model is reached through ``.module``.
    - Each backward that follows a forward through this wrapper averages the gradients
      over the ranks, bucket by bucket, overlapping backward (see the module docstring);
      when ``backward`` returns every ``.grad`` holds the average.
    - ``no_sync()``: a context in which backward only accumulates locally.

    The optimizer is built on ``ddp.parameters()`` or ``module.parameters()``: the same
    tensors. Parameter names in ``state_dict`` carry the ``module.`` prefix, as in torch.
    """

    def __init__(self, module: Module, bucket_cap_mb: float = 25, broadcast_buffers: bool = True,
                 find_unused_parameters: bool = False, process_group=None):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: module must be a tinylm Module, got {type(module).__name__}")
        if not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be > 0, got {bucket_cap_mb}")
        self.module = module
        self.bucket_cap_mb = float(bucket_cap_mb)
        self.broadcast_buffers = bool(broadcast_buffers)
        self.find_unused_parameters = bool(find_unused_parameters)
        self.require_backward_grad_sync = True  # torch's name; False inside no_sync()
        self.process_group = process_group if process_group is not None else default_process_group()
        group = self.process_group
        self.world_size = 1 if group is None else int(group.get_world_size())
        self.rank = 0 if group is None else int(group.get_rank())
        self._buckets: list[_Bucket] = []
        self._slot: dict[int, tuple[int, int]] = {}  # id(param) -> (bucket index, position in bucket)
        self._hook_handles = []
        # "syncing" after a forward that records a graph outside no_sync: the next backward averages;
        # "done" once it has; "idle" before any such forward, or after one inside no_sync. Backward
        # only averages while "syncing": otherwise it accumulates locally.
        self._round = "idle"
        self._arrived = 0  # gradients that arrived through the hooks in this round
        self._next_bucket = 0  # the first bucket not yet launched (they launch in order)
        self._ready: set[int] = set()  # id(param) of parameters already in their bucket this backward
        if self.world_size == 1:
            return  # one process: nothing to average, no hooks
        broadcast_module_state(module, group)
        self._build_buckets()
        for p in self._trained_params():
            self._hook_handles.append(p.register_post_accumulate_grad_hook(self._on_gradient_ready))

    # ---- setup
    def _trained_params(self) -> list:
        return [p for p in self.module.parameters() if p.requires_grad]

    def _build_buckets(self) -> None:
        """Parameters in reverse registration order, cut into buckets of at most
        ``bucket_cap_mb`` megabytes (a larger parameter gets a bucket of its own); a bucket
        holds one dtype on one device, since its buffer is one flat array."""
        cap = self.bucket_cap_mb * 1024 * 1024
        groups, current, size = [], [], 0
        for p in reversed(self._trained_params()):
            nbytes = p.numel() * p.dtype.itemsize
            same_kind = not current or (current[0].dtype == p.dtype and current[0].device == p.device)
            if current and (size + nbytes > cap or not same_kind):
                groups.append(current)
                current, size = [], 0
            current.append(p)
            size += nbytes
        if current:
            groups.append(current)
        for index, params in enumerate(groups):
            xp = backends.get_array_module(params[0].data)
            self._buckets.append(_Bucket(params, xp, params[0].dtype))
            for position, p in enumerate(params):
                self._slot[id(p)] = (index, position)

    @property
    def bucket_sizes(self) -> list[int]:
        """How many parameters each bucket holds, in launch order (empty with one process)."""
        return [len(b.params) for b in self._buckets]

    # ---- forward
    def forward(self, *args, **kwargs):
        if self.world_size == 1:
            return self.module(*args, **kwargs)
        recording = is_grad_enabled()
        if recording:
            self._check_previous_backward_finished()
            self._round = "idle"
        if self.broadcast_buffers:
            broadcast_module_state(self.module, self.process_group, buffers_only=True)
        outputs = self.module(*args, **kwargs)
        if recording and self.require_backward_grad_sync:
            self._prepare_for_backward(outputs)
        return outputs

    def _check_previous_backward_finished(self) -> None:
        if self._round != "syncing" or self._arrived == 0:
            return  # no backward followed the last forward (it was abandoned): start afresh
        missing = [name for name, p in self.module.named_parameters()
                   if p.requires_grad and id(p) not in self._ready]
        raise RuntimeError(
            "DistributedDataParallel: the previous backward did not finish averaging the gradients, because "
            f"these parameters got no gradient: {', '.join(missing)}. Pass find_unused_parameters=True "
            "if some parameters are not used in every forward"
        )

    def _prepare_for_backward(self, outputs) -> None:
        """Start a fresh round: every bucket waits for all its gradients again."""
        self._round = "syncing"
        self._next_bucket = 0
        self._ready = set()
        self._arrived = 0
        for bucket in self._buckets:
            if bucket.work is not None:  # launched by an abandoned round: let it complete
                bucket.work.wait()
            bucket.pending = len(bucket.params)
            bucket.work = None
        self._unreached = []
        if self.find_unused_parameters:
            reached = _parameters_reached_from(outputs)
            # Marked ready when backward starts (the first hook), not now: a training loop
            # zeroes the gradients between forward and backward, and the slot must get this
            # step's .grad, not the previous step's.
            self._unreached = [p for p in self._trained_params() if id(p) not in reached]

    # ---- during backward
    def _on_gradient_ready(self, param) -> None:
        """The post-accumulate-grad hook: ``param.grad`` is complete for this backward."""
        if self._round != "syncing":
            return  # after a forward inside no_sync(), or a second backward after one forward: local only
        if id(param) in self._ready:
            raise RuntimeError(f"DistributedDataParallel: the gradient of a parameter of shape {param.shape} "
                               "became ready twice in one backward")
        unreached, self._unreached = self._unreached, []
        for p in unreached:
            self._mark_ready(p)
        self._arrived += 1
        self._mark_ready(param)

    def _mark_ready(self, param) -> None:
        """Copy ``param``'s gradient (zeros if it has none) into its bucket; launch the buckets
        that are complete, in order; after the last one, finish the round."""
        self._ready.add(id(param))
        index, position = self._slot[id(param)]
        bucket = self._buckets[index]
        start = bucket.offsets[position]
        view = bucket.flat[start:start + param.numel()]
        if param.grad is None:
            view[...] = 0
        else:
            view[...] = param.grad.data.reshape(-1)
        bucket.pending -= 1
        while self._next_bucket < len(self._buckets) and self._buckets[self._next_bucket].pending == 0:
            launched = self._buckets[self._next_bucket]
            launched.work = self.process_group.all_reduce(launched.flat, op="avg", async_op=True)
            self._next_bucket += 1
        if self._next_bucket == len(self._buckets):
            self._finish()

    def _finish(self) -> None:
        """Wait for every bucket's all-reduce and write the averages into the ``.grad`` s."""
        had_gradient = None
        if self.find_unused_parameters:
            # Which parameters have a gradient on some rank? (a flag each, max over the ranks)
            params = [p for b in self._buckets for p in b.params]
            had_gradient = np.array([p.grad is not None for p in params], dtype=np.float64)
            self.process_group.all_reduce(had_gradient, op="max")
            had_gradient = dict(zip(map(id, params), had_gradient > 0))
        for bucket in self._buckets:
            if bucket.work is not None:
                bucket.work.wait()
            for p, start in zip(bucket.params, bucket.offsets):
                averaged = bucket.flat[start:start + p.numel()].reshape(p.shape)
                if p.grad is not None:
                    p.grad.data[...] = averaged
                elif had_gradient is None or had_gradient[id(p)]:
                    p.grad = Tensor(averaged.copy())
        self._round = "done"

    # ---- gradient accumulation
    @contextlib.contextmanager
    def no_sync(self):
        """Inside ``with ddp.no_sync():`` forward and backward only accumulate gradients
        locally; the first backward after it averages the accumulated sums."""
        previous, self.require_backward_grad_sync = self.require_backward_grad_sync, False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    def extra_repr(self) -> str:
        return f"world_size={self.world_size}, buckets={len(self._buckets)}"


def _parameters_reached_from(outputs) -> set[int]:
    """``id`` of every leaf tensor the graph behind ``outputs`` (tensors, possibly nested
    in tuples, lists and dicts) leads to."""
    stack = [outputs]
    functions, seen, leaves = [], set(), set()
    while stack:  # the tensors among the outputs
        item = stack.pop()
        if isinstance(item, Tensor):
            if item.creator is None:
                leaves.add(id(item))
            elif id(item.creator) not in seen:
                seen.add(id(item.creator))
                functions.append(item.creator)
        elif isinstance(item, (tuple, list)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    while functions:
        for x in functions.pop().inputs or ():
            if not x.requires_grad:
                continue
            if x.creator is None:
                leaves.add(id(x))
            elif id(x.creator) not in seen:
                seen.add(id(x.creator))
                functions.append(x.creator)
    return leaves
