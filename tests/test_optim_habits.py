"""PyTorch habits work as in PyTorch: what a torch user writes around an optimizer
(frozen parameters, ``zero_grad``, ``step(closure)``, parameter groups, a torch state
dict) does what torch does, checked against torch where it is installed, and the usual
mistakes (the model instead of its parameters, a state that does not fit) fail at
once with a message that says what to do. (Clipping: test_clip_grad.py; schedules:
test_lr_scheduler.py; AMSGrad: test_optim.py.)"""

import numpy as np
import pytest

import tinylm
from tinylm import nn, optim


def _torch():
    return pytest.importorskip("torch", reason="PyTorch is not installed: the comparison with torch needs it")


def _twin_linears(seed=0):
    """A tinylm and a torch Linear(4, 2) with the same float64 weights, and data."""
    torch = _torch()
    tinylm.manual_seed(seed)
    ours = nn.Linear(4, 2, dtype=np.float64)
    theirs = torch.nn.Linear(4, 2, dtype=torch.float64)
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight.numpy().copy()))
        theirs.bias.copy_(torch.from_numpy(ours.bias.numpy().copy()))
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((16, 4)), rng.standard_normal((16, 2))
    return ours, theirs, x, y


def _our_loss(model, x, y):
    error = model(tinylm.Tensor(x)) - tinylm.Tensor(y)
    return (error * error).mean()


def _their_loss(model, x, y):
    torch = _torch()
    return ((model(torch.from_numpy(x)) - torch.from_numpy(y)) ** 2).mean()


def _assert_same_weights(ours, theirs, **tolerance):
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), err_msg=name, **(tolerance or dict(rtol=1e-12)))


# ---------------------------------------------------------------- 1. frozen parameters


@pytest.mark.parametrize("make", [optim.SGD, optim.Adam, optim.AdamW], ids=["SGD", "Adam", "AdamW"])
def test_a_frozen_parameter_is_accepted_and_never_updated(make):
    model = nn.Linear(3, 2, dtype=np.float64)
    model.weight.requires_grad = False
    frozen = model.weight.numpy().copy()
    opt = make(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        _our_loss(model, np.ones((5, 3)), np.zeros((5, 2))).backward()
        opt.step()
    assert model.weight.grad is None
    np.testing.assert_array_equal(model.weight.numpy(), frozen)
    assert not np.array_equal(model.bias.numpy(), 0)  # the rest trains


def test_training_with_a_frozen_weight_follows_torch():
    ours, theirs, x, y = _twin_linears()
    ours.weight.requires_grad = False
    theirs.weight.requires_grad_(False)
    our_opt, their_opt = optim.Adam(ours.parameters(), lr=0.05), _torch().optim.Adam(theirs.parameters(), lr=0.05)
    for _ in range(10):
        our_opt.zero_grad()
        their_opt.zero_grad()
        _our_loss(ours, x, y).backward()
        _their_loss(theirs, x, y).backward()
        our_opt.step()
        their_opt.step()
    _assert_same_weights(ours, theirs)
    assert len(our_opt.state_dict()["state"]) == len(their_opt.state_dict()["state"]) == 1  # the bias only


# ------------------------------------------------- 2. zero_grad, step(closure), groups


def test_zero_grad_sets_gradients_to_none_by_default_as_torch_2():
    p = nn.Parameter(np.ones(3))
    p.grad = tinylm.Tensor(np.ones(3))
    optim.SGD([p], lr=0.1).zero_grad()
    assert p.grad is None


def test_zero_grad_set_to_none_false_fills_the_gradients_with_zeros():
    p, unused = nn.Parameter(np.ones(3)), nn.Parameter(np.ones(2))
    p.grad = tinylm.Tensor(np.ones(3))
    optim.SGD([p, unused], lr=0.1).zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad.numpy(), np.zeros(3))
    assert unused.grad is None  # no gradient stays no gradient, as in torch


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_step_with_a_closure_returns_its_loss_and_follows_torch(name):
    torch = _torch()
    ours, theirs, x, y = _twin_linears()
    our_opt = getattr(optim, name)(ours.parameters(), lr=0.05)
    their_opt = getattr(torch.optim, name)(theirs.parameters(), lr=0.05)

    def our_closure():
        our_opt.zero_grad()
        loss = _our_loss(ours, x, y)
        loss.backward()
        return loss

    def their_closure():
        their_opt.zero_grad()
        loss = _their_loss(theirs, x, y)
        loss.backward()
        return loss

    for _ in range(5):
        with tinylm.no_grad():  # the closure records its graph all the same, as torch's enable_grad
            our_loss = our_opt.step(our_closure)
        their_loss = their_opt.step(their_closure)
        assert our_loss.item() == pytest.approx(their_loss.item(), rel=1e-12)
    _assert_same_weights(ours, theirs)
    assert our_opt.step() is None


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_parameter_groups_with_their_own_settings_follow_torch(name):
    torch = _torch()
    ours, theirs, x, y = _twin_linears()
    settings = {"SGD": (dict(lr=0.1, momentum=0.9), dict(lr=0.01, momentum=0.5, weight_decay=0.1)),
                "Adam": (dict(lr=0.01), dict(lr=0.05, betas=(0.8, 0.9), weight_decay=0.1)),
                "AdamW": (dict(lr=0.01), dict(lr=0.05, weight_decay=0.0, eps=1e-6))}[name]
    defaults, bias_settings = settings
    our_opt = getattr(optim, name)([{"params": [ours.weight]}, {"params": [ours.bias], **bias_settings}], **defaults)
    their_opt = getattr(torch.optim, name)([{"params": [theirs.weight]}, {"params": [theirs.bias], **bias_settings}],
                                           **defaults)
    for _ in range(10):
        our_opt.zero_grad()
        their_opt.zero_grad()
        _our_loss(ours, x, y).backward()
        _their_loss(theirs, x, y).backward()
        our_opt.step()
        their_opt.step()
    _assert_same_weights(ours, theirs)
    assert [g["lr"] for g in our_opt.param_groups] == [g["lr"] for g in their_opt.param_groups]


