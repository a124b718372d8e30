"""``python -m tinylm.train``: train a language model on CPython's own documentation.

With no arguments it trains a character-level LSTM for about five minutes on two
cores, evaluates it on held-out text, writes a checkpoint and a loss curve to
``runs/<date-time>``, and prints samples of what it writes as it learns.
"""

from __future__ import annotations

import csv
import math
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

import tinylm
from tinylm import cli, nn, optim
from tinylm.checkpoint import save_checkpoint, write_json
from tinylm.data import ContiguousBatches, DataError, clean, load_corpus, random_batch, split_train_validation
from tinylm.evaluation import evaluate
from tinylm.generation import sample_tokens
from tinylm.memory import keep_freed_memory
from tinylm.models import LSTMLanguageModel
from tinylm.nn import functional as F
from tinylm.random import default_generator
from tinylm.runs import build_model, load_run
from tinylm.tokenizers import tokenizer_to_json, train_tokenizer

DEFAULT_STEPS = 1350
METRICS = ["step", "tokens", "elapsed_s", "lr", "train_loss", "val_loss", "val_perplexity", "val_accuracy", "tokens_per_s"]


def parse_args(argv=None):
    p = cli.ArgumentParser(prog="python -m tinylm.train", description=__doc__.splitlines()[0])
    data = p.add_argument_group("data")
    data.add_argument("--data", help="a UTF-8 text file or a folder of .txt files (default: pydoc_data.topics)")
    data.add_argument("--lowercase", action="store_true", help="lowercase the text before tokenizing")
    data.add_argument("--tokenizer", choices=["char", "bpe"], default="char", help="character-level or byte-level BPE")
    data.add_argument("--vocab-size", type=cli.positive_int, default=512, help="BPE vocabulary size, at least 256")
    model = p.add_argument_group("model")
    model.add_argument("--model", choices=["lstm", "transformer"], default="lstm", help="which language model")
    model.add_argument("--embedding-dim", type=cli.positive_int, default=128, help="LSTM: token embedding size")
    model.add_argument("--hidden-dim", type=cli.positive_int, default=256, help="LSTM: hidden state size")
    model.add_argument("--n-layers", type=cli.positive_int, default=2, help="LSTM layers or transformer blocks")
    model.add_argument("--d-model", type=cli.positive_int, default=128, help="transformer: model width")
    model.add_argument("--n-heads", type=cli.positive_int, default=4, help="transformer: attention heads")
    model.add_argument("--dropout", type=cli.probability, default=0.1, help="dropout probability")
    train = p.add_argument_group("training")
    train.add_argument("--steps", type=cli.positive_int, help=f"optimizer steps in total (default {DEFAULT_STEPS}; "
                       "with --resume: the saved run's, unless given)")
    train.add_argument("--batch-size", type=cli.positive_int, default=32, help="sequences per step")
    train.add_argument("--seq-len", type=cli.positive_int, default=64, help="tokens per sequence")
    train.add_argument("--lr", type=cli.non_negative_float, default=4e-3, help="peak learning rate (AdamW)")
    train.add_argument("--warmup-steps", type=int, default=50, help="linear warm-up steps before the cosine decay")
    train.add_argument("--min-lr-ratio", type=cli.non_negative_float, default=0.05, help="final lr as a fraction of --lr")
    train.add_argument("--weight-decay", type=cli.non_negative_float, default=0.01, help="AdamW weight decay")
    train.add_argument("--clip", type=cli.non_negative_float, default=1.0, help="gradient-norm clipping (0: off)")
    train.add_argument("--stateful", action="store_true",
                       help="LSTM: read the text as parallel streams and carry the detached state across batches")
    train.add_argument("--backend", choices=list(tinylm.backends.BACKENDS), help="default: the fastest one built here")
    train.add_argument("--seed", type=int, default=0, help="seed for initialisation, batches and dropout")
    train.add_argument("--time-limit", type=cli.non_negative_float, help="stop (with a checkpoint) after this many seconds")
    run = p.add_argument_group("evaluation and output")
    run.add_argument("--eval-every", type=cli.positive_int, default=250, help="evaluate, sample and checkpoint every N steps")
    run.add_argument("--log-every", type=cli.positive_int, default=25, help="write the mean training loss every N steps")
    run.add_argument("--sample-tokens", type=int, default=200, help="length of the sample printed at each evaluation")
    run.add_argument("--out", help="run directory (default: runs/<date-time>)")
    run.add_argument("--resume", metavar="DIR", help="continue the run in DIR exactly where its checkpoint stopped")
    return p.parse_args(argv)


