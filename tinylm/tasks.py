"""What a run learns: the next token of a text, or the translation of a sentence.

The trainer (``tinylm.train.Trainer``) calls a model only through the one language-model
interface (``tinylm.models.language_model``): ``logits, state = model(inputs, state)``, a
cross-entropy between the logits and the targets (positions whose target is ``IGNORE``
count for nothing), backward, an optimizer step. Everything else a run needs is the
task's:

``next_batch(rng) -> (inputs, targets, state, tokens)``
    one training batch drawn with ``rng`` (the trainer's, saved in checkpoints, so a
    resumed run draws the same batches); ``state`` is what ``forward`` takes with it
    (None for a language model, the source sentences for translation); ``tokens`` how
    many target tokens it holds, for tokens/s.
``evaluate(model, split="validation") -> dict``
    held-out scores, the ``val_*`` columns of metrics.csv.
``sample(model, step) -> str``
    a few lines to print at each evaluation: what the model writes now.
``report(row) -> str``, ``describe() -> str``
    the evaluation's one line, and the data's, for the console.
``model_vocabulary() -> dict``
    the vocabulary sizes the model is built with, from the task's tokenizers.
``metric_columns``, ``tokenizers`` (file stem -> tokenizer, the files a run folder holds).

``LanguageModelTask`` reads a text (CPython's documentation by default) and scores
loss, perplexity and next-token accuracy. ``TranslationTask`` reads a parallel corpus
(``tinylm.parallel_corpus``: number words or dates in two languages, or the user's own
TSV), feeds the model the source sentence as its state and scores loss, BLEU and exact
match of greedy translations.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

import tinylm
from tinylm.bleu import corpus_bleu, exact_match
from tinylm.data import ContiguousBatches, DataError, prepare_text, random_batch
from tinylm.evaluation import evaluate as evaluate_language_model
from tinylm.generation import sample_tokens
from tinylm.models.seq2seq import Source
from tinylm.models.seq2seq_transformer import MAX_LEN
from tinylm.nn import functional as F
from tinylm.parallel_corpus import (
    IGNORE,
    SPECIAL_TOKENS,
    builtin_corpus,
    decode_target,
    encode_batch,
    read_tsv_pairs,
    tsv_corpus,
)
from tinylm.tokenizers import train_tokenizer

TASKS = ("language-model", "translate")
MODELS_OF_TASK = {"language-model": ("lstm", "transformer"), "translate": ("seq2seq-lstm", "seq2seq-transformer")}
COMMON_COLUMNS = ["step", "tokens", "elapsed_s", "lr", "train_loss"]


def task_of(config: dict) -> str:
    """The task a run's config describes (runs written before translation are language models)."""
    return config.get("task", "language-model")


def make_task(config: dict, tokenizer=None):
    """The task of ``config``, with the run's tokenizer (``tinylm.runs.load_run``'s: one, or a
    ``TokenizerPair`` for translation), or new ones trained on its training data if None."""
    task = LanguageModelTask if task_of(config) == "language-model" else TranslationTask
    return task.from_config(config, tokenizer)


# ------------------------------------------------------------------------------ language model


class LanguageModelTask:
    """The next token of a text: random windows of ``seq_len`` tokens (or, with
    ``stateful``, parallel streams read in order), validation on the last 10% of the text."""

    kind = "language-model"
    metric_columns = [*COMMON_COLUMNS, "val_loss", "val_perplexity", "val_accuracy", "tokens_per_s"]

    def __init__(self, config: dict, tokenizer, train_ids: np.ndarray, val_ids: np.ndarray):
        self.config, t = config, config["training"]
        self.tokenizer, self.tokenizers = tokenizer, {"tokenizer": tokenizer}
        self.train_ids, self.val_ids = train_ids, val_ids
        for what, ids in (("training", train_ids), ("validation", val_ids)):
            if len(ids) < t["seq_len"] + 1:
                raise DataError(f"the {what} text has {len(ids)} tokens, fewer than --seq-len + 1 = "
                                f"{t['seq_len'] + 1}; give more text or a shorter --seq-len")
        self.batch_size, self.seq_len, self.sample_length = t["batch_size"], t["seq_len"], t["sample_tokens"]
        self.stream = ContiguousBatches(train_ids, t["batch_size"], t["seq_len"]) if t.get("stateful") else None
        self.stream_restarted = True

    @classmethod
    def from_config(cls, config: dict, tokenizer=None) -> "LanguageModelTask":
        """The run's text, split 90/10, and its tokenizer (a new one trained on the training text if None)."""
        train_text, val_text = prepare_text(config)
        if tokenizer is None:
            tokenizer = train_tokenizer(config["tokenizer"], train_text, config["vocab_size"])
        return cls(config, tokenizer, tokenizer.encode(train_text), tokenizer.encode(val_text))

    def model_vocabulary(self) -> dict:
        return {"vocab_size": self.tokenizer.vocab_size}

    def describe(self) -> str:
        return (f"{self.config['tokenizer']} tokenizer (vocabulary {self.tokenizer.vocab_size}), "
                f"{len(self.train_ids):,} training and {len(self.val_ids):,} validation tokens")

    def next_batch(self, rng: np.random.Generator):
        """(inputs (B, T), targets (B, T), None, B·T); with ``stateful`` the next chunk of
        every stream, in order (``rng`` unused), and whether it starts the streams again
        is ``self.stream_restarted`` (a carried state does not belong there)."""
        if self.stream is None:
            inputs, targets = random_batch(self.train_ids, self.batch_size, self.seq_len, rng)
            self.stream_restarted = True
        else:
            inputs, targets, self.stream_restarted = self.stream.next()
        return inputs, targets, None, inputs.size

    def evaluate(self, model, split: str = "validation") -> dict:
        result = evaluate_language_model(model, self.val_ids, self.batch_size, self.seq_len)
        return {"val_loss": result["loss"], "val_perplexity": result["perplexity"], "val_accuracy": result["accuracy"]}

    def report(self, row: dict) -> str:
        return (f"validation loss {row['val_loss']:.3f} (perplexity {row['val_perplexity']:.2f}, "
                f"accuracy {row['val_accuracy']:.1%})")

    def sample(self, model, step: int) -> str:
        if self.sample_length == 0:
            return ""
        return "  sample: " + repr(self.sample_text(model, step, self.sample_length))[1:-1][:400]

    def sample_text(self, model, step: int, length: int) -> str:
        """The validation text's first token and ``length`` more sampled after it (temperature
        0.8), from a generator of its own: training's random streams are not touched."""
        rng = np.random.default_rng([self.config["training"]["seed"], 2, step])
        prompt = self.val_ids[:1]
        tokens = list(sample_tokens(model, prompt, length, rng, temperature=0.8))
        return self.tokenizer.decode(list(prompt) + tokens)


