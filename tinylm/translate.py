"""``python -m tinylm.translate``: translate sentences with a trained translation model.

    python -m tinylm.translate --checkpoint runs/DIR --text "twenty-three thousand, four hundred and five"
    python -m tinylm.translate --checkpoint runs/DIR --input sources.txt > translations.txt

prints one translation per line: greedy by default (the most likely token at every step),
or beam search with ``--beam K`` (``tinylm.decoding``). ``--show-attention out.png`` draws
the alignment of the first sentence: for every target token written, how the decoder's
attention spread over the source tokens.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import tinylm
from tinylm import cli
from tinylm.attention import token_texts
from tinylm.checkpoint import CheckpointError
from tinylm.runs import load_run
from tinylm.tasks import task_of, translate


def parse_args(argv=None):
    p = cli.ArgumentParser(prog="python -m tinylm.translate", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="a run directory written by python -m tinylm.train --task translate")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--text", help="one sentence to translate")
    given.add_argument("--input", metavar="FILE", help="a UTF-8 file of sentences, one per line")
    p.add_argument("--beam", type=cli.positive_int, default=1, help="beam width (default 1: greedy)")
    p.add_argument("--show-attention", metavar="PNG", help="draw the first sentence's alignment to this file")
    p.add_argument("--backend", choices=list(tinylm.backends.BACKENDS), help="default: the fastest one built here")
    return p.parse_args(argv)


def read_sources(args) -> list[str]:
    if args.text is not None:
        sources = [args.text]
    else:
        try:
            sources = Path(args.input).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ValueError(f"--input: cannot read {args.input}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"--input: {args.input} is not UTF-8 text (byte {exc.start})") from None
    for number, source in enumerate(sources, 1):
        if not source.strip():
            where = "--text" if args.text is not None else f"--input {args.input} line {number}"
            raise ValueError(f"{where} is empty: give a sentence to translate")
    return sources


def alignment(model, tokenizers, source: str, translation: str):
    """(weights (T, S), source token texts, target token texts) of one sentence and its
    translation: row t is the attention with which target token t was written."""
    from tinylm.models.seq2seq import Source
    from tinylm.parallel_corpus import EOS, SPECIAL_TOKENS, encode_batch

    batch = encode_batch([(source, translation)], tokenizers.source, tokenizers.target)
    weights = model.cross_attention(batch.target_inputs, Source(batch.source_ids, batch.source_lengths))[0]
    offset = len(SPECIAL_TOKENS)
    source_ids = batch.source_ids[0, : batch.source_lengths[0]]
    target_ids = [int(i) for i in batch.target_outputs[0] if i >= 0]  # the tokens written, EOS last
    source_tokens = token_texts(tokenizers.source, [int(i) - offset for i in source_ids])
    target_tokens = [SPECIAL_TOKENS[EOS] if i == EOS else token_texts(tokenizers.target, [i - offset])[0]
                     for i in target_ids]
    return np.asarray(weights)[: len(target_tokens), : len(source_tokens)], source_tokens, target_tokens


def main(argv=None, out=None) -> list[str]:
    args = parse_args(argv)
    out = out or sys.stdout
    if args.backend:
        tinylm.set_backend(args.backend)
    config, tokenizers, model, _, _ = load_run(args.checkpoint)
    if task_of(config) != "translate":
        raise CheckpointError(f"--checkpoint: {args.checkpoint} holds a language model; continue text with "
                              f"python -m tinylm.generate --checkpoint {args.checkpoint}")
    sources = read_sources(args)
    model.eval()
    translations = translate(model, tokenizers, sources, beam=args.beam)
    for translation in translations:
        out.write(translation + "\n")
    if args.show_attention:
        from tinylm.decoding import plot_alignment

        weights, source_tokens, target_tokens = alignment(model, tokenizers, sources[0], translations[0])
        plot_alignment(args.show_attention, weights, source_tokens, target_tokens,
                       f"{sources[0]!r} -> {translations[0]!r}"[:90])
    return translations


if __name__ == "__main__":
    try:
        sys.exit(cli.run(main, prog="python -m tinylm.translate"))
    except BrokenPipeError:  # `... | head`: the reader left, which is not an error
        sys.stderr.close()
        sys.exit(0)
