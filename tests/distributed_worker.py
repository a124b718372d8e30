"""Run under ``mpiexec -n N``: data-parallel scenarios, each checked on every rank.

    mpiexec -n 3 python tests/distributed_worker.py RESULTS.json scenario [scenario ...]

Rank 0 writes ``{scenario: "ok" or what went wrong on which rank}`` to RESULTS.json;
tests/test_ddp.py and tests/test_zero.py read it. Everything is float64, and every
data-parallel result is compared with one process doing the same on the whole batch.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import numpy as np
from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tinylm.distributed as dist

LOG: list = []  # the collectives launched, in order: ("all_reduce", array size), ...


def _logged(name: str, collective):
    def call(*args, **kwargs):
        first = args[0] if args else next(iter(kwargs.values()))
        LOG.append((name, int(getattr(first, "size", 0))))
        return collective(*args, **kwargs)
    return call


for _name in ("all_reduce", "broadcast", "all_gather", "reduce_scatter"):
    setattr(dist, _name, _logged(_name, getattr(dist, _name)))

import tinylm  # noqa: E402
from tinylm import nn, optim  # noqa: E402
from tinylm.models.lstm import LSTMLanguageModel  # noqa: E402
from tinylm.nn.parallel import DistributedDataParallel  # noqa: E402
from tinylm.optim.zero import ZeroRedundancyAdamW  # noqa: E402

GLOBAL_BATCH = 12  # divides among 2 and 3 ranks
TOLERANCE = 1e-12


def close(ours, reference, what: str) -> None:
    ours, reference = np.asarray(ours), np.asarray(reference)
    scale = max(float(np.abs(reference).max()), 1e-300)
    error = float(np.abs(ours - reference).max()) / scale
    if not error <= TOLERANCE:
        raise AssertionError(f"{what}: relative error {error:.3g} > {TOLERANCE}")


def rank() -> int:
    return dist.get_rank()


def world() -> int:
    return dist.get_world_size()


def my_rows(array):
    """This rank's equal share of the global batch."""
    n = len(array) // world()
    return array[rank() * n:(rank() + 1) * n]


def make_mlp(seed: int):
    tinylm.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def make_lstm(seed: int):
    tinylm.manual_seed(seed)
    return LSTMLanguageModel(11, embedding_dim=4, hidden_dim=5, n_layers=2, dropout=0.0).double()


def mlp_batch(step: int):
    rng = np.random.default_rng(100 + step)
    return rng.standard_normal((GLOBAL_BATCH, 5)), rng.standard_normal((GLOBAL_BATCH, 3))


def lstm_batch(step: int):
    rng = np.random.default_rng(200 + step)
    return rng.integers(0, 11, (GLOBAL_BATCH, 4)), rng.integers(0, 11, (GLOBAL_BATCH, 4))


def mlp_loss(model, x, y, divide_by=None):
    """Mean squared error over the rows (or the sum divided by ``divide_by``)."""
    out = model(tinylm.Tensor(x))
    squared = ((out - tinylm.Tensor(y)) ** 2).sum()
    return squared / (len(x) * 3 if divide_by is None else divide_by)


def lstm_loss(model, ids, targets):
    logits, _ = model(tinylm.Tensor(ids))
    return nn.functional.cross_entropy(logits.reshape(-1, 11), tinylm.Tensor(targets.reshape(-1)))


CASES = {"mlp": (make_mlp, mlp_batch, mlp_loss), "lstm": (make_lstm, lstm_batch, lstm_loss)}


def identical_on_every_rank(params, what: str) -> None:
    flat = np.concatenate([p.numpy().ravel() for p in params])
    everyone = np.empty(world() * flat.size)  # rank r's parameters at [r * n, (r + 1) * n)
    dist.all_gather(everyone, flat)
    everyone = everyone.reshape(world(), flat.size)
    if not (everyone == everyone[0]).all():
        raise AssertionError(f"{what}: the ranks hold different parameters")


def averaged_by_hand(model):
    """Each local gradient all-reduced on its own (a missing one counts as zeros)."""
    grads = []
    for p in model.parameters():
        g = np.zeros(p.shape) if p.grad is None else p.grad.numpy().copy()
        dist.all_reduce(g, op="avg")
        grads.append(g)
    return grads


# ----------------------------------------------------------------------------- DDP


