"""``python -m tinylm.train``: train a language model on CPython's own documentation, or a translation model.

With no arguments it trains a character-level LSTM for about three minutes on two
cores, evaluates it on held-out text, writes a checkpoint and a loss curve to
``runs/<date-time>``, and prints samples of what it writes as it learns.

``--task translate`` trains a sequence-to-sequence model instead, by default on English
number words and their German translations (``tinylm.parallel_corpus``), and reports
BLEU and exact match of its translations of held-out numbers. The loop is the same:
what differs between the tasks (data, batches, scores) is in ``tinylm.tasks``.

``--teacher RUN`` distils: the new run (the student, often smaller) learns from a trained
run's softened predictions as well as from the targets (``tinylm.distill``).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

import tinylm
from tinylm import cli, distributed, nn, optim, runs
from tinylm.bleu import TOKENIZE
from tinylm.checkpoint import CheckpointError, checkpoint_dir, save_checkpoint, write_atomically, write_json
from tinylm.distill import Teacher, distillation_loss
from tinylm.distributed.batch import BatchShare
from tinylm.memory import keep_freed_memory
from tinylm.metrics import LossPlotter, append_metrics, kept_metrics
from tinylm.models import MODELS
from tinylm.nn.parallel import DistributedDataParallel
from tinylm.parallel_corpus import CORPORA, PAIRS
from tinylm.random import default_generator
from tinylm.runs import build_model, build_optimizer, load_run
from tinylm.tasks import MODELS_OF_TASK, TASKS, default_bleu_tokenize, make_task
from tinylm.tokenizers import TOKENIZERS, tokenizer_to_json

# Defaults that differ between the tasks: a flag left out takes its task's.
TASK_DEFAULTS = {
    "language-model": dict(model="lstm", steps=1350, batch_size=32, lr=4e-3, warmup_steps=50, eval_every=250,
                           hidden_dim=256),
    "translate": dict(model="seq2seq-lstm", steps=1500, batch_size=128, lr=3e-3, warmup_steps=100, eval_every=250,
                      hidden_dim=128),
}
N_LAYERS = {"lstm": 2, "transformer": 2, "seq2seq-lstm": 1, "seq2seq-transformer": 3}  # --n-layers' defaults

# The tokenizer flags' defaults; with --teacher they are the teacher's instead.
TOKENIZER_DEFAULTS = dict(tokenizer="char", vocab_size=512, source_tokenizer="word", target_tokenizer="bpe",
                          source_vocab_size=512, target_vocab_size=512)
DISTILLATION_DEFAULTS = dict(distill_alpha=0.5, distill_temperature=1.0)

RUN_FILES = ("config.json", "tokenizer.json", "source_tokenizer.json", "target_tokenizer.json", "metrics.csv",
             "checkpoint", ".checkpoint-old", ".checkpoint-new")


def parse_args(argv=None):
    """The flags, each checked against its rule (``tinylm.runs``) before any work starts."""
    rules = {name: rule for model_rules in runs.MODEL_CONFIG_RULES.values() for name, rule in model_rules.items()}
    rules.update(runs.TRAINING_RULES, **runs.LANGUAGE_MODEL_TRAINING_RULES)
    p = cli.ArgumentParser(prog="python -m tinylm.train", description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=TASKS, default="language-model",
                   help="learn the next token of a text, or to translate sentences (default: language-model)")
    data = p.add_argument_group("data")
    data.add_argument("--data", help="language model: a UTF-8 text file or a folder of .txt files (default: "
                      "pydoc_data.topics); translate: a UTF-8 TSV file, source<TAB>target per line")
    data.add_argument("--lowercase", action="store_true", help="language model: lowercase the text")
    data.add_argument("--tokenizer", choices=["char", "bpe"],
                      help="character-level (default) or byte-level BPE")
    data.add_argument("--vocab-size", type=cli.positive_int,
                      help=f"BPE vocabulary size, at least {runs.MIN_BPE_VOCABULARY} (default 512)")
    data.add_argument("--corpus", choices=CORPORA, default="numbers",
                      help="translate: number words (0 to 999,999) or dates, from num2words and Babel")
    data.add_argument("--pair", choices=PAIRS, default="en-de", help="translate: source-target languages")
    data.add_argument("--source-tokenizer", choices=list(TOKENIZERS), help="translate: source tokens (default word)")
    data.add_argument("--target-tokenizer", choices=list(TOKENIZERS), help="translate: target tokens (default bpe)")
    data.add_argument("--source-vocab-size", type=cli.positive_int, help="translate: source BPE size (default 512)")
    data.add_argument("--target-vocab-size", type=cli.positive_int, help="translate: target BPE size (default 512)")
    data.add_argument("--bleu-tokenize", choices=list(TOKENIZE), help="translate: BLEU over words (13a) or characters "
                      "(char); default 13a, but char for en-de numbers, each of which German writes as one word")
    model = p.add_argument_group("model")
    model.add_argument("--model", choices=list(runs.MODEL_CONFIG_RULES),
                       help="language model: lstm (default) or transformer; translate: seq2seq-lstm (default) "
                       "or seq2seq-transformer")
    model.add_argument("--embedding-dim", type=rules["embedding_dim"], default=128, help="LSTMs: token embedding size")
    model.add_argument("--hidden-dim", type=rules["hidden_dim"],
                       help="LSTMs: hidden state size (default 256; translate 128)")
    model.add_argument("--n-layers", type=rules["n_layers"],
                       help="LSTM layers (default 2; seq2seq-lstm: decoder layers, default 1), transformer blocks "
                       "(default 2; seq2seq-transformer: encoder and decoder layers each, default 3)")
    model.add_argument("--d-model", type=rules["d_model"], default=128, help="transformers: model width")
    model.add_argument("--n-heads", type=rules["n_heads"], default=4,
                       help="transformers: attention heads (divide --d-model)")
    model.add_argument("--dim-feedforward", type=rules["dim_feedforward"], default=512,
                       help="seq2seq-transformer: feed-forward width")
    model.add_argument("--attention", choices=runs.MODEL_CONFIG_CHOICES["seq2seq-lstm"]["attention"],
                       default="general", help="seq2seq-lstm: Luong's dot or general score, or the additive one")
    model.add_argument("--dropout", type=rules["dropout"], default=0.1, help="dropout probability, in [0, 1)")
    train = p.add_argument_group("training")
    train.add_argument("--steps", type=rules["steps"], help="optimizer steps in total (default: 1350 for a language "
                       "model, 1500 for translate; with --resume: the saved run's, unless given)")
    train.add_argument("--batch-size", type=rules["batch_size"], help="sequences per step (default 32; translate 128)")
    train.add_argument("--seq-len", type=rules["seq_len"], default=64, help="language model: tokens per sequence")
    train.add_argument("--lr", type=rules["lr"], help="peak learning rate (AdamW), > 0 (default 4e-3; translate 3e-3)")
    train.add_argument("--warmup-steps", type=rules["warmup_steps"],
                       help="linear warm-up steps before the cosine decay (default 50; translate 100)")
    train.add_argument("--min-lr-ratio", type=rules["min_lr_ratio"], default=0.05,
                       help="final lr as a fraction of --lr")
    train.add_argument("--weight-decay", type=rules["weight_decay"], default=0.01, help="AdamW weight decay")
    train.add_argument("--clip", type=rules["clip"], default=1.0, help="gradient-norm clipping (0: off)")
    train.add_argument("--stateful", action="store_true",
                       help="LSTM: read the text as parallel streams and carry the detached state across batches")
    train.add_argument("--backend", choices=list(tinylm.backends.BACKENDS),
                       help="default: the fastest one built here (with --resume: the run's own)")
    train.add_argument("--seed", type=rules["seed"], default=0,
                       help="seed for initialisation, batches, dropout and the translate splits")
    train.add_argument("--shard-optimizer", action="store_true",
                       help="under mpiexec: split AdamW's moments over the processes (ZeRO stage 1) instead of "
                       "averaging gradients with DistributedDataParallel; the same results, 1/N of the memory")
    train.add_argument("--time-limit", type=cli.non_negative_float,
                       help="stop (with a checkpoint) after this many seconds")
    distill = p.add_argument_group("distillation (tinylm.distill)")
    distill.add_argument("--teacher", metavar="RUN",
                         help="a trained run of the same task (tinylm.train's, or an int8 run of tinylm.quantize) to "
                         "learn from: the run minimises (1 - alpha) * cross-entropy + alpha * T^2 * KL(teacher_T || "
                         "run_T), and metrics.csv's train_loss is that objective, while val_loss stays the plain "
                         "cross-entropy. The run reads with the teacher's tokenizer(s), since both must share one "
                         "vocabulary: --tokenizer, --vocab-size and translate's tokenizer flags are taken from the "
                         "teacher, and giving another value is an error")
    distill.add_argument("--distill-alpha", type=cli.fraction,
                         help="with --teacher: the soft term's weight alpha, in [0, 1] (default 0.5; 0 trains exactly "
                         "as without a teacher, 1 on the teacher alone)")
    distill.add_argument("--distill-temperature", type=cli.positive_float,
                         help="with --teacher: the softmax temperature T of both models, > 0 (default 1.0: on the "
                         "default character model T = 2 left the student worse than training alone, T = 1 better; "
                         "README)")
    run = p.add_argument_group("evaluation and output")
    run.add_argument("--eval-every", type=rules["eval_every"],
                     help="evaluate, sample and checkpoint every N steps (default 250)")
    run.add_argument("--log-every", type=rules["log_every"], default=25,
                     help="write the mean training loss every N steps")
    run.add_argument("--sample-tokens", type=rules["sample_tokens"], default=200,
                     help="language model: length of the sample printed at each evaluation")
    run.add_argument("--out", help="a new run directory (default: runs/<date-time>); never one that holds a run")
    run.add_argument("--resume", metavar="DIR", help="continue the run in DIR exactly where its checkpoint stopped")
    args = p.parse_args(argv)
    distilling = [flag for flag, value in (("--teacher", args.teacher), ("--distill-alpha", args.distill_alpha),
                                           ("--distill-temperature", args.distill_temperature)) if value is not None]
    if args.resume:
        if distilling:
            p.error(f"{distilling[0]} cannot be given with --resume: the run's config.json names its teacher and "
                    "settings, and the resume reloads them")
        return args
    if distilling and not args.teacher:
        p.error(f"{distilling[0]} only applies with --teacher RUN")
    for name, value in DISTILLATION_DEFAULTS.items():
        if args.teacher and getattr(args, name) is None:
            setattr(args, name, value)
    for name, value in TOKENIZER_DEFAULTS.items():
        if not args.teacher and getattr(args, name) is None:  # a teacher's run sets them (Teacher.take_tokenizer...)
            setattr(args, name, value)
    translating = args.task == "translate"
    for name, value in TASK_DEFAULTS[args.task].items():
        if getattr(args, name) is None and name != "steps":
            setattr(args, name, value)
    args.n_layers = args.n_layers or N_LAYERS[args.model]
    if args.model not in MODELS_OF_TASK[args.task]:
        p.error(f"--model {args.model} is not a {'translation' if translating else 'language'} model; with --task "
                f"{args.task} choose one of {', '.join(MODELS_OF_TASK[args.task])}")
    if args.model == "seq2seq-lstm" and args.hidden_dim % 2:
        p.error(f"--hidden-dim {args.hidden_dim} must be even for seq2seq-lstm: its encoder's two directions "
                "have half each")
    if args.model in ("transformer", "seq2seq-transformer") and args.d_model % args.n_heads:
        p.error(f"--d-model {args.d_model} must be divisible by --n-heads {args.n_heads}")
    if args.model == "transformer" and args.seq_len > runs.MAX_CONTEXT:
        p.error(f"--seq-len {args.seq_len} is longer than a transformer's largest context, {runs.MAX_CONTEXT}")
    if args.stateful and (translating or not MODELS[args.model].carries_state):
        p.error(f"--stateful carries a model's state across batches; --model {args.model} carries none "
                "(it reads each chunk on its own)")
    for flag, kind, size in (("--vocab-size", args.tokenizer, args.vocab_size),
                             ("--source-vocab-size", args.source_tokenizer, args.source_vocab_size),
                             ("--target-vocab-size", args.target_tokenizer, args.target_vocab_size)):
        if kind == "bpe" and size is not None and size < runs.MIN_BPE_VOCABULARY:
            p.error(f"{flag} must be at least {runs.MIN_BPE_VOCABULARY} for BPE (the byte values), got {size}")
    if args.out and distributed.get_rank() == 0:  # the folder rank 0 will write
        try:
            check_new_run_dir(Path(args.out))
        except ValueError as exc:
            p.error(str(exc))
    return args


def check_new_run_dir(run_dir: Path) -> None:
    """A new run's folder holds no run: a ValueError saying what to do instead."""
    if (run_dir / "checkpoint").exists() or (run_dir / ".checkpoint-old").exists():
        raise ValueError(f"--out {run_dir} already holds a run; continue it with --resume {run_dir}, "
                         "or name a new folder")
    if any((run_dir / name).exists() for name in RUN_FILES):
        raise ValueError(f"--out {run_dir} holds a run that never wrote a checkpoint; remove it or name a new folder")


