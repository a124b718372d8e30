"""Every language model follows one interface (``tinylm.models.language_model``), and the
trainer, the evaluation and generation use nothing else:

- ``forward(ids, state=None) -> (logits, state)``;
- ``carries_state``: whether that state is worth passing on;
- ``stepper()``: ``start(prompt_ids (B, T)) -> (logits (B, V), state)`` and
  ``step(ids (B,), state) -> (logits (B, V), state)``, for generation.
"""

import json

import numpy as np
import pytest

import tinylm
from tinylm import nn, train
from tinylm.evaluation import evaluate
from tinylm.generation import sample_tokens
from tinylm.models import MODELS, LSTMLanguageModel, TransformerLanguageModel
from tinylm.tasks import LanguageModelTask
from tinylm.tokenizers import train_tokenizer

VOCAB = 11
BUILD = {
    "lstm": lambda: LSTMLanguageModel(VOCAB, embedding_dim=6, hidden_dim=8, n_layers=2, dropout=0.3),
    "transformer": lambda: TransformerLanguageModel(VOCAB, d_model=8, n_heads=2, n_layers=2, max_len=16, dropout=0.3),
}


@pytest.mark.parametrize("kind", BUILD)
def test_forward_takes_ids_and_a_state_and_returns_logits_and_a_state(kind):
    tinylm.manual_seed(0)
    model = BUILD[kind]().eval()
    ids = np.random.default_rng(0).integers(0, VOCAB, size=(2, 5))
    logits, state = model(ids)
    assert logits.shape == (2, 5, VOCAB)
    if model.carries_state:
        assert isinstance(state, tuple) and all(isinstance(s, tinylm.Tensor) for s in state)
        continued, _ = model(ids, tuple(s.detach() for s in state))
        assert not np.allclose(continued.numpy(), logits.numpy())  # the state is read
    else:
        assert state is None
    assert MODELS[kind].carries_state == model.carries_state


def test_the_lstm_carries_state_and_the_transformer_does_not():
    assert LSTMLanguageModel.carries_state and not TransformerLanguageModel.carries_state


def test_the_transformer_refuses_a_state_naming_itself():
    model = BUILD["transformer"]()
    ids = np.zeros((1, 3), dtype=np.int64)
    with pytest.raises(ValueError, match="TransformerLanguageModel carries no state"):
        model(ids, (tinylm.tensor(np.zeros((1, 8), np.float32)),))


@pytest.mark.parametrize("kind", BUILD)
def test_a_stepper_gives_the_logits_of_the_full_forward(kind):
    """start reads a prompt of 3 tokens, then step feeds the next 4 one at a time: the
    logits after each token are those of one forward over the whole sequence."""
    tinylm.manual_seed(1)
    model = BUILD[kind]().eval()
    tokens = np.random.default_rng(1).integers(0, VOCAB, size=(2, 7))  # a batch of 2
    with tinylm.no_grad():
        expected = model(tokens)[0].numpy()  # (2, 7, V)
    stepper = model.stepper()
    logits, state = stepper.start(tokens[:, :3])
    np.testing.assert_allclose(logits, expected[:, 2], rtol=1e-5, atol=1e-6)
    for t in range(3, 7):
        logits, state = stepper.step(tokens[:, t], state)
        assert logits.shape == (2, VOCAB)
        np.testing.assert_allclose(logits, expected[:, t], rtol=1e-5, atol=1e-6)


def test_the_transformer_stepper_rereads_the_last_max_len_tokens():
    tinylm.manual_seed(2)
    model = TransformerLanguageModel(VOCAB, d_model=8, n_heads=2, n_layers=1, max_len=4).eval()
    tokens = np.random.default_rng(2).integers(0, VOCAB, size=(1, 9))
    stepper = model.stepper()
    logits, context = stepper.start(tokens[:, :6])  # longer than max_len: its last 4 tokens
    for t in range(6, 9):
        with tinylm.no_grad():
            window, _ = model(tokens[:, t - 4:t])  # (1, 4, V): the tokens before position t
        np.testing.assert_allclose(logits, window.numpy()[:, -1], rtol=1e-5, atol=1e-6)
        logits, context = stepper.step(tokens[:, t], context)
        assert context.shape == (1, 4)