def buckets_match_plain_all_reduce():
    for name, (make, batch, loss_of) in CASES.items():
        plain = make(0)
        model = make(rank())  # different weights per rank: the wrapper broadcasts rank 0's
        ready_order, launched_when_first_layer_ready = [], []
        first = next(model.parameters())
        first.register_post_accumulate_grad_hook(  # registered before DDP's: runs before its hook
            lambda p: launched_when_first_layer_ready.append(sum(e[0] == "all_reduce" for e in LOG)))
        ddp = DistributedDataParallel(model, bucket_cap_mb=300 / 2**20)
        if len(ddp.bucket_sizes) < 3:
            raise AssertionError(f"{name}: expected several buckets, got {ddp.bucket_sizes}")
        for (_, p), (_, q) in zip(model.named_parameters(), plain.named_parameters()):
            close(p.numpy(), q.numpy(), f"{name}: broadcast weights")
        for p in model.parameters():
            p.register_post_accumulate_grad_hook(lambda p: ready_order.append(id(p)))
        inputs, targets = batch(0)
        LOG.clear()
        loss_of(ddp, my_rows(inputs), my_rows(targets)).backward()
        loss_of(plain, my_rows(inputs), my_rows(targets)).backward()
        for (pname, p), g in zip(model.named_parameters(), averaged_by_hand(plain)):
            close(p.grad.numpy(), g, f"{name}: {pname}'s averaged gradient")
        launched = launched_when_first_layer_ready[-1]
        if not 0 < launched < len(ddp.bucket_sizes):
            raise AssertionError(f"{name}: {launched} of {len(ddp.bucket_sizes)} all-reduces were launched when "
                                 "the first layer's gradient was ready; expected some, not all (overlap)")
        if len(ready_order) != len(list(model.parameters())):
            raise AssertionError(f"{name}: {len(ready_order)} hooks fired")


def ddp_adamw_equals_one_process():
    for name, (make, batch, loss_of) in CASES.items():
        whole = make(0)
        model = make(rank())
        ddp = DistributedDataParallel(model, bucket_cap_mb=500 / 2**20)
        ours = optim.AdamW(ddp.parameters(), lr=0.02, weight_decay=0.1)
        reference = optim.AdamW(whole.parameters(), lr=0.02, weight_decay=0.1)
        for step in range(5):
            inputs, targets = batch(step)
            ours.zero_grad()
            loss_of(ddp, my_rows(inputs), my_rows(targets)).backward()
            ours.step()
            reference.zero_grad()
            loss_of(whole, inputs, targets).backward()
            reference.step()
            identical_on_every_rank(model.parameters(), f"{name} step {step}")
            for (pname, p), q in zip(model.named_parameters(), whole.parameters()):
                close(p.numpy(), q.numpy(), f"{name} step {step}: {pname}")


def no_sync_accumulates_one_big_batch():
    whole, model = make_mlp(0), make_mlp(0)
    ddp = DistributedDataParallel(model, bucket_cap_mb=300 / 2**20)
    inputs, targets = mlp_batch(0)
    x, y = my_rows(inputs), my_rows(targets)
    half = len(x) // 2
    LOG.clear()
    with ddp.no_sync():
        mlp_loss(ddp, x[:half], y[:half], divide_by=len(x) * 3).backward()
    if any(kind == "all_reduce" for kind, _ in LOG):
        raise AssertionError("no_sync: a backward inside no_sync() launched an all-reduce")
    mlp_loss(ddp, x[half:], y[half:], divide_by=len(x) * 3).backward()
    mlp_loss(whole, inputs, targets).backward()
    for (pname, p), q in zip(model.named_parameters(), whole.parameters()):
        close(p.grad.numpy(), q.grad.numpy(), f"no_sync: {pname}")
    # The same module wrapped again: the first wrapper's hooks stay quiet (no forward through it).
    again = DistributedDataParallel(model, bucket_cap_mb=300 / 2**20)
    model.zero_grad()
    whole.zero_grad()
    mlp_loss(again, x, y).backward()
    mlp_loss(whole, inputs, targets).backward()
    for (pname, p), q in zip(model.named_parameters(), whole.parameters()):
        close(p.grad.numpy(), q.grad.numpy(), f"wrapped twice: {pname}")


