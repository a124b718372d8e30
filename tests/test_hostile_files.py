"""A damaged or hostile run folder is refused in one line, with exit status 2, and left as it was.

One real checkpoint is damaged in each way below; then ``evaluate``, ``generate`` and
``train --resume`` are run on it (``evaluate``, ``translate`` and ``train --resume`` on a
translation run's). Each must exit with status 2 after one line on stderr
that names the damaged file, with no traceback, and write nothing.
"""

import hashlib
import json
import pickle
import struct
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from tinylm import cli, evaluate, generate, train, translate
from tinylm.checkpoint import CheckpointError, read_safetensors

CORPUS = "The quick brown fox jumps over the lazy dog, again and again. " * 40
COMMANDS = {
    "evaluate": (evaluate.main, lambda run: ["--checkpoint", str(run)]),
    "generate": (generate.main, lambda run: ["--checkpoint", str(run), "--max-new-tokens", "3"]),
    "train --resume": (train.main, lambda run: ["--resume", str(run), "--steps", "20"]),
}


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    (folder / "corpus.txt").write_text(CORPUS)
    run = folder / "run"
    train.main(["--data", str(folder / "corpus.txt"), "--out", str(run), "--steps", "10", "--batch-size", "4",
                "--seq-len", "8", "--eval-every", "5", "--sample-tokens", "0", "--model", "lstm",
                "--embedding-dim", "8", "--hidden-dim", "16", "--n-layers", "1", "--backend", "numpy"])
    return run


# ---- the damages: each takes the run folder, damages one file, and returns its name


def rewrite_safetensors(path, change):
    arrays = load_file(str(path))
    change(arrays)
    save_file(arrays, str(path))