def make_config(args) -> dict:
    """config.json of a new run, from its flags; the vocabulary sizes are added once its
    tokenizers are trained (``setup``)."""
    task = getattr(args, "task", "language-model")
    defaults = TASK_DEFAULTS[task]
    model_configs = {
        "lstm": dict(embedding_dim=args.embedding_dim, hidden_dim=args.hidden_dim, n_layers=args.n_layers,
                     dropout=args.dropout),
        "transformer": dict(d_model=args.d_model, n_heads=args.n_heads, n_layers=args.n_layers,
                            max_len=args.seq_len, dropout=args.dropout),
        "seq2seq-lstm": dict(embedding_dim=args.embedding_dim, hidden_dim=args.hidden_dim, n_layers=args.n_layers,
                             attention=args.attention, dropout=args.dropout),
        "seq2seq-transformer": dict(d_model=args.d_model, n_heads=args.n_heads, num_encoder_layers=args.n_layers,
                                    num_decoder_layers=args.n_layers, dim_feedforward=args.dim_feedforward,
                                    dropout=args.dropout),
    }
    keys = list(runs.TRAINING_RULES) + (list(runs.LANGUAGE_MODEL_TRAINING_RULES) if task == "language-model" else [])
    training = {k: getattr(args, k) for k in keys if k != "steps"}
    if task == "language-model":
        training["stateful"] = args.stateful
    training["steps"] = args.steps or defaults["steps"]
    training["warmup_steps"] = min(args.warmup_steps, training["steps"])  # as used: a resume keeps it
    training["backend"] = tinylm.get_backend()  # a resume runs on it too: backends round differently
    data = str(Path(args.data).resolve()) if args.data else None
    if task == "translate":
        return dict(task=task, model=args.model, model_config=model_configs[args.model], data=data,
                    corpus=None if data else args.corpus, pair=None if data else args.pair,
                    source_tokenizer=args.source_tokenizer, source_vocab_size=args.source_vocab_size,
                    target_tokenizer=args.target_tokenizer, target_vocab_size=args.target_vocab_size,
                    bleu_tokenize=args.bleu_tokenize or default_bleu_tokenize(None if data else args.corpus,
                                                                              None if data else args.pair),
                    training=training)
    return dict(model=args.model, model_config=model_configs[args.model], tokenizer=args.tokenizer,
                vocab_size=args.vocab_size, data=data, lowercase=args.lowercase, training=training)


