"""``python -m tinylm.evaluate``: a checkpoint's scores on held-out data.

A language model: loss, perplexity and next-token accuracy on the run's validation text (or
``--data``). A translation model: corpus BLEU (``tinylm.bleu``) and exact match of its
translations of the test split (or ``--split validation``, or every pair of a ``--data``
TSV), and its loss per target token.
"""

from __future__ import annotations

import sys

import tinylm
from tinylm import cli
from tinylm.data import clean, load_corpus, prepare_text
from tinylm.evaluation import evaluate
from tinylm.runs import load_run
from tinylm.tasks import make_task, score_translations, task_of


def parse_args(argv=None):
    p = cli.ArgumentParser(prog="python -m tinylm.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="a run directory written by tinylm.train")
    p.add_argument("--data", help="a text file or folder to evaluate on, whole (default: the run's validation text); "
                   "translation: a TSV file of source<TAB>target pairs, every pair scored")
    p.add_argument("--split", choices=["test", "validation"], default="test",
                   help="translation: the held-out pairs to score (default: test)")
    p.add_argument("--beam", type=cli.positive_int, default=1, help="translation: beam width (default 1: greedy)")
    p.add_argument("--batch-size", type=cli.positive_int, help="parallel streams (default: the run's --batch-size)")
    p.add_argument("--seq-len", type=cli.positive_int, help="tokens per chunk (default: the run's --seq-len)")
    p.add_argument("--backend", choices=list(tinylm.backends.BACKENDS), help="default: the fastest one built here")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.backend:
        tinylm.set_backend(args.backend)
    config, tokenizer, model, _, trainer = load_run(args.checkpoint)
    if task_of(config) == "translate":
        return evaluate_translation(args, config, tokenizer, model, trainer)
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


def evaluate_translation(args, config, tokenizers, model, trainer) -> dict:
    from tinylm.parallel_corpus import read_tsv_pairs

    task = make_task(config, tokenizers)
    if args.data:
        pairs, where = read_tsv_pairs(args.data), args.data
    else:
        split = args.split
        pairs, where = getattr(task.corpus, split), f"the {split} split of {task.corpus.name}"
    result = score_translations(model, task, pairs, beam=args.beam)
    search = f"beam {args.beam}" if args.beam > 1 else "greedy"
    print(f"{where} (checkpoint step {trainer['step']}, {search}): BLEU {result['bleu']:.2f} "
          f"({task.bleu_tokenize}), "
          f"exact match {result['exact_match']:.2%} of {len(pairs):,} pairs, loss {result['loss']:.4f} "
          f"nats per target token")
    return result


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="python -m tinylm.evaluate"))
