"""The one interface every language model follows.

Training (``tinylm.train.Trainer``), evaluation (``tinylm.evaluation.evaluate``) and
generation (``tinylm.generation.sample_tokens``) call a model only through it and never
ask which class it is, so a new model plugs in without touching them. A language model
is an ``nn.Module`` with:

``forward(ids, state=None) -> (logits, state)``
    ids (B, T) token ids; logits (B, T, V), the scores of the next token at every
    position. ``state`` is what the model carries from one chunk of a text to the next:
    ``None`` for a model that reads each chunk on its own (the transformer), else a tuple
    of Tensors (the LSTM's (h, c)). Passing a call's state, detached, to the next call
    continues the same text. A tuple of Tensors because the trainer detaches each one
    between batches and writes them into checkpoints.

    A translation model (``tinylm.models.seq2seq``) is a language model of the target
    sentence conditioned on the source: ``state`` is the source batch it conditions on
    (a ``Source``: padded ids and lengths), ids are the target so far (BOS first), and it
    returns ``(logits, None)``. So the trainer, which passes a batch's state to forward
    and takes a cross-entropy of the logits, trains both kinds the same way.

``carries_state``
    True when ``forward`` returns a state worth passing on. Training with ``--stateful``
    (the text read as parallel streams, the state carried across batches) needs it.

``stepper()``
    An object that writes text token by token, for generation::

        stepper = model.stepper()
        logits, state = stepper.start(prompt_ids)  # prompt_ids (B, T) -> logits (B, V)
        logits, state = stepper.step(ids, state)   # ids (B,), the tokens just chosen
        state = stepper.select(state, rows)        # rows (B',): those sequences' state

    ``start`` reads a prompt and returns the logits of the token after its last position;
    it takes forward's state as a second argument (a translation model's source, which it
    then encodes once). ``step`` feeds one more token per sequence and returns the logits
    of the token after it. ``select`` keeps the state of some sequences, in a new order,
    repeats allowed: beam search (``tinylm.decoding``) follows its best hypotheses with it.
    Logits are raw arrays (NumPy, or CuPy on the GPU), made with no autograd graph.
    The stepper's state is its own business (it need not be ``forward``'s), and a stepper
    may precompute from the weights: make a new one after they change. It computes
    what ``forward`` does in the model's current mode, so call ``model.eval()`` first.

``LanguageModel`` below is that contract written as a base class, for documentation and
defaults. A model need not inherit from it: the callers only use the three names above.
"""

from __future__ import annotations

from tinylm import nn


class LanguageModel(nn.Module):
    """Base class of tinylm's language models: ``forward(ids, state=None) -> (logits,
    state)``, ``carries_state`` and ``stepper()``, as the module docstring describes."""

    carries_state = False

    def forward(self, ids, state=None):
        raise NotImplementedError(f"{type(self).__name__} must define forward(ids, state=None) -> (logits, state)")

    def stepper(self):
        raise NotImplementedError(f"{type(self).__name__} must define stepper() for token-by-token generation")
