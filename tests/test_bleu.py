"""BLEU: the formula on hand-checked examples, and sacrebleu's score on many corpora."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinylm.bleu import BLEUResult, corpus_bleu, exact_match, tokenize_13a


def formula(precisions, hypothesis_length, reference_length):
    """BLEU from the module docstring's formula, written out again for the examples."""
    penalty = 1.0 if hypothesis_length >= reference_length else math.exp(1 - reference_length / hypothesis_length)
    return penalty * math.exp(sum(math.log(p) for p in precisions) / 4)


def test_an_identical_corpus_scores_100():
    result = corpus_bleu(["the cat sat on the mat .", "a b c d e"], ["the cat sat on the mat .", "a b c d e"])
    assert result.score == pytest.approx(100.0)
    assert result.precisions == (100.0, 100.0, 100.0, 100.0) and result.brevity_penalty == 1.0


def test_clipped_counts_and_the_exp_smoothing_by_hand():
    # hypothesis "the the the the", reference "the cat": "the" is credited once (clipped), so
    # p1 = 1/4; no bigram, trigram or 4-gram matches: the k-th such order gets 100 / (2^k * total)
    result = corpus_bleu(["the the the the"], ["the cat"])
    assert result.matches == (1, 0, 0, 0) and result.totals == (4, 3, 2, 1)
    assert result.precisions == pytest.approx((25.0, 100 / (2 * 3), 100 / (4 * 2), 100 / (8 * 1)))
    assert result.brevity_penalty == 1.0
    assert result.score == pytest.approx(formula([25.0, 100 / 6, 12.5, 12.5], 4, 2), rel=1e-12)


def test_the_brevity_penalty_by_hand():
    # every n-gram of the hypothesis matches, but it has 4 words where the reference has 8
    result = corpus_bleu(["a b c d"], ["a b c d e f g h"])
    assert result.precisions == (100.0, 100.0, 100.0, 100.0)
    assert result.brevity_penalty == pytest.approx(math.exp(1 - 8 / 4))
    assert result.score == pytest.approx(100 * math.exp(-1), rel=1e-12)
    assert (result.hypothesis_length, result.reference_length) == (4, 8)


def test_counts_are_summed_over_the_corpus_before_dividing():
    # sentence 1: 3/3 unigrams, 2/2 bigrams, 1/1 trigram, no 4-gram; sentence 2: 1/2, 0/1, none, none
    result = corpus_bleu(["x y z", "x q"], ["x y z", "x w"])
    assert result.matches == (4, 2, 1, 0) and result.totals == (5, 3, 1, 0)
    # an order with no n-grams at all (every hypothesis too short) leaves p_4 = 0: the score is 0
    assert result.precisions[3] == 0.0 and result.score == 0.0


def test_a_corpus_without_one_matching_word_scores_0_unsmoothed():
    result = corpus_bleu(["x y z w", "v"], ["a b c d", "e f"])
    assert result.score == 0.0 and result.precisions == (0.0, 0.0, 0.0, 0.0) and result.matches == (0, 0, 0, 0)


def test_empty_hypotheses_score_0():
    result = corpus_bleu(["", ""], ["some words", "more words here"])
    assert result.score == 0.0 and result.brevity_penalty == 0.0 and result.hypothesis_length == 0


@pytest.mark.parametrize("line, words", [
    ("Hello, world!", "Hello , world !"),
    ("It costs 3.14 or 1,000 dollars.", "It costs 3.14 or 1,000 dollars ."),
    ("from 1990-2000 (roughly)", "from 1990 - 2000 ( roughly )"),
    ("Tom &amp; Jerry &quot;live&quot;", 'Tom & Jerry " live "'),
    ("Samstag, 28. November 2026", "Samstag , 28 . November 2026"),
    ("  spaced   out  ", "spaced out"),
    ("vingt-trois mille", "vingt-trois mille"),
    ("a <skipped> b, hyphen-\nated", "a b , hyphenated"),
])
def test_13a_tokenization_by_hand(line, words):
    assert tokenize_13a(line) == words


def test_exact_match():
    assert exact_match(["a", "b c", "d"], ["a", "b  c", "d"]) == pytest.approx(2 / 3)
    assert exact_match(["x"], ["x"]) == 1.0


@pytest.mark.parametrize("function", [corpus_bleu, exact_match])
def test_bad_corpora_are_refused_by_name(function):
    with pytest.raises(ValueError, match=f"{function.__name__}: 2 hypotheses but 1 references"):
        function(["a", "b"], ["a"])
    with pytest.raises(ValueError, match=f"{function.__name__}: the corpus is empty"):
        function([], [])
    with pytest.raises(TypeError, match=f"{function.__name__}: give lists of sentences"):
        function("a b", "a b")
    with pytest.raises(TypeError, match=f"{function.__name__}: reference 0 is a int"):
        function(["a"], [3])


def test_the_result_prints_like_sacrebleu():
    result = corpus_bleu(["a b c d"], ["a b c d e f g h"])
    assert isinstance(result, BLEUResult)
    assert str(result).startswith("BLEU = 36.79 100.0/100.0/100.0/100.0 (BP = 0.368 ratio = 0.500")


