"""Parallel corpora for translation, and the batches a sequence-to-sequence model reads.

Two built-in corpora need no download and were not written by hand; each pairs English with
German or French:

- ``numbers``: number words from ``num2words`` for the integers 0 .. 999,999, e.g.
  "twenty-three thousand, four hundred and five" -> "dreiundzwanzigtausendvierhundertfünf".
- ``dates``: the days 1900-01-01 .. 2099-12-31 written out by Babel from the Unicode CLDR
  ("full" format), e.g. "Saturday, November 28, 2026" -> "Samstag, 28. November 2026".

A seed picks the validation and test sentences (uniformly, without overlap); training draws
never return one of them. Sentences are made on demand (with a cache), not all up front.
A user's own corpus is a UTF-8 file of ``source<TAB>target`` lines (``tsv_corpus``).

Both packages come with ``pip install "tinylm[translate]"``; importing this module does not
need them, only building a built-in corpus does.

A model sees *model ids*: the tokenizer's ids shifted up by 3, below which sit the special
tokens PAD = 0, BOS = 1 (begin the target) and EOS = 2 (end it). ``encode_batch`` makes the
padded arrays of a batch; ``decode_target`` turns a model's output ids back into text.
"""

from __future__ import annotations

import codecs
import datetime
from functools import lru_cache
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from tinylm.data import DataError

Pair = tuple[str, str]  # (source sentence, target sentence)
PAIRS = ("en-de", "en-fr")
CORPORA = ("numbers", "dates")

PAD, BOS, EOS = 0, 1, 2
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
IGNORE = -100  # a target position the loss skips (the padding after EOS)

TOKENIZER_SENTENCES = 20_000  # training sentences in tokenizer_text: enough to learn a vocabulary
NUMBERS = 1_000_000  # the numbers corpus covers 0 .. NUMBERS - 1
FIRST_DAY, LAST_DAY = datetime.date(1900, 1, 1), datetime.date(2099, 12, 31)
DAYS = (LAST_DAY - FIRST_DAY).days + 1  # 73,049
_LOCALES = {"en": "en_US", "de": "de_DE", "fr": "fr_FR"}
_INSTALL = 'pip install "tinylm[translate]" (or ".[translate]" from a checkout)'


class ParallelCorpus:
    """Held-out pairs and a way to draw training pairs.

    ``name``: e.g. "numbers en-de", or the TSV file's path. ``validation`` and ``test``: lists
    of (source, target) pairs fixed by the seed; no test or validation source is ever drawn
    for training. ``draw`` is the corpus's ``sample_train``; ``tokenizer_pairs`` makes (once,
    when first asked) the training pairs behind ``tokenizer_text``."""

    def __init__(self, name: str, validation: list[Pair], test: list[Pair],
                 draw: Callable[[np.random.Generator, int], list[Pair]],
                 tokenizer_pairs: Callable[[], list[Pair]]):
        self.name, self.validation, self.test = name, validation, test
        self._draw, self._make_tokenizer_pairs = draw, tokenizer_pairs
        self._tokenizer_pairs: list[Pair] | None = None

    def sample_train(self, rng: np.random.Generator, n: int) -> list[Pair]:
        """``n`` training pairs drawn with ``rng``: the same generator state gives the same
        pairs (and leaves the generator in the same state), so a resumed run draws the same."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"sample_train: n must be a non-negative integer, got {n!r}")
        return self._draw(rng, int(n))

    def tokenizer_text(self, side: str) -> str:
        """A fixed sample of training sentences (up to TOKENIZER_SENTENCES) of one side,
        "source" or "target", joined by newlines: the text to train that side's tokenizer on."""
        if side not in ("source", "target"):
            raise ValueError(f"tokenizer_text: side must be 'source' or 'target', got {side!r}")
        if self._tokenizer_pairs is None:
            self._tokenizer_pairs = self._make_tokenizer_pairs()
        column = 0 if side == "source" else 1
        return "\n".join(pair[column] for pair in self._tokenizer_pairs)

    def __repr__(self) -> str:
        return f"ParallelCorpus({self.name!r}, {len(self.validation)} validation, {len(self.test)} test pairs)"


