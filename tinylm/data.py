"""Text in, token ids out: loading, cleaning, splitting and batching a corpus.

The default corpus is the documentation that ships inside CPython (``pydoc_data.topics``,
about 465,000 characters of English prose and code), so training needs no download.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class DataError(ValueError):
    """A corpus that cannot be used; the message is one line, fit to show a user."""


def default_corpus() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def _read_text_file(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"--data: cannot read {path}: {exc.strerror or exc}") from None
    if b"\x00" in raw[:8192]:
        raise DataError(f"--data: {path} looks binary (it contains NUL bytes); give a UTF-8 text file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"--data: {path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def load_corpus(path: str | None = None) -> str:
    """The default corpus, or a UTF-8 text file, or every ``.txt`` file in a folder
    (sorted by name, joined with blank lines)."""
    if path is None:
        return default_corpus()
    source = Path(path)
    if not source.exists():
        raise DataError(f"--data: {path} does not exist")
    if source.is_dir():
        files = sorted(p for p in source.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"--data: the folder {path} holds no .txt files")
        text = "\n\n".join(_read_text_file(p) for p in files)
    else:
        text = _read_text_file(source)
    if not text.strip():
        raise DataError(f"--data: {path} is empty")
    return text


def clean(text: str, lowercase: bool = False) -> str:
    """Normalise newlines (\\r\\n and \\r become \\n) and optionally lowercase."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.lower() if lowercase else text


def split_train_validation(text: str, validation_fraction: float = 0.1) -> tuple[str, str]:
    """The first 90% for training, the last 10% held out: deterministic, and the held-out
    text is text the model never saw (not a random sample of overlapping windows)."""
    if not 0.0 < validation_fraction < 1.0:
        raise DataError(f"validation fraction must be between 0 and 1, got {validation_fraction}")
    cut = int(len(text) * (1.0 - validation_fraction))
    return text[:cut], text[cut:]


def prepare_text(config: dict) -> tuple[str, str]:
    """A run's training and validation text from its config: the corpus (``config["data"]``,
    None for the default one), cleaned as the run says (``config["lowercase"]``), then split
    90/10. Training, a resume and ``tinylm.evaluate`` all call it, so they read the same text."""
    return split_train_validation(clean(load_corpus(config["data"]), config["lowercase"]))


def random_batch(ids: np.ndarray, batch_size: int, seq_len: int, rng: np.random.Generator):
    """``batch_size`` random windows: inputs (B, T) and targets (B, T), the next token of each."""
    if len(ids) < seq_len + 1:
        raise DataError(f"the text has {len(ids)} tokens, fewer than --seq-len + 1 = {seq_len + 1}")
    starts = rng.integers(0, len(ids) - seq_len, size=batch_size)
    windows = starts[:, None] + np.arange(seq_len + 1)  # (B, T + 1)
    tokens = ids[windows]
    return tokens[:, :-1], tokens[:, 1:]


class ContiguousBatches:
    """For truncated backpropagation through time: the text cut into ``batch_size``
    parallel streams, read ``seq_len`` tokens at a time, so that batch k+1 continues
    exactly where batch k stopped and a recurrent state can be carried across.
    ``position`` is saved in checkpoints so a resumed run continues the same streams."""

    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int, position: int = 0):
        stream_length = len(ids) // batch_size
        if stream_length < seq_len + 1:
            raise DataError(f"{len(ids)} tokens make streams of {stream_length}, "
                            f"fewer than --seq-len + 1 = {seq_len + 1}")
        self.streams = ids[: stream_length * batch_size].reshape(batch_size, stream_length)  # (B, L)
        self.seq_len, self.position = seq_len, position

    def next(self):
        """(inputs, targets, from_start): from_start is True when this batch begins the
        streams again (the first batch, or after wrapping around), where a carried
        state does not belong."""
        if self.position + self.seq_len + 1 > self.streams.shape[1]:
            self.position = 0
        from_start = self.position == 0
        chunk = self.streams[:, self.position : self.position + self.seq_len + 1]  # (B, T + 1)
        self.position += self.seq_len
        return chunk[:, :-1], chunk[:, 1:], from_start
