"""``python -m tinylm.attention``: a trained transformer's attention weights on a text, as heatmaps and CSV.

    python -m tinylm.attention --checkpoint runs/DIR --text "I am eating at a restaurant"

runs the text through the checkpoint's model and writes, to ``--out`` (default
``DIR/attention``), one heatmap per layer and head, ``layer{L}_head{H}.png``, whose row i
shows how query position i spreads its attention over the key positions 0..i, and
``attention.csv`` with every weight: layer, head, query and key position, query and
key token, weight. Layers and heads count from 0, as in the parameter names
(``blocks.0.attn``). Each row of weights sums to 1; entries above the diagonal are 0
(a position never sees the future).

The weights are recomputed from each block's input with the block's own layers
(``ln_1``, then the attention asked for its weights), so the model's forward is used
as it is and nothing in it changes.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

import tinylm
from tinylm import cli
from tinylm.checkpoint import CheckpointError, read_json
from tinylm.data import clean
from tinylm.models import TransformerLanguageModel
from tinylm.runs import load_run

CSV_FIELDS = ["layer", "head", "query_position", "key_position", "query_token", "key_token", "weight"]


def parse_args(argv=None):
    p = cli.ArgumentParser(prog="python -m tinylm.attention", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="a run directory written by python -m tinylm.train --model transformer")
    p.add_argument("--text", required=True, help="the text to run (at most the model's context length in tokens)")
    p.add_argument("--out", metavar="DIR", help="where to write the PNGs and attention.csv (default: DIR/attention)")
    return p.parse_args(argv)


def attention_maps(model: TransformerLanguageModel, ids: np.ndarray) -> list[np.ndarray]:
    """The attention weights of every block for one sequence: a list with one
    (n_heads, T, T) array per layer; [h, i, j] is how much query i attends to key j."""
    model.eval()  # no dropout: the weights the model really uses at inference
    maps = []
    with tinylm.no_grad():
        x = model.position(model.embedding(ids[None, :]))  # (1, T, d_model), as in model.forward
        for block in model.blocks:
            normed = block.ln_1(x)  # the attention's input, as in Block.forward
            _, weights = block.attn(normed, normed, normed, is_causal=True, need_weights=True,
                                    average_attn_weights=False)  # (1, nh, T, T)
            maps.append(weights.numpy()[0].astype(np.float64))
            x = block(x)  # the block's output: the next block's input
    return maps


def token_texts(tokenizer, ids) -> list[str]:
    """Each token's own text (a BPE token that is part of a UTF-8 character shows as �)."""
    if hasattr(tokenizer, "decode_bytes"):
        return [tokenizer.decode_bytes([int(i)]).decode("utf-8", errors="replace") for i in ids]
    return [tokenizer.decode([int(i)]) for i in ids]


def axis_label(token: str) -> str:
    """A token as a tick label: spaces and line breaks made visible."""
    return token.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥")


def write_csv(path: Path, maps: list[np.ndarray], tokens: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS)
        for layer, heads in enumerate(maps):
            for head, weights in enumerate(heads):
                for i, row in enumerate(weights):
                    for j, weight in enumerate(row):
                        writer.writerow([layer, head, i, j, tokens[i], tokens[j], f"{weight:.6g}"])


def plot_heatmap(path: Path, weights: np.ndarray, tokens: list[str], title: str) -> None:
    """One (T, T) map: queries down the side, keys along the bottom, 0 to 1 in colour;
    the future (above the diagonal, which the causal mask hides) in light grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [axis_label(t) for t in tokens]
    side = 2.5 + 0.28 * len(tokens)
    figure, axes = plt.subplots(figsize=(side + 1.2, side))
    future = np.triu(np.ones(weights.shape, dtype=bool), k=1)
    colours = matplotlib.colormaps["viridis"].with_extremes(bad="#e8e8e8")
    image = axes.imshow(np.ma.masked_array(weights, future), cmap=colours, vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(labels)), labels, rotation=90)
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("key (attended to)")
    axes.set_ylabel("query (attending)")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="attention weight")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv=None, out=None) -> None:
    args = parse_args(argv)
    out = out or sys.stdout
    run_dir = Path(args.checkpoint)
    if not run_dir.is_dir():
        raise CheckpointError(f"--checkpoint: {run_dir} is not a directory")
    kind = read_json(run_dir / "config.json").get("model")
    if kind != "transformer":
        raise ValueError(f"--checkpoint: {run_dir} holds a model of type {kind!r}; attention maps need a "
                         "transformer (python -m tinylm.train --model transformer)")
    config, tokenizer, model, _, _ = load_run(run_dir)
    text = clean(args.text, config["lowercase"])  # the same cleaning as the training text
    ids = tokenizer.encode(text)
    if len(ids) == 0:
        raise ValueError("--text is empty")
    if len(ids) > model.max_len:
        raise ValueError(f"--text is {len(ids)} tokens long, longer than the model's context of "
                         f"{model.max_len} tokens; shorten it")
    unknown = int((ids == 0).sum()) if tokenizer.kind == "char" else 0
    if unknown:
        out.write(f"note: {unknown} character(s) of --text are not in the model's vocabulary and read as unknown\n")

    tokens = token_texts(tokenizer, ids)
    maps = attention_maps(model, ids)
    out_dir = Path(args.out) if args.out else run_dir / "attention"
    out_dir.mkdir(parents=True, exist_ok=True)
    for layer, heads in enumerate(maps):
        for head, weights in enumerate(heads):
            plot_heatmap(out_dir / f"layer{layer}_head{head}.png", weights, tokens, f"layer {layer}, head {head}")
    write_csv(out_dir / "attention.csv", maps, tokens)
    out.write(f"{len(tokens)} tokens, {len(maps)} layers x {maps[0].shape[0]} heads: "
              f"wrote {len(maps) * maps[0].shape[0]} heatmaps and attention.csv to {out_dir}\n")


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="python -m tinylm.attention"))
