"""Corpus-level BLEU (Papineni et al. 2002), computed as sacrebleu computes it by default.

For each order n = 1..4, count over the whole corpus

    matches_n = sum over sentences of  sum over n-grams g of the hypothesis  min(count_hyp(g), count_ref(g))
    totals_n  = sum over sentences of  max(0, len(hypothesis) - n + 1)

(an n-gram of the hypothesis is credited at most as often as the reference holds it: the
"clipped" count). The precision of order n is p_n = 100 * matches_n / totals_n. With c the
words of all hypotheses and r those of all references,

    BLEU = BP * exp( (1/4) * sum_n log p_n ),      BP = 1 if c >= r, else exp(1 - r / c)  (0 if c = 0),

a score between 0 and 100. Words are what sacrebleu's default tokenizer "13a" makes of a
line (``tokenize_13a``, the tokenization of the WMT ``mteval-v13a.pl`` script), and a
precision with no match at all is smoothed as sacrebleu's default ("exp") does: the k-th
order with zero matches gets p_n = 100 / (2^k * totals_n) instead of 0, so one empty order
does not zero the whole score; but a corpus without a single matching word scores 0 (all
p_n are reported as 0). An order with totals_n = 0 (every hypothesis shorter than n
words) leaves p_n = 0, whose log counts as -9999999999: the score is then 0, as in sacrebleu.

``corpus_bleu(hypotheses, references).score`` equals
``sacrebleu.corpus_bleu(hypotheses, [references]).score`` (one reference per sentence).

``tokenize="char"`` counts characters instead of words (sacrebleu's ``tokenize="char"``:
every character but whitespace is a token). It is the BLEU that can tell translations
apart where a whole sentence is one word: German writes every number below a million as
one word ("dreiundzwanzigtausendvierhundertfünf"), so on word level a German number has
no 2-, 3- or 4-grams and its BLEU is 0 however right it is.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

MAX_ORDER = 4
_LOG_OF_ZERO = -9999999999.0  # sacrebleu's stand-in for log(0)

# mteval-v13a's rules, in order (sacrebleu's TokenizerRegexp): each pattern and its replacement.
_RULES_13A = [
    # a symbol or punctuation mark ({|}~ [\]^_` space!"#$%& ()*+ :;<=>? @ /) becomes a word of its own
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    # a period or comma becomes a word unless a digit comes before it ...
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
    # ... or unless a digit comes after it (so 3.14 and 1,000 stay whole)
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
    # a dash after a digit becomes a word (1990-2000 -> 1990 - 2000)
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),
]


def tokenize_13a(line: str) -> str:
    """``line`` as sacrebleu's "13a" tokenizer returns it: words separated by single spaces.

    The language-independent part drops ``<skipped>``, joins words hyphenated across a
    line break, turns line breaks into spaces and unescapes ``&quot; &amp; &lt; &gt;``; then
    the rules of ``_RULES_13A`` split punctuation from words."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for pattern, replacement in _RULES_13A:
        line = pattern.sub(replacement, line)
    return " ".join(line.split())


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


@dataclass(frozen=True)
class BLEUResult:
    """``score`` in 0..100; ``precisions`` p_1..p_4 in percent (smoothed as above);
    ``matches`` and ``totals`` the clipped n-gram counts behind them; lengths in 13a words."""

    score: float
    precisions: tuple[float, ...]
    brevity_penalty: float
    hypothesis_length: int
    reference_length: int
    matches: tuple[int, ...]
    totals: tuple[int, ...]

    def __str__(self) -> str:
        precisions = "/".join(f"{p:.1f}" for p in self.precisions)
        return (f"BLEU = {self.score:.2f} {precisions} (BP = {self.brevity_penalty:.3f} "
                f"ratio = {self.hypothesis_length / max(self.reference_length, 1):.3f} "
                f"hyp_len = {self.hypothesis_length} ref_len = {self.reference_length})")


