"""Tokenizers: character-level, word-level and byte-level BPE, all saved as JSON.

``CharTokenizer`` gives every character of the training text an id. A character it has
never seen encodes to the unknown token, id 0, which decodes to U+FFFD (�); so
``decode(encode(s)) == s`` holds for every string made of known characters.

``BPETokenizer`` starts from the 256 byte values, so it can represent *any* string
(``decode(encode(s)) == s`` always), and learns merges on the training text: the most
frequent adjacent pair of tokens becomes a new token, again and again, until the
vocabulary reaches ``vocab_size`` (Sennrich et al. 2016; GPT-2's byte-level variant,
without GPT-2's pre-splitting into words).

``WordTokenizer`` gives an id to every *pre-token* of the training text, the pieces GPT-2
cuts text into before its merges: a word with the space before it (" November"), a run of
punctuation with the space before it (", "), or whitespace. A piece it has never seen
encodes to id 0, decoded as U+FFFD, like an unknown character.
"""

from __future__ import annotations

import json
import re
from itertools import repeat

import numpy as np

UNKNOWN = "\ufffd"
MAX_VOCABULARY_BYTES = 1 << 26  # a loaded BPE vocabulary spelling out more bytes is refused (from_dict)


class CharTokenizer:
    kind = "char"

    def __init__(self, chars: list[str]):
        self.chars = [UNKNOWN] + [c for c in chars if c != UNKNOWN]
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def train(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        return np.fromiter((self.index.get(c, 0) for c in text), dtype=np.int64, count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def token_texts(self, ids) -> list[str]:
        """The text of each id on its own (to label a plot)."""
        return [self.chars[int(i)] for i in ids]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "chars": self.chars[1:]}

    @classmethod
    def from_dict(cls, data: dict) -> "CharTokenizer":
        chars = data.get("chars")
        if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise ValueError("'chars' must be a list of single characters")
        if not chars:
            raise ValueError("the vocabulary is empty")
        if len(set(chars)) != len(chars) or UNKNOWN in chars:
            raise ValueError("the vocabulary lists a character twice (or the unknown token U+FFFD)")
        return cls(chars)


def _merge(ids: np.ndarray, left: int, right: int, new_id: int) -> np.ndarray:
    """Replace every non-overlapping occurrence of the pair (left, right), scanning left
    to right, by ``new_id``."""
    if len(ids) < 2:
        return ids
    at = np.flatnonzero((ids[:-1] == left) & (ids[1:] == right))
    if len(at) == 0:
        return ids
    if left == right:  # "aaa" holds the pair twice, overlapping: keep every other one of a run
        run_start = np.concatenate([[True], np.diff(at) != 1])
        run_id = np.cumsum(run_start) - 1
        first_of_run = at[run_start][run_id]
        at = at[(at - first_of_run) % 2 == 0]
    out = ids.copy()
    out[at] = new_id
    keep = np.ones(len(ids), dtype=bool)
    keep[at + 1] = False
    return out[keep]


class BPETokenizer:
    kind = "bpe"

    # Below this many bytes, ``encode`` applies only the merges present (``_encode_short``);
    # above it, every merge in turn over the whole array (``_merge``). The same ids either way.
    SHORT_TEXT = 256

    def __init__(self, merges: list[tuple[int, int]]):
        self.merges = [tuple(m) for m in merges]
        self.rank = {pair: rank for rank, pair in reversed(list(enumerate(self.merges)))}
        self.pieces = [bytes([b]) for b in range(256)]
        for left, right in self.merges:
            self.pieces.append(self.pieces[left] + self.pieces[right])

    @classmethod
    def train(cls, text: str, vocab_size: int) -> "BPETokenizer":
        if vocab_size < 256:
            raise ValueError(f"BPETokenizer: vocab_size must be at least 256 (the byte values), got {vocab_size}")
        ids = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
        merges = []
        for new_id in range(256, vocab_size):
            if len(ids) < 2:
                break
            pairs = ids[:-1] * vocab_size + ids[1:]  # each adjacent pair as one number
            values, counts = np.unique(pairs, return_counts=True)
            best = int(np.argmax(counts))  # ties go to the smallest pair: deterministic
            if counts[best] < 2:
                break
            left, right = divmod(int(values[best]), vocab_size)
            merges.append((left, right))
            ids = _merge(ids, left, right, new_id)
        return cls(merges)

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def encode(self, text: str) -> np.ndarray:
        data = text.encode("utf-8")
        if len(data) < self.SHORT_TEXT:
            return np.array(self._encode_short(data), dtype=np.int64)
        ids = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
        for new_id, (left, right) in enumerate(self.merges, start=256):
            ids = _merge(ids, left, right, new_id)
        return ids

    def _encode_short(self, data: bytes) -> list[int]:
        """The merges in the order they were learned, but only those whose pair occurs: a
        sentence meets a few of the hundreds of merges. Applying the earliest-learned pair
        present, then the next, gives what applying every merge in turn gives, since a merge
        makes a token newer than every earlier merge's pair and so cannot make one appear."""
        ids, rank_of, never = list(data), self.rank.get, len(self.merges)
        while len(ids) >= 2:
            ranks = list(map(rank_of, zip(ids, ids[1:]), repeat(never)))  # each adjacent pair's merge
            rank = min(ranks)
            if rank == never:
                break
            merged, start, taken = [], 0, -2
            for i in [i for i, r in enumerate(ranks) if r == rank]:
                if i == taken + 1:  # overlaps the pair just merged (a run like "aaa"): left to right, as _merge
                    continue
                merged += ids[start:i]
                merged.append(256 + rank)
                start, taken = i + 2, i
            merged += ids[start:]
            ids = merged
        return ids

    def decode_bytes(self, ids) -> bytes:
        return b"".join(self.pieces[int(i)] for i in ids)

    def decode(self, ids) -> str:
        """Text of ``ids``; a byte sequence that is not valid UTF-8 (possible in sampled
        text) shows as U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_texts(self, ids) -> list[str]:
        """The text of each id on its own (to label a plot); a token that is part of a
        character's UTF-8 bytes shows as U+FFFD."""
        return [self.pieces[int(i)].decode("utf-8", errors="replace") for i in ids]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "merges": [list(m) for m in self.merges]}

    @classmethod
    def from_dict(cls, data: dict) -> "BPETokenizer":
        merges = data.get("merges")
        if not isinstance(merges, list):
            raise ValueError("'merges' must be a list of [left, right] pairs")
        lengths = [1] * 256  # bytes of each token, counted before any is made
        for new_id, merge in enumerate(merges, start=256):
            # A merge joins two tokens that exist before it: the bytes and the earlier merges.
            if not (isinstance(merge, list) and len(merge) == 2
                    and all(type(i) is int and 0 <= i < new_id for i in merge)):
                raise ValueError(f"merge {new_id - 256} ({merge!r}) must be a pair of ids below {new_id}")
            lengths.append(lengths[merge[0]] + lengths[merge[1]])
        # Merging a token with itself doubles it: 60 such merges would claim 2^60 bytes.
        if sum(lengths) > MAX_VOCABULARY_BYTES:
            raise ValueError(f"its tokens would spell out {sum(lengths):,} bytes, more than {MAX_VOCABULARY_BYTES:,}")
        return cls(merges)


