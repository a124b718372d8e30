"""A training run on disk: its config, tokenizer, model and training state, checked and rebuilt.

A run folder may come from anywhere (a crash, a hand edit, a download), so nothing in it
is trusted. ``load_run`` checks every file against the rules the command line uses for
the same values and against the model the config describes, and turns anything wrong
into a one-line ``CheckpointError`` naming the file and the problem, before any caller
has written anything.

A run comes in two kinds. A training run (``tinylm.train``) holds float32 parameters
and the optimizer's state. An int8 run (``python -m tinylm.quantize``) is for inference
only: its config.json carries a ``"quantization"`` block, its ``model.safetensors``
holds every 2-D parameter as int8 values ``NAME`` (rows, cols) with one float32 scale
per row ``NAME.scale`` (rows,), W ≈ scale[:, None] · q (``tinylm.reference.int8_matmul``),
and every other parameter float32; it has no optimizer file. ``load_run`` loads
the dequantized weights into the model, so everything that reads the model (``forward``,
evaluation, beam search) runs unchanged on exactly the values the int8 weights stand
for, and attaches the int8 arrays themselves for the steppers' int8 kernels:

    model.int8_weights: dict[str, tuple[q, scale]]   # parameter name -> (int8 (N, K), float32 (N,))

A float model has no such attribute; a stepper that finds it multiplies by the int8
matrices (``LSTMStepper``, ``TransformerStepper``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinylm import backends, cli, optim
from tinylm.bleu import TOKENIZE
from tinylm.checkpoint import CheckpointError, checkpoint_dir, load_checkpoint, read_json, read_safetensors
from tinylm.models import MODELS
from tinylm.parallel_corpus import CORPORA, PAIRS, SPECIAL_TOKENS
from tinylm.reference.int8_matmul import dequantize
from tinylm.tasks import MODELS_OF_TASK, TASKS, TokenizerPair
from tinylm.tokenizers import TOKENIZERS, tokenizer_from_json

# The longest context a transformer may be built for: its positional table (max_len x d_model)
# is made with the model, and attention's scores grow with its square.
MAX_CONTEXT = 65536
max_len_rule = cli.Rule(int, lambda v: 0 < v <= MAX_CONTEXT, f"an integer in [1, {MAX_CONTEXT}]")

# The range of every size in a model's config: the same rules as the flags that set them.
MODEL_CONFIG_RULES = {
    "lstm": {"vocab_size": cli.positive_int, "embedding_dim": cli.positive_int, "hidden_dim": cli.positive_int,
             "n_layers": cli.positive_int, "dropout": cli.probability},
    "transformer": {"vocab_size": cli.positive_int, "d_model": cli.positive_int, "n_heads": cli.positive_int,
                    "n_layers": cli.positive_int, "max_len": max_len_rule, "dropout": cli.probability},
    "seq2seq-lstm": {"source_vocab_size": cli.positive_int, "target_vocab_size": cli.positive_int,
                     "embedding_dim": cli.positive_int, "hidden_dim": cli.positive_int, "n_layers": cli.positive_int,
                     "dropout": cli.probability},
    "seq2seq-transformer": {"source_vocab_size": cli.positive_int, "target_vocab_size": cli.positive_int,
                            "d_model": cli.positive_int, "n_heads": cli.positive_int,
                            "num_encoder_layers": cli.positive_int, "num_decoder_layers": cli.positive_int,
                            "dim_feedforward": cli.positive_int, "dropout": cli.probability},
}

# Settings that are names rather than sizes; optional, since runs written before them
# used the first choice.
MODEL_CONFIG_CHOICES = {"transformer": {"gelu_approximate": ("tanh", "none")},
                        "seq2seq-lstm": {"attention": ("general", "dot", "additive")},
                        "seq2seq-transformer": {"norm_first": (True, False)}}
# Sizes a model config may hold and the flags do not set.
MODEL_CONFIG_OPTIONAL = {"seq2seq-transformer": {"max_len": max_len_rule}}

# The training settings of config.json, with the rule of the flag that sets each: those of
# every task, then those only a language model has.
TRAINING_RULES = {
    "steps": cli.positive_int, "batch_size": cli.positive_int, "lr": cli.positive_float,
    "warmup_steps": cli.non_negative_int, "min_lr_ratio": cli.fraction, "weight_decay": cli.non_negative_float,
    "clip": cli.non_negative_float, "seed": cli.seed, "eval_every": cli.positive_int, "log_every": cli.positive_int,
}
LANGUAGE_MODEL_TRAINING_RULES = {"seq_len": cli.positive_int, "sample_tokens": cli.non_negative_int}
MIN_BPE_VOCABULARY = 256  # the byte values
# A distilled run's "distillation" block (tinylm.distill): its numbers, with the rules of their flags.
DISTILLATION_RULES = {"alpha": cli.fraction, "temperature": cli.positive_float, "teacher_step": cli.non_negative_int}

# An int8 run (see the module docstring): the scheme its config.json names, and the suffix of
# the tensor holding a quantized parameter's row scales.
QUANTIZATION_SCHEME = "int8-per-channel"
SCALE_SUFFIX = ".scale"


LARGEST_SCALE = float(np.finfo(np.float32).max) / 127  # the largest scale whose 127 x scale is finite


def is_quantized(shape: tuple[int, ...]) -> bool:
    """Whether a parameter of this shape is stored as int8 in an int8 run: every matrix
    (embeddings, LSTM and linear weights, attention's projections, the output layer)."""
    return len(shape) == 2


def build_model(kind: str, model_config: dict):
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}; choose one of {', '.join(MODELS)}")
    return MODELS[kind](**model_config)


