"""Checkpoints: safetensors and JSON only (no pickle), written so a crash never breaks one.

A run directory holds what is written once (``config.json``, ``tokenizer.json``), what
grows (``metrics.csv``, ``loss.png``) and the checkpoint proper, a folder swapped in as
a whole:

    checkpoint/model.safetensors       parameters under their PyTorch names
    checkpoint/optimizer.safetensors   the optimizer's moment arrays
    checkpoint/trainer.json            step, optimizer settings, schedule, random states

A new checkpoint is written to ``.checkpoint-new/`` first; then the old folder is
renamed away, the new one renamed in, and the old one deleted. A crash or a full disk
while writing leaves ``checkpoint/`` as it was; a crash between the two renames leaves
``.checkpoint-old/``, which ``checkpoint_dir`` falls back to. Single files
(``config.json`` ...) are written to a temporary name and renamed over the old one.

Reading trusts nothing: ``read_safetensors`` checks a file's header against the file's
own size before the library reads it, so a damaged or hostile file is one line of
error, and a header that claims more bytes than the file holds is refused before
anything is allocated.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save

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
    except (OSError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path} cannot be read: {exc}") from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# The safetensors dtypes tinylm reads, with their sizes in bytes.
SAFETENSORS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                      "BOOL": 1}


def read_safetensors(path) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file, after checking its layout against the file size.

    The format: 8 bytes of header length n (little-endian), n bytes of JSON
    ``{name: {"dtype", "shape", "data_offsets": [begin, end]}}``, then the data, each
    tensor at its offsets. Every length and offset is checked before the library reads
    the file, so no claim in the header can make it allocate more than the file holds.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if size < 8 or len(head) < 8:
                raise CheckpointError(f"{path}: not a safetensors file "
                                      f"({size} bytes, shorter than its 8-byte header length)")
            (header_length,) = struct.unpack("<Q", head)
            if header_length > size - 8:
                raise CheckpointError(f"{path}: not a safetensors file (its header length {header_length} "
                                      f"runs past the end of the {size}-byte file)")
            header_bytes = f.read(header_length)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read: {exc.strerror or exc}") from None
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except ValueError:
        raise CheckpointError(f"{path}: not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (its header is not a JSON object)")
    data_size = size - 8 - header_length
    for name, entry in header.items():
        if name != "__metadata__":
            _check_entry(path, name, entry, data_size)
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types; the message is one line
        raise CheckpointError(f"{path}: cannot read the tensors ({str(exc).splitlines()[0]})") from None


def _check_entry(path: Path, name: str, entry, data_size: int) -> None:
    """One header entry: a known dtype, a shape of sizes >= 0, offsets inside the data
    that span exactly the bytes the shape needs."""
    def bad(what):
        return CheckpointError(f"{path}: tensor {name!r}: {what}")

    if not isinstance(entry, dict):
        raise bad("its header entry is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in SAFETENSORS_DTYPES:
        raise bad(f"unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
        raise bad(f"the shape {shape!r} is not a list of sizes >= 0")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise bad(f"the data offsets {offsets!r} are not [begin, end] with 0 <= begin <= end")
    if offsets[1] > data_size:
        raise bad(f"its data offsets {offsets} run past the end of the data ({data_size} bytes)")
    if offsets[1] - offsets[0] != math.prod(shape) * SAFETENSORS_DTYPES[dtype]:
        raise bad(f"{offsets[1] - offsets[0]} bytes of data for shape {shape} of {dtype}")


def save_checkpoint(run_dir, model_state: dict, optimizer_state: dict, trainer_state: dict) -> Path:
    """Write the checkpoint folder of ``run_dir`` (see the module docstring).

    When writing fails (a full disk, a file-size limit, an unwritable folder) the partly
    written ``.checkpoint-new/`` is removed and the previous checkpoint is left as it was;
    the error says so.
    """
    run_dir = Path(run_dir)
    try:
        return _write_checkpoint(run_dir, model_state, optimizer_state, trainer_state)
    except OSError as exc:
        shutil.rmtree(run_dir / NEW, ignore_errors=True)
        previous = f"the previous checkpoint in {run_dir / CURRENT} is unchanged" if (
            run_dir / CURRENT / "trainer.json").exists() else "no earlier checkpoint exists"
        raise OSError(f"cannot write a checkpoint in {run_dir}: {exc.strerror or exc}; {previous}") from None


def _write_checkpoint(run_dir: Path, model_state: dict, optimizer_state: dict, trainer_state: dict) -> Path:
    new, current, old = run_dir / NEW, run_dir / CURRENT, run_dir / OLD
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    # Serialised in memory and written by us, so a failed write is an OSError like any other.
    write_atomically(new / "model.safetensors", save({k: np.ascontiguousarray(v) for k, v in model_state.items()}))
    arrays, meta = {}, {}
    for index, values in optimizer_state["state"].items():
        for name, value in values.items():
            if isinstance(value, np.ndarray):
                arrays[f"state.{index}.{name}"] = np.ascontiguousarray(value)
            else:
                meta.setdefault(str(index), {})[name] = value
    write_atomically(new / "optimizer.safetensors", save(arrays))
    optimizer_json = {"param_groups": optimizer_state["param_groups"], "scalars": meta}
    write_json(new / "trainer.json", {**trainer_state, "optimizer": optimizer_json})
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
        raise CheckpointError(f"{run_dir} is not a directory")
    for name in (CURRENT, OLD):
        if (run_dir / name / "trainer.json").exists():
            return run_dir / name
    raise CheckpointError(f"{run_dir} holds no checkpoint (no {CURRENT}/trainer.json)")


def load_checkpoint(run_dir) -> tuple[dict, dict, dict]:
    """(model_state, optimizer_state, trainer_state) from the newest complete checkpoint.

    The files are checked as files here (readable, well-formed); whether they fit a
    model and its optimizer is checked by ``tinylm.runs.load_run``.
    """
    folder = checkpoint_dir(run_dir)
    trainer = read_json(folder / "trainer.json")
    model_state = read_safetensors(folder / "model.safetensors")
    arrays = read_safetensors(folder / "optimizer.safetensors")
    optimizer_json = trainer.pop("optimizer", None) if isinstance(trainer, dict) else None
    if not (isinstance(optimizer_json, dict) and isinstance(optimizer_json.get("scalars"), dict)
            and isinstance(optimizer_json.get("param_groups"), list)):
        raise CheckpointError(f"{folder / 'trainer.json'}: no optimizer settings "
                              "(an object with param_groups and scalars)")
    state: dict[int, dict] = {}
    for key, value in arrays.items():
        parts = key.split(".", 2)
        if len(parts) != 3 or parts[0] != "state" or not (parts[1].isascii() and parts[1].isdigit()):
            raise CheckpointError(f"{folder / 'optimizer.safetensors'}: unexpected tensor {key!r} "
                                  "(expected state.<index>.<name>)")
        state.setdefault(int(parts[1]), {})[parts[2]] = value
    for index, scalars in optimizer_json["scalars"].items():
        if not (index.isascii() and index.isdigit()) or not isinstance(scalars, dict):
            raise CheckpointError(f"{folder / 'trainer.json'}: optimizer scalars {index!r} "
                                  "are not per-parameter settings")
        state.setdefault(int(index), {}).update(scalars)
    return model_state, {"state": state, "param_groups": optimizer_json["param_groups"]}, trainer
