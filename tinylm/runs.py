"""A training run on disk: its config, tokenizer and model, rebuilt for reuse."""

from __future__ import annotations

from pathlib import Path

from tinylm.checkpoint import CheckpointError, load_checkpoint, read_json
from tinylm.models import MODELS
from tinylm.tokenizers import tokenizer_from_json


def build_model(kind: str, model_config: dict):
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}; choose one of {', '.join(MODELS)}")
    return MODELS[kind](**model_config)


def load_run(run_dir):
    """(config, tokenizer, model with the checkpoint's weights, optimizer state, trainer state)."""
    run_dir = Path(run_dir)
    config = read_json(run_dir / "config.json")
    try:
        tokenizer = tokenizer_from_json((run_dir / "tokenizer.json").read_text(encoding="utf-8"))
    except OSError as exc:
        raise CheckpointError(f"{run_dir / 'tokenizer.json'} cannot be read: {exc.strerror}") from None
    model_state, optimizer_state, trainer_state = load_checkpoint(run_dir)
    model = build_model(config["model"], config["model_config"])
    model.load_state_dict(model_state)
    return config, tokenizer, model, optimizer_state, trainer_state