def build_optimizer(model, training: dict, sharded: bool = False):
    """AdamW with weight decay on the matrices only (not on biases or LayerNorm). ``sharded``:
    the same update with its moments split over a data-parallel run's processes (ZeRO stage
    1, ``tinylm.optim.ZeroRedundancyAdamW``), which then also averages the gradients and
    clips their norm to ``training["clip"]``."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    if sharded:
        return optim.ZeroRedundancyAdamW(groups, lr=training["lr"], weight_decay=training["weight_decay"],
                                         max_norm=training["clip"] or None)
    return optim.AdamW(groups, lr=training["lr"], weight_decay=training["weight_decay"])


# ------------------------------------------------------------------------------ checks


def check_config(config, path="config.json") -> dict:
    """``config`` as written by ``tinylm.train``, or a CheckpointError saying what is wrong."""
    def bad(what):
        return CheckpointError(f"{path}: {what}")

    if not isinstance(config, dict):
        raise bad(f"expected a JSON object, got {type(config).__name__}")
    task = config.get("task", "language-model")
    if task not in TASKS:
        raise bad(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    translating, kinds = task == "translate", MODELS_OF_TASK[task]
    kind = config.get("model")
    if kind not in kinds:
        raise bad(f"unknown {task} model {kind!r}; expected one of {', '.join(kinds)}")
    model_config, training = config.get("model_config"), config.get("training")
    training_rules = TRAINING_RULES if translating else {**TRAINING_RULES, **LANGUAGE_MODEL_TRAINING_RULES}
    optional = MODEL_CONFIG_OPTIONAL.get(kind, {})
    for name, section, rules in (("model_config", model_config, MODEL_CONFIG_RULES[kind]),
                                 ("training", training, training_rules)):
        if not isinstance(section, dict):
            raise bad(f"'{name}' must be an object")
        for key, rule in rules.items():
            if key not in section:
                raise bad(f"{name}.{key} is missing")
            if not rule.accepts(section[key]):
                raise bad(f"{name}.{key} must be {rule.description}, got {section[key]!r}")
    for key, rule in optional.items():
        if key in model_config and not rule.accepts(model_config[key]):
            raise bad(f"model_config.{key} must be {rule.description}, got {model_config[key]!r}")
    choices = MODEL_CONFIG_CHOICES.get(kind, {})
    for key, allowed in choices.items():
        # a name's type first: 1 == True, and a list is not hashable
        if key in model_config and not any(type(model_config[key]) is type(a) and model_config[key] == a
                                           for a in allowed):
            raise bad(f"model_config.{key} must be one of {', '.join(map(repr, allowed))}, got {model_config[key]!r}")
    unknown = sorted(set(model_config) - set(MODEL_CONFIG_RULES[kind]) - set(choices) - set(optional))
    if unknown:
        raise bad(f"model_config has keys a {kind} model does not take: {', '.join(unknown)}")
    if not isinstance(training.get("stateful", False), bool):
        raise bad(f"training.stateful must be true or false, got {training['stateful']!r}")
    if training.get("backend") is not None and training["backend"] not in backends.BACKENDS:
        raise bad(f"training.backend {training['backend']!r} is not one of {', '.join(backends.BACKENDS)}")
    if kind == "seq2seq-lstm" and model_config["hidden_dim"] % 2:
        raise bad(f"hidden_dim {model_config['hidden_dim']} must be even: the encoder's two directions have half each")
    if "d_model" in model_config and model_config["d_model"] % model_config["n_heads"]:
        raise bad(f"d_model {model_config['d_model']} is not divisible by n_heads {model_config['n_heads']}")
    if kind == "transformer" and training["seq_len"] > model_config["max_len"]:
        raise bad(f"training.seq_len {training['seq_len']} is longer than max_len {model_config['max_len']}")
    if training.get("stateful") and not MODELS[kind].carries_state:
        raise bad(f"training.stateful carries a model's state across batches; a {kind} model carries none")
    if "data" not in config or (config["data"] is not None and not isinstance(config["data"], str)):
        raise bad("'data' must be a path or null")
    if translating:
        if config["data"] is None and (config.get("corpus") not in CORPORA or config.get("pair") not in PAIRS):
            raise bad(f"without 'data', 'corpus' must be one of {', '.join(CORPORA)} and 'pair' one of "
                      f"{', '.join(PAIRS)}; got {config.get('corpus')!r}, {config.get('pair')!r}")
        if config.get("bleu_tokenize", "13a") not in tuple(TOKENIZE):  # a tuple: a list value is refused, not hashed
            raise bad(f"bleu_tokenize must be one of {', '.join(TOKENIZE)}, got {config.get('bleu_tokenize')!r}")
        sides = ("source_", "target_")
    else:
        if not isinstance(config.get("lowercase"), bool):
            raise bad("'lowercase' must be true or false")
        sides = ("",)
    for side in sides:
        if config.get(f"{side}tokenizer") not in tuple(TOKENIZERS):
            raise bad(f"unknown {side}tokenizer {config.get(f'{side}tokenizer')!r}; expected one of "
                      f"{', '.join(TOKENIZERS)}")
    if config.get("distillation") is not None:
        check_distillation(config["distillation"], bad)
    return config


def check_distillation(distillation, bad) -> None:
    """A distilled run's teacher (an absolute path and its model's SHA-256) and settings."""
    if not isinstance(distillation, dict):
        raise bad("'distillation' must be an object or null")
    teacher, digest = distillation.get("teacher"), distillation.get("teacher_sha256")
    if not (isinstance(teacher, str) and Path(teacher).is_absolute()):
        raise bad(f"distillation.teacher must be the teacher run's absolute path, got {teacher!r}")
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        raise bad(f"distillation.teacher_sha256 must be 64 lowercase hex digits, got {digest!r}"[:200])
    for key, rule in DISTILLATION_RULES.items():
        if not rule.accepts(distillation.get(key)):
            raise bad(f"distillation.{key} must be {rule.description}, got {distillation.get(key)!r}")


def check_tokenizer(tokenizer, config: dict, path, side: str = "") -> None:
    """A tokenizer file matches config.json: its kind, and its size against the model's
    vocabulary (a translation model's holds the special tokens too)."""
    kind = config[f"{side}tokenizer"]
    expected = config["model_config"][f"{side}vocab_size"] - (len(SPECIAL_TOKENS) if side else 0)
    if tokenizer.kind != kind:
        raise CheckpointError(f"{path}: a {tokenizer.kind} tokenizer, but config.json names {kind!r}")
    if tokenizer.vocab_size != expected:
        raise CheckpointError(f"{path}: {tokenizer.vocab_size} tokens, but the model's {side}vocab_size "
                              f"{config['model_config'][f'{side}vocab_size']} leaves room for {expected}")


def check_model_state(state: dict, config: dict, dtype, path) -> None:
    """Every parameter the config describes is in the file, with its shape and the
    model's dtype, and nothing else. Checked before the model is built, so a config
    that claims a huge model allocates nothing."""
    expected = MODELS[config["model"]].parameter_shapes(**config["model_config"])
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{path}: " + "; ".join(
            part for part in (f"missing {', '.join(missing)}" if missing else "",
                              f"unexpected {', '.join(unexpected)}" if unexpected else "") if part)
            + " (for the model config.json describes)")
    for name, shape in expected.items():
        value = state[name]
        if value.shape != shape:
            raise CheckpointError(f"{path}: {name} has shape {value.shape}, but config.json describes {shape}")
        if value.dtype != dtype:
            raise CheckpointError(f"{path}: {name} is {value.dtype}, expected {np.dtype(dtype)}")