def with_header(path, change):
    """Rewrite a safetensors header (padded to its old length, as the format allows)."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    change(header)
    text = json.dumps(header).encode()
    text += b" " * max(0, n - len(text))
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])


def json_file(path, change):
    value = json.loads(path.read_text())
    path.write_text(json.dumps(change(value)))


def first_tensor(header):
    return header[next(k for k in header if k != "__metadata__")]


MODEL, OPTIMIZER, TRAINER = ("checkpoint/model.safetensors", "checkpoint/optimizer.safetensors",
                             "checkpoint/trainer.json")
DAMAGES = {
    "truncated weights": (MODEL, lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
    "empty weights": (MODEL, lambda p: p.write_bytes(b"")),
    "header length past the end": (MODEL, lambda p: p.write_bytes(struct.pack("<Q", 2**60) + p.read_bytes()[8:])),
    "header not JSON": (MODEL, lambda p: p.write_bytes(p.read_bytes()[:8] + b"\x00garbage" + p.read_bytes()[16:])),
    "data offsets past the end": (MODEL, lambda p: with_header(p, lambda h: first_tensor(h).update(
        data_offsets=[0, 2**60]))),
    "offsets that do not fit the shape": (MODEL, lambda p: with_header(p, lambda h: first_tensor(h).update(
        shape=[10**6, 10**6]))),
    "a parameter of the wrong dtype": (MODEL, lambda p: rewrite_safetensors(
        p, lambda a: a.update({"fc.bias": a["fc.bias"].astype(np.float64)}))),
    "a parameter of the wrong shape": (MODEL, lambda p: rewrite_safetensors(
        p, lambda a: a.update({"fc.weight": np.ascontiguousarray(a["fc.weight"][:, :-1])}))),
    "a missing parameter": (MODEL, lambda p: rewrite_safetensors(p, lambda a: a.pop("lstm.weight_hh_l0"))),
    "a pickle instead of safetensors": (MODEL, lambda p: p.write_bytes(pickle.dumps({"fc.bias": [0.0] * 40}))),
    "config not JSON": ("config.json", lambda p: p.write_text("{model: lstm")),
    "config a JSON list": ("config.json", lambda p: p.write_text("[1, 2, 3]")),
    "config with a wrong type": ("config.json", lambda p: json_file(
        p, lambda c: {**c, "model_config": {**c["model_config"], "hidden_dim": "16"}})),
    "config with a negative size": ("config.json", lambda p: json_file(
        p, lambda c: {**c, "model_config": {**c["model_config"], "hidden_dim": -16}})),
    "config claiming a huge model": ("config.json", lambda p: json_file(
        p, lambda c: {**c, "model_config": {**c["model_config"], "hidden_dim": 2**40}})),
    "config with an unknown model": ("config.json", lambda p: json_file(p, lambda c: {**c, "model": "gru"})),
    "config with a non-finite lr": ("config.json", lambda p: p.write_text(
        p.read_text().replace('"lr": 0.004', '"lr": NaN'))),
    "config missing a key": ("config.json", lambda p: json_file(
        p, lambda c: {k: v for k, v in c.items() if k != "lowercase"})),
    "config with an integer too large for a float": ("config.json", lambda p: p.write_text(
        p.read_text().replace('"lr": 0.004', '"lr": 1' + "0" * 400))),
    "tokenizer garbage": ("tokenizer.json", lambda p: p.write_bytes(b"\xff\xfe\x00 not json")),
    "tokenizer with an empty vocabulary": ("tokenizer.json", lambda p: p.write_text('{"kind": "char", "chars": []}')),
    "tokenizer listing a character twice": ("tokenizer.json", lambda p: json_file(
        p, lambda t: {**t, "chars": t["chars"][:-1] + t["chars"][:1]})),
    "tokenizer of another vocabulary size": ("tokenizer.json", lambda p: json_file(
        p, lambda t: {**t, "chars": t["chars"][:-1]})),
    "tokenizer of an unknown kind": ("tokenizer.json", lambda p: p.write_text('{"kind": "wordpiece"}')),
    "tokenizer whose merges double a token 60 times": ("tokenizer.json", lambda p: p.write_text(json.dumps(
        {"kind": "bpe", "merges": [[97, 97]] + [[256 + i, 256 + i] for i in range(60)]}))),
    "tokenizer whose word pieces are no pieces": ("tokenizer.json", lambda p: json_file(
        p, lambda t: {"kind": "word", "pieces": [f"w{i} x" for i in range(len(t["chars"]))]})),
    "optimizer moments of the wrong shape": (OPTIMIZER, lambda p: rewrite_safetensors(
        p, lambda a: a.update({"state.0.exp_avg": np.zeros(3, np.float32)}))),
    "optimizer state for a parameter that does not exist": (OPTIMIZER, lambda p: rewrite_safetensors(
        p, lambda a: a.update({"state.99.exp_avg": np.zeros(3, np.float32)}))),
    "optimizer groups that do not match": (TRAINER, lambda p: json_file(
        p, lambda t: {**t, "optimizer": {**t["optimizer"], "param_groups": t["optimizer"]["param_groups"][:1]}})),
    "trainer step of the wrong type": (TRAINER, lambda p: json_file(p, lambda t: {**t, "step": "ten"})),
    "trainer random state that is no state": (TRAINER, lambda p: json_file(p, lambda t: {**t, "batch_rng": [1, 2]})),
    "trainer carrying a state into a stateless run": (TRAINER, lambda p: json_file(
        p, lambda t: {**t, "carried": [[0.0], [0.0]]})),
    "trainer.json not JSON": (TRAINER, lambda p: p.write_text("step: 10")),
    "trainer elapsed time too large for a float": (TRAINER, lambda p: p.write_text(
        p.read_text().replace('"elapsed_s": ', '"elapsed_s": 1' + "0" * 400 + ", \"was\": "))),
    "trainer random state out of range": (TRAINER, lambda p: json_file(
        p, lambda t: {**t, "batch_rng": {**t["batch_rng"], "state": {"state": 2**300, "inc": 1}}})),
    "trainer schedule of another step": (TRAINER, lambda p: json_file(
        p, lambda t: {**t, "schedule": {**t["schedule"], "last_step": 10**400}})),
    "optimizer step beyond the checkpoint's": (TRAINER, lambda p: json_file(
        p, lambda t: {**t, "optimizer": {**t["optimizer"], "scalars": {**t["optimizer"]["scalars"],
                                                                       "0": {"step": 10**400}}}})),
}


def fingerprint(run):
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in run.rglob("*") if p.is_file()}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_run_is_refused_in_one_line_and_left_unchanged(tmp_path, good_run, capsys, damage):
    assert_refused_in_one_line_and_left_unchanged(good_run, tmp_path, capsys, *DAMAGES[damage])


def assert_refused_in_one_line_and_left_unchanged(good, tmp_path, capsys, name, damage_file):
    """A copy of run ``good`` with ``name`` damaged: every command exits 2 with one line
    naming the file, and changes nothing in the folder."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(good, run)
    damage_file(run / name)
    before = fingerprint(run)
    for command, (main, argv) in COMMANDS.items():
        status = cli.run(main, argv(run), prog=command)
        err = capsys.readouterr().err
        assert status == 2, (command, err)
        assert err.count("\n") == 1 and name.split("/")[-1] in err, (command, err)
        assert fingerprint(run) == before, command


