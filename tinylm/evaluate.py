"""``python -m tinylm.evaluate``: loss, perplexity and accuracy of a checkpoint on held-out text."""

from __future__ import annotations

import sys

import tinylm
from tinylm import cli
from tinylm.data import clean, load_corpus, prepare_text
from tinylm.evaluation import evaluate
from tinylm.runs import load_run


def parse_args(argv=None):
    p = cli.ArgumentParser(prog="python -m tinylm.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="a run directory written by tinylm.train")
    p.add_argument("--data", help="a text file or folder to evaluate on, whole (default: the run's validation text)")
    p.add_argument("--batch-size", type=cli.positive_int, help="parallel streams (default: the run's --batch-size)")
    p.add_argument("--seq-len", type=cli.positive_int, help="tokens per chunk (default: the run's --seq-len)")
    p.add_argument("--backend", choices=list(tinylm.backends.BACKENDS), help="default: the fastest one built here")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.backend:
        tinylm.set_backend(args.backend)
    config, tokenizer, model, _, trainer = load_run(args.checkpoint)
    if args.data:
        text, where = clean(load_corpus(args.data), config["lowercase"]), args.data
    else:
        text, where = prepare_text(config)[1], "the run's validation text"
    seq_len = args.seq_len or config["training"]["seq_len"]
    if config["model"] == "transformer" and seq_len > config["model_config"]["max_len"]:
        raise ValueError(f"--seq-len {seq_len} is longer than the transformer's max_len "
                         f"{config['model_config']['max_len']}")
    result = evaluate(model, tokenizer.encode(text), args.batch_size or config["training"]["batch_size"], seq_len)
    print(f"{where} (checkpoint step {trainer['step']}): loss {result['loss']:.4f} nats/token, "
          f"perplexity {result['perplexity']:.3f}, accuracy {result['accuracy']:.2%} over {result['tokens']:,} tokens")
    return result


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="python -m tinylm.evaluate"))
