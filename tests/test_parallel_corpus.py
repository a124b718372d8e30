"""Parallel corpora: the splits, the training draws, the TSV checks, and the batches."""

import datetime
import sys

import numpy as np
import pytest

from tinylm.data import DataError
from tinylm.parallel_corpus import (
    BOS,
    DAYS,
    EOS,
    IGNORE,
    PAD,
    SPECIAL_TOKENS,
    ParallelCorpus,
    builtin_corpus,
    decode_target,
    encode_batch,
    tsv_corpus,
)
from tinylm.tokenizers import CharTokenizer, WordTokenizer


def need(module):
    pytest.importorskip(module, reason=f"{module} comes with pip install 'tinylm[translate]'")


@pytest.fixture(scope="module")
def numbers():
    need("num2words")
    return builtin_corpus("numbers", "en-de", seed=3, validation_size=300, test_size=200)


@pytest.fixture(scope="module")
def dates():
    need("babel")
    return builtin_corpus("dates", "en-fr", seed=5, validation_size=300, test_size=200)


# ---- the built-in corpora


def test_the_german_and_french_sentences_are_those_of_num2words_and_babel():
    need("num2words")
    need("babel")
    from babel.dates import format_date
    from num2words import num2words

    from tinylm.parallel_corpus import date_words, number_words

    assert number_words(23405, "de") == "dreiundzwanzigtausendvierhundertfünf" == num2words(23405, lang="de")
    assert number_words(23405, "fr") == num2words(23405, lang="fr")
    assert number_words(23405, "en") == num2words(23405, lang="en")
    day = (datetime.date(2026, 11, 28) - datetime.date(1900, 1, 1)).days
    assert date_words(day, "en") == "Saturday, November 28, 2026"
    assert date_words(day, "de") == "Samstag, 28. November 2026"
    assert date_words(day, "fr") == format_date(datetime.date(2026, 11, 28), format="full", locale="fr_FR")
    assert date_words(0, "en") == "Monday, January 1, 1900" and date_words(DAYS - 1, "en").endswith("2099")


@pytest.mark.parametrize("fixture", ["numbers", "dates"])
def test_held_out_splits_are_disjoint_sized_and_fixed_by_the_seed(request, fixture):
    corpus = request.getfixturevalue(fixture)
    assert isinstance(corpus, ParallelCorpus)
    assert (len(corpus.validation), len(corpus.test)) == (300, 200)
    validation, test = {s for s, _ in corpus.validation}, {s for s, _ in corpus.test}
    assert len(validation) == 300 and len(test) == 200 and not validation & test
    kind, pair = corpus.name.split()
    again = builtin_corpus(kind, pair, seed=3 if kind == "numbers" else 5, validation_size=300, test_size=200)
    assert again.validation == corpus.validation and again.test == corpus.test
    other = builtin_corpus(kind, pair, seed=99, validation_size=300, test_size=200)
    assert other.validation != corpus.validation


@pytest.mark.parametrize("fixture", ["numbers", "dates"])
def test_training_never_draws_a_held_out_source(request, fixture):
    corpus = request.getfixturevalue(fixture)
    held_out = {s for s, _ in corpus.validation + corpus.test}
    drawn = corpus.sample_train(np.random.default_rng(0), 20_000)
    assert len(drawn) == 20_000
    assert not held_out & {s for s, _ in drawn}


@pytest.mark.parametrize("fixture", ["numbers", "dates"])
def test_sample_train_is_a_function_of_the_generators_state(request, fixture):
    corpus = request.getfixturevalue(fixture)
    rng = np.random.default_rng(7)
    rng.integers(0, 10, size=3)  # any state, not only a fresh one
    state = rng.bit_generator.state
    first = corpus.sample_train(rng, 50)
    after = rng.bit_generator.state
    rng.bit_generator.state = state
    assert corpus.sample_train(rng, 50) == first and rng.bit_generator.state == after
    assert corpus.sample_train(rng, 50) != first  # the next draw goes on
    assert corpus.sample_train(rng, 0) == []


def test_numbers_are_drawn_by_digit_count_so_small_numbers_are_common(numbers):
    need("num2words")
    from num2words import num2words

    words = {num2words(n, lang="en"): n for n in range(1000)}  # the 1- to 3-digit numbers
    drawn = numbers.sample_train(np.random.default_rng(1), 6000)
    small = [words[s] for s, _ in drawn if s in words]
    # k = 1, 2, 3 digits: each 1/6 of the draws (a uniform draw over 0..999,999 would give 0.1%)
    assert 0.45 < len(small) / len(drawn) < 0.55
    assert 0.13 < sum(n < 10 for n in small) / len(drawn) < 0.2
    assert all(target == num2words(words[source], lang="de") for source, target in drawn if source in words)