def check_int8_model_state(state: dict, config: dict, path) -> None:
    """The model file of an int8 run: every 2-D parameter the config describes as int8
    of its shape in -127..127 with its ``.scale`` float32 (rows,), > 0 and ≤ LARGEST_SCALE; every
    other parameter float32 of its shape; nothing missing, nothing else. Checked before
    the model is built."""
    shapes = MODELS[config["model"]].parameter_shapes(**config["model_config"])
    expected = {}
    for name, shape in shapes.items():
        if is_quantized(shape):
            expected[name], expected[name + SCALE_SUFFIX] = (shape, np.int8), (shape[:1], np.float32)
        else:
            expected[name] = (shape, np.float32)
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{path}: " + "; ".join(
            part for part in (f"missing {', '.join(missing)}" if missing else "",
                              f"unexpected {', '.join(unexpected)}" if unexpected else "") if part)
            + " (for the int8 model config.json describes)")
    for name, (shape, dtype) in expected.items():
        value = state[name]
        if value.shape != shape:
            raise CheckpointError(f"{path}: {name} has shape {value.shape}, but config.json describes {shape}")
        if value.dtype != dtype:
            raise CheckpointError(f"{path}: {name} is {value.dtype}, expected {np.dtype(dtype)}")
        # 127 · scale must stay finite in float32, or the dequantized weights are inf.
        if name.endswith(SCALE_SUFFIX) and not ((value > 0) & (value <= LARGEST_SCALE)).all():
            bad = value[~((value > 0) & (value <= LARGEST_SCALE))][0]
            raise CheckpointError(f"{path}: {name} holds {bad}; every row scale must be > 0 and at most "
                                  f"{LARGEST_SCALE:.4g} (so that 127 x scale is a finite float32)")
        if dtype == np.int8 and value.size and value.min() < -127:
            raise CheckpointError(f"{path}: {name} holds -128, outside the symmetric -127..127 of the int8 scheme")


