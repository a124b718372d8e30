"""The default translation run against a PyTorch model of the same shape, trained as long.

    python benchmarks/translate_vs_torch.py                 # trains tinylm's default run first
    python benchmarks/translate_vs_torch.py --run runs/DIR  # or compares with a finished run

1. tinylm: ``python -m tinylm.train --task translate`` (the default run; its flags after
   ``--``), then ``python -m tinylm.evaluate`` on the test split.
2. PyTorch: the same model (a bidirectional LSTM encoder that skips padding with
   ``pack_padded_sequence``, an LSTM decoder started from the encoder's final states,
   Luong attention, ``tanh(W_c [c; h])``, a linear output), the run's own tokenizers,
   batches drawn exactly as tinylm draws them (the same corpus, seed and generator), AdamW
   with the same warm-up and cosine schedule, clipping and weight decay, evaluated on the
   validation pairs (loss and greedy translations) as often as the run was, for as many
   seconds as the tinylm run took, evaluations included. Then greedy translations of the
   same test pairs, scored by ``tinylm.bleu`` as the run scores them.

Prints one table, tinylm's translations of some probe numbers (the smallest, the largest,
and one past the corpus: a million) and every test pair it got wrong, and writes
benchmarks/results/translate.json and translate_alignment.png (the alignment heatmap of
"twenty-three thousand, four hundred and five"). Only this script uses torch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
PROBES = [0, 7, 11, 19, 20, 100, 101, 1000, 2026, 23405, 100000, 999999, 1000000]
ALIGNED = "twenty-three thousand, four hundred and five"


def train_tinylm(run_dir: Path, extra: list[str]) -> None:
    command = [sys.executable, "-m", "tinylm.train", "--task", "translate", "--out", str(run_dir), *extra]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def tinylm_samples(run_dir: Path) -> dict:
    """tinylm's translations of the probe numbers (built-in numbers corpora only) and of the
    test pairs it gets wrong, and the alignment picture."""
    from tinylm import translate
    from tinylm.parallel_corpus import number_words
    from tinylm.runs import load_run
    from tinylm.tasks import make_task

    config, tokenizers, model, _, _ = load_run(run_dir)
    task = make_task(config, tokenizers)
    samples = {"wrong_on_test": [], "probes": []}
    model.eval()
    outputs = task.translate(model, [source for source, _ in task.corpus.test])
    samples["wrong_on_test"] = [dict(source=s, expected=t, output=o)
                                for (s, t), o in zip(task.corpus.test, outputs) if o != t]
    if config.get("corpus") == "numbers":
        language = config["pair"].split("-")[1]
        sources = [number_words(n, "en") for n in PROBES]
        outputs = task.translate(model, sources)
        samples["probes"] = [dict(source=s, expected=number_words(n, language), output=o)
                             for n, s, o in zip(PROBES, sources, outputs)]
        RESULTS.mkdir(exist_ok=True)
        translate.main(["--checkpoint", str(run_dir), "--text", ALIGNED,
                        "--show-attention", str(RESULTS / "translate_alignment.png")])
    return samples


def tinylm_scores(run_dir: Path) -> dict:
    from tinylm.runs import load_run
    from tinylm.tasks import make_task, score_translations

    config, tokenizers, model, _, trainer = load_run(run_dir)
    task = make_task(config, tokenizers)
    started = time.perf_counter()
    scores = score_translations(model, task, task.corpus.test)
    return dict(steps=trainer["step"], train_seconds=trainer["elapsed_s"], test_loss=scores["loss"],
                bleu=scores["bleu"], exact_match=scores["exact_match"], eval_seconds=time.perf_counter() - started)


def torch_model(config: dict):
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    m = config["model_config"]
    if config["model"] != "seq2seq-lstm" or m["attention"] != "general" or m["n_layers"] != 1:
        raise SystemExit("this anchor is written for the default seq2seq-lstm (general attention, one decoder layer)")
    E, H = m["embedding_dim"], m["hidden_dim"]

    class Seq2Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.source_embedding = nn.Embedding(m["source_vocab_size"], E)
            self.encoder = nn.LSTM(E, H // 2, batch_first=True, bidirectional=True)
            self.target_embedding = nn.Embedding(m["target_vocab_size"], E)
            self.decoder = nn.LSTM(E, H, batch_first=True)
            self.attention = nn.Linear(H, H, bias=False)  # Luong's general score h_tᵀ W_a h̄_s
            self.combine = nn.Linear(2 * H, H)
            self.dropout = nn.Dropout(m["dropout"])
            self.out = nn.Linear(H, m["target_vocab_size"])

        def encode(self, source_ids, lengths):
            packed = pack_padded_sequence(self.dropout(self.source_embedding(source_ids)), lengths.cpu(),
                                          batch_first=True, enforce_sorted=False)
            outputs, (h, c) = self.encoder(packed)
            outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=source_ids.shape[1])
            state = tuple(torch.cat([s[0], s[1]], dim=-1)[None] for s in (h, c))  # (1, B, H): both directions
            padding = torch.arange(source_ids.shape[1])[None, :] >= lengths[:, None]  # (B, S)
            return outputs, state, padding

        def decode(self, target_ids, memory, state):
            outputs, padding = memory
            h, state = self.decoder(self.dropout(self.target_embedding(target_ids)), state)  # (B, T, H)
            scores = h @ self.attention(outputs).transpose(1, 2)  # (B, T, S)
            weights = scores.masked_fill(padding[:, None, :], float("-inf")).softmax(-1)
            context = weights @ outputs  # (B, T, H)
            return self.out(self.dropout(torch.tanh(self.combine(torch.cat([context, h], -1))))), state

        def forward(self, source_ids, lengths, target_ids):
            outputs, state, padding = self.encode(source_ids, lengths)
            return self.decode(target_ids, (outputs, padding), state)[0]

    return Seq2Seq()


def train_torch(run_dir: Path, seconds: float, threads: int) -> dict:
    import torch

    from tinylm.bleu import corpus_bleu, exact_match
    from tinylm.optim.lr_scheduler import warmup_cosine
    from tinylm.parallel_corpus import IGNORE, encode_batch
    from tinylm.runs import load_run
    from tinylm.tasks import make_task

    torch.set_num_threads(threads)
    config, tokenizers, _, _, _ = load_run(run_dir)
    t = config["training"]
    task = make_task(config, tokenizers)
    torch.manual_seed(t["seed"])
    model = torch_model(config)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay}, {"params": rest, "weight_decay": 0.0}], lr=t["lr"],
                                  weight_decay=t["weight_decay"])
    total = t["steps"]
    lr_at = warmup_cosine(t["warmup_steps"], total, t["min_lr_ratio"])  # the trainer's schedule

    rng = np.random.default_rng([t["seed"], 1])  # the trainer's batch generator
    step, evaluations, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds and step < total:
        batch = encode_batch(task.corpus.sample_train(rng, t["batch_size"]), tokenizers.source, tokenizers.target)
        for group in optimizer.param_groups:
            group["lr"] = t["lr"] * lr_at(step)
        logits = model(torch.from_numpy(batch.source_ids), torch.from_numpy(batch.source_lengths),
                       torch.from_numpy(batch.target_inputs))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 torch.from_numpy(batch.target_outputs).reshape(-1),
                                                 ignore_index=IGNORE)
        optimizer.zero_grad()
        loss.backward()
        if t["clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t["clip"])
        optimizer.step()
        step += 1
        if step % t["eval_every"] == 0:  # what the trainer does at its evaluations: loss, then translations
            with torch.no_grad():
                model.eval()
                for first in range(0, len(task.corpus.validation), 256):
                    batch = encode_batch(task.corpus.validation[first : first + 256], tokenizers.source,
                                         tokenizers.target)
                    model(torch.from_numpy(batch.source_ids), torch.from_numpy(batch.source_lengths),
                          torch.from_numpy(batch.target_inputs))
            greedy_translations(model, task, task.corpus.validation)
            evaluations += 1
    spent = time.perf_counter() - started

    references = [target for _, target in task.corpus.test]
    outputs = greedy_translations(model, task, task.corpus.test)
    return dict(steps=step, train_seconds=spent, evaluations=evaluations,
                bleu=corpus_bleu(outputs, references, tokenize=task.bleu_tokenize).score,
                exact_match=exact_match(outputs, references))


def greedy_translations(model, task, pairs) -> list[str]:
    """The model's greedy translations of the sources of ``pairs``, in batches of 256, each
    at most twice its batch's longest source plus 10 tokens, as tinylm.tasks.translate."""
    import torch

    from tinylm.parallel_corpus import BOS, EOS, decode_target, encode_batch

    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(pairs), 256):
            chunk = pairs[start : start + 256]
            batch = encode_batch(chunk, task.pair.source, task.pair.target)
            memory, state, padding = model.encode(torch.from_numpy(batch.source_ids),
                                                  torch.from_numpy(batch.source_lengths))
            tokens = torch.full((len(chunk), 1), BOS)
            written = []
            for _ in range(2 * int(batch.source_lengths.max()) + 10):
                logits, state = model.decode(tokens, (memory, padding), state)
                tokens = logits[:, -1].argmax(-1, keepdim=True)
                written.append(tokens[:, 0].numpy())
                if (np.stack(written, 1) == EOS).any(1).all():
                    break
            ids = np.stack(written, 1)
            outputs.extend(decode_target(list(row) + [EOS], task.pair.target) for row in ids)
    model.train()
    return outputs


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="a finished tinylm translation run (default: train one now)")
    p.add_argument("--threads", type=int, default=2,
                   help="PyTorch's threads (default 2, the cores of the machine the README figures come from)")
    p.add_argument("train_flags", nargs="*", help="flags for tinylm.train, after --")
    args = p.parse_args(argv)
    run_dir = args.run
    if run_dir is None:
        run_dir = Path("runs") / time.strftime("translate-bench-%Y%m%d-%H%M%S")
        train_tinylm(run_dir, args.train_flags)
    ours = tinylm_scores(run_dir)
    samples = tinylm_samples(run_dir)
    theirs = train_torch(run_dir, ours["train_seconds"], args.threads)
    from tinylm.bench.machine import header

    machine = header()
    rows = [("tinylm", ours), ("PyTorch " + __import__("torch").__version__, theirs)]
    print(f"\nmachine: {machine}\n")
    tokenize = json.loads((run_dir / "config.json").read_text()).get("bleu_tokenize", "13a")
    print(f"| engine | steps | seconds (with evaluations) | test BLEU ({tokenize}) | test exact match |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['steps']:,} | {r['train_seconds']:.0f} | {r['bleu']:.2f} | {r['exact_match']:.1%} |")
    for title, rows in (("probes", samples["probes"]), ("wrong on the test split", samples["wrong_on_test"])):
        print(f"\ntinylm, {title}: {len(rows)}")
        for r in rows:
            print(f"  {r['source']!r} -> {r['output']!r}" + ("" if r["output"] == r["expected"] else
                                                           f"   WRONG, expected {r['expected']!r}"))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "translate.json").write_text(json.dumps(
        {"machine": machine, "run": str(run_dir), "tinylm": ours, "torch": theirs, "samples": samples},
        indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
