"""ZeRO stage 1 (sharded AdamW): the same steps as DDP + AdamW, 1/N of the moments per rank.

The multi-process cases run tests/distributed_worker.py under ``mpiexec -n 2`` and ``-n 3``
(skipped, with the reason, without mpi4py and mpiexec); one process needs no launcher.
"""

import numpy as np
import pytest
from distributed_run import run_scenarios

import tinylm
from tinylm import nn, optim
from tinylm.optim.zero import ZeroRedundancyAdam, ZeroRedundancyAdamW

SCENARIOS = ["zero_equals_ddp_adamw", "zero_state_dict_round_trip"]


@pytest.fixture(scope="module", params=[2, 3], ids=lambda n: f"{n}_ranks")
def results(request, tmp_path_factory):
    return run_scenarios(request.param, SCENARIOS, tmp_path_factory.mktemp("zero"))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_zero_scenario_on_every_rank(results, scenario):
    assert results[scenario] == "ok", results[scenario]


def _model(seed=0):
    tinylm.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()


def _groups(model):
    return [{"params": [p for n, p in model.named_parameters() if "weight" in n], "weight_decay": 0.3},
            {"params": [p for n, p in model.named_parameters() if "bias" in n], "weight_decay": 0.0}]


def _train(pairs, steps, max_norm=None):
    rng = np.random.default_rng(1)
    for _ in range(steps):
        x = tinylm.Tensor(rng.standard_normal((6, 4)))
        for opt, net in pairs:
            opt.zero_grad()
            (net(x) ** 3).mean().backward()
            if max_norm is not None and not isinstance(opt, ZeroRedundancyAdam):
                nn.utils.clip_grad_norm_(net.parameters(), max_norm)
            opt.step()


@pytest.mark.parametrize("cls, dense", [(ZeroRedundancyAdamW, optim.AdamW), (ZeroRedundancyAdam, optim.Adam)])
@pytest.mark.parametrize("max_norm", [None, 0.01])
def test_one_process_is_adam_with_flat_moments(cls, dense, max_norm):
    ours, theirs = _model(), _model()
    sharded, plain = cls(_groups(ours), lr=0.05, max_norm=max_norm), dense(_groups(theirs), lr=0.05)
    _train([(sharded, ours), (plain, theirs)], 4, max_norm)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-12, atol=1e-15)
    assert sharded.shard_elements() == sum(p.numel() for p in ours.parameters())


def test_state_dict_is_adamw_format_and_loads_both_ways():
    ours, theirs = _model(), _model()
    sharded, plain = ZeroRedundancyAdamW(_groups(ours), lr=0.05), optim.AdamW(_groups(theirs), lr=0.05)
    _train([(sharded, ours), (plain, theirs)], 3)
    saved, expected = sharded.state_dict(), plain.state_dict()
    assert saved["param_groups"] == expected["param_groups"]
    for index, state in expected["state"].items():
        assert saved["state"][index]["step"] == state["step"] == 3
        for key in ("exp_avg", "exp_avg_sq"):
            assert saved["state"][index][key].shape == state[key].shape
            np.testing.assert_allclose(saved["state"][index][key], state[key], rtol=1e-12, atol=1e-18)
    fresh = ZeroRedundancyAdamW(_groups(ours), lr=0.05)
    fresh.load_state_dict(expected)  # AdamW's own checkpoint
    again = fresh.state_dict()
    for index, state in expected["state"].items():
        np.testing.assert_array_equal(again["state"][index]["exp_avg"], state["exp_avg"])


def test_bad_settings_and_checkpoints_are_refused():
    with pytest.raises(ValueError, match="ZeroRedundancyAdamW: max_norm must be > 0"):
        ZeroRedundancyAdamW(_model().parameters(), max_norm=0)
    mixed = [nn.Parameter(np.zeros(3)), nn.Parameter(np.zeros(3, dtype=np.float32))]
    with pytest.raises(ValueError, match="group 0 mixes dtypes"):
        ZeroRedundancyAdamW(mixed)
    model = _model()
    sharded = ZeroRedundancyAdamW(model.parameters())
    state = {"state": {0: {"step": 1, "exp_avg": np.zeros((5, 4)), "exp_avg_sq": np.zeros((5, 4))}},
             "param_groups": [{**{k: v for k, v in sharded.param_groups[0].items() if k != "params"},
                               "params": [0, 1, 2, 3]}]}
    with pytest.raises(ValueError, match=r"group 0 has step counts \[1, None, None, None\]"):
        sharded.load_state_dict(state)


def test_a_group_added_later_gets_its_own_shard():
    ours, theirs = _model(), _model()
    first, second = _groups(ours)
    sharded = ZeroRedundancyAdamW([first], lr=0.05)
    sharded.add_param_group(second)
    plain = optim.AdamW(_groups(theirs), lr=0.05)
    assert len(sharded.shards) == 2
    _train([(sharded, ours), (plain, theirs)], 2)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-12, atol=1e-15)
