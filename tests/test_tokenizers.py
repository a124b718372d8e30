"""Tokenizers: decode(encode(s)) == s for every string they can represent."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinylm.tokenizers import (
    UNKNOWN,
    BPETokenizer,
    CharTokenizer,
    _merge,
    tokenizer_from_json,
    tokenizer_to_json,
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
