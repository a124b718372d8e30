"""``python -m tinylm.quantize``: a trained run's weights as int8, a new run folder for inference.

    python -m tinylm.quantize --checkpoint runs/RUN --out runs/RUN-int8

Every 2-D parameter (embeddings, LSTM and linear weights, attention's projections, the
output layer) becomes int8 values with one float32 scale per row, W ≈ scale[:, None] · q
(``tinylm.reference.int8_matmul.quantize_per_channel``: symmetric, s = max|row| / 127),
saved as ``NAME`` int8 and ``NAME.scale`` float32 in ``checkpoint/model.safetensors``;
biases and LayerNorm weights stay float32. The weights are about a quarter of their
float32 size. The new folder holds

    config.json        the source's, plus "quantization": scheme, source run, step, and the figures below
    tokenizer.json     (source_tokenizer.json + target_tokenizer.json for translation), copied
    checkpoint/model.safetensors, checkpoint/trainer.json ({"step": ...}; no optimizer: it is for inference)

and ``tinylm.runs.load_run`` reads it like any run (``generate``, ``evaluate``,
``translate``). The command reports the model file's size ratio and the validation loss
before and after (the run's own validation split, with the code ``python -m
tinylm.evaluate`` and the training loop use), unless ``--no-eval``.

The folder is written under a hidden temporary name beside ``--out`` (every file flushed
to disk) and renamed into place when complete, so ``--out`` either holds a whole int8 run
or does not exist; an existing ``--out`` is refused, never written over.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import tinylm
from tinylm import cli
from tinylm.checkpoint import _fsync_dir, checkpoint_dir, write_atomically, write_json
from tinylm.data import prepare_text
from tinylm.evaluation import evaluate as evaluate_language_model
from tinylm.reference.int8_matmul import quantize_per_channel
from tinylm.runs import QUANTIZATION_SCHEME, SCALE_SUFFIX, is_quantized, load_run
from tinylm.tasks import make_task, task_of


def quantize_state(state: dict) -> dict:
    """A float model state {name: array} -> the int8 run's tensors: each 2-D array as
    ``name`` int8 (N, K) and ``name.scale`` float32 (N,), every other one float32 as it was."""
    out = {}
    for name, value in state.items():
        if is_quantized(value.shape):
            out[name], out[name + SCALE_SUFFIX] = quantize_per_channel(value)
        else:
            out[name] = value.astype("float32")
    return out


def tokenizer_files(config: dict) -> list[str]:
    """The tokenizer files of a run folder: one, or a translation run's two."""
    if task_of(config) == "translate":
        return ["source_tokenizer.json", "target_tokenizer.json"]
    return ["tokenizer.json"]


def validation_scores(config: dict, tokenizer, model, val_ids=None) -> dict:
    """{"loss", "unit"} (+ "bleu" for translation) of ``model`` on the run's validation split:
    a language model as ``python -m tinylm.evaluate`` scores it (its batch size and sequence
    length), a translation model as the training loop does (loss per target token, greedy BLEU).
    ``val_ids``: the encoded validation text, when already at hand."""
    if task_of(config) == "translate":
        scores = make_task(config, tokenizer).evaluate(model, "validation")
        return {"loss": scores["val_loss"], "unit": "nats/target token", "bleu": scores["val_bleu"]}
    if val_ids is None:
        val_ids = tokenizer.encode(prepare_text(config)[1])
    training = config["training"]
    result = evaluate_language_model(model, val_ids, training["batch_size"], training["seq_len"])
    return {"loss": result["loss"], "unit": "nats/char" if config["tokenizer"] == "char" else "nats/token"}


def write_int8_run(folder: Path, source: Path, config: dict, tensors: dict, step: int) -> None:
    """The files of an int8 run in ``folder`` (which exists and is empty), each flushed to disk."""
    from safetensors.numpy import save

    write_json(folder / "config.json", config)
    for name in tokenizer_files(config):
        write_atomically(folder / name, (source / name).read_bytes())
    (folder / "checkpoint").mkdir()
    write_atomically(folder / "checkpoint" / "model.safetensors", save(tensors))
    write_json(folder / "checkpoint" / "trainer.json", {"step": step})
    _fsync_dir(folder / "checkpoint")
    _fsync_dir(folder)