def check_quantization(config: dict, trainer: dict, path, trainer_path) -> None:
    """The ``"quantization"`` block of an int8 run's config.json (``path``) and the step of
    its trainer.json (``trainer_path``)."""
    block = config["quantization"]
    if not isinstance(block, dict):
        raise CheckpointError(f"{path}: 'quantization' must be an object, got {type(block).__name__}")
    if block.get("scheme") != QUANTIZATION_SCHEME:
        raise CheckpointError(f"{path}: quantization.scheme must be {QUANTIZATION_SCHEME!r}, "
                              f"got {block.get('scheme')!r}"[:300])
    if not isinstance(block.get("source"), str):
        raise CheckpointError(f"{path}: quantization.source must be the source run's path, got {block.get('source')!r}"
                              [:300])
    if not cli.non_negative_int.accepts(block.get("step")):
        raise CheckpointError(f"{path}: quantization.step must be {cli.non_negative_int.description}, "
                              f"got {block.get('step')!r}"[:300])
    if not (isinstance(trainer, dict) and cli.non_negative_int.accepts(trainer.get("step"))
            and trainer["step"] == block["step"]):
        step = trainer.get("step") if isinstance(trainer, dict) else trainer
        raise CheckpointError(f"{trainer_path}: step {step!r}, but config.json's "
                              f"quantization names step {block['step']}")


def dequantized_state(state: dict) -> tuple[dict, dict]:
    """An int8 run's checked model file -> (float32 state for ``load_state_dict``, the
    int8 arrays {name: (q (N, K) int8, scale (N,) float32)})."""
    int8 = {name: (q, state[name + SCALE_SUFFIX]) for name, q in state.items() if q.dtype == np.int8}
    scales = {name + SCALE_SUFFIX for name in int8}
    weights = {name: dequantize(*int8[name]) if name in int8 else value
               for name, value in state.items() if name not in scales}
    return weights, int8