METRICS_DAMAGES = {
    "not UTF-8": lambda p: p.write_bytes(b"\xff\xfe" + p.read_bytes()),
    "another header": lambda p: p.write_text("when,what\n1,2\n"),
    "fewer rows than the checkpoint counts": lambda p: p.write_bytes(p.read_bytes().splitlines(keepends=True)[0]),
}


@pytest.mark.parametrize("damage", list(METRICS_DAMAGES))
def test_a_resume_refuses_a_damaged_metrics_file_before_writing(tmp_path, good_run, capsys, damage):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    METRICS_DAMAGES[damage](run / "metrics.csv")
    before = fingerprint(run)
    assert cli.run(train.main, ["--resume", str(run), "--steps", "20"], prog="train") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metrics.csv" in err, err
    assert fingerprint(run) == before


def test_the_commands_exit_2_with_no_traceback(tmp_path, good_run):
    """The same, end to end in a process of its own, for one damage."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    (run / MODEL).write_bytes(pickle.dumps([1, 2, 3]))
    for module in ("evaluate", "generate"):
        result = subprocess.run([sys.executable, "-m", f"tinylm.{module}", "--checkpoint", str(run)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.count("\n") == 1 and "model.safetensors: not a safetensors file" in result.stderr


@pytest.mark.parametrize("claim", ["header length", "data offsets"])
def test_a_header_claiming_2_to_the_60_bytes_is_refused_before_any_allocation(tmp_path, claim):
    path = tmp_path / "hostile.safetensors"
    save_file({"w": np.ones((4, 4), np.float32)}, str(path))
    if claim == "header length":
        path.write_bytes(struct.pack("<Q", 2**60) + path.read_bytes()[8:])
    else:
        with_header(path, lambda h: h["w"].update(shape=[2**28, 2**30], data_offsets=[0, 2**60]))
    tracemalloc.start()
    with pytest.raises(CheckpointError, match="hostile.safetensors"):
        read_safetensors(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20, peak  # NumPy's allocations are traced too


@pytest.mark.parametrize("kind, config", [
    ("lstm", dict(vocab_size=7, embedding_dim=3, hidden_dim=5, n_layers=3, dropout=0.1)),
    ("transformer", dict(vocab_size=7, d_model=8, n_heads=2, n_layers=2, max_len=9, dropout=0.1)),
])
def test_the_shapes_a_file_is_checked_against_are_those_the_model_makes(kind, config):
    from tinylm.models import MODELS

    made = {name: p.shape for name, p in MODELS[kind](**config).named_parameters()}
    assert MODELS[kind].parameter_shapes(**config) == made


# ---- translation runs: two tokenizers, and a config of their own

PAIRS = "".join(f"{a} {b}\t{b} {a}\n" for a in ("red", "green", "blue", "black") for b in ("cat", "dog", "cow", "owl"))
TRANSLATION_COMMANDS = {
    "evaluate": (evaluate.main, lambda run: ["--checkpoint", str(run)]),
    "translate": (translate.main, lambda run: ["--checkpoint", str(run), "--text", "red cat"]),
    "train --resume": (train.main, lambda run: ["--resume", str(run), "--steps", "20"]),
}


@pytest.fixture(scope="module")
def good_translation_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good-translation")
    (folder / "pairs.tsv").write_text(PAIRS)
    run = folder / "run"
    train.main(["--task", "translate", "--data", str(folder / "pairs.tsv"), "--out", str(run), "--steps", "4",
                "--batch-size", "4", "--eval-every", "2", "--embedding-dim", "8", "--hidden-dim", "16",
                "--backend", "numpy"])
    return run


def config_with(change):
    """A damage of config.json: ``change`` edits the loaded config in place."""
    def edited(config):
        change(config)
        return config

    return lambda p: json_file(p, edited)


TRANSLATION_DAMAGES = {
    "source tokenizer garbage": ("source_tokenizer.json", lambda p: p.write_bytes(b"\xff\xfe\x00 not json")),
    "source tokenizer not JSON": ("source_tokenizer.json", lambda p: p.write_text('{"kind": "word", "pieces": [')),
    "source tokenizer missing": ("source_tokenizer.json", lambda p: p.unlink()),
    "target tokenizer garbage": ("target_tokenizer.json", lambda p: p.write_bytes(b"\x00\x01 not json")),
    "target tokenizer missing": ("target_tokenizer.json", lambda p: p.unlink()),
    "target tokenizer of another kind": ("target_tokenizer.json", lambda p: p.write_text(json.dumps(
        {"kind": "char", "chars": [chr(97 + i) for i in range(len(json.loads(p.read_text())["merges"]) + 255)]}))),
    "source tokenizer one piece short": ("source_tokenizer.json", lambda p: json_file(
        p, lambda t: {**t, "pieces": t["pieces"][:-1]})),
    "target tokenizer one merge short": ("target_tokenizer.json", lambda p: json_file(
        p, lambda t: {**t, "merges": t["merges"][:-1]})),
    "config whose source vocabulary disagrees with the tokenizer": ("config.json", config_with(
        lambda c: c["model_config"].update(source_vocab_size=c["model_config"]["source_vocab_size"] + 1))),
    "config whose target vocabulary disagrees with the tokenizer": ("config.json", config_with(
        lambda c: c["model_config"].update(target_vocab_size=c["model_config"]["target_vocab_size"] - 1))),
    "config of a translation run naming an lstm": ("config.json", config_with(lambda c: c.update(model="lstm"))),
    "config of an unknown task": ("config.json", config_with(lambda c: c.update(task="summarize"))),
    "config of an unknown corpus": ("config.json", config_with(lambda c: c.update(data=None, corpus="poems",
                                                                                  pair="en-de"))),
    "config of an unknown language pair": ("config.json", config_with(lambda c: c.update(data=None, corpus="numbers",
                                                                                         pair="en-xx"))),
    "config with a bad attention": ("config.json", config_with(lambda c: c["model_config"].update(
        attention="cosine"))),
    "config with an unknown target tokenizer": ("config.json", config_with(lambda c: c.update(
        target_tokenizer="sentencepiece"))),
    "config without its source vocabulary size": ("config.json", config_with(
        lambda c: c["model_config"].pop("source_vocab_size"))),
    "config with a language model's setting": ("config.json", config_with(lambda c: c["model_config"].update(
        vocab_size=40))),
    "config with a list for the BLEU tokenization": ("config.json", config_with(lambda c: c.update(
        bleu_tokenize=["char"]))),
    "config with a list for a tokenizer": ("config.json", config_with(lambda c: c.update(source_tokenizer=["word"]))),
    "config with an odd hidden size": ("config.json", config_with(lambda c: c["model_config"].update(hidden_dim=15))),
}
# The file an error names, where it is not the damaged one: a vocabulary size is checked
# against the tokenizer that holds that vocabulary.
NAMED = {"config whose source vocabulary disagrees with the tokenizer": "source_tokenizer.json",
         "config whose target vocabulary disagrees with the tokenizer": "target_tokenizer.json"}


@pytest.mark.parametrize("damage", list(TRANSLATION_DAMAGES))
def test_a_damaged_translation_run_is_refused_in_one_line_and_left_unchanged(tmp_path, good_translation_run, capsys,
                                                                             damage):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(good_translation_run, run)
    name, damage_file = TRANSLATION_DAMAGES[damage]
    damage_file(run / name)
    name = NAMED.get(damage, name)
    before = fingerprint(run)
    for command, (main, argv) in TRANSLATION_COMMANDS.items():
        status = cli.run(main, argv(run), prog=command)
        captured = capsys.readouterr()
        assert status == 2, (command, captured)
        assert captured.err.count("\n") == 1 and name in captured.err, (command, captured.err)
        assert fingerprint(run) == before, command


def test_a_setting_that_names_a_choice_must_have_its_type_too(good_translation_run):
    """norm_first is True or False; 1 equals True in Python but is not what config.json should hold."""
    from tinylm.runs import check_config

    config = json.loads((good_translation_run / "config.json").read_text())
    config["model"] = "seq2seq-transformer"
    config["model_config"] = dict(source_vocab_size=10, target_vocab_size=10, d_model=8, n_heads=2,
                                  num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=8, dropout=0.0,
                                  max_len=16, norm_first=True)
    check_config(config)
    config["model_config"]["norm_first"] = 1
    with pytest.raises(CheckpointError, match="norm_first must be one of True, False, got 1"):
        check_config(config)


# ---- int8 runs (python -m tinylm.quantize): int8 matrices, their row scales, the rest float32


@pytest.fixture(scope="module")
def good_int8_run(good_run, tmp_path_factory):
    from tinylm.quantize import quantize_run

    run = tmp_path_factory.mktemp("good-int8") / "run-int8"
    quantize_run(good_run, run, evaluate=False, report=lambda line: None)
    return run


def scale_of(value):
    """A damage of fc.weight's row scales: the first one set to ``value``."""
    def change(arrays):
        arrays["fc.weight.scale"][0] = value

    return lambda p: rewrite_safetensors(p, change)