# GPT-2's pre-tokens, without its English contractions: a word (letters and digits) with an
# optional space before it; a run of other symbols (underscore included) with an optional
# space before it; whitespace, leaving its last space to the word after it ("a  b" is
# "a", " ", " b"); and whitespace at the end. Every character falls in one of these, so the
# pieces of a string, joined, give the string back.
PRE_TOKEN = re.compile(r" ?[^\W_]+| ?(?:[^\w\s]|_)+|\s+(?!\S)|\s+")


def pre_tokens(text: str) -> list[str]:
    """``text`` cut into GPT-2-style pieces; ``"".join(pre_tokens(text)) == text``."""
    return PRE_TOKEN.findall(text)


class WordTokenizer:
    kind = "word"

    def __init__(self, pieces: list[str]):
        self.pieces = [UNKNOWN] + [p for p in pieces if p != UNKNOWN]
        self.index = {p: i for i, p in enumerate(self.pieces)}

    @classmethod
    def train(cls, text: str) -> "WordTokenizer":
        """Every piece of ``text``, sorted (so the same text always gives the same ids)."""
        return cls(sorted(set(pre_tokens(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def encode(self, text: str) -> np.ndarray:
        pieces = pre_tokens(text)
        return np.fromiter((self.index.get(p, 0) for p in pieces), dtype=np.int64, count=len(pieces))

    def decode(self, ids) -> str:
        return "".join(self.pieces[int(i)] for i in ids)

    def token_texts(self, ids) -> list[str]:
        """The text of each id on its own (to label a plot)."""
        return [self.pieces[int(i)] for i in ids]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "pieces": self.pieces[1:]}

    @classmethod
    def from_dict(cls, data: dict) -> "WordTokenizer":
        pieces = data.get("pieces")
        if not isinstance(pieces, list) or not all(isinstance(p, str) and p for p in pieces):
            raise ValueError("'pieces' must be a list of non-empty strings")
        if not pieces:
            raise ValueError("the vocabulary is empty")
        if len(set(pieces)) != len(pieces) or UNKNOWN in pieces:
            raise ValueError("the vocabulary lists a piece twice (or the unknown token U+FFFD)")
        for i, piece in enumerate(pieces):
            # A piece the splitter cannot produce could never be encoded; it means a damaged file.
            if pre_tokens(piece) != [piece]:
                raise ValueError(f"piece {i} ({piece[:40]!r}) is not one word, punctuation run or whitespace run")
        return cls(pieces)


TOKENIZERS = {"char": CharTokenizer, "bpe": BPETokenizer, "word": WordTokenizer}
# The list a saved tokenizer names its vocabulary by, and the tokens it has besides that list.
_VOCABULARY_ENTRIES = {"char": ("chars", 1), "bpe": ("merges", 256), "word": ("pieces", 1)}


def train_tokenizer(kind: str, text: str, vocab_size: int | None = None):
    """A tokenizer of ``kind`` trained on ``text``; ``vocab_size`` is used by "bpe" only
    (default 512): "char" and "word" keep every character or piece of the text."""
    if kind == "char":
        return CharTokenizer.train(text)
    if kind == "bpe":
        return BPETokenizer.train(text, vocab_size or 512)
    if kind == "word":
        return WordTokenizer.train(text)
    raise ValueError(f"unknown tokenizer {kind!r}; choose one of {', '.join(TOKENIZERS)}")


def tokenizer_to_json(tokenizer) -> str:
    return json.dumps(tokenizer.to_dict(), ensure_ascii=False)


def tokenizer_from_json(text: str, vocab_size: int | None = None, expected: str | None = None):
    """The tokenizer saved by ``tokenizer_to_json``; ValueError (one line) for anything else,
    including a vocabulary of another size than ``vocab_size`` (checked before it is built;
    ``expected`` says where that size comes from, in the message)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") not in TOKENIZERS:
        kind = data.get("kind") if isinstance(data, dict) else None
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {', '.join(TOKENIZERS)}")
    key, besides = _VOCABULARY_ENTRIES[data["kind"]]
    entries = data.get(key)
    listed = len(entries) + besides if isinstance(entries, list) else None
    if vocab_size is not None and listed is not None and listed != vocab_size:
        expected = expected or f"the model's vocab_size is {vocab_size}"
        raise ValueError(f"{listed} tokens, but {expected}")
    try:
        return TOKENIZERS[data["kind"]].from_dict(data)
    except ValueError as exc:
        raise ValueError(f"a malformed {data['kind']} tokenizer: {exc}") from None