def _check_corpus(function: str, hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise TypeError(f"{function}: give lists of sentences, not a single string")
    if len(hypotheses) != len(references):
        raise ValueError(f"{function}: {len(hypotheses)} hypotheses but {len(references)} references")
    if len(hypotheses) == 0:
        raise ValueError(f"{function}: the corpus is empty")
    for what, sentences in (("hypothesis", hypotheses), ("reference", references)):
        for i, sentence in enumerate(sentences):
            if not isinstance(sentence, str):
                raise TypeError(f"{function}: {what} {i} is a {type(sentence).__name__}, not a str")


def brevity_penalty(hypothesis_length: int, reference_length: int) -> float:
    """exp(1 - r/c) when the hypotheses are shorter (c < r), else 1; 0 for empty hypotheses."""
    if hypothesis_length >= reference_length:
        return 1.0
    if hypothesis_length == 0:
        return 0.0
    return math.exp(1.0 - reference_length / hypothesis_length)


def tokenize_char(line: str) -> str:
    """``line`` as sacrebleu's "char" tokenizer returns it: its characters separated by spaces
    (whitespace in the line then splits away)."""
    return " ".join(line)


TOKENIZE = {"13a": tokenize_13a, "char": tokenize_char}


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "13a") -> BLEUResult:
    """BLEU of ``hypotheses`` against ``references`` (one reference per hypothesis), by the
    formula in this module's docstring, over the tokens ``tokenize`` makes ("13a" words or
    "char" characters). Trailing whitespace is dropped before tokenizing, as sacrebleu does."""
    _check_corpus("corpus_bleu", hypotheses, references)
    if tokenize not in TOKENIZE:
        raise ValueError(f"corpus_bleu: tokenize must be one of {', '.join(TOKENIZE)}, got {tokenize!r}")
    split = TOKENIZE[tokenize]
    matches, totals = [0] * MAX_ORDER, [0] * MAX_ORDER
    hypothesis_length = reference_length = 0
    for hypothesis, reference in zip(hypotheses, references):
        hypothesis_words = split(hypothesis.rstrip()).split()
        reference_words = split(reference.rstrip()).split()
        hypothesis_length += len(hypothesis_words)
        reference_length += len(reference_words)
        for n in range(1, MAX_ORDER + 1):
            hypothesis_ngrams = _ngrams(hypothesis_words, n)
            reference_ngrams = _ngrams(reference_words, n)
            matches[n - 1] += sum(min(count, reference_ngrams[g]) for g, count in hypothesis_ngrams.items())
            totals[n - 1] += max(0, len(hypothesis_words) - n + 1)

    penalty = brevity_penalty(hypothesis_length, reference_length)
    precisions = [0.0] * MAX_ORDER
    if not any(matches):  # not one word right: 0, with nothing to smooth
        return BLEUResult(score=0.0, precisions=tuple(precisions), brevity_penalty=penalty,
                          hypothesis_length=hypothesis_length, reference_length=reference_length,
                          matches=tuple(matches), totals=tuple(totals))
    zero_orders = 0  # the "exp" smoothing: the k-th order without a match gets 100 / (2^k * total)
    for n in range(MAX_ORDER):
        if totals[n] == 0:
            break  # no n-grams at all (nor of any higher order): p_n stays 0
        if matches[n] == 0:
            zero_orders += 1
            precisions[n] = 100.0 / (2**zero_orders * totals[n])
        else:
            precisions[n] = 100.0 * matches[n] / totals[n]

    log_mean = sum(math.log(p) if p > 0 else _LOG_OF_ZERO for p in precisions) / MAX_ORDER
    return BLEUResult(score=penalty * math.exp(log_mean), precisions=tuple(precisions), brevity_penalty=penalty,
                      hypothesis_length=hypothesis_length, reference_length=reference_length,
                      matches=tuple(matches), totals=tuple(totals))


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """The fraction (0..1) of hypotheses identical to their reference, character for character."""
    _check_corpus("exact_match", hypotheses, references)
    return sum(h == r for h, r in zip(hypotheses, references)) / len(hypotheses)