def make_config(args) -> dict:
    if args.model == "lstm":
        model_config = dict(embedding_dim=args.embedding_dim, hidden_dim=args.hidden_dim, n_layers=args.n_layers,
                            dropout=args.dropout)
    else:
        if args.d_model % args.n_heads:
            raise ValueError(f"--d-model {args.d_model} must be divisible by --n-heads {args.n_heads}")
        model_config = dict(d_model=args.d_model, n_heads=args.n_heads, n_layers=args.n_layers,
                            max_len=args.seq_len, dropout=args.dropout)
    if args.stateful and args.model != "lstm":
        raise ValueError("--stateful carries an LSTM's state; it does not apply to --model transformer")
    if args.tokenizer == "bpe" and args.vocab_size < 256:
        raise ValueError(f"--vocab-size must be at least 256 for BPE, got {args.vocab_size}")
    training = {k: getattr(args, k) for k in (
        "batch_size", "seq_len", "lr", "warmup_steps", "min_lr_ratio", "weight_decay", "clip",
        "stateful", "seed", "eval_every", "log_every", "sample_tokens")}
    training["steps"] = args.steps or DEFAULT_STEPS
    training["warmup_steps"] = min(args.warmup_steps, training["steps"])  # as used: a resume keeps it
    return dict(model=args.model, model_config=model_config, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                data=str(Path(args.data).resolve()) if args.data else None, lowercase=args.lowercase, training=training)


def prepare_text(config: dict) -> tuple[str, str]:
    return split_train_validation(clean(load_corpus(config["data"]), config["lowercase"]))