def test_dates_are_drawn_uniformly_over_the_rest(dates):
    need("babel")
    drawn = dates.sample_train(np.random.default_rng(2), 20_000)
    years = np.array([int(source[-4:]) for source, _ in drawn])
    counts = np.bincount(years - 1900, minlength=200)  # about 100 a year
    assert counts.min() > 50 and counts.max() < 160
    assert all(target.endswith(source[-4:]) for source, target in drawn[:100])


@pytest.mark.parametrize("fixture", ["numbers", "dates"])
def test_tokenizer_text_is_a_fixed_sample_of_training_sentences(request, fixture):
    corpus = request.getfixturevalue(fixture)
    sources = corpus.tokenizer_text("source").split("\n")
    targets = corpus.tokenizer_text("target").split("\n")
    assert len(sources) == len(targets) == 20_000
    assert not {s for s, _ in corpus.validation + corpus.test} & set(sources)
    assert corpus.tokenizer_text("source") == "\n".join(sources)
    with pytest.raises(ValueError, match="tokenizer_text: side must be 'source' or 'target', got 'left'"):
        corpus.tokenizer_text("left")


def test_bad_arguments_are_refused_by_name():
    with pytest.raises(DataError, match="unknown corpus 'poems'; choose one of numbers, dates"):
        builtin_corpus("poems")
    with pytest.raises(DataError, match="unknown language pair 'en-es'; choose one of en-de, en-fr"):
        builtin_corpus("numbers", "en-es")
    with pytest.raises(DataError, match="validation_size must be a positive integer, got 0"):
        builtin_corpus("dates", validation_size=0)
    with pytest.raises(DataError, match="would hold out more than half of the 73,049 dates"):
        builtin_corpus("dates", validation_size=40_000)


@pytest.mark.parametrize("corpus, module, package", [("numbers", "num2words", "num2words"),
                                                     ("dates", "babel.dates", "Babel")])
def test_a_missing_package_is_named_with_the_pip_command(monkeypatch, corpus, module, package):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(DataError, match=f'need {package}: pip install "tinylm\\[translate\\]"') as error:
        builtin_corpus(corpus)
    assert "\n" not in str(error.value)


# ---- a user's TSV corpus


def write(tmp_path, content):
    path = tmp_path / "corpus.tsv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_a_tsv_corpus_holds_out_distinct_sources(tmp_path):
    lines = [f"source {i % 40}\ttarget {i}" for i in range(120)]  # each source three times
    path = write(tmp_path, "\n\n".join(lines) + "\r\n")
    corpus = tsv_corpus(path, seed=1, held_out_fraction=0.1)
    assert corpus.name == str(path)
    validation, test = {s for s, _ in corpus.validation}, {s for s, _ in corpus.test}
    assert len(validation) == len(test) == 4 and not validation & test
    assert len(corpus.validation) == len(corpus.test) == 12  # every pair of a held-out source
    training = {s for s, _ in corpus.sample_train(np.random.default_rng(0), 5000)}
    assert len(training) == 32 and not training & (validation | test)
    assert set(corpus.tokenizer_text("source").split("\n")) == training
    again = tsv_corpus(path, seed=1, held_out_fraction=0.1)
    assert again.validation == corpus.validation and again.test == corpus.test
    assert tsv_corpus(path, seed=2, held_out_fraction=0.1).test != corpus.test


def test_a_tsv_corpus_holds_out_at_least_one_source(tmp_path):
    corpus = tsv_corpus(write(tmp_path, "a\tA\nb\tB\nc\tC\n"), held_out_fraction=0.01)
    assert len(corpus.validation) == len(corpus.test) == 1
    (training,) = {p for p in corpus.sample_train(np.random.default_rng(0), 20)}
    assert {training, *corpus.validation, *corpus.test} == {("a", "A"), ("b", "B"), ("c", "C")}


