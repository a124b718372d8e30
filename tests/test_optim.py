"""Optimizers follow torch.optim's trajectories; schedules and clipping do what they say."""

import math

import numpy as np
import pytest

import tinylm
from tinylm import nn, optim

SHAPES = [(3, 4), (4,), (2, 3, 2)]


def _trajectory(make_ours, make_theirs, steps=50, clip=None, seed=0):
    """Run both optimizers from the same float64 parameters with the same gradients;
    return the parameters after every step, for each side."""
    import torch

    rng = np.random.default_rng(seed)
    start = [rng.standard_normal(s) for s in SHAPES]
    ours = [nn.Parameter(a.copy()) for a in start]
    theirs = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in start]
    our_opt, their_opt = make_ours(ours), make_theirs(theirs)
    our_path, their_path = [], []
    for _ in range(steps):
        grads = [3.0 * rng.standard_normal(s) for s in SHAPES]
        for p, g in zip(ours, grads):
            p.grad = tinylm.Tensor(g.copy())
        for p, g in zip(theirs, grads):
            p.grad = torch.from_numpy(g.copy())
        if clip is not None:
            norm = nn.utils.clip_grad_norm_(ours, clip)
            their_norm = torch.nn.utils.clip_grad_norm_(theirs, clip)
            assert norm == pytest.approx(float(their_norm), rel=1e-12)
        our_opt.step()
        their_opt.step()
        our_path.append([p.numpy().copy() for p in ours])
        their_path.append([p.detach().numpy().copy() for p in theirs])
    return our_path, their_path


CONFIGS = {
    "sgd": (lambda p: optim.SGD(p, lr=0.1), "SGD", dict(lr=0.1)),
    "sgd momentum": (lambda p: optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01), "SGD",
                     dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
    "sgd nesterov": (lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True), "SGD",
                     dict(lr=0.05, momentum=0.9, nesterov=True)),
    "sgd dampening": (lambda p: optim.SGD(p, lr=0.05, momentum=0.5, dampening=0.3), "SGD",
                      dict(lr=0.05, momentum=0.5, dampening=0.3)),
    "adam": (lambda p: optim.Adam(p, lr=0.01), "Adam", dict(lr=0.01)),
    "adam weight decay": (lambda p: optim.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1), "Adam",
                          dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    "adamw": (lambda p: optim.AdamW(p, lr=0.01), "AdamW", dict(lr=0.01)),
    "adamw strong decay": (lambda p: optim.AdamW(p, lr=0.02, weight_decay=0.5), "AdamW",
                           dict(lr=0.02, weight_decay=0.5)),
    "adam amsgrad": (lambda p: optim.Adam(p, lr=0.01, weight_decay=0.1, amsgrad=True), "Adam",
                     dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    "adamw amsgrad": (lambda p: optim.AdamW(p, lr=0.02, betas=(0.5, 0.9), amsgrad=True), "AdamW",
                      dict(lr=0.02, betas=(0.5, 0.9), amsgrad=True)),
}


@pytest.mark.parametrize("clip", [None, 1.0], ids=["unclipped", "clipped"])
@pytest.mark.parametrize("name", CONFIGS)
def test_fifty_steps_follow_torch_optim(name, clip):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: the trajectory comparison needs it")
    make_ours, torch_class, kwargs = CONFIGS[name]
    ours, theirs = _trajectory(make_ours, lambda p: getattr(torch.optim, torch_class)(p, **kwargs), clip=clip)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        for i, (x, y) in enumerate(zip(a, b)):
            np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-12, err_msg=f"{name}: step {step + 1}, parameter {i}")