# ---- against sacrebleu

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "Samstag", "November", "vingt", "-", "trois", "mille",
         ",", ".", "!", "?", "(", ")", "3.14", "1,000", "1990-2000", "&amp;", "don't", "x", ""]


def sentences():
    return st.lists(st.sampled_from(WORDS), max_size=14).map(" ".join)


@st.composite
def corpora(draw):
    references = draw(st.lists(sentences(), min_size=1, max_size=8))
    hypotheses = []
    for reference in references:  # near misses of the reference, or anything at all
        words = reference.split(" ")
        edit = draw(st.sampled_from(["same", "drop", "swap", "add", "other"]))
        if edit == "drop" and words:
            del words[draw(st.integers(0, len(words) - 1))]
        elif edit == "swap" and len(words) > 1:
            i = draw(st.integers(0, len(words) - 2))
            words[i], words[i + 1] = words[i + 1], words[i]
        elif edit == "add":
            words.insert(draw(st.integers(0, len(words))), draw(st.sampled_from(WORDS)))
        elif edit == "other":
            words = [draw(sentences())]
        hypotheses.append(" ".join(words) + draw(st.sampled_from(["", " ", "\t", "\n"])))
    return hypotheses, references


def assert_same_as_sacrebleu(hypotheses, references, tokenize="13a"):
    sacrebleu = pytest.importorskip("sacrebleu", reason="sacrebleu is the reference BLEU (pip install sacrebleu)")
    theirs = sacrebleu.corpus_bleu(hypotheses, [references], tokenize=tokenize)
    ours = corpus_bleu(hypotheses, references, tokenize=tokenize)
    assert ours.score == pytest.approx(theirs.score, abs=1e-9)
    assert ours.precisions == pytest.approx(tuple(theirs.precisions), abs=1e-9)
    assert ours.brevity_penalty == pytest.approx(theirs.bp, abs=1e-12)
    assert (ours.hypothesis_length, ours.reference_length) == (theirs.sys_len, theirs.ref_len)
    assert list(ours.matches) == list(theirs.counts) and list(ours.totals) == list(theirs.totals)


@settings(max_examples=300, deadline=None)
@given(corpora())
def test_equal_to_sacrebleu_on_random_corpora(corpus):
    assert_same_as_sacrebleu(*corpus)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=30), min_size=1, max_size=5), st.data())
def test_equal_to_sacrebleu_on_any_text(hypotheses, data):
    references = data.draw(st.lists(st.text(max_size=30), min_size=len(hypotheses), max_size=len(hypotheses)))
    assert_same_as_sacrebleu(hypotheses, references)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab1.,-&;quotmpgl<> \n\t\u00e9<skipped>")), max_size=40))
def test_13a_equal_to_sacrebleus_tokenizer(line):
    pytest.importorskip("sacrebleu", reason="sacrebleu is the reference BLEU (pip install sacrebleu)")
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    assert tokenize_13a(line) == Tokenizer13a()(line)


REFERENCES = [
    "Samstag, 28. November 2026",
    "Montag, 1. Januar 1900",
    "dreiundzwanzigtausendvierhundertfünf",
    "samedi 28 novembre 2026",
    "vingt-trois mille quatre cent cinq",
    "Freitag, 31. Dezember 2099",
]


@pytest.mark.parametrize("hypotheses", [
    REFERENCES,  # perfect
    ["Samstag, 28. November 2025", "Montag, 1. Januar 1901", "dreiundzwanzigtausendvierhundertsechs",
     "samedi 28 novembre 2025", "vingt-trois mille quatre cent six", "Freitag, 31. Dezember 2098"],  # near misses
    ["Samstag, 28. November", "Montag", "", "samedi", "vingt-trois", "Freitag, 31."],  # too short
    ["Sonntag, 29. Oktober 2026 2026 2026", "Dienstag, 2. Februar 1900", "zwei", "dimanche 29 octobre 2026",
     "vingt-quatre mille", "Samstag, 1. Januar 2000"],  # too long and wrong
    ["nichts", "rien", "nada", "niente", "nothing", "niets"],  # no match of any order
    ["", "", "", "", "", ""],  # empty
])
def test_equal_to_sacrebleu_on_translation_like_corpora(hypotheses):
    assert_same_as_sacrebleu(hypotheses, REFERENCES)
    assert_same_as_sacrebleu(hypotheses, REFERENCES, tokenize="char")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=30), min_size=1, max_size=5), st.data())
def test_character_bleu_equal_to_sacrebleus_on_any_text(hypotheses, data):
    references = data.draw(st.lists(st.text(max_size=30), min_size=len(hypotheses), max_size=len(hypotheses)))
    assert_same_as_sacrebleu(hypotheses, references, tokenize="char")


def test_word_bleu_of_a_one_word_translation_is_0_and_character_bleu_sees_how_close_it_is():
    reference = ["dreiundzwanzigtausendvierhundertfünf"]
    assert corpus_bleu(reference, reference).score == 0.0  # no 2-, 3-, 4-grams in one word
    close = corpus_bleu(["dreiundzwanzigtausendvierhundertsechs"], reference, tokenize="char").score
    far = corpus_bleu(["siebentausend"], reference, tokenize="char").score
    assert corpus_bleu(reference, reference, tokenize="char").score == pytest.approx(100.0)
    assert 100.0 > close > far > 0.0
