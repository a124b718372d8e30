"""Language and translation models built from ``tinylm.nn`` layers: they only compose layers.

Every model follows one interface (``tinylm.models.language_model``): ``forward(ids,
state=None) -> (logits, state)``, ``carries_state`` and ``stepper()`` for generation. A
translation model (``tinylm.models.seq2seq``) is a language model over the target that
takes the source as its state. ``MODELS`` names the ones ``python -m tinylm.train --model``
can build.
"""

from tinylm.models.language_model import LanguageModel
from tinylm.models.lstm import LSTMLanguageModel
from tinylm.models.seq2seq import Source, TranslationModel
from tinylm.models.seq2seq_lstm import Seq2SeqLSTM
from tinylm.models.seq2seq_transformer import TransformerSeq2Seq
from tinylm.models.transformer import TransformerLanguageModel

MODELS = {"lstm": LSTMLanguageModel, "transformer": TransformerLanguageModel,
          "seq2seq-lstm": Seq2SeqLSTM, "seq2seq-transformer": TransformerSeq2Seq}

__all__ = ["LanguageModel", "LSTMLanguageModel", "TransformerLanguageModel", "TranslationModel", "Source",
           "Seq2SeqLSTM", "TransformerSeq2Seq", "MODELS"]
