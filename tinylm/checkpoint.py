"""Checkpoints: safetensors and JSON only (no pickle), written so a crash never breaks one.

A run directory holds what is written once (``config.json``, ``tokenizer.json``), what
grows (``metrics.csv``, ``loss.png``) and the checkpoint proper, a folder swapped in as
a whole:

    checkpoint/model.safetensors       parameters under their PyTorch names
    checkpoint/optimizer.safetensors   the optimizer's moment arrays
    checkpoint/trainer.json            step, optimizer settings, schedule, random states

A new checkpoint is written to ``.checkpoint-new/`` first; then the old folder is
renamed away, the new one renamed in, and the old one deleted. A crash while writing
leaves ``checkpoint/`` as it was; a crash between the two renames leaves
``.checkpoint-old/``, which ``checkpoint_dir`` falls back to. Single files
(``config.json`` ...) are written to a temporary name and renamed over the old one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

CURRENT, NEW, OLD = "checkpoint", ".checkpoint-new", ".checkpoint-old"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message is one line."""


def write_atomically(path: Path, data: bytes | str) -> None:
    """Write to ``path.tmp``, flush it to disk, then rename over ``path`` (atomic on POSIX)."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def write_json(path: Path, value) -> None:
    write_atomically(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} cannot be read: {exc}") from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(run_dir, model_state: dict, optimizer_state: dict, trainer_state: dict) -> Path:
    """Write the checkpoint folder of ``run_dir`` (see the module docstring)."""
    run_dir = Path(run_dir)
    new, current, old = run_dir / NEW, run_dir / CURRENT, run_dir / OLD
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    save_file({k: np.ascontiguousarray(v) for k, v in model_state.items()}, str(new / "model.safetensors"))
    arrays, meta = {}, {}
    for index, values in optimizer_state["state"].items():
        for name, value in values.items():
            if isinstance(value, np.ndarray):
                arrays[f"state.{index}.{name}"] = np.ascontiguousarray(value)
            else:
                meta.setdefault(str(index), {})[name] = value
    save_file(arrays, str(new / "optimizer.safetensors"))
    optimizer_json = {"param_groups": optimizer_state["param_groups"], "scalars": meta}
    write_json(new / "trainer.json", {**trainer_state, "optimizer": optimizer_json})
    for name in ("model.safetensors", "optimizer.safetensors"):
        with open(new / name, "rb") as f:
            os.fsync(f.fileno())
    _fsync_dir(new)
    if current.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(current, old)
    os.replace(new, current)
    _fsync_dir(run_dir)
    shutil.rmtree(old, ignore_errors=True)
    return current


def checkpoint_dir(run_dir) -> Path:
    """The folder holding the newest complete checkpoint of ``run_dir``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"--checkpoint: {run_dir} is not a directory")
    for name in (CURRENT, OLD):
        if (run_dir / name / "trainer.json").exists():
            return run_dir / name
    raise CheckpointError(f"--checkpoint: {run_dir} holds no checkpoint (no {CURRENT}/trainer.json)")


def load_checkpoint(run_dir) -> tuple[dict, dict, dict]:
    """(model_state, optimizer_state, trainer_state) from the newest complete checkpoint."""
    folder = checkpoint_dir(run_dir)
    trainer = read_json(folder / "trainer.json")
    try:
        model_state = load_file(str(folder / "model.safetensors"))
        arrays = load_file(str(folder / "optimizer.safetensors"))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{folder}: cannot read the weights: {exc}") from None
    optimizer_json = trainer.pop("optimizer")
    state: dict[int, dict] = {}
    for key, value in arrays.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, scalars in optimizer_json["scalars"].items():
        state.setdefault(int(index), {}).update(scalars)
    return model_state, {"state": state, "param_groups": optimizer_json["param_groups"]}, trainer