# ---- the built-in corpora


def _require(module: str, package: str):
    """Import ``module`` (from the translate extra), or a one-line DataError saying how to get it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"the built-in translation corpora need {package}: {_INSTALL}") from None


@lru_cache(maxsize=200_000)
def number_words(number: int, language: str) -> str:
    """``number`` in words, as num2words writes it in ``language`` ("en", "de", "fr")."""
    return _require("num2words", "num2words").num2words(number, lang=language)


@lru_cache(maxsize=3 * DAYS)
def date_words(day: int, language: str) -> str:
    """The ``day``-th day after 1900-01-01 written out in full by Babel, in the CLDR format of
    ``language``'s locale (en_US, de_DE, fr_FR)."""
    dates = _require("babel.dates", "Babel")
    return dates.format_date(FIRST_DAY + datetime.timedelta(days=day), format="full", locale=_LOCALES[language])


def _draw_numbers(rng: np.random.Generator, n: int, held_out: np.ndarray) -> np.ndarray:
    """``n`` numbers, none in ``held_out`` (sorted): the digit count k uniform in 1..6, then the
    number uniform among the k-digit numbers (0..9 for k = 1). A held-out draw is rejected and
    drawn again, in order, so the result depends on the generator's state alone."""
    drawn = np.empty(0, dtype=np.int64)
    while len(drawn) < n:
        need = n - len(drawn)
        digits = rng.integers(1, 7, size=need)  # (need,)
        low = np.where(digits == 1, 0, 10 ** (digits - 1))
        numbers = rng.integers(low, 10**digits)  # high is exclusive
        drawn = np.concatenate([drawn, numbers[~np.isin(numbers, held_out)]])
    return drawn


def _check_sizes(function: str, validation_size: int, test_size: int, population: int, what: str) -> None:
    for name, size in (("validation_size", validation_size), ("test_size", test_size)):
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise DataError(f"{function}: {name} must be a positive integer, got {size!r}")
    if validation_size + test_size > population // 2:
        raise DataError(f"{function}: validation_size + test_size = {validation_size + test_size:,} "
                        f"would hold out more than half of the {population:,} {what}")


def builtin_corpus(corpus: str = "numbers", pair: str = "en-de", seed: int = 0,
                   validation_size: int = 500, test_size: int = 500) -> ParallelCorpus:
    """The ``corpus`` ("numbers" or "dates") for the language ``pair`` ("en-de" or "en-fr").

    ``seed`` fixes the held-out sets: ``validation_size`` + ``test_size`` distinct numbers (or
    days) drawn uniformly, the first ones for validation, the rest for test. Training draws
    skip them: numbers by digit count first (see ``_draw_numbers``), days uniformly over the
    rest. DataError (one line) if num2words or Babel is not installed."""
    if corpus not in CORPORA:
        raise DataError(f"builtin_corpus: unknown corpus {corpus!r}; choose one of {', '.join(CORPORA)}")
    if pair not in PAIRS:
        raise DataError(f"builtin_corpus: unknown language pair {pair!r}; choose one of {', '.join(PAIRS)}")
    source_language, target_language = pair.split("-")
    population = NUMBERS if corpus == "numbers" else DAYS
    _check_sizes("builtin_corpus", validation_size, test_size, population, corpus)
    if corpus == "numbers":
        _require("num2words", "num2words")
        words = number_words
    else:
        _require("babel.dates", "Babel")
        words = date_words

    def pairs_of(items) -> list[Pair]:
        return [(words(int(i), source_language), words(int(i), target_language)) for i in items]

    held_out = np.random.default_rng(seed).choice(population, size=validation_size + test_size, replace=False)
    validation, test = pairs_of(held_out[:validation_size]), pairs_of(held_out[validation_size:])
    held_out = np.sort(held_out)

    if corpus == "numbers":
        def draw(rng: np.random.Generator, n: int) -> list[Pair]:
            return pairs_of(_draw_numbers(rng, n, held_out))
    else:
        training_days = np.setdiff1d(np.arange(DAYS), held_out)  # sorted, every day not held out

        def draw(rng: np.random.Generator, n: int) -> list[Pair]:
            return pairs_of(training_days[rng.integers(0, len(training_days), size=n)])

    def tokenizer_pairs() -> list[Pair]:
        return draw(np.random.default_rng((seed, 1)), TOKENIZER_SENTENCES)

    return ParallelCorpus(f"{corpus} {pair}", validation, test, draw, tokenizer_pairs)