# ------------------------------------------------------------ a model tinylm has never seen


class DecayingBagOfTokens(nn.Module):
    """A language model that only follows the interface; no part of tinylm knows its class.

    Its state is a decaying sum of the embeddings of the tokens read so far,
    h_t = h_(t-1) / 2 + embedding(ids_t), and the logits are a linear map of h_t: a state
    carried from chunk to chunk, as an LSTM's is, in a few lines.
    """

    carries_state = True

    def __init__(self, vocab_size: int, width: int = 8):
        super().__init__()
        self.width = width
        self.embedding = nn.Embedding(vocab_size, width)
        self.fc = nn.Linear(width, vocab_size)

    def forward(self, ids, state=None):
        embedded = self.embedding(ids)  # (B, T, W)
        h = state[0] if state is not None else tinylm.tensor(np.zeros((ids.shape[0], self.width), np.float32))
        outputs = []
        for t in range(ids.shape[1]):
            h = h * 0.5 + embedded[:, t]  # (B, W)
            outputs.append(h)
        return self.fc(tinylm.stack(outputs, axis=1)), (h,)  # (B, T, V), ((B, W),)

    def stepper(self):
        return ForwardStepper(self)


class ForwardStepper:
    """Generation through the model's own forward: the prompt at once, then one token a call."""

    def __init__(self, model):
        self.model = model

    def start(self, prompt_ids):
        with tinylm.no_grad():
            logits, state = self.model(prompt_ids)  # (B, T, V)
        return logits.data[:, -1], state

    def step(self, ids, state):
        with tinylm.no_grad():
            logits, state = self.model(ids[:, None], state)  # ids (B,) -> (B, 1): one position
        return logits.data[:, 0], state


def test_a_model_known_only_by_its_interface_trains_evaluates_and_samples(tmp_path):
    text = "abcdefg" * 60  # every letter is followed by the next one
    tokenizer = train_tokenizer("char", text)
    ids = tokenizer.encode(text)
    tinylm.manual_seed(0)
    model = DecayingBagOfTokens(tokenizer.vocab_size)
    assert type(model) not in MODELS.values()  # not registered anywhere

    # The model part of this config goes unused: the trainer is handed the model itself.
    config = train.make_config(train.parse_args(["--stateful", "--steps", "60", "--batch-size", "4",
                                                 "--seq-len", "8", "--lr", "0.05", "--warmup-steps", "0"]))
    trainer = train.Trainer(config, tmp_path, LanguageModelTask(config, tokenizer, ids[:360], ids[360:]), model)
    before = evaluate(model, trainer.task.val_ids, batch_size=4, seq_len=8)
    for _ in range(60):
        trainer.train_step()
    after = evaluate(model, trainer.task.val_ids, batch_size=4, seq_len=8)
    assert after["loss"] < 0.25 * before["loss"] and after["accuracy"] > 0.95, (before, after)
    assert after["tokens"] == before["tokens"] > 0

    # --stateful carried the model's state across batches, and a checkpoint keeps it.
    assert trainer.carried is not None and trainer.carried[0].shape == (4, 8)
    trainer.save()
    saved = json.loads((tmp_path / "checkpoint" / "trainer.json").read_text())
    assert np.array(saved["carried"]).shape == (1, 4, 8)

    greedy = sample_tokens(model, tokenizer.encode("abc"), 8, np.random.default_rng(0), top_k=1)
    assert tokenizer.decode(list(greedy)) == "defgabcd"
    first, again = (list(sample_tokens(model, tokenizer.encode("a"), 20, np.random.default_rng(5), temperature=2.0))
                    for _ in range(2))
    assert first == again and all(0 <= token < tokenizer.vocab_size for token in first)
    # the prompt (the validation text's first token) and 10 more
    assert len(trainer.task.sample_text(model, trainer.step, 10)) == 11
    assert model.training  # sampling left the model in its mode