class Trainer:
    """One training run: model, optimizer, schedule, the task's data and everything a checkpoint holds."""

    def __init__(self, config: dict, run_dir: Path, task, model, share: BatchShare | None = None,
                 shard_optimizer: bool = False, teacher: Teacher | None = None):
        t = config["training"]
        self.config, self.t, self.run_dir, self.task, self.model = config, t, run_dir, task, model
        self.teacher = teacher  # with --teacher: the trained run whose predictions this one learns from
        self.distillation = config.get("distillation")  # its alpha and temperature
        # Data-parallel: this process's rows of each batch, and its gradients averaged with the
        # other processes' (by DistributedDataParallel, or inside the sharded optimizer).
        self.share = share or BatchShare(t["batch_size"])
        self.writes = self.share.rank == 0  # only rank 0 writes files and prints
        self.shard_optimizer = shard_optimizer and self.share.world > 1
        self.module = model  # what the forward pass calls
        if self.share.world > 1 and not self.shard_optimizer:
            self.module = DistributedDataParallel(model)
        self.optimizer = build_optimizer(model, t, sharded=self.shard_optimizer)
        self.schedule = optim.lr_scheduler.WarmupCosineLR(self.optimizer, min(t["warmup_steps"], t["steps"]),
                                                          max(t["steps"], t["warmup_steps"]), t["min_lr_ratio"])
        self.batch_rng = np.random.default_rng([t["seed"], 1])
        self.stream = getattr(task, "stream", None)  # a language model's streams with --stateful
        self.carried = None  # the model's state carried across batches with --stateful (this rank's rows)
        self.teacher_carried = None  # and the teacher's own, likewise
        self.step, self.elapsed, self.saved_step, self.last_lr, self.tokens = 0, 0.0, 0, t["lr"], 0
        self.interval_losses: list[float] = []
        self.metrics_rows = 0  # rows of metrics.csv written on the schedule (a stop's extra row is not one)
        self.plotter: LossPlotter | None = None  # made by the first evaluation, or by main() before step 1
        self.new_folder: bool | None = None  # for a new run: whether its folder was made for it

    # ---- checkpoints
    def save(self) -> None:
        """Write a checkpoint, unless an update has made a parameter non-finite: the last
        good checkpoint must stay the last good one."""
        for name, param in self.model.named_parameters():
            if not bool(np.isfinite(param.numpy()).all()):
                raise RuntimeError(f"step {self.step}: parameter {name} is no longer finite; training stopped. "
                                   + self.last_good())
        # Every rank takes part (a sharded optimizer gathers its moments, a carried state its
        # rows), so the checkpoint is the whole run's whatever the number of processes; rank 0 writes it.
        carried = None if self.carried is None else [self.share.gather(t.numpy(), axis=1) for t in self.carried]
        teacher_carried = (None if self.teacher_carried is None else
                           [self.share.gather(t.numpy(), axis=1) for t in self.teacher_carried])
        optimizer_state = self.optimizer.state_dict()
        trainer_state = {
            "step": self.step, "elapsed_s": self.elapsed, "schedule": self.schedule.state_dict(),
            "batch_rng": self.batch_rng.bit_generator.state, "dropout_rng": default_generator().bit_generator.state,
            "stream_position": self.stream.position if self.stream else None,
            "interval_losses": self.interval_losses, "metrics_rows": self.metrics_rows, "tokens": self.tokens,
            "carried": None if carried is None else [c.tolist() for c in carried],  # (L, B, H) each
        }
        if self.teacher is not None and self.stream is not None:  # the teacher's carried state, (L', B, H') each
            trainer_state["teacher_carried"] = None if teacher_carried is None else [c.tolist()
                                                                                    for c in teacher_carried]
        if self.writes:
            save_checkpoint(self.run_dir, self.model.state_dict(), optimizer_state, trainer_state)
        self.saved_step = self.step

    def restore(self, optimizer_state: dict, trainer_state: dict) -> None:
        self.optimizer.load_state_dict(optimizer_state)
        self.schedule.load_state_dict(trainer_state["schedule"])
        self.batch_rng.bit_generator.state = trainer_state["batch_rng"]
        default_generator().bit_generator.state = trainer_state["dropout_rng"]
        if self.stream is not None:
            if trainer_state["stream_position"] > self.stream.streams.shape[1]:
                raise CheckpointError(f"{self.run_dir}: the checkpoint's stream position "
                                      f"{trainer_state['stream_position']} is past the end of the training streams "
                                      f"({self.stream.streams.shape[1]} tokens)")
            self.stream.position = trainer_state["stream_position"]
        carried = trainer_state.get("carried")
        dtype = next(self.model.parameters()).dtype
        self.carried = None if carried is None else tuple(
            tinylm.tensor(self.share.scatter(np.array(c, dtype=dtype), axis=1)) for c in carried)  # this rank's rows
        if self.teacher is not None and self.stream is not None:
            teacher_carried = self.checked_teacher_carried(trainer_state)
            self.teacher_carried = None if teacher_carried is None else tuple(
                tinylm.tensor(self.share.scatter(c.astype(dtype), axis=1)) for c in teacher_carried)
        self.step, self.elapsed = trainer_state["step"], trainer_state["elapsed_s"]
        # checkpoints older than the count: a language model's steps were all B x T tokens
        self.tokens = trainer_state.get("tokens", self.step * self.t["batch_size"] * self.t.get("seq_len", 0))
        self.saved_step = self.step
        self.interval_losses = list(trainer_state["interval_losses"])
        self.metrics_rows = trainer_state.get("metrics_rows")  # None in checkpoints older than it

    def checked_teacher_carried(self, trainer_state: dict):
        """The teacher's carried state in a checkpoint of a stateful distilled run, as arrays of
        the shape its model carries, or None; a CheckpointError for anything else."""
        path = checkpoint_dir(self.run_dir) / "trainer.json"
        if "teacher_carried" not in trainer_state:
            raise CheckpointError(f"{path}: teacher_carried is missing (the state a stateful run's teacher carries)")
        carried, shape = trainer_state["teacher_carried"], self.teacher.state_shape(self.t["batch_size"])
        if carried is None:
            return None
        if shape is None or not isinstance(carried, list) or len(carried) != 2:
            raise CheckpointError(f"{path}: teacher_carried must be null, or (h, c) of an LSTM teacher")
        try:
            arrays = [np.array(part, dtype=np.float64) for part in carried]
        except (TypeError, ValueError):
            raise CheckpointError(f"{path}: teacher_carried holds something that is not an array of numbers") from None
        for array in arrays:
            if array.shape != shape:
                raise CheckpointError(f"{path}: teacher_carried of shape {array.shape}, expected {shape}")
        return arrays

    def last_good(self) -> str:
        if self.saved_step == 0:
            return "No checkpoint had been written yet."
        return f"The last good checkpoint (step {self.saved_step}) is in {self.run_dir}."

    # ---- one step
    def train_step(self) -> float:
        inputs, all_targets, state, tokens = self.task.next_batch(self.batch_rng)  # the whole batch
        continuing = self.stream is not None and not self.task.stream_restarted
        if continuing:
            state = self.carried  # continue the streams where the previous batch stopped
        inputs, targets, state = self.share.take(inputs, all_targets, state)  # this process's rows
        if self.teacher is not None:  # eval mode, no graph: the same rows, and its own carried state
            teacher_logits, teacher_state = self.teacher.forward(inputs, self.teacher_carried if continuing else state)
            if self.stream is not None:
                self.teacher_carried = teacher_state
        with self.share.rows():
            logits, state = self.module(inputs, state)  # (B, T, V); state: None, or a tuple of Tensors
        if self.stream is not None and state is not None:
            self.carried = tuple(s.detach() for s in state)  # the next batch continues these streams
        # The mean over the batch's (B * T) targets; a target of IGNORE (-100, translation's
        # padding) counts for nothing. With a teacher, the distillation objective (tinylm.distill).
        if self.teacher is None:
            loss, value = self.share.loss(logits, targets, all_targets)
        else:
            d = self.distillation
            loss, value = distillation_loss(self.share, logits, teacher_logits, targets, all_targets, d["alpha"],
                                            d["temperature"])
        if not math.isfinite(value):
            raise RuntimeError(f"step {self.step + 1}: the loss is {value}; training stopped. " + self.last_good())
        self.optimizer.zero_grad()
        loss.backward()  # with DistributedDataParallel: the gradients averaged over the processes
        if self.t["clip"] > 0 and not self.shard_optimizer:  # a sharded optimizer clips what it holds
            nn.utils.clip_grad_norm_(self.model.parameters(), self.t["clip"])
        self.optimizer.step()
        self.last_lr = self.schedule.get_last_lr()[0]  # the rate this step used, for metrics.csv
        self.schedule.step()
        self.step += 1
        self.tokens += tokens
        return value

    # ---- evaluation and reporting
    def record(self, tokens_per_s: float, with_validation: bool) -> dict:
        """Append a metrics.csv row: the mean training loss since the previous row and,
        at evaluation steps, the task's validation scores."""
        row = dict(step=self.step, tokens=self.tokens, elapsed_s=round(self.elapsed, 2), lr=self.last_lr,
                   train_loss=float(np.mean(self.interval_losses)) if self.interval_losses else float("nan"),
                   tokens_per_s=round(tokens_per_s))
        self.interval_losses = []
        self.metrics_rows += 1
        if not self.writes:  # the other ranks of a data-parallel run only count the row
            return row
        if with_validation:
            row.update(self.task.evaluate(self.model))
        append_metrics(self.run_dir / "metrics.csv", row, self.task.metric_columns)
        if with_validation:
            self.plotter = self.plotter or LossPlotter()
            self.plotter.draw(self.run_dir)
        return row


