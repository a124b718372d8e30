"""Language models built from ``tinylm.nn`` layers: they only compose layers."""

from tinylm.models.lstm import LSTMLanguageModel
from tinylm.models.transformer import TransformerLanguageModel

MODELS = {"lstm": LSTMLanguageModel, "transformer": TransformerLanguageModel}

__all__ = ["LSTMLanguageModel", "TransformerLanguageModel", "MODELS"]