def test_warmup_cosine_steps_like_torch_lambda_lr_given_the_same_factor():
    """The step counting (factor(0) at construction, one step per call) is torch's."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    factor = optim.lr_scheduler.warmup_cosine(5, 20, min_factor=0.1)
    ours_opt = optim.SGD([nn.Parameter(np.zeros(2))], lr=0.5)
    theirs_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.5)
    ours, theirs = (optim.lr_scheduler.WarmupCosineLR(ours_opt, 5, 20, 0.1),
                    torch.optim.lr_scheduler.LambdaLR(theirs_opt, factor))
    for _ in range(25):
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-15)
        ours_opt.step()
        theirs_opt.step()
        ours.step()
        theirs.step()


def test_warmup_cosine_shape():
    factor = optim.lr_scheduler.warmup_cosine(10, 110, min_factor=0.0)
    assert factor(0) == pytest.approx(0.1)
    assert factor(9) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.5)  # half-way down the cosine
    assert factor(110) == pytest.approx(0.0) and factor(500) == pytest.approx(0.0)
    values = [factor(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_clip_grad_norm_accepts_a_single_tensor():
    p = nn.Parameter(np.zeros(2))
    p.grad = tinylm.Tensor(np.array([3.0, 4.0]))
    assert nn.utils.clip_grad_norm_(p, 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(p.grad.numpy(), [0.6, 0.8], rtol=1e-5)


def test_clip_grad_norm_scales_to_max_norm_and_returns_the_norm_before():
    a, b = nn.Parameter(np.array([3.0, 0.0])), nn.Parameter(np.array([[4.0]]))
    a.grad, b.grad = tinylm.Tensor(np.array([3.0, 0.0])), tinylm.Tensor(np.array([[4.0]]))
    assert nn.utils.clip_grad_norm_([a, b], 1.0) == pytest.approx(5.0)
    total = math.sqrt(float((a.grad.numpy() ** 2).sum() + (b.grad.numpy() ** 2).sum()))
    assert total == pytest.approx(1.0, rel=1e-5)
    assert nn.utils.clip_grad_norm_([a, b], 10.0) == pytest.approx(1.0, rel=1e-5)  # below: unchanged


def test_optimizer_state_dict_round_trip_continues_identically():
    def run(steps, restore_after=None):
        rng = np.random.default_rng(0)
        p = nn.Parameter(np.ones(3))
        opt = optim.AdamW([p], lr=0.1)
        for step in range(steps):
            p.grad = tinylm.Tensor(rng.standard_normal(3))
            opt.step()
            if step == restore_after:
                saved = opt.state_dict()
                opt = optim.AdamW([p], lr=0.1)
                opt.load_state_dict(saved)
        return p.numpy()

    np.testing.assert_array_equal(run(6), run(6, restore_after=2))


def test_adam_in_a_training_loop_reduces_the_loss():
    tinylm.manual_seed(0)
    model = nn.Linear(4, 1, dtype=np.float64)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4))
    y = x @ np.array([[1.0], [-2.0], [0.5], [3.0]])
    opt = optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(200):
        error = model(tinylm.Tensor(x)) - tinylm.Tensor(y)
        loss = (error * error).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 1e-3 * losses[0]


def test_bad_hyperparameters_are_refused():
    p = [nn.Parameter(np.zeros(2))]
    with pytest.raises(ValueError, match="SGD"):
        optim.SGD(p, lr=-1.0)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="Adam"):
        optim.Adam(p, betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])


def test_amsgrad_keeps_the_largest_second_moment_and_divides_by_it():
    p = nn.Parameter(np.zeros(1))
    opt = optim.Adam([p], lr=0.1, betas=(0.0, 0.5), amsgrad=True)
    for g in (4.0, 0.0):
        p.grad = tinylm.Tensor(np.array([g]))
        opt.step()
    state = opt.state[id(p)]
    np.testing.assert_allclose(state["exp_avg_sq"], [4.0])  # 0.5 · (0.5 · 16)
    np.testing.assert_allclose(state["max_exp_avg_sq"], [8.0])  # the step-1 value, larger


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_amsgrad_runs_the_reference_kernel_on_every_backend(backend):
    def run():
        rng = np.random.default_rng(0)
        p = nn.Parameter(np.ones((4, 3), np.float32))
        opt = optim.AdamW([p], lr=0.01, amsgrad=True)
        for _ in range(5):
            p.grad = tinylm.Tensor(rng.standard_normal((4, 3)).astype(np.float32))
            opt.step()
        return p.numpy()

    with tinylm.use_backend("numpy"):
        expected = run()
    with tinylm.use_backend(backend):
        np.testing.assert_array_equal(run(), expected)