@pytest.mark.parametrize("content, message", [
    (b"one\tuno\ntwo\tdos\n\xff\xfe\tbad\n", "line 3: not UTF-8"),
    ("one\tuno\ntwo dos\nthree\ttres\n", "line 2: no tab"),
    ("one\tuno\n\n\ntwo\tdos\textra\n", "line 4: 2 tabs"),
    ("one\tuno\n \tdos\n", "line 2: the source sentence is empty"),
    ("one\tuno\ntwo\t\n", "line 2: the target sentence is empty"),
    ("", "is empty"),
    ("\n  \n\n", "is empty"),
    ("one\tuno\none\tun\ntwo\tdos\n", "has 2 distinct source sentence\\(s\\); at least 3 are needed"),
])
def test_a_bad_tsv_file_is_refused_naming_the_file_and_line(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(DataError, match=message) as error:
        tsv_corpus(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_missing_tsv_file_and_a_bad_fraction_are_refused(tmp_path):
    with pytest.raises(DataError, match="cannot read .*nothing.tsv"):
        tsv_corpus(tmp_path / "nothing.tsv")
    with pytest.raises(DataError, match="held_out_fraction must be between 0 and 0.5, got 0.7"):
        tsv_corpus(tmp_path / "nothing.tsv", held_out_fraction=0.7)
    path = write(tmp_path, "a\tA\nb\tB\nc\tC\nd\tD\n")
    with pytest.raises(DataError, match="leaves none for training"):
        tsv_corpus(path, held_out_fraction=0.4)


# ---- batches


TEXT = "the cat sat on the mat. der Hund, die Katze!"
SOURCE, TARGET = CharTokenizer.train(TEXT), WordTokenizer.train(TEXT)


def test_encode_batch_pads_and_shifts_as_documented():
    pairs = [("the cat", "der Hund"), ("q", "die Katze!"), ("mat.", "")]
    batch = encode_batch(pairs, SOURCE, TARGET)
    assert all(a.dtype == np.int64 for a in batch)
    assert batch.source_ids.shape == (3, 7) and batch.source_lengths.tolist() == [7, 1, 4]
    assert batch.target_inputs.shape == batch.target_outputs.shape == (3, 4)  # longest target 3 words, + 1
    shift = len(SPECIAL_TOKENS)
    for b, (source, target) in enumerate(pairs):
        length = batch.source_lengths[b]
        assert batch.source_ids[b, :length].tolist() == (SOURCE.encode(source) + shift).tolist()
        assert (batch.source_ids[b, length:] == PAD).all()
        ids = (TARGET.encode(target) + shift).tolist()
        assert batch.target_inputs[b].tolist() == [BOS] + ids + [PAD] * (3 - len(ids))
        assert batch.target_outputs[b].tolist() == ids + [EOS] + [IGNORE] * (3 - len(ids))
    assert batch.source_ids[1, 0] == 0 + shift  # "q" is unknown to SOURCE: tokenizer id 0, model id 3


def test_decode_target_round_trips_a_batch():
    pairs = [("the", "the Hund, die Katze!"), ("cat", "the mat"), ("sat", "")]  # known pieces only
    batch = encode_batch(pairs, SOURCE, TARGET)
    for b, (_, target) in enumerate(pairs):
        assert decode_target(batch.target_outputs[b], TARGET) == target
        assert decode_target(batch.target_inputs[b], TARGET) == target  # BOS and PAD skipped
    shift = len(SPECIAL_TOKENS)
    mat = TARGET.encode(" mat") + shift
    assert decode_target([BOS, *mat, EOS, *mat, PAD], TARGET) == " mat"  # stops at the first EOS


def test_bad_batches_are_refused_by_name():
    with pytest.raises(ValueError, match="encode_batch: no pairs"):
        encode_batch([], SOURCE, TARGET)
    with pytest.raises(ValueError, match="encode_batch: the source of pair 1 \\(''\\) encodes to no tokens"):
        encode_batch([("the", "der"), ("", "die")], SOURCE, TARGET)
    with pytest.raises(TypeError, match="encode_batch: pair 0 must be a \\(source, target\\) pair"):
        encode_batch(["the cat"], SOURCE, TARGET)
    vocab = TARGET.vocab_size + len(SPECIAL_TOKENS)
    with pytest.raises(ValueError, match=f"decode_target: id {vocab} is outside the model's vocabulary 0..{vocab - 1}"):
        decode_target([BOS, vocab], TARGET)
    with pytest.raises(ValueError, match="decode_target: ids must be a 1-D sequence of integers"):
        decode_target(np.zeros((2, 3), np.int64), TARGET)
