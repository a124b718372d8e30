"""``python -m tinylm.generate``: continue a prompt with a trained model, printed as it is written."""

from __future__ import annotations

import codecs
import sys

import numpy as np

import tinylm
from tinylm import cli
from tinylm.checkpoint import CheckpointError
from tinylm.data import clean
from tinylm.generation import sample_tokens
from tinylm.runs import load_run
from tinylm.tasks import task_of


def parse_args(argv=None):
    p = cli.ArgumentParser(prog="python -m tinylm.generate", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="a run directory written by tinylm.train")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--max-new-tokens", type=cli.non_negative_int, default=300, help="how many tokens to write (>= 0)")
    p.add_argument("--temperature", type=cli.non_negative_float, default=0.8,
                   help="below 1: safer, above 1: wilder; 0 is greedy: always the most likely token")
    p.add_argument("--top-k", type=cli.positive_int, help="sample only among the K most likely tokens")
    p.add_argument("--seed", type=cli.seed, default=0, help="seed of the sampling")
    p.add_argument("--backend", choices=list(tinylm.backends.BACKENDS), help="default: the fastest one built here")
    return p.parse_args(argv)


def main(argv=None, out=None) -> None:
    args = parse_args(argv)
    out = out or sys.stdout
    if args.backend:
        tinylm.set_backend(args.backend)
    config, tokenizer, model, _, _ = load_run(args.checkpoint)
    if task_of(config) == "translate":
        raise CheckpointError(f"--checkpoint: {args.checkpoint} holds a translation model; translate with "
                              f"python -m tinylm.translate --checkpoint {args.checkpoint} --text ...")
    prompt = clean(args.prompt, config["lowercase"])  # the same cleaning as the training text
    prompt_ids = tokenizer.encode(prompt)
    if len(prompt_ids) == 0:
        raise ValueError("--prompt is empty")
    top_k = 1 if args.temperature == 0 else args.top_k  # temperature 0: greedy
    rng = np.random.default_rng(args.seed)
    out.write(prompt)
    # Decode bytes incrementally: a BPE token may end in the middle of a UTF-8 character.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for token in sample_tokens(model, prompt_ids, args.max_new_tokens, rng, max(args.temperature, 1e-8), top_k):
        piece = (decoder.decode(tokenizer.decode_bytes([token])) if hasattr(tokenizer, "decode_bytes")
                 else tokenizer.decode([token]))
        out.write(piece)
        out.flush()
    out.write(decoder.decode(b"", final=True) + "\n")


if __name__ == "__main__":
    try:
        sys.exit(cli.run(main, prog="python -m tinylm.generate"))
    except BrokenPipeError:  # `... | head`: the reader left, which is not an error
        sys.stderr.close()
        sys.exit(0)