class Trainer:
    """One training run: model, optimizer, schedule, data and everything a checkpoint holds."""

    def __init__(self, config: dict, run_dir: Path, tokenizer, model, train_ids, val_ids):
        t = config["training"]
        self.config, self.t, self.run_dir, self.tokenizer, self.model = config, t, run_dir, tokenizer, model
        self.train_ids, self.val_ids = train_ids, val_ids
        for what, ids in (("training", train_ids), ("validation", val_ids)):
            if len(ids) < t["seq_len"] + 1:
                raise DataError(f"the {what} text has {len(ids)} tokens, fewer than --seq-len + 1 = {t['seq_len'] + 1}; "
                                "give more text or a shorter --seq-len")
        decay = [p for name, p in model.named_parameters() if p.ndim >= 2]
        no_decay = [p for name, p in model.named_parameters() if p.ndim < 2]  # biases, LayerNorm
        self.optimizer = optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
                                     lr=t["lr"], weight_decay=t["weight_decay"])
        self.schedule = optim.lr_scheduler.WarmupCosineLR(self.optimizer, min(t["warmup_steps"], t["steps"]),
                                                          max(t["steps"], t["warmup_steps"]), t["min_lr_ratio"])
        self.batch_rng = np.random.default_rng([t["seed"], 1])
        self.stream = ContiguousBatches(train_ids, t["batch_size"], t["seq_len"]) if t["stateful"] else None
        self.carried = None  # the LSTM state carried across batches with --stateful
        self.step, self.elapsed, self.saved_step, self.last_lr = 0, 0.0, 0, t["lr"]
        self.interval_losses: list[float] = []

    # ---- checkpoints
    def save(self) -> None:
        """Write a checkpoint, unless an update has made a parameter non-finite: the last
        good checkpoint must stay the last good one."""
        for name, param in self.model.named_parameters():
            if not bool(np.isfinite(param.numpy()).all()):
                raise RuntimeError(f"step {self.step}: parameter {name} is no longer finite; training stopped. "
                                   + self.last_good())
        trainer_state = {
            "step": self.step, "elapsed_s": self.elapsed, "schedule": self.schedule.state_dict(),
            "batch_rng": self.batch_rng.bit_generator.state, "dropout_rng": default_generator().bit_generator.state,
            "stream_position": self.stream.position if self.stream else None,
            "interval_losses": self.interval_losses,
            "carried": None if self.carried is None else [t.numpy().tolist() for t in self.carried],
        }
        save_checkpoint(self.run_dir, self.model.state_dict(), self.optimizer.state_dict(), trainer_state)
        self.saved_step = self.step

    def restore(self, optimizer_state: dict, trainer_state: dict) -> None:
        self.optimizer.load_state_dict(optimizer_state)
        self.schedule.load_state_dict(trainer_state["schedule"])
        self.batch_rng.bit_generator.state = trainer_state["batch_rng"]
        default_generator().bit_generator.state = trainer_state["dropout_rng"]
        if self.stream is not None:
            self.stream.position = trainer_state["stream_position"]
        carried = trainer_state.get("carried")
        dtype = next(self.model.parameters()).dtype
        self.carried = None if carried is None else tuple(tinylm.tensor(np.array(c, dtype=dtype)) for c in carried)
        self.step, self.elapsed = trainer_state["step"], trainer_state["elapsed_s"]
        self.saved_step = self.step
        self.interval_losses = list(trainer_state["interval_losses"])

    def last_good(self) -> str:
        if self.saved_step == 0:
            return "No checkpoint had been written yet."
        return f"The last good checkpoint (step {self.saved_step}) is in {self.run_dir}."

    # ---- one step
    def next_batch(self):
        if self.stream is None:
            inputs, targets = random_batch(self.train_ids, self.t["batch_size"], self.t["seq_len"], self.batch_rng)
            return inputs, targets, None
        inputs, targets, from_start = self.stream.next()
        return inputs, targets, None if from_start else self.carried

    def train_step(self) -> float:
        inputs, targets, state = self.next_batch()
        if isinstance(self.model, LSTMLanguageModel):
            logits, new_state = self.model(inputs, state)
            self.carried = tuple(s.detach() for s in new_state) if self.stream is not None else None
        else:
            logits = self.model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        value = loss.item()
        if not math.isfinite(value):
            raise RuntimeError(f"step {self.step + 1}: the loss is {value}; training stopped. " + self.last_good())
        self.optimizer.zero_grad()
        loss.backward()
        if self.t["clip"] > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.t["clip"])
        self.optimizer.step()
        self.last_lr = self.schedule.get_last_lr()[0]  # the rate this step used, for metrics.csv
        self.schedule.step()
        self.step += 1
        return value

    # ---- evaluation and reporting
    def record(self, tokens_per_s: float, with_validation: bool) -> dict:
        """Append a metrics.csv row: the mean training loss since the previous row and,
        at evaluation steps, the validation loss, perplexity and accuracy."""
        row = dict(step=self.step, tokens=self.step * self.t["batch_size"] * self.t["seq_len"],
                   elapsed_s=round(self.elapsed, 2), lr=self.last_lr,
                   train_loss=float(np.mean(self.interval_losses)) if self.interval_losses else float("nan"),
                   tokens_per_s=round(tokens_per_s))
        if with_validation:
            result = evaluate(self.model, self.val_ids, self.t["batch_size"], self.t["seq_len"])
            row.update(val_loss=result["loss"], val_perplexity=result["perplexity"], val_accuracy=result["accuracy"])
        self.interval_losses = []
        append_metrics(self.run_dir / "metrics.csv", row)
        if with_validation:
            plot_losses(self.run_dir)
        return row

    def sample(self, length: int) -> str:
        rng = np.random.default_rng([self.t["seed"], 2, self.step])  # its own stream: training is unaffected
        prompt = self.val_ids[:1]
        tokens = list(sample_tokens(self.model, prompt, length, rng, temperature=0.8))
        return self.tokenizer.decode(list(prompt) + tokens)