INT8_DAMAGES = {
    "a zero scale": (MODEL, scale_of(0.0)),
    "a negative scale": (MODEL, scale_of(-0.5)),
    "a NaN scale": (MODEL, scale_of(np.nan)),
    "an infinite scale": (MODEL, scale_of(np.inf)),
    "a scale whose 127 x scale overflows float32": (MODEL, scale_of(3e38)),
    "a scale of the wrong shape": (MODEL, lambda p: rewrite_safetensors(
        p, lambda a: a.update({"fc.weight.scale": np.ascontiguousarray(a["fc.weight.scale"][:-1])}))),
    "a scale of the wrong dtype": (MODEL, lambda p: rewrite_safetensors(
        p, lambda a: a.update({"fc.weight.scale": a["fc.weight.scale"].astype(np.float64)}))),
    "a matrix stored as float32": (MODEL, lambda p: rewrite_safetensors(
        p, lambda a: a.update({"lstm.weight_hh_l0": a["lstm.weight_hh_l0"].astype(np.float32)}))),
    "a bias stored as int8": (MODEL, lambda p: rewrite_safetensors(
        p, lambda a: a.update({"fc.bias": a["fc.bias"].astype(np.int8)}))),
    "an int8 matrix of the wrong shape": (MODEL, lambda p: rewrite_safetensors(
        p, lambda a: a.update({"fc.weight": np.ascontiguousarray(a["fc.weight"][:, :-1])}))),
    "an int8 value of -128": (MODEL, lambda p: rewrite_safetensors(
        p, lambda a: a["embedding.weight"].__setitem__((0, 0), -128))),
    "a missing scale": (MODEL, lambda p: rewrite_safetensors(p, lambda a: a.pop("lstm.weight_ih_l0.scale"))),
    "a missing int8 matrix": (MODEL, lambda p: rewrite_safetensors(p, lambda a: a.pop("lstm.weight_hh_l0"))),
    "an extra tensor": (MODEL, lambda p: rewrite_safetensors(
        p, lambda a: a.update({"fc.weight.zero_point": np.zeros(3, np.int8)}))),
    "a float32 file where the int8 one belongs": (MODEL, lambda p: rewrite_safetensors(
        p, lambda a: [a.update({name: a[name].astype(np.float32) * a.pop(name + ".scale")[:, None]})
                      for name in [n for n in a if n + ".scale" in a]])),
    "a quantization of an unknown scheme": ("config.json", config_with(
        lambda c: c["quantization"].update(scheme="int4"))),
    "a quantization that is not an object": ("config.json", config_with(lambda c: c.update(quantization=[8]))),
    "a trainer step other than the quantization's": (TRAINER, lambda p: json_file(p, lambda t: {"step": 11})),
    "an int8 run's trainer.json not JSON": (TRAINER, lambda p: p.write_text("step: 10")),
}


@pytest.mark.parametrize("damage", list(INT8_DAMAGES))
def test_a_damaged_int8_run_is_refused_in_one_line_and_left_unchanged(tmp_path, good_int8_run, capsys, damage):
    assert_refused_in_one_line_and_left_unchanged(good_int8_run, tmp_path, capsys, *INT8_DAMAGES[damage])


def test_generate_exits_2_with_no_traceback_on_an_int8_run_with_a_zero_scale(tmp_path, good_int8_run):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(good_int8_run, run)
    scale_of(0.0)(run / MODEL)
    result = subprocess.run([sys.executable, "-m", "tinylm.generate", "--checkpoint", str(run)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "fc.weight.scale holds 0.0" in result.stderr, result.stderr
