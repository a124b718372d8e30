"""Tokenizers: decode(encode(s)) == s for every string they can represent."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinylm.tokenizers import (
    UNKNOWN,
    BPETokenizer,
    CharTokenizer,
    WordTokenizer,
    _merge,
    pre_tokens,
    tokenizer_from_json,
    tokenizer_to_json,
    train_tokenizer,
)

TRAINING_TEXT = "the quick brown fox jumps over the lazy dog. THE END? ünïcödé ☃ \n\t" * 20
CHAR = CharTokenizer.train(TRAINING_TEXT)
BPE = BPETokenizer.train(TRAINING_TEXT, vocab_size=300)


@given(st.text(alphabet=sorted(set(TRAINING_TEXT))))
def test_char_round_trip_over_known_characters(text):
    assert CHAR.decode(CHAR.encode(text)) == text


@given(st.text())
def test_char_unknown_characters_become_the_documented_unknown_token(text):
    decoded = CHAR.decode(CHAR.encode(text))
    assert len(decoded) == len(text)
    assert all(d == c if c in CHAR.index else d == UNKNOWN for c, d in zip(text, decoded))


@given(st.text())
def test_bpe_round_trips_any_string(text):
    ids = BPE.encode(text)
    assert BPE.decode(ids) == text
    assert ids.dtype == np.int64 and (ids.size == 0 or (ids.min() >= 0 and ids.max() < BPE.vocab_size))


@given(st.text(alphabet="aab the quick brown fox ünï☃", max_size=80) | st.text(max_size=40))
def test_bpe_short_text_path_gives_the_ids_of_every_merge_applied_in_turn(text):
    every_merge = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
    for new_id, (left, right) in enumerate(BPE.merges, start=256):
        every_merge = _merge(every_merge, left, right, new_id)
    assert len(text.encode("utf-8")) < BPE.SHORT_TEXT
    np.testing.assert_array_equal(BPE.encode(text), every_merge)


def test_bpe_learns_merges_that_shorten_the_training_text():
    assert BPE.vocab_size == 300
    assert len(BPE.encode(TRAINING_TEXT)) < 0.5 * len(TRAINING_TEXT.encode("utf-8"))


def _merge_by_hand(ids, left, right, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == left and ids[i + 1] == right:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


@given(st.lists(st.integers(0, 2), max_size=30), st.integers(0, 2), st.integers(0, 2))
def test_vectorised_merge_equals_the_left_to_right_scan(ids, left, right):
    """Including runs such as (a, a, a), where the pair overlaps itself."""
    assert _merge(np.array(ids, dtype=np.int64), left, right, 9).tolist() == _merge_by_hand(ids, left, right, 9)


def test_tokenizers_survive_json():
    for tokenizer in (CHAR, BPE):
        again = tokenizer_from_json(tokenizer_to_json(tokenizer))
        assert type(again) is type(tokenizer)
        assert again.encode(TRAINING_TEXT).tolist() == tokenizer.encode(TRAINING_TEXT).tolist()


def test_a_bpe_file_that_would_spell_out_too_many_bytes_is_refused_before_building():
    import json

    from tinylm.tokenizers import MAX_VOCABULARY_BYTES

    doubling = [[97, 97]] + [[256 + i, 256 + i] for i in range(60)]  # the last token: 2^61 bytes
    with pytest.raises(ValueError, match=f"more than {MAX_VOCABULARY_BYTES:,}"):
        tokenizer_from_json(json.dumps({"kind": "bpe", "merges": doubling}))
    with pytest.raises(ValueError, match="317 tokens, but the model's vocab_size is 300"):
        tokenizer_from_json(json.dumps({"kind": "bpe", "merges": doubling}), vocab_size=300)


# ---- the word tokenizer

WORD = WordTokenizer.train(TRAINING_TEXT)


def test_pre_tokens_are_gpt2_style_pieces():
    assert pre_tokens("Samstag, 28. November 2026") == ["Samstag", ",", " 28", ".", " November", " 2026"]
    assert pre_tokens("a  b\n\nc_d...  ") == ["a", " ", " b", "\n", "\n", "c", "_", "d", "...", "  "]
    assert pre_tokens("vingt-trois") == ["vingt", "-", "trois"]


@given(st.text())
def test_pre_tokens_join_back_to_the_text_and_each_piece_is_one_piece(text):
    pieces = pre_tokens(text)
    assert "".join(pieces) == text
    assert all(pre_tokens(piece) == [piece] for piece in pieces)  # so a trained vocabulary always loads


SPACED_WORDS = ["quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog.", "THE", "END?", "ünïcödé", "☃"]


@given(st.lists(st.sampled_from(SPACED_WORDS), max_size=20).map(lambda words: "the" + "".join(" " + w for w in words)))
def test_word_round_trip_over_known_pieces(text):
    ids = WORD.encode(text)
    assert WORD.decode(ids) == text
    assert ids.dtype == np.int64 and ids.min() >= 1 and ids.max() < WORD.vocab_size


@given(st.text(alphabet=sorted(set(TRAINING_TEXT)) + ["x", "_", "\r"]))
def test_word_unknown_pieces_and_only_they_become_the_unknown_token(text):
    expected = "".join(piece if piece in WORD.index else UNKNOWN for piece in pre_tokens(text))
    assert WORD.decode(WORD.encode(text)) == expected


def test_word_unknown_pieces_become_the_unknown_token():
    assert WORD.decode(WORD.encode("the cat jumps over the moon")) == f"the{UNKNOWN} jumps over the{UNKNOWN}"
    assert WORD.token_texts(WORD.encode("the fox?")) == ["the", " fox", "?"]


def test_word_vocabulary_is_every_piece_sorted():
    assert WORD.pieces[0] == UNKNOWN and WORD.pieces[1:] == sorted(set(pre_tokens(TRAINING_TEXT)))
    assert WordTokenizer.train(TRAINING_TEXT).pieces == WORD.pieces
    assert train_tokenizer("word", TRAINING_TEXT).pieces == WORD.pieces


def test_token_texts_label_each_token():
    assert CHAR.token_texts(CHAR.encode("fox")) == ["f", "o", "x"]
    texts = BPE.token_texts(BPE.encode("the ☃"))
    assert "".join(texts).replace(UNKNOWN, "") in "the ☃" and len(texts) == len(BPE.encode("the ☃"))
    assert BPE.token_texts([ord("a"), 0xE2]) == ["a", UNKNOWN]  # a lone byte of a character


def test_word_tokenizer_survives_json():
    again = tokenizer_from_json(tokenizer_to_json(WORD), vocab_size=WORD.vocab_size)
    assert type(again) is WordTokenizer and again.pieces == WORD.pieces
    with pytest.raises(ValueError, match=f"{WORD.vocab_size} tokens, but the model's vocab_size is 5"):
        tokenizer_from_json(tokenizer_to_json(WORD), vocab_size=5)


@pytest.mark.parametrize("pieces, message", [
    ([], "the vocabulary is empty"),
    ("the", "'pieces' must be a list of non-empty strings"),
    (["the", 3], "'pieces' must be a list of non-empty strings"),
    (["the", ""], "'pieces' must be a list of non-empty strings"),
    (["the", " cat", "the"], "lists a piece twice"),
    (["the", UNKNOWN], "lists a piece twice \\(or the unknown token"),
    (["the", "the cat"], "piece 1 \\('the cat'\\) is not one word"),
    ([" ,x"], "piece 0 \\(' ,x'\\) is not one word"),
])
def test_a_damaged_word_tokenizer_file_is_refused(pieces, message):
    import json

    with pytest.raises(ValueError, match=f"a malformed word tokenizer: .*{message}"):
        tokenizer_from_json(json.dumps({"kind": "word", "pieces": pieces}))


def test_an_unknown_tokenizer_kind_names_the_three():
    with pytest.raises(ValueError, match="choose one of char, bpe, word"):
        train_tokenizer("wordpiece", TRAINING_TEXT)