# ------------------------------------------------------------------------------ translation


class TokenizerPair(NamedTuple):
    source: object
    target: object


class TranslationTask:
    """Sentence pairs: the model reads the source (its state) and learns the target, one
    token after another, teacher-forced. Scored on held-out pairs by the loss per target
    token and by greedy translations: corpus BLEU and the share translated exactly."""

    kind = "translate"
    metric_columns = [*COMMON_COLUMNS, "val_loss", "val_bleu", "val_exact_match", "tokens_per_s"]
    samples_shown = 3

    def __init__(self, config: dict, pair: TokenizerPair, corpus):
        self.config, self.corpus, self.pair = config, corpus, pair
        self.tokenizers = {"source_tokenizer": pair.source, "target_tokenizer": pair.target}
        self.batch_size = config["training"]["batch_size"]
        self.bleu_tokenize = config.get("bleu_tokenize", "13a")

    @classmethod
    def from_config(cls, config: dict, pair: TokenizerPair | None = None) -> "TranslationTask":
        """The run's corpus and its two tokenizers (new ones trained on training sentences if None)."""
        corpus = load_parallel_corpus(config)
        if pair is None:
            pair = TokenizerPair(*(train_tokenizer(config[f"{side}_tokenizer"], corpus.tokenizer_text(side),
                                                   config[f"{side}_vocab_size"]) for side in ("source", "target")))
        task = cls(config, pair, corpus)
        if config["model"] == "seq2seq-transformer" and config.get("data"):
            task.check_lengths(config["model_config"].get("max_len", MAX_LEN))
        return task

    def check_lengths(self, positions: int) -> None:
        """Every pair of the user's TSV fits a transformer's ``positions`` (the target with its
        BOS): a DataError before the run starts, rather than when a batch first draws a long
        pair (a resume would draw it again). The built-in sentences are a few dozen tokens."""
        for source, target in read_tsv_pairs(self.config["data"]):
            for side, text, tokenizer, extra in (("source", source, self.pair.source, 0),
                                                 ("target", target, self.pair.target, 1)):
                length = len(tokenizer.encode(text)) + extra
                if length > positions:
                    raise DataError(f"--data: a {side} sentence of {length} tokens ({text[:40]!r}...) is longer "
                                    f"than the transformer's {positions} positions; shorten or remove it")

    def model_vocabulary(self) -> dict:
        return {"source_vocab_size": self.pair.source.vocab_size + len(SPECIAL_TOKENS),
                "target_vocab_size": self.pair.target.vocab_size + len(SPECIAL_TOKENS)}

    def describe(self) -> str:
        return (f"{self.corpus.name}: {self.config['source_tokenizer']} source tokens (vocabulary "
                f"{self.pair.source.vocab_size}), {self.config['target_tokenizer']} target tokens (vocabulary "
                f"{self.pair.target.vocab_size}), {len(self.corpus.validation)} validation and "
                f"{len(self.corpus.test)} test pairs")

    def next_batch(self, rng: np.random.Generator):
        """(target inputs (B, T), target outputs (B, T), Source, target tokens): B pairs
        drawn from the training sentences, padded."""
        inputs, targets, source = self.encode(self.corpus.sample_train(rng, self.batch_size))
        return inputs, targets, source, int((targets != IGNORE).sum())

    def encode(self, pairs):
        """(target inputs, target outputs, Source) of a list of (source, target) pairs."""
        batch = encode_batch(pairs, self.pair.source, self.pair.target)
        return batch.target_inputs, batch.target_outputs, Source(batch.source_ids, batch.source_lengths)

    def translate(self, model, sources: list[str], beam: int = 1, batch_size: int = 256) -> list[str]:
        """The model's translations of ``sources``: greedy, or beam search with ``beam`` > 1."""
        return translate(model, self.pair, sources, beam=beam, batch_size=batch_size)

    def evaluate(self, model, split: str = "validation") -> dict:
        pairs = self.corpus.validation if split == "validation" else self.corpus.test
        scores = score_translations(model, self, pairs)
        return {"val_loss": scores["loss"], "val_bleu": scores["bleu"], "val_exact_match": scores["exact_match"]}

    def report(self, row: dict) -> str:
        return (f"validation loss {row['val_loss']:.3f}, BLEU {row['val_bleu']:.1f} ({self.bleu_tokenize}), "
                f"exact match {row['val_exact_match']:.1%}")

    def sample(self, model, step: int) -> str:
        pairs = self.corpus.validation[: self.samples_shown]
        outputs = self.translate(model, [source for source, _ in pairs])
        return "\n".join(f"  {source!r} -> {output!r}" + ("" if output == target else f" (expected {target!r})")
                         for (source, target), output in zip(pairs, outputs))