def check_optimizer_state(state: dict, optimizer, step: int, folder: Path) -> None:
    """One entry per parameter the optimizer holds: moments of its shape and dtype and a
    step count; settings for each of its parameter groups."""
    arrays, settings = folder / "optimizer.safetensors", folder / "trainer.json"
    params = [p for group in optimizer.param_groups for p in group["params"]]
    groups = state["param_groups"]
    if len(groups) != len(optimizer.param_groups):
        raise CheckpointError(f"{settings}: {len(groups)} optimizer parameter groups, "
                              f"expected {len(optimizer.param_groups)}")
    for saved, mine in zip(groups, optimizer.param_groups):
        if (not isinstance(saved, dict) or not isinstance(saved.get("params"), list)
                or len(saved["params"]) != len(mine["params"])):
            raise CheckpointError(f"{settings}: an optimizer group does not list its {len(mine['params'])} parameters")
        for key in ("lr", "eps", "weight_decay"):
            if not cli.non_negative_float.accepts(saved.get(key)):
                raise CheckpointError(f"{settings}: optimizer {key} must be {cli.non_negative_float.description}, "
                                      f"got {saved.get(key)!r}")
        betas = saved.get("betas")
        if not (isinstance(betas, list) and len(betas) == 2 and all(cli.probability.accepts(b) for b in betas)):
            raise CheckpointError(f"{settings}: optimizer betas must be two numbers in [0, 1), got {betas!r}")
    for index, values in state["state"].items():
        if index >= len(params):
            raise CheckpointError(f"{arrays}: state for parameter {index}, but the optimizer has {len(params)}")
        for name in ("exp_avg", "exp_avg_sq"):
            value = values.get(name)
            if not isinstance(value, np.ndarray):
                raise CheckpointError(f"{arrays}: state.{index}.{name} is missing")
            if value.shape != params[index].shape or value.dtype != params[index].dtype:
                raise CheckpointError(f"{arrays}: state.{index}.{name} is {value.dtype} {value.shape}, "
                                      f"expected {params[index].dtype} {params[index].shape}")
        if not (cli.positive_int.accepts(values.get("step")) and values["step"] <= step):
            raise CheckpointError(f"{settings}: optimizer step of parameter {index} must be an integer in "
                                  f"[1, {step}] (the checkpoint's step), got {values.get('step')!r}")
        unknown = sorted(set(values) - {"exp_avg", "exp_avg_sq", "step"})
        if unknown:
            raise CheckpointError(f"{arrays}: unexpected optimizer state {', '.join(unknown)} for parameter {index}")


def check_trainer_state(trainer: dict, config: dict, optimizer, path) -> None:
    """The step, schedule, random states, data position and carried LSTM state of a
    checkpoint, each of the type and size this run's config implies."""
    def bad(what):
        return CheckpointError(f"{path}: {what}")

    training = config["training"]
    for key, rule in (("step", cli.non_negative_int), ("elapsed_s", cli.non_negative_float),
                      ("metrics_rows", cli.non_negative_int), ("tokens", cli.non_negative_int)):
        if key in ("metrics_rows", "tokens") and key not in trainer:
            continue  # checkpoints written before they existed: a resume keeps rows by step, counts B x T
        if not rule.accepts(trainer.get(key)):
            raise bad(f"{key} must be {rule.description}, got {trainer.get(key)!r}")
    schedule = trainer.get("schedule")
    if not (isinstance(schedule, dict) and schedule.get("last_step") == trainer["step"]
            and isinstance(schedule.get("base_lrs"), list) and len(schedule["base_lrs"]) == len(optimizer.param_groups)
            and all(cli.positive_float.accepts(lr) for lr in schedule["base_lrs"])):
        raise bad(f"schedule must hold last_step (the checkpoint's step) and {len(optimizer.param_groups)} "
                  f"base_lrs > 0, got {schedule!r}"[:300])
    for key in ("batch_rng", "dropout_rng"):
        try:
            np.random.default_rng().bit_generator.state = trainer.get(key)
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise bad(f"{key} is not a NumPy generator state ({type(exc).__name__})") from None
    position = trainer.get("stream_position")
    if bool(training.get("stateful")) != (position is not None):  # a translation run has no "stateful"
        raise bad(f"stream_position {position!r} does not fit a run with stateful={bool(training.get('stateful'))}")
    if position is not None and not cli.non_negative_int.accepts(position):
        raise bad(f"stream_position must be an integer >= 0, got {position!r}")
    losses = trainer.get("interval_losses")
    if not (isinstance(losses, list) and len(losses) < training["log_every"]
            and all(isinstance(x, float) for x in losses)):
        raise bad(f"interval_losses must be a list of fewer than {training['log_every']} losses")
    carried = trainer.get("carried")
    if carried is not None:
        model_config = config["model_config"]
        shape = (model_config.get("n_layers"), training["batch_size"], model_config.get("hidden_dim"))
        if not training.get("stateful") or not isinstance(carried, list) or len(carried) != 2:
            raise bad("carried must be null, or (h, c) of a stateful LSTM run")
        for part in carried:
            try:
                array = np.array(part, dtype=np.float64)
            except (TypeError, ValueError):
                raise bad("carried holds something that is not an array of numbers") from None
            if array.shape != shape:
                raise bad(f"carried state of shape {array.shape}, expected {shape}")


