"""DistributedDataParallel: buckets averaged during backward equal one process on the whole batch.

The multi-process cases run tests/distributed_worker.py under ``mpiexec -n 2`` and ``-n 3``
(skipped, with the reason, without mpi4py and mpiexec); one process needs no launcher.
"""

import numpy as np
import pytest
from distributed_run import run_scenarios

import tinylm
from tinylm import nn, optim
from tinylm.nn.parallel import DistributedDataParallel

SCENARIOS = ["buckets_match_plain_all_reduce", "ddp_adamw_equals_one_process",
             "no_sync_accumulates_one_big_batch", "unused_parameters"]


@pytest.fixture(scope="module", params=[2, 3], ids=lambda n: f"{n}_ranks")
def results(request, tmp_path_factory):
    return run_scenarios(request.param, SCENARIOS, tmp_path_factory.mktemp("ddp"))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_data_parallel_scenario_on_every_rank(results, scenario):
    assert results[scenario] == "ok", results[scenario]


def _mlp(seed=0):
    tinylm.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()


def test_one_process_without_a_launcher_is_the_plain_model():
    model, twin = _mlp(), _mlp()
    ddp = DistributedDataParallel(model, bucket_cap_mb=1e-4)
    assert ddp.world_size == 1 and ddp.bucket_sizes == []
    assert all(not p._post_accumulate_hooks for p in model.parameters())  # no hooks at all
    ours, theirs = optim.AdamW(ddp.parameters(), lr=0.1), optim.AdamW(twin.parameters(), lr=0.1)
    x = tinylm.Tensor(np.random.default_rng(0).standard_normal((3, 4)))
    for _ in range(3):
        for opt, net in ((ours, ddp), (theirs, twin)):
            opt.zero_grad()
            (net(x) ** 2).mean().backward()
            opt.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
    with ddp.no_sync():
        (ddp(x) ** 2).mean().backward()


def test_it_is_exported_and_keeps_torch_names():
    assert nn.DistributedDataParallel is DistributedDataParallel
    assert nn.parallel.DistributedDataParallel is DistributedDataParallel
    ddp = DistributedDataParallel(_mlp())
    assert list(ddp.state_dict())[0] == "module.0.weight"  # torch's prefix
    assert ddp.module.__class__ is nn.Sequential


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="DistributedDataParallel: module must be a tinylm Module"):
        DistributedDataParallel(lambda x: x)
    with pytest.raises(ValueError, match="bucket_cap_mb must be > 0, got 0"):
        DistributedDataParallel(_mlp(), bucket_cap_mb=0)


def test_an_unused_parameter_takes_part_with_this_steps_gradient_when_the_loop_zeroes_after_forward():
    import subprocess
    import sys
    from pathlib import Path

    from distributed_run import mpiexec

    script = Path(__file__).parent / "distributed_scripts" / "unused_after_forward.py"
    result = subprocess.run([mpiexec(), "-n", "2", sys.executable, str(script)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