def default_bleu_tokenize(corpus: str | None, pair: str | None) -> str:
    """Words ("13a", BLEU's usual tokens), except for German numbers: German writes every
    number below a million as one word, whose word-level BLEU is 0 however close it is
    (``tinylm.bleu``), so their BLEU counts characters."""
    return "char" if (corpus, pair) == ("numbers", "en-de") else "13a"


def load_parallel_corpus(config: dict):
    """The run's corpus: the user's TSV (``data``), else a built-in one (``corpus``, ``pair``),
    split by the run's seed."""
    seed = config["training"]["seed"]
    if config.get("data"):
        return tsv_corpus(config["data"], seed=seed)
    return builtin_corpus(config["corpus"], config["pair"], seed=seed)


def translate(model, tokenizers: TokenizerPair, sources: list[str], beam: int = 1, batch_size: int = 256,
              max_len: int | None = None) -> list[str]:
    """Translations of ``sources`` (in batches of ``batch_size``), greedy or with a beam;
    each at most ``max_len`` tokens (default: twice its source's characters, plus 10: a
    word or character token spells at least one character and a BPE token one byte, so this
    lets a translation run to about twice its source's length whatever the target
    tokenizer). A sentence's translation does not depend on the others in its batch: each
    row has its own limit. A translation is one line: a line break in a model's output
    becomes a space."""
    # imported here: decoding imports tinylm.attention, which imports tinylm.runs, which imports us
    from tinylm.decoding import beam_search, greedy_decode

    outputs = []
    for start in range(0, len(sources), batch_size):
        chunk = sources[start : start + batch_size]
        batch = encode_batch([(s, "") for s in chunk], tokenizers.source, tokenizers.target)
        limits = np.array([max_len or 2 * len(sentence) + 10 for sentence in chunk])  # (B,)
        limits = np.minimum(limits, getattr(model, "max_target_len", limits.max()))
        if beam > 1:  # the rows of one limit together: a beam's result depends on where it is cut off
            ids = [None] * len(chunk)
            for limit in np.unique(limits):
                rows = np.flatnonzero(limits == limit)
                width = int(batch.source_lengths[rows].max())
                source = Source(batch.source_ids[rows, :width], batch.source_lengths[rows])
                for row, result in zip(rows, beam_search(model, source, len(rows), beam, int(limit))):
                    ids[row] = result
        else:  # greedy's first L choices are the same under any longer limit: one search, each row cut
            source = Source(batch.source_ids, batch.source_lengths)
            ids = greedy_decode(model, source, len(chunk), int(limits.max()))
            ids = [row[:limit] for row, limit in zip(ids, limits)]
        # A target sentence holds no line break, but a model's tokens may spell one (a byte, or a
        # character its tokenizer saw between training sentences): a translation is one line.
        outputs.extend(" ".join(decode_target(row, tokenizers.target).splitlines()) for row in ids)
    return outputs


def score_translations(model, task: TranslationTask, pairs, beam: int = 1) -> dict:
    """Loss per target token (teacher-forced), corpus BLEU and exact match of the model's
    translations of ``pairs``, in eval mode; the model's mode is restored afterwards."""

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with tinylm.no_grad():
            for start in range(0, len(pairs), 256):
                inputs, targets, source = task.encode(pairs[start : start + 256])
                logits, _ = model(inputs, source)  # (B, T, V)
                total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                         ignore_index=IGNORE, reduction="sum").item()
                count += int((targets != IGNORE).sum())
            outputs = task.translate(model, [source for source, _ in pairs], beam=beam)
    finally:
        model.train(was_training)
    references = [target for _, target in pairs]
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)),
            "bleu": corpus_bleu(outputs, references, tokenize=task.bleu_tokenize).score,
            "exact_match": exact_match(outputs, references), "outputs": outputs, "references": references}