def test_add_param_group_adds_a_group_that_takes_the_defaults_and_trains_as_torch():
    torch = _torch()
    ours, theirs, x, y = _twin_linears()
    our_opt, their_opt = optim.Adam([ours.weight], lr=0.01), torch.optim.Adam([theirs.weight], lr=0.01)
    for step in range(8):
        if step == 3:  # unfreeze the bias part-way, with its own lr
            our_opt.add_param_group({"params": ours.bias, "lr": 0.1})
            their_opt.add_param_group({"params": theirs.bias, "lr": 0.1})
        our_opt.zero_grad()
        their_opt.zero_grad()
        _our_loss(ours, x, y).backward()
        _their_loss(theirs, x, y).backward()
        our_opt.step()
        their_opt.step()
    _assert_same_weights(ours, theirs)
    assert our_opt.param_groups[1]["betas"] == (0.9, 0.999)  # a default


def test_add_param_group_refuses_a_parameter_already_optimized_and_a_set():
    p, q = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(2))
    opt = optim.SGD([p], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [q, p]})
    with pytest.raises(TypeError, match="not a set"):
        opt.add_param_group({"params": {q}})
    assert len(opt.param_groups) == 1


# ------------------------------------------------------------------ 3. clear errors


def test_passing_the_model_instead_of_its_parameters_says_what_to_pass():
    model = nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r"Adam: got the module Linear itself; pass its parameters: "
                                        r"Adam\(model.parameters\(\), \.\.\.\)"):
        optim.Adam(model)
    with pytest.raises(TypeError, match=r"call it: SGD\(model.parameters\(\)"):
        optim.SGD(model.parameters, lr=0.1)
    with pytest.raises(TypeError, match=r"pass a list: AdamW\(\[param\]"):
        optim.AdamW(model.weight)


def test_a_used_up_parameter_generator_is_explained():
    model = nn.Linear(2, 2)
    params = model.parameters()
    optim.Adam(params)
    with pytest.raises(ValueError, match="empty the second time"):
        optim.Adam(params)


