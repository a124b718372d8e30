"""Language models built from ``tinylm.nn`` layers: they only compose layers.

Every model follows one interface (``tinylm.models.language_model``): ``forward(ids,
state=None) -> (logits, state)``, ``carries_state`` and ``stepper()`` for generation.
``MODELS`` names the ones ``python -m tinylm.train --model`` can build.
"""

from tinylm.models.language_model import LanguageModel
from tinylm.models.lstm import LSTMLanguageModel
from tinylm.models.transformer import TransformerLanguageModel

MODELS = {"lstm": LSTMLanguageModel, "transformer": TransformerLanguageModel}

__all__ = ["LanguageModel", "LSTMLanguageModel", "TransformerLanguageModel", "MODELS"]
