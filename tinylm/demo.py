"""``python -m tinylm.demo``: the engine core learning characters, with nothing but ops.

A character-level model in the style of Bengio et al. (2003): the previous ``context``
characters are looked up in an embedding table, joined, passed through one tanh
hidden layer, and scored against every character of the vocabulary. It trains on
the documentation text that ships with CPython (``pydoc_data.topics``), so it needs
no download, then writes a sample. Every gradient comes from tinylm's autograd;
the update is plain SGD. ``python -m tinylm.train`` is the real
training entry point with layers, optimizers and checkpoints.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import tinylm
from tinylm import ops


def load_corpus() -> str:
    from pydoc_data.topics import topics

    return "\n".join(topics[key] for key in sorted(topics))


def make_batch(ids: np.ndarray, context: int, batch_size: int, rng: np.random.Generator):
    """Random windows: inputs (B, context) and the character after each, (B,)."""
    starts = rng.integers(0, len(ids) - context, size=batch_size)
    windows = starts[:, None] + np.arange(context)  # (B, context)
    return ids[windows], ids[starts + context]


def forward(params: dict, inputs) -> tinylm.Tensor:
    """Log-probabilities of the next character, (B, V)."""
    embedded = ops.embedding(inputs, params["embedding"])  # (B, context, E)
    joined = embedded.reshape(embedded.shape[0], -1)  # (B, context * E)
    hidden = (joined @ params["w1"] + params["b1"]).tanh()  # (B, H)
    return ops.log_softmax(hidden @ params["w2"] + params["b2"], axis=-1)  # (B, V)


def nll(log_probs: tinylm.Tensor, targets: np.ndarray) -> tinylm.Tensor:
    """Mean negative log-likelihood of the targets: pick each row's target entry."""
    return -log_probs[np.arange(len(targets)), targets].mean()


def sample(params: dict, chars: list[str], seed_ids: np.ndarray, length: int, rng) -> str:
    context = list(seed_ids)
    out = []
    with tinylm.no_grad():
        for _ in range(length):
            log_probs = forward(params, np.array([context[-len(seed_ids):]]))
            probs = np.exp(log_probs.numpy()[0].astype(np.float64))
            next_id = rng.choice(len(chars), p=probs / probs.sum())
            context.append(next_id)
            out.append(chars[next_id])
    return "".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--context", type=int, default=4)
    parser.add_argument("--embedding-dim", type=int, default=16)
    parser.add_argument("--hidden-dim", type=int, default=192)
    parser.add_argument("--lr", type=float, default=0.3)
    parser.add_argument("--backend", choices=["numpy", "cython"], default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.backend:
        tinylm.set_backend(args.backend)

    text = load_corpus()
    chars = sorted(set(text))
    index_of = {c: i for i, c in enumerate(chars)}
    ids = np.array([index_of[c] for c in text])
    split = int(0.9 * len(ids))
    train_ids, val_ids = ids[:split], ids[split:]
    rng = np.random.default_rng(args.seed)
    print(f"corpus: pydoc_data.topics, {len(text):,} characters, vocabulary {len(chars)}; "
          f"backend {tinylm.get_backend()}")

    vocab, width = len(chars), args.context * args.embedding_dim

    def init(*shape, scale=1.0):
        return tinylm.Tensor((scale * rng.standard_normal(shape)).astype(np.float32), requires_grad=True)

    params = {
        "embedding": init(vocab, args.embedding_dim),
        "w1": init(width, args.hidden_dim, scale=width**-0.5),
        "b1": init(args.hidden_dim, scale=0.0),
        "w2": init(args.hidden_dim, vocab, scale=0.1 * args.hidden_dim**-0.5),
        "b2": init(vocab, scale=0.0),
    }
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        inputs, targets = make_batch(train_ids, args.context, args.batch_size, rng)
        loss = nll(forward(params, inputs), targets)
        loss.backward()
        lr = args.lr * (0.1 if step > 0.8 * args.steps else 1.0)
        with tinylm.no_grad():
            for p in params.values():
                p.data -= lr * p.grad.data
                p.zero_grad()
        if step % 250 == 0 or step == 1:
            with tinylm.no_grad():
                val_inputs, val_targets = make_batch(val_ids, args.context, 2048, rng)
                val_loss = nll(forward(params, val_inputs), val_targets).item()
            print(f"step {step:5d}  train loss {loss.item():.3f}  val loss {val_loss:.3f}  "
                  f"({time.perf_counter() - start:.1f}s)")
    print(f"\nuniform guessing would score {np.log(vocab):.3f}; a sample:\n")
    print(sample(params, chars, ids[:args.context], 300, rng))


if __name__ == "__main__":
    main()