def _torch_adam_state(name="Adam", steps=3, **kwargs):
    """A torch optimizer's state_dict after some steps, and the parameters it trained."""
    torch = _torch()
    rng = np.random.default_rng(0)
    start = [rng.standard_normal((3, 2)), rng.standard_normal(2)]
    params = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in start]
    opt = getattr(torch.optim, name)(params, lr=0.01, **kwargs)
    for _ in range(steps):
        for p in params:
            p.grad = torch.from_numpy(rng.standard_normal(tuple(p.shape)))
        opt.step()
    return opt, params


@pytest.mark.parametrize("name, kwargs", [("Adam", {}), ("AdamW", {}), ("AdamW", dict(weight_decay=0.1)),
                                          ("Adam", dict(amsgrad=True)), ("AdamW", dict(amsgrad=True))])
def test_a_torch_adam_state_dict_loads_and_the_training_continues_as_in_torch(name, kwargs):
    torch = _torch()
    their_opt, theirs = _torch_adam_state(name, **kwargs)
    ours = [nn.Parameter(p.detach().numpy().copy()) for p in theirs]
    our_opt = getattr(optim, name)(ours, lr=0.5)  # the saved lr wins, as in torch
    our_opt.load_state_dict(their_opt.state_dict())
    assert our_opt.state[id(ours[0])]["step"] == 3 and isinstance(our_opt.state[id(ours[0])]["step"], int)
    assert our_opt.param_groups[0]["lr"] == 0.01
    rng = np.random.default_rng(1)
    for _ in range(5):
        for a, b in zip(ours, theirs):
            g = rng.standard_normal(a.shape)
            a.grad, b.grad = tinylm.Tensor(g.copy()), torch.from_numpy(g.copy())
        our_opt.step()
        their_opt.step()
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-12)


def test_a_state_dict_that_does_not_fit_fails_at_load_not_at_step():
    torch = _torch()
    their_opt, theirs = _torch_adam_state("Adam")
    ours = [nn.Parameter(p.detach().numpy().copy()) for p in theirs]

    saved = their_opt.state_dict()
    del saved["state"][1]["exp_avg_sq"]
    with pytest.raises(ValueError, match=r"parameter 1: .*missing \['exp_avg_sq'\]"):
        optim.Adam(ours).load_state_dict(saved)

    saved = their_opt.state_dict()
    saved["state"][0]["exp_avg"] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"parameter 0's exp_avg has shape \(5,\), the parameter \(3, 2\)"):
        optim.Adam(ours).load_state_dict(saved)

    saved = their_opt.state_dict()
    saved["param_groups"][0]["maximize"] = True
    with pytest.raises(ValueError, match="maximize=True, a torch option tinylm's Adam does not have"):
        optim.Adam(ours).load_state_dict(saved)

    with pytest.raises(ValueError, match="saved by Adam .*load it into Adam$"):
        optim.AdamW(ours).load_state_dict(their_opt.state_dict())

    with pytest.raises(ValueError, match=r"needs \['exp_avg', 'exp_avg_sq', 'step'\]"):
        optim.Adam(ours).load_state_dict(optim.SGD(ours, lr=0.1, momentum=0.9).state_dict() | {
            "state": {0: {"momentum_buffer": np.zeros((3, 2))}}})

    opt = optim.Adam(ours)  # a refused load changes nothing
    with pytest.raises(ValueError):
        opt.load_state_dict(saved)
    assert opt.state == {} and opt.param_groups[0]["lr"] == 1e-3


def test_a_torch_sgd_momentum_state_dict_loads():
    torch = _torch()
    theirs = [torch.nn.Parameter(torch.ones(3, dtype=torch.float64))]
    their_opt = torch.optim.SGD(theirs, lr=0.1, momentum=0.9)
    for _ in range(2):
        theirs[0].grad = torch.full((3,), 2.0, dtype=torch.float64)
        their_opt.step()
    ours = [nn.Parameter(theirs[0].detach().numpy().copy())]
    our_opt = optim.SGD(ours, lr=0.1, momentum=0.9)
    our_opt.load_state_dict(their_opt.state_dict())
    ours[0].grad, theirs[0].grad = tinylm.Tensor(np.full(3, 2.0)), torch.full((3,), 2.0, dtype=torch.float64)
    our_opt.step()
    their_opt.step()
    np.testing.assert_allclose(ours[0].numpy(), theirs[0].detach().numpy(), rtol=1e-12)