def setup(args):
    """The Trainer for a new run, or for the run being resumed. A resumed run is loaded
    and checked whole before anything in its folder changes. In a data-parallel run every
    process builds the same trainer (the same seeds) and only rank 0 writes."""
    if args.backend:
        tinylm.set_backend(args.backend)
    world, rank = distributed.get_world_size(), distributed.get_rank()
    if world > 1 and tinylm.get_backend() in ("cupy", "cuda"):
        raise ValueError(f"data-parallel training runs on the CPU backends for now (numpy, cython); the "
                         f"{tinylm.get_backend()} backend's NCCL collectives are in tinylm.distributed but not "
                         "wired into tinylm.train")
    if args.resume:
        run_dir = Path(args.resume)
        config, tokenizers, model, optimizer_state, trainer_state = load_run(run_dir)
        if "quantization" in config:  # int8 weights and no optimizer state: for inference only
            raise ValueError(f"--resume: {run_dir} is an int8 run made by python -m tinylm.quantize, for inference "
                             f"only; resume its source run instead: --resume {config['quantization']['source']}")
        trained_on = config["training"].get("backend")
        if not args.backend and trained_on:
            tinylm.set_backend(trained_on)  # the same kernels round the same way: an exact resume
        elif trained_on and args.backend != trained_on and rank == 0:
            print(f"tinylm.train: the run trained on {trained_on}; resuming on {args.backend}, whose rounding differs")
        if args.steps is not None:
            config["training"]["steps"] = args.steps  # extend (or shorten) the run; the cosine follows
        check_data_parallel(config, world)
        teacher = resume_teacher(run_dir, config)
        task = make_task(config, tokenizers)
        trainer = Trainer(config, run_dir, task, model, BatchShare(config["training"]["batch_size"], world, rank),
                          shard_optimizer=args.shard_optimizer, teacher=teacher)
        trainer.restore(optimizer_state, trainer_state)
        metrics = kept_metrics(run_dir / "metrics.csv", trainer.metrics_rows, trainer.step, task.metric_columns)
        trainer.metrics_rows = max(0, metrics.count(b"\n") - 1)
        # Everything is read and checked: from here on the run folder changes.
        if trainer.writes:
            if args.steps is not None:
                write_json(run_dir / "config.json", config)
            write_atomically(run_dir / "metrics.csv", metrics)
        return trainer
    teacher = None
    if args.teacher:  # its tokenizers are the student's: their settings go into the config
        teacher = Teacher.load(args.teacher)
        teacher.take_tokenizer_settings(args)
    config = make_config(args)
    if teacher is not None:
        teacher.check_student(config.get("task", "language-model"), config["training"])
        config["distillation"] = teacher.record(args.distill_alpha, args.distill_temperature)
    check_data_parallel(config, world)
    share = BatchShare(config["training"]["batch_size"], world, rank)  # refuses a batch that does not divide
    task = make_task(config, teacher.tokenizers if teacher else None)
    tinylm.manual_seed(config["training"]["seed"])  # initialisation, then dropout, from this generator
    model = build_model(config["model"], dict(**task.model_vocabulary(), **config["model_config"]))
    config["model_config"] = model.config
    trainer = Trainer(config, None, task, model, share, shard_optimizer=args.shard_optimizer, teacher=teacher)
    if trainer.writes:
        trainer.new_folder = not (args.out and Path(args.out).exists())
        trainer.run_dir = run_dir = new_run_dir(args.out)  # made only once nothing else can fail
        write_json(run_dir / "config.json", config)
        for stem, tokenizer in task.tokenizers.items():
            write_atomically(run_dir / f"{stem}.json", tokenizer_to_json(tokenizer))
    return trainer