class Branches(nn.Module):
    """``a`` always used, ``b`` only on rank 0, ``c`` never."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 2), nn.Linear(4, 2), nn.Linear(4, 2)

    def forward(self, x):
        out = self.a(x)
        return out + self.b(x) if rank() == 0 else out


def unused_parameters():
    inputs = my_rows(np.random.default_rng(5).standard_normal((GLOBAL_BATCH, 4)))
    tinylm.manual_seed(0)
    plain = Branches().double()
    tinylm.manual_seed(0)
    model = Branches().double()
    ddp = DistributedDataParallel(model, bucket_cap_mb=40 / 2**20, find_unused_parameters=True)
    for _ in range(2):  # twice: the second round must start clean
        model.zero_grad()
        plain.zero_grad()
        (ddp(tinylm.Tensor(inputs)) ** 2).sum().backward()
        (plain(tinylm.Tensor(inputs)) ** 2).sum().backward()
        for (pname, p), g in zip(model.named_parameters(), averaged_by_hand(plain)):
            if pname.startswith("c."):
                if p.grad is not None:
                    raise AssertionError(f"unused: {pname}, used on no rank, got a gradient")
            else:
                close(p.grad.numpy(), g, f"unused: {pname}")
    tinylm.manual_seed(0)
    strict = DistributedDataParallel(Branches().double(), bucket_cap_mb=40 / 2**20)
    (strict(tinylm.Tensor(inputs)) ** 2).sum().backward()
    try:
        strict(tinylm.Tensor(inputs))
    except RuntimeError as error:
        if "c.weight" not in str(error) or "find_unused_parameters" not in str(error):
            raise AssertionError(f"unused: the error does not name c.weight and the option: {error}") from None
    else:
        raise AssertionError("unused: a forward after an unfinished averaging did not raise")


# ----------------------------------------------------------------------------- ZeRO


def groups_of(model, decay: float = 0.1):
    weights = [p for n, p in model.named_parameters() if not n.endswith("bias")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    return [{"params": weights, "weight_decay": decay}, {"params": biases, "weight_decay": 0.0}]


def zero_equals_ddp_adamw():
    for max_norm in (None, 0.05):
        for name, (make, batch, loss_of) in CASES.items():
            sharded_model, model = make(0), make(0)
            ddp = DistributedDataParallel(model)
            ours = ZeroRedundancyAdamW(groups_of(sharded_model), lr=0.02, max_norm=max_norm)
            reference = optim.AdamW(groups_of(model), lr=0.02)
            what = f"{name}, max_norm={max_norm}"
            for step in range(5):
                inputs, targets = batch(step)
                x, y = my_rows(inputs), my_rows(targets)
                ours.zero_grad()
                loss_of(sharded_model, x, y).backward()
                norm = ours.step()
                reference.zero_grad()
                loss_of(ddp, x, y).backward()
                if max_norm is not None:
                    reference_norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm)
                    close(norm, reference_norm, f"{what} step {step}: the gradient norm")
                    if step == 0 and not norm > max_norm:
                        raise AssertionError(f"{what}: the norm {norm} is not clipped; lower max_norm")
                reference.step()
                identical_on_every_rank(sharded_model.parameters(), f"{what} step {step}")
                for (pname, p), q in zip(sharded_model.named_parameters(), model.parameters()):
                    close(p.numpy(), q.numpy(), f"{what} step {step}: {pname}")
            total = [sum(p.numel() for p in g["params"]) for g in ours.param_groups]
            expected = sum(-(-t // world()) for t in total)
            if ours.shard_elements() != expected or not ours.shard_elements() <= sum(total) / world() + 2:
                raise AssertionError(f"{what}: this rank holds {ours.shard_elements()} moment elements "
                                     f"of {sum(total)}, expected {expected}")


def zero_state_dict_round_trip():
    make, batch, loss_of = CASES["lstm"]
    sharded_model, model = make(0), make(0)
    ddp = DistributedDataParallel(model)
    ours = ZeroRedundancyAdamW(groups_of(sharded_model), lr=0.02)
    reference = optim.AdamW(groups_of(model), lr=0.02)

    def train(steps, pairs):
        for step in steps:
            inputs, targets = batch(step)
            for opt, net in pairs:
                opt.zero_grad()
                loss_of(net, my_rows(inputs), my_rows(targets)).backward()
                opt.step()

    train(range(3), [(ours, sharded_model), (reference, ddp)])
    saved, expected = ours.state_dict(), reference.state_dict()
    if saved["param_groups"] != expected["param_groups"] or sorted(saved["state"]) != sorted(expected["state"]):
        raise AssertionError("state_dict: not AdamW's layout")
    for index, state in expected["state"].items():
        if saved["state"][index]["step"] != state["step"]:
            raise AssertionError("state_dict: wrong step")
        for key in ("exp_avg", "exp_avg_sq"):
            close(saved["state"][index][key], state[key], f"state_dict: parameter {index}'s {key}")
    # Into a fresh sharded optimizer, and (the other way) into the plain AdamW: both continue alike.
    resumed_model = make(0)
    resumed_model.load_state_dict(sharded_model.state_dict())
    resumed = ZeroRedundancyAdamW(groups_of(resumed_model), lr=0.5)
    resumed.load_state_dict(saved)
    if resumed.param_groups[0]["lr"] != 0.02:
        raise AssertionError("load_state_dict: the groups' settings were not loaded")
    reference.load_state_dict(saved)
    train(range(3, 5), [(resumed, resumed_model), (reference, ddp)])
    for (pname, p), q in zip(resumed_model.named_parameters(), model.parameters()):
        close(p.numpy(), q.numpy(), f"resumed: {pname}")


SCENARIOS = {f.__name__: f for f in [
    buckets_match_plain_all_reduce, ddp_adamw_equals_one_process, no_sync_accumulates_one_big_batch,
    unused_parameters, zero_equals_ddp_adamw, zero_state_dict_round_trip,
]}


def main() -> None:
    out, names = sys.argv[1], sys.argv[2:]
    dist.init_process_group()
    results = {}
    for name in names:
        try:
            SCENARIOS[name]()
            outcome = "ok"
        except Exception:  # reported, with the rank, to the test that asked
            outcome = f"rank {rank()}: {traceback.format_exc()}"
        everyone = MPI.COMM_WORLD.gather(outcome, root=0)
        if rank() == 0:
            failures = [o for o in everyone if o != "ok"]
            results[name] = "ok" if not failures else "\n".join(failures)
    if rank() == 0:
        Path(out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