# ------------------------------------------------------------------------------ loading


def load_tokenizer(run_dir: Path, config: dict, side: str = ""):
    """The tokenizer in ``{side}tokenizer.json``, checked against config.json."""
    path = run_dir / f"{side}tokenizer.json"
    size = config["model_config"][f"{side}vocab_size"] - (len(SPECIAL_TOKENS) if side else 0)
    try:
        model_size = config["model_config"][f"{side}vocab_size"]
        expected = f"model_config.{side}vocab_size {model_size} leaves room for {size}" if side else None
        tokenizer = tokenizer_from_json(path.read_text(encoding="utf-8"), vocab_size=size, expected=expected)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not UTF-8 text") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None
    check_tokenizer(tokenizer, config, path, side)
    return tokenizer


def load_run(run_dir):
    """(config, tokenizer, model with the checkpoint's weights, optimizer state, trainer state),
    every part checked (see the module docstring). For a translation run the tokenizer is a
    ``TokenizerPair`` (source, target). For an int8 run the model holds the dequantized
    weights and ``model.int8_weights``, the optimizer state is None and the trainer state
    is trainer.json's ``{"step": ...}``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"--checkpoint: {run_dir} is not a directory")
    config = check_config(read_json(run_dir / "config.json"), run_dir / "config.json")
    if config.get("task") == "translate":
        tokenizer = TokenizerPair(*(load_tokenizer(run_dir, config, side) for side in ("source_", "target_")))
    else:
        tokenizer = load_tokenizer(run_dir, config)
    if "quantization" in config:
        return (config, tokenizer, *load_int8_checkpoint(run_dir, config))
    model_state, optimizer_state, trainer_state = load_checkpoint(run_dir)
    folder = checkpoint_dir(run_dir)
    check_model_state(model_state, config, np.float32, folder / "model.safetensors")
    model = build_model(config["model"], config["model_config"])
    model.load_state_dict(model_state)
    optimizer = build_optimizer(model, config["training"])
    check_trainer_state(trainer_state, config, optimizer, folder / "trainer.json")
    check_optimizer_state(optimizer_state, optimizer, trainer_state["step"], folder)
    return config, tokenizer, model, optimizer_state, trainer_state


def load_int8_checkpoint(run_dir: Path, config: dict):
    """(model, None, trainer state) of an int8 run, its files checked first."""
    folder = checkpoint_dir(run_dir)
    trainer_state = read_json(folder / "trainer.json")
    check_quantization(config, trainer_state, run_dir / "config.json", folder / "trainer.json")
    model_state = read_safetensors(folder / "model.safetensors")
    check_int8_model_state(model_state, config, folder / "model.safetensors")
    weights, int8 = dequantized_state(model_state)
    model = build_model(config["model"], config["model_config"])
    model.load_state_dict(weights)
    model.int8_weights = int8  # see the module docstring
    return model, None, trainer_state