def resume_teacher(run_dir: Path, config: dict) -> Teacher | None:
    """The teacher of a distilled run being resumed, from config.json: the same folder and,
    by its SHA-256, the same weights; a CheckpointError if it is gone or has changed."""
    distillation = config.get("distillation")
    if distillation is None:
        return None
    folder = Path(distillation["teacher"])
    if not folder.is_dir():
        raise CheckpointError(f"{run_dir / 'config.json'}: the run learns from the teacher {folder}, which is "
                              "missing; put that run back to resume")
    teacher = Teacher.load(folder, flag="the teacher", expected_digest=distillation["teacher_sha256"])
    teacher.check_student(config.get("task", "language-model"), config["training"])
    return teacher


def check_data_parallel(config: dict, world: int) -> None:
    """What cannot yet run on several processes, refused before any work."""
    m = config["model_config"]
    if world > 1 and config["model"] == "seq2seq-lstm" and m["n_layers"] > 1 and m["dropout"] > 0:
        raise ValueError("seq2seq-lstm with --n-layers > 1 and dropout cannot train on several processes yet: its "
                         "encoder runs each source length on its own, so its between-layer dropout cannot draw "
                         "per global row; use --n-layers 1 or --dropout 0")


def new_run_dir(out: str | None) -> Path:
    """The folder of a new run: ``out`` (empty or new), else runs/<date-time>, with a
    suffix when a run started in the same second already has that name."""
    if out:
        run_dir = Path(out)
        check_new_run_dir(run_dir)  # checked by the parser; again here, just before writing
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    stem = Path("runs") / datetime.now().strftime("%Y-%m-%d-%H%M%S")
    stem.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1000):
        run_dir = stem if attempt == 0 else stem.with_name(f"{stem.name}-{attempt}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
    raise OSError(f"cannot find a new folder name under {stem.parent}")


def report(bar, trainer: Trainer, row: dict) -> None:
    bar.write(f"step {trainer.step}: train loss {row['train_loss']:.3f}, {trainer.task.report(row)}")
    sample = trainer.task.sample(trainer.model, trainer.step)
    if sample:
        bar.write(sample)


def stop(bar, trainer: Trainer, speed: float, evaluated: bool) -> None:
    """End a run early (time limit, Ctrl-C): a checkpoint of this step, then, unless this
    step was evaluated already, an evaluation in a row off the schedule. The checkpoint
    is written first, so its logging window and row count (``metrics_rows``) are the
    schedule's: a resume removes the extra row and writes what an uninterrupted run would."""
    if not evaluated:
        trainer.save()
        row = trainer.record(speed, with_validation=True)
        if trainer.writes:
            report(bar, trainer, row)


def remove_unfinished_run(run_dir: Path, remove_folder: bool) -> None:
    """A new run that fails before its first checkpoint cannot be resumed: remove what it
    wrote, so its --out can be used again."""
    for name in (*RUN_FILES, "metrics.csv.tmp", "loss.png", "loss.tmp.png"):
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()
    if remove_folder and not any(run_dir.iterdir()):
        run_dir.rmdir()


def share_the_cores(group) -> None:
    """Ranks on one machine split its cores: each runs its kernels and BLAS on cores / ranks
    threads (unless OMP_NUM_THREADS says otherwise), since processes that each start a
    thread per core spend their time waiting for each other's spinning threads."""
    if group.local_size <= 1 or "OMP_NUM_THREADS" in os.environ:
        return
    from tinylm import backends, kernels

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // group.local_size)
    backends.set_blas_threads(threads)  # held at one under the cython backend: the kernels' team multiplies
    try:
        kernels.set_num_threads(threads)
    except ImportError:  # the compiled kernels are not built here: the NumPy reference has no threads of its own
        pass


def main(argv=None) -> None:
    if distributed.launched_by_mpi():  # mpiexec -n N: data-parallel, N processes sharing each batch
        share_the_cores(distributed.init_process_group())
    args = parse_args(argv)
    keep_freed_memory()  # reuse each step's freed arrays instead of fresh pages (tinylm/memory.py)
    trainer = setup(args)
    t = trainer.t
    from tqdm import tqdm

    size = sum(p.numel() for p in trainer.model.parameters())
    if trainer.writes:
        processes = f", {trainer.share.world} processes" if trainer.share.world > 1 else ""
        print(f"tinylm.train: {trainer.config['model']} model, {size:,} parameters, {trainer.task.describe()}, "
              f"backend {tinylm.get_backend()}{processes}, run in {trainer.run_dir}")
        if trainer.teacher is not None:
            d, teacher = trainer.distillation, trainer.teacher
            teacher_size = sum(p.numel() for p in teacher.model.parameters())
            print(f"tinylm.train: distilling from {teacher.folder} (a {teacher.config['model']} model, "
                  f"{teacher_size:,} parameters, step {teacher.step}): alpha {d['alpha']:g}, temperature "
                  f"{d['temperature']:g}; train_loss is (1 - alpha) * cross-entropy + alpha * T^2 * KL")

    interrupted = []
    previous_handler = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    trainer.plotter = LossPlotter()  # matplotlib imported now: memory from the first step is the run's
    bar = tqdm(total=t["steps"], initial=trainer.step, unit="step", dynamic_ncols=True, mininterval=0.5,
               disable=not trainer.writes)
    started, tokens_started = time.perf_counter(), trainer.tokens
    elapsed_before, training_seconds = trainer.elapsed, 0.0
    try:
        while trainer.step < t["steps"]:
            step_started = time.perf_counter()
            trainer.interval_losses.append(trainer.train_step())
            training_seconds += time.perf_counter() - step_started
            trainer.elapsed = elapsed_before + time.perf_counter() - started
            speed = (trainer.tokens - tokens_started) / training_seconds  # tokens/s, evaluation excluded
            bar.update(1)
            bar.set_postfix(loss=f"{trainer.interval_losses[-1]:.3f}", tok_s=f"{speed:,.0f}", refresh=False)
            evaluating = trainer.step % t["eval_every"] == 0 or trainer.step == t["steps"]
            if evaluating or trainer.step % t["log_every"] == 0:
                row = trainer.record(speed, with_validation=evaluating)
            if evaluating:
                if trainer.writes:
                    report(bar, trainer, row)
                trainer.save()
            out_of_time = args.time_limit is not None and trainer.elapsed >= args.time_limit
            if trainer.share.agree(out_of_time or bool(interrupted)):  # rank 0's clock and Ctrl-C decide
                stop(bar, trainer, speed, evaluated=evaluating)
                if trainer.writes:
                    bar.write(f"time limit of {args.time_limit:g}s reached at step {trainer.step}; continue with "
                              f"--resume {trainer.run_dir}" if out_of_time else
                              f"interrupted: checkpoint at step {trainer.step} saved; "
                              f"continue with --resume {trainer.run_dir}")
                break
    except BaseException:
        if trainer.writes and trainer.new_folder is not None and trainer.saved_step == 0:
            remove_unfinished_run(trainer.run_dir, trainer.new_folder)
        raise
    finally:
        bar.close()
        trainer.plotter.close()
        signal.signal(signal.SIGINT, previous_handler)
    if trainer.writes:
        print(f"done: step {trainer.step} in {trainer.elapsed:.0f}s; "
              f"checkpoint, metrics.csv and loss.png in {trainer.run_dir}")


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="python -m tinylm.train"))
