"""DistributedDataParallel(find_unused_parameters=True) where the loop zeroes the gradients
between forward and backward, as tinylm.train does: a parameter unused on one rank must
take part with this step's gradient (none: zeros), not the previous step's average.
Run under ``mpiexec -n 2``; exits non-zero (ending every rank) on a mismatch."""

import sys

import numpy as np

import tinylm
import tinylm.distributed as dist
from tinylm import nn
from tinylm.nn.parallel import DistributedDataParallel

dist.init_process_group()
rank = dist.get_rank()


class Branches(nn.Module):
    """b is used on rank 0 only."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 2), nn.Linear(4, 2)

    def forward(self, x):
        out = self.a(x)
        return out + self.b(x) if rank == 0 else out


tinylm.manual_seed(0)
model = Branches().double()
tinylm.manual_seed(0)
plain = Branches().double()
ddp = DistributedDataParallel(model, find_unused_parameters=True)
x = tinylm.Tensor(np.random.default_rng(rank).standard_normal((3, 4)))
for step in range(3):
    out = ddp(x)
    for p in model.parameters():  # after the forward, before backward (the optimizer's zero_grad)
        p.grad = None
    (out**2).sum().backward()
    for p in plain.parameters():
        p.grad = None
    (plain(x) ** 2).sum().backward()
    expected = np.zeros((2, 4)) if plain.b.weight.grad is None else plain.b.weight.grad.numpy().copy()
    dist.all_reduce(expected, op="avg")
    if not np.allclose(model.b.weight.grad.numpy(), expected, rtol=1e-12, atol=1e-14):
        sys.exit(f"rank {rank} step {step}: b.weight.grad is not this step's average")
