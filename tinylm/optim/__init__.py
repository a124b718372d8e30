"""``tinylm.optim``: optimizers and learning-rate schedules with torch.optim's rules."""

from tinylm.optim import lr_scheduler
from tinylm.optim.adam import Adam, AdamW
from tinylm.optim.optimizer import Optimizer
from tinylm.optim.sgd import SGD
from tinylm.optim.zero import ZeroRedundancyAdam, ZeroRedundancyAdamW

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "ZeroRedundancyAdam", "ZeroRedundancyAdamW", "lr_scheduler"]