# ---- a user's corpus: source<TAB>target lines


def read_tsv_pairs(path) -> list[Pair]:
    """The (source, target) pairs of a UTF-8 file of ``source<TAB>target`` lines, each side
    stripped of surrounding whitespace; blank lines are skipped. DataError naming the file and
    the line for bytes that are not UTF-8, a line without exactly one tab, an empty side."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"--data: cannot read {path}: {exc.strerror or exc}") from None
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"--data: {path}, line {line}: not UTF-8 text ({exc.reason})") from None
    pairs = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        tabs = line.count("\t")
        if tabs != 1:
            found = "no tab" if tabs == 0 else f"{tabs} tabs"
            raise DataError(f"--data: {path}, line {number}: {found}; each line must be source<TAB>target")
        source, target = (side.strip() for side in line.split("\t"))
        for side, sentence in (("source", source), ("target", target)):
            if not sentence:
                raise DataError(f"--data: {path}, line {number}: the {side} sentence is empty")
        pairs.append((source, target))
    if not pairs:
        raise DataError(f"--data: {path} is empty: it holds no source<TAB>target lines")
    return pairs


def tsv_corpus(path, seed: int = 0, held_out_fraction: float = 0.05) -> ParallelCorpus:
    """A corpus from a ``source<TAB>target`` file (see ``read_tsv_pairs``).

    Held out are distinct *source sentences*, chosen by ``seed``: a ``held_out_fraction`` of
    them (at least one) for validation, as many for test, with every pair that has such a
    source; so no validation or test source appears in training, even where the file repeats
    it. Training draws are uniform over the remaining pairs. Needs at least 3 distinct sources."""
    if not 0.0 < held_out_fraction < 0.5:
        raise DataError(f"tsv_corpus: held_out_fraction must be between 0 and 0.5, got {held_out_fraction}")
    pairs = read_tsv_pairs(path)
    sources = list(dict.fromkeys(source for source, _ in pairs))  # distinct, in order of first appearance
    if len(sources) < 3:
        raise DataError(f"--data: {path} has {len(sources)} distinct source sentence(s); at least 3 are needed "
                        "to hold out validation and test pairs")
    count = max(1, round(held_out_fraction * len(sources)))
    if 2 * count >= len(sources):
        raise DataError(f"--data: {path}: holding out {count} + {count} of its {len(sources)} distinct sources "
                        "leaves none for training; lower held_out_fraction")
    order = np.random.default_rng(seed).permutation(len(sources))
    validation_sources = {sources[i] for i in order[:count]}
    test_sources = {sources[i] for i in order[count : 2 * count]}
    validation = [p for p in pairs if p[0] in validation_sources]
    test = [p for p in pairs if p[0] in test_sources]
    training = [p for p in pairs if p[0] not in validation_sources and p[0] not in test_sources]

    def draw(rng: np.random.Generator, n: int) -> list[Pair]:
        return [training[i] for i in rng.integers(0, len(training), size=n)]

    def tokenizer_pairs() -> list[Pair]:
        if len(training) <= TOKENIZER_SENTENCES:
            return training
        chosen = np.random.default_rng((seed, 1)).choice(len(training), TOKENIZER_SENTENCES, replace=False)
        return [training[i] for i in np.sort(chosen)]

    return ParallelCorpus(str(path), validation, test, draw, tokenizer_pairs)


# ---- batches of model ids


class Seq2SeqBatch(NamedTuple):
    """A batch of B pairs as model ids (tokenizer ids + 3), all int64.

    source_ids: (B, S) the sources, right-padded with PAD; S the longest source.
    source_lengths: (B,) each source's length, >= 1.
    target_inputs: (B, T) BOS, then the target, right-padded with PAD; T the longest target + 1.
    target_outputs: (B, T) the target, then EOS, right-padded with IGNORE: what the decoder
        should predict at each position of target_inputs (the next token)."""

    source_ids: np.ndarray
    source_lengths: np.ndarray
    target_inputs: np.ndarray
    target_outputs: np.ndarray


def _model_ids(tokenizer, sentence: str) -> np.ndarray:
    return np.asarray(tokenizer.encode(sentence), dtype=np.int64) + len(SPECIAL_TOKENS)


def encode_batch(pairs, source_tokenizer, target_tokenizer) -> Seq2SeqBatch:
    """The ``Seq2SeqBatch`` of a list of (source, target) pairs; ValueError for an empty list
    or a source that encodes to no tokens (an empty source sentence)."""
    if len(pairs) == 0:
        raise ValueError("encode_batch: no pairs to encode")
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(s, str) for s in pair)):
            raise TypeError(f"encode_batch: pair {i} must be a (source, target) pair of strings, got {pair!r}")
    sources = [_model_ids(source_tokenizer, source) for source, _ in pairs]
    targets = [_model_ids(target_tokenizer, target) for _, target in pairs]
    for i, ids in enumerate(sources):
        if len(ids) == 0:
            raise ValueError(f"encode_batch: the source of pair {i} ({pairs[i][0]!r}) encodes to no tokens")
    B = len(pairs)
    S = max(len(ids) for ids in sources)
    T = max(len(ids) for ids in targets) + 1  # room for BOS (inputs) and EOS (outputs)
    source_ids = np.full((B, S), PAD, dtype=np.int64)
    target_inputs = np.full((B, T), PAD, dtype=np.int64)
    target_outputs = np.full((B, T), IGNORE, dtype=np.int64)
    for b, (source, target) in enumerate(zip(sources, targets)):
        source_ids[b, : len(source)] = source
        target_inputs[b, 0] = BOS
        target_inputs[b, 1 : len(target) + 1] = target
        target_outputs[b, : len(target)] = target
        target_outputs[b, len(target)] = EOS
    source_lengths = np.array([len(ids) for ids in sources], dtype=np.int64)
    return Seq2SeqBatch(source_ids, source_lengths, target_inputs, target_outputs)


def decode_target(ids, target_tokenizer) -> str:
    """The text of a 1-D sequence of model ids: read up to the first EOS, PAD and BOS skipped,
    the rest shifted back to tokenizer ids and decoded. ValueError for an id the model's
    vocabulary (tokenizer ids + 3) does not have."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
        raise ValueError(f"decode_target: ids must be a 1-D sequence of integers, got {ids.dtype} of shape {ids.shape}")
    model_vocab_size = target_tokenizer.vocab_size + len(SPECIAL_TOKENS)
    tokens = []
    for i in ids.tolist():
        if i == EOS:
            break
        if i in (PAD, BOS):
            continue
        if not len(SPECIAL_TOKENS) <= i < model_vocab_size:
            raise ValueError(f"decode_target: id {i} is outside the model's vocabulary 0..{model_vocab_size - 1}")
        tokens.append(i - len(SPECIAL_TOKENS))
    return target_tokenizer.decode(np.array(tokens, dtype=np.int64))
