"""StepLR and CosineAnnealingLR give torch's learning rates step by step, and resume
from their state_dict."""

import numpy as np
import pytest

from tinylm import nn, optim

SCHEDULES = {
    "StepLR": (dict(step_size=3, gamma=0.5), 20),
    "StepLR default gamma": (dict(step_size=4), 15),
    "CosineAnnealingLR": (dict(T_max=10), 10),
    "CosineAnnealingLR eta_min, past T_max": (dict(T_max=7, eta_min=0.01), 30),
}


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedules_give_torchs_learning_rates_step_by_step(name):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: the comparison with torch needs it")
    kwargs, steps = SCHEDULES[name]
    cls = name.split()[0]
    ours_opt = optim.SGD([{"params": [nn.Parameter(np.zeros(2))]},
                          {"params": [nn.Parameter(np.zeros(2))], "lr": 0.3}], lr=0.5)
    theirs_opt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(2))]},
                                  {"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 0.3}], lr=0.5)
    ours = getattr(optim.lr_scheduler, cls)(ours_opt, **kwargs)
    theirs = getattr(torch.optim.lr_scheduler, cls)(theirs_opt, **kwargs)
    for step in range(steps):
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-12, abs=1e-15), f"step {step}"
        ours_opt.step()
        theirs_opt.step()
        ours.step()
        theirs.step()


def test_step_lr_and_cosine_resume_from_their_state_dict():
    for make in (lambda o: optim.lr_scheduler.StepLR(o, 2, 0.5), lambda o: optim.lr_scheduler.CosineAnnealingLR(o, 8)):
        opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=1.0)
        schedule = make(opt)
        for _ in range(5):
            schedule.step()
        resumed_opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=1.0)
        resumed = make(resumed_opt)
        resumed.load_state_dict(schedule.state_dict())
        schedule.step()
        resumed.step()
        assert resumed.get_last_lr() == schedule.get_last_lr()


def test_cosine_annealing_reaches_eta_min_at_t_max():
    opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=1.0)
    schedule = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4, eta_min=0.1)
    lrs = [schedule.get_last_lr()[0]] + [schedule.step() or schedule.get_last_lr()[0] for _ in range(4)]
    assert lrs[0] == 1.0 and lrs[2] == pytest.approx(0.55) and lrs[4] == pytest.approx(0.1)


def test_bad_schedule_settings_are_refused():
    opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="step_size must be an int >= 1"):
        optim.lr_scheduler.StepLR(opt, 0)
    with pytest.raises(ValueError, match="T_max must be > 0"):
        optim.lr_scheduler.CosineAnnealingLR(opt, 0)