def quantize_run(source, out, evaluate: bool = True, report=print) -> dict:
    """Write the int8 run of ``source`` to ``out`` (see the module docstring) and return its
    config's "quantization" block; ``report`` receives the lines the command prints."""
    source, out = Path(source), Path(out)
    if out.exists() or out.is_symlink():
        raise ValueError(f"--out {out} already exists; name a new folder (an int8 run is never written over)")
    config, tokenizer, model, _, trainer = load_run(source)
    if "quantization" in config:
        raise ValueError(f"--checkpoint: {source} is already an int8 run (of {config['quantization']['source']}); "
                         "quantize its float32 source run instead")
    tensors = quantize_state(model.state_dict())
    block = {"scheme": QUANTIZATION_SCHEME, "source": str(source.resolve()), "step": trainer["step"]}
    int8_config = {**config, "quantization": block}
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        write_int8_run(temporary, source, int8_config, tensors, trainer["step"])
        before = (checkpoint_dir(source) / "model.safetensors").stat().st_size
        after = (temporary / "checkpoint" / "model.safetensors").stat().st_size
        block["model_bytes"] = {"float32": before, "int8": after}
        block["size_ratio"] = round(after / before, 4)
        report(f"model.safetensors: {before:,} -> {after:,} bytes ({after / before:.2f}x)")
        if evaluate:
            val_ids = None if task_of(config) == "translate" else tokenizer.encode(prepare_text(config)[1])
            float_scores = validation_scores(config, tokenizer, model, val_ids)
            _, _, int8_model, _, _ = load_run(temporary)  # the files just written, read back as any caller will
            int8_scores = validation_scores(config, tokenizer, int8_model, val_ids)
            change = round(int8_scores["loss"] - float_scores["loss"], 4) + 0.0  # + 0.0: -0.0 prints as +0.0000
            block["validation_loss"] = {"float32": float_scores["loss"], "int8": int8_scores["loss"],
                                        "unit": float_scores["unit"]}
            report(f"validation loss: {float_scores['loss']:.4f} -> {int8_scores['loss']:.4f} "
                   f"{float_scores['unit']} ({change:+.4f})")
            if "bleu" in float_scores:
                block["validation_bleu"] = {"float32": float_scores["bleu"], "int8": int8_scores["bleu"]}
                report(f"validation BLEU: {float_scores['bleu']:.2f} -> {int8_scores['bleu']:.2f}")
        write_json(temporary / "config.json", int8_config)
        _fsync_dir(temporary)
        if out.exists() or out.is_symlink():  # made while we worked
            raise ValueError(f"--out {out} appeared while quantizing; nothing was written over it")
        umask = os.umask(0)  # read the umask (there is no other way) and put it back
        os.umask(umask)
        os.chmod(temporary, 0o777 & ~umask)  # mkdtemp's folder is private (0700); a run folder is not
        os.rename(temporary, out)
        _fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    command = "translate" if task_of(config) == "translate" else "generate"
    report(f"wrote {out} (int8, from step {trainer['step']} of {source}); "
           f"use it with python -m tinylm.{command} --checkpoint {out}")
    return block


def parse_args(argv=None):
    p = cli.ArgumentParser(prog="python -m tinylm.quantize", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, metavar="RUN", help="a run directory written by tinylm.train")
    p.add_argument("--out", required=True, metavar="DIR", help="the new int8 run's directory (must not exist)")
    p.add_argument("--no-eval", action="store_true", help="skip the validation loss before and after")
    p.add_argument("--backend", choices=list(tinylm.backends.BACKENDS), help="default: the fastest one built here")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.backend:
        tinylm.set_backend(args.backend)
    return quantize_run(args.checkpoint, args.out, evaluate=not args.no_eval)


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="python -m tinylm.quantize"))