def append_metrics(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRICS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def read_metrics(path: Path) -> list[dict]:
    """The rows of metrics.csv as numbers; validation columns are None between evaluations."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: (float(v) if v != "" else None) for k, v in row.items()} for row in csv.DictReader(f)]


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop rows written after the checkpoint a run resumes from (they will be redone)."""
    rows = [r for r in read_metrics(path) if r["step"] <= last_step]
    if path.exists():
        path.unlink()
    for row in rows:
        append_metrics(path, {k: (int(v) if k in ("step", "tokens") else v) for k, v in row.items() if v is not None})


def plot_losses(run_dir: Path) -> None:
    """loss.png: the training loss (mean over each logging interval) and the validation loss, by step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir / "metrics.csv")
    if not rows:
        return
    evaluated = [r for r in rows if r["val_loss"] is not None]
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.plot([r["step"] for r in rows], [r["train_loss"] for r in rows], "-", label="training")
    axes.plot([r["step"] for r in evaluated], [r["val_loss"] for r in evaluated], "s-", label="validation")
    axes.set_xlabel("step")
    axes.set_ylabel("cross-entropy (nats per token)")
    axes.set_title(f"tinylm: {run_dir.name}")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    temporary = run_dir / "loss.tmp.png"
    figure.savefig(temporary, dpi=100)
    plt.close(figure)
    temporary.replace(run_dir / "loss.png")


def setup(args):
    """The Trainer for a new run, or for the run being resumed."""
    if args.backend:
        tinylm.set_backend(args.backend)
    if args.resume:
        run_dir = Path(args.resume)
        config, tokenizer, model, optimizer_state, trainer_state = load_run(run_dir)
        if args.steps is not None and args.steps != config["training"]["steps"]:
            config["training"]["steps"] = args.steps  # extend (or shorten) the run; the cosine follows
            write_json(run_dir / "config.json", config)
        train_text, val_text = prepare_text(config)
        trainer = Trainer(config, run_dir, tokenizer, model, tokenizer.encode(train_text), tokenizer.encode(val_text))
        trainer.restore(optimizer_state, trainer_state)
        truncate_metrics(run_dir / "metrics.csv", trainer.step)
        return trainer
    config = make_config(args)
    train_text, val_text = prepare_text(config)
    tokenizer = train_tokenizer(config["tokenizer"], train_text, config["vocab_size"])
    tinylm.manual_seed(config["training"]["seed"])  # initialisation, then dropout, from this generator
    model = build_model(config["model"], dict(vocab_size=tokenizer.vocab_size, **config["model_config"]))
    config["model_config"] = model.config
    run_dir = Path(args.out or Path("runs") / datetime.now().strftime("%Y-%m-%d-%H%M%S"))
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", config)
    (run_dir / "tokenizer.json").write_text(tokenizer_to_json(tokenizer), encoding="utf-8")
    return Trainer(config, run_dir, tokenizer, model, tokenizer.encode(train_text), tokenizer.encode(val_text))


def main(argv=None) -> None:
    args = parse_args(argv)
    keep_freed_memory()  # reuse each step's freed arrays instead of fresh pages (tinylm/memory.py)
    trainer = setup(args)
    t = trainer.t
    from tqdm import tqdm

    size = sum(p.size for p in trainer.model.parameters())
    print(f"tinylm.train: {trainer.config['model']} model, {size:,} parameters, {trainer.config['tokenizer']} tokenizer "
          f"(vocabulary {trainer.tokenizer.vocab_size}), {len(trainer.train_ids):,} training and "
          f"{len(trainer.val_ids):,} validation tokens, backend {tinylm.get_backend()}, run in {trainer.run_dir}")

    interrupted = []
    previous_handler = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    tokens_per_step = t["batch_size"] * t["seq_len"]
    bar = tqdm(total=t["steps"], initial=trainer.step, unit="step", dynamic_ncols=True, mininterval=0.5)
    started, steps_started = time.perf_counter(), trainer.step
    elapsed_before, training_seconds = trainer.elapsed, 0.0
    try:
        while trainer.step < t["steps"] and not interrupted:
            step_started = time.perf_counter()
            trainer.interval_losses.append(trainer.train_step())
            training_seconds += time.perf_counter() - step_started
            trainer.elapsed = elapsed_before + time.perf_counter() - started
            speed = (trainer.step - steps_started) * tokens_per_step / training_seconds  # tokens/s, evaluation excluded
            bar.update(1)
            bar.set_postfix(loss=f"{trainer.interval_losses[-1]:.3f}", tok_s=f"{speed:,.0f}", refresh=False)
            out_of_time = args.time_limit is not None and trainer.elapsed >= args.time_limit
            evaluating = trainer.step % t["eval_every"] == 0 or trainer.step == t["steps"] or out_of_time
            if evaluating or trainer.step % t["log_every"] == 0:
                row = trainer.record(speed, with_validation=evaluating)
            if evaluating:
                bar.write(f"step {trainer.step}: train loss {row['train_loss']:.3f}, validation loss {row['val_loss']:.3f} "
                          f"(perplexity {row['val_perplexity']:.2f}, accuracy {row['val_accuracy']:.1%})")
                if t["sample_tokens"] > 0:
                    bar.write("  sample: " + repr(trainer.sample(t["sample_tokens"]))[1:-1][:400])
                trainer.save()
            if out_of_time:
                bar.write(f"time limit of {args.time_limit:g}s reached at step {trainer.step}")
                break
        if interrupted:
            trainer.save()
            bar.write(f"interrupted: checkpoint at step {trainer.step} saved; continue with --resume {trainer.run_dir}")
    finally:
        bar.close()
        signal.signal(signal.SIGINT, previous_handler)
    print(f"done: step {trainer.step} in {trainer.elapsed:.0f}s; checkpoint, metrics.csv and loss.png in {trainer.run_dir}")


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="python -m tinylm.train"))
