"""``python -m tinylm.quantize`` and int8 runs: the transform, the folder it writes, loading
it, the commands on it, and the steppers' int8 kernels against ``forward``."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save

import tinylm
from tinylm import backends, cli, evaluate, generate, quantize, train, translate
from tinylm.models import MODELS
from tinylm.reference.int8_matmul import dequantize
from tinylm.runs import dequantized_state, load_run

CORPUS = "The quick brown fox jumps over the lazy dog, again and again and again. " * 60
PAIRS = "".join(f"{a} {b}\t{b} {a}\n" for a in ("red", "green", "blue", "black") for b in ("cat", "dog", "cow", "owl"))
SMALL = ["--steps", "60", "--batch-size", "8", "--seq-len", "16", "--eval-every", "60", "--sample-tokens", "0",
         "--backend", "numpy"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(CORPUS)
    return path


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory, corpus):
    run = tmp_path_factory.mktemp("lstm") / "run"
    train.main(["--data", str(corpus), "--out", str(run), "--model", "lstm", "--embedding-dim", "16",
                "--hidden-dim", "32", "--n-layers", "2", *SMALL])
    return run


@pytest.fixture(scope="module")
def transformer_run(tmp_path_factory, corpus):
    run = tmp_path_factory.mktemp("transformer") / "run"
    train.main(["--data", str(corpus), "--out", str(run), "--model", "transformer", "--d-model", "16",
                "--n-heads", "2", "--n-layers", "2", *SMALL])
    return run


@pytest.fixture(scope="module")
def translation_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("translation")
    (folder / "pairs.tsv").write_text(PAIRS)
    run = folder / "run"
    train.main(["--task", "translate", "--data", str(folder / "pairs.tsv"), "--out", str(run), "--steps", "6",
                "--batch-size", "4", "--eval-every", "3", "--embedding-dim", "8", "--hidden-dim", "16",
                "--backend", "numpy"])
    return run


def quantized(run, tmp_path, *flags):
    """(the int8 run of ``run`` in tmp_path, what the command printed)."""
    out = tmp_path / (run.name + "-int8")
    lines = []
    quantize.quantize_run(run, out, evaluate="--no-eval" not in flags, report=lines.append)
    return out, lines


# ---- the transform


def test_every_matrix_becomes_int8_with_row_scales_and_the_rest_stays_float32():
    rng = np.random.default_rng(0)
    state = {"w": rng.normal(size=(5, 7)).astype(np.float32), "b": rng.normal(size=5).astype(np.float32),
             "zero": np.zeros((2, 3), np.float32)}
    out = quantize.quantize_state(state)
    assert sorted(out) == ["b", "w", "w.scale", "zero", "zero.scale"]
    assert out["w"].dtype == np.int8 and out["w.scale"].dtype == np.float32 and out["w.scale"].shape == (5,)
    np.testing.assert_array_equal(out["b"], state["b"])
    assert out["b"].dtype == np.float32
    # each value within half a step of its row's scale, each row's largest magnitude at ±127
    error = np.abs(dequantize(out["w"], out["w.scale"]) - state["w"])
    assert (error <= out["w.scale"][:, None] / 2 + 1e-7).all()
    assert (np.abs(out["w"]).max(axis=1) == 127).all()
    assert (out["zero.scale"] > 0).all() and not out["zero"].any()


@pytest.mark.parametrize("kind, config", [
    ("lstm", dict(vocab_size=120, embedding_dim=128, hidden_dim=256, n_layers=2, dropout=0.1)),
    ("transformer", dict(vocab_size=120, d_model=128, n_heads=4, n_layers=2, max_len=64, dropout=0.1)),
])
def test_the_int8_file_of_a_default_size_model_is_under_three_tenths_of_the_float32_one(kind, config):
    """The default models of python -m tinylm.train (a character vocabulary of about 120)."""
    state = MODELS[kind](**config).state_dict()
    ratio = len(save(quantize.quantize_state(state))) / len(save(state))
    assert 0.24 < ratio <= 0.3, ratio


# ---- the command and the folder it writes


def test_quantize_writes_an_int8_run_beside_its_source(lstm_run, tmp_path, capsys):
    out = tmp_path / "run-int8"
    block = quantize.main(["--checkpoint", str(lstm_run), "--out", str(out)])
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("model.safetensors: ") and printed[0].endswith(f"({block['size_ratio']:.2f}x)")
    assert printed[1].startswith("validation loss: ") and "nats/char" in printed[1]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint", "config.json", "tokenizer.json"]
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == ["model.safetensors", "trainer.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert (out / "tokenizer.json").read_bytes() == (lstm_run / "tokenizer.json").read_bytes()
    source_config = json.loads((lstm_run / "config.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config == {**source_config, "quantization": block}
    trainer = json.loads((lstm_run / "checkpoint" / "trainer.json").read_text())
    assert block["scheme"] == "int8-per-channel" and block["step"] == trainer["step"] == 60
    assert block["source"] == str(lstm_run.resolve())
    sizes = [(run / "checkpoint" / "model.safetensors").stat().st_size for run in (lstm_run, out)]
    assert block["model_bytes"] == {"float32": sizes[0], "int8": sizes[1]}
    assert json.loads((out / "checkpoint" / "trainer.json").read_text()) == {"step": 60}
    # the figures printed are those of python -m tinylm.evaluate on the two runs
    loss = block["validation_loss"]
    for run, key in ((lstm_run, "float32"), (out, "int8")):
        assert evaluate.main(["--checkpoint", str(run), "--backend", "numpy"])["loss"] == pytest.approx(loss[key])
    assert f"{loss['float32']:.4f} -> {loss['int8']:.4f}" in printed[1]


@pytest.mark.parametrize("run_name", ["lstm_run", "transformer_run"])
def test_a_short_trained_run_loses_little_validation_loss(request, run_name, tmp_path):
    _, lines = quantized(request.getfixturevalue(run_name), tmp_path)
    block = json.loads((tmp_path / "run-int8" / "config.json").read_text())["quantization"]
    change = block["validation_loss"]["int8"] - block["validation_loss"]["float32"]
    assert abs(change) < 0.05, lines  # per-channel int8 of a small model: well under a tenth of a nat


def test_the_int8_run_loads_with_dequantized_weights_and_its_int8_arrays(lstm_run, tmp_path):
    out, _ = quantized(lstm_run, tmp_path, "--no-eval")
    config, _, model, optimizer_state, trainer = load_run(out)
    _, _, float_model, _, _ = load_run(lstm_run)
    assert optimizer_state is None and trainer == {"step": 60} and "validation_loss" not in config["quantization"]
    float_state, state = float_model.state_dict(), model.state_dict()
    assert set(model.int8_weights) == {name for name, value in float_state.items() if value.ndim == 2}
    for name, value in state.items():
        if name in model.int8_weights:
            q, scale = model.int8_weights[name]
            np.testing.assert_array_equal(value, dequantize(q, scale))
            assert np.abs(value - float_state[name]).max() <= scale.max() / 2 + 1e-7
        else:
            np.testing.assert_array_equal(value, float_state[name])
    assert not hasattr(float_model, "int8_weights")


def test_an_existing_out_is_refused_and_left_as_it_was(lstm_run, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    empty = tmp_path / "empty"
    empty.mkdir()
    for target in (out, empty):
        assert cli.run(quantize.main, ["--checkpoint", str(lstm_run), "--out", str(target)], prog="quantize") == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "already exists" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and not list(empty.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "taken"]


def test_a_failure_while_writing_leaves_no_out_and_no_partial_folder(lstm_run, tmp_path, monkeypatch):
    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(quantize, "write_json", full_disk)
    out = tmp_path / "run-int8"
    with pytest.raises(OSError, match="No space left"):
        quantize.quantize_run(lstm_run, out, evaluate=False, report=lambda line: None)
    assert not list(tmp_path.iterdir())


def test_an_int8_run_is_not_quantized_again_nor_resumed(lstm_run, tmp_path, capsys):
    out, _ = quantized(lstm_run, tmp_path, "--no-eval")
    again = ["--checkpoint", str(out), "--out", str(tmp_path / "twice")]
    assert cli.run(quantize.main, again, prog="quantize") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already an int8 run" in err and not (tmp_path / "twice").exists()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert cli.run(train.main, ["--resume", str(out), "--steps", "80"], prog="train") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "int8 run" in err and f"--resume {lstm_run.resolve()}" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_the_command_runs_as_a_module_and_reports_one_line_errors(lstm_run, tmp_path):
    out = tmp_path / "run-int8"
    done = subprocess.run([sys.executable, "-m", "tinylm.quantize", "--checkpoint", str(lstm_run), "--out", str(out),
                           "--no-eval"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "model.safetensors: " in done.stdout and "validation loss" not in done.stdout
    missing = subprocess.run([sys.executable, "-m", "tinylm.quantize", "--checkpoint", str(tmp_path / "nowhere"),
                              "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr


# ---- the commands on an int8 run


@pytest.mark.parametrize("run_name", ["lstm_run", "transformer_run"])
def test_generate_and_evaluate_work_on_an_int8_language_model(request, run_name, tmp_path):
    out, _ = quantized(request.getfixturevalue(run_name), tmp_path, "--no-eval")
    text = io.StringIO()
    generate.main(["--checkpoint", str(out), "--prompt", "The quick", "--max-new-tokens", "20", "--backend", "numpy"],
                  out=text)
    assert text.getvalue().startswith("The quick") and len(text.getvalue()) >= len("The quick") + 20
    result = evaluate.main(["--checkpoint", str(out), "--backend", "numpy"])
    assert np.isfinite(result["loss"]) and result["tokens"] > 0


def test_translate_and_evaluate_work_on_an_int8_translation_model(translation_run, tmp_path):
    out, lines = quantized(translation_run, tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint", "config.json", "source_tokenizer.json",
                                                     "target_tokenizer.json"]
    assert "nats/target token" in lines[1] and lines[2].startswith("validation BLEU: ")
    text = io.StringIO()
    translations = translate.main(["--checkpoint", str(out), "--text", "red cat", "--backend", "numpy"], out=text)
    assert text.getvalue() == translations[0] + "\n"
    block = json.loads((out / "config.json").read_text())["quantization"]
    result = evaluate.main(["--checkpoint", str(out), "--split", "validation", "--backend", "numpy"])
    assert result["loss"] == pytest.approx(block["validation_loss"]["int8"])


# ---- the steppers' int8 kernels


def int8_model(kind, config, seed=0):
    """A model of random weights, loaded as an int8 run loads it: the dequantized weights
    of its int8 version, and ``int8_weights``."""
    tinylm.manual_seed(seed)
    model = MODELS[kind](**config)
    weights, int8 = dequantized_state(quantize.quantize_state(model.state_dict()))
    model.load_state_dict(weights)
    model.int8_weights = int8
    return model.eval()


STEPPER_MODELS = {
    "lstm, 2 layers, token table": ("lstm", dict(vocab_size=11, embedding_dim=6, hidden_dim=8, n_layers=2)),
    "lstm, 3 layers, no table": ("lstm", dict(vocab_size=40, embedding_dim=4, hidden_dim=5, n_layers=3)),
    "lstm, 1 layer": ("lstm", dict(vocab_size=9, embedding_dim=6, hidden_dim=7, n_layers=1)),
    "transformer": ("transformer", dict(vocab_size=13, d_model=8, n_heads=2, n_layers=2, max_len=16)),
}


def forward_logits(model, ids):
    with tinylm.no_grad():
        return backends.to_device(model(ids)[0].data, "cpu")  # (B, T, V)


@pytest.mark.parametrize("batch", [1, 3])  # 1: LSTMStepper.step's one-id path (a slice of the token table)
@pytest.mark.parametrize("backend", ["numpy", "cython"])
@pytest.mark.parametrize("name", list(STEPPER_MODELS))
def test_the_stepper_on_int8_weights_gives_forwards_logits(name, backend, batch):
    if backend == "cython":
        pytest.importorskip("tinylm.kernels.cpu.lstm", reason="the Cython kernels are not built here")
    kind, config = STEPPER_MODELS[name]
    with backends.use_backend(backend):
        model = int8_model(kind, config)
        ids = np.random.default_rng(1).integers(0, config["vocab_size"], size=(batch, 9))
        expected = forward_logits(model, ids)  # (B, T, V)
        stepper = model.stepper()
        logits, state = stepper.start(ids[:, :4])
        np.testing.assert_allclose(backends.to_device(logits, "cpu"), expected[:, 3], rtol=1e-4, atol=1e-5)
        for t in range(4, 9):
            logits, state = stepper.step(ids[:, t], state)
            np.testing.assert_allclose(backends.to_device(logits, "cpu"), expected[:, t], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(STEPPER_MODELS))
def test_the_stepper_multiplies_by_the_int8_arrays_themselves(name):
    """Change the int8 arrays but not the model's float weights: the steps change (a stepper
    that used the float weights would not see it), and ``forward`` does not."""
    kind, config = STEPPER_MODELS[name]
    with backends.use_backend("numpy"):
        model = int8_model(kind, config)
        ids = np.random.default_rng(2).integers(0, config["vocab_size"], size=(2, 6))
        before = model.stepper()
        logits, state = before.start(ids[:, :3])
        expected, _ = before.step(ids[:, 3], state)
        q, scale = model.int8_weights["fc.weight"]
        model.int8_weights = {**model.int8_weights, "fc.weight": (q, scale * 2)}
        after = model.stepper()
        logits, state = after.start(ids[:, :3])
        changed, _ = after.step(ids[:, 3], state)
        bias = model.fc.bias.data
        np.testing.assert_allclose(changed - bias, 2 * (expected - bias), rtol=1e-4, atol=1e-5)
        if kind == "lstm":
            assert after.stacked.dtype == np.int8 and after.w_hh0.dtype == np.int8
            assert after.stacked_scale.shape == (config["n_layers"] - 1, 2, 4 * config["hidden_dim"])


def test_the_stepper_uses_the_int8_matmul_kernel(monkeypatch):
    calls = []
    kernel = backends.kernel

    def recording(name):
        calls.append(name)
        return kernel(name)

    monkeypatch.setattr(backends, "kernel", recording)
    with backends.use_backend("numpy"):
        for kind, config in STEPPER_MODELS.values():
            model = int8_model(kind, config)
            calls.clear()
            stepper = model.stepper()
            _, state = stepper.start(np.array([[1, 2, 3]]))
            stepper.step(np.array([4]), state)
            assert "int8_matmul" in calls, kind


@pytest.mark.parametrize("backend", ["numpy", "cython"])
@pytest.mark.parametrize("name", [n for n in STEPPER_MODELS if n.startswith("lstm")])
def test_the_int8_stepper_starts_from_a_given_state_as_the_float_one_does(name, backend):
    """``start(prompt, state)`` takes the (h, c) arrays ``step`` returns and forward's
    Tensors alike (an int8 stepper steps through the prompt, a float one runs forward)."""
    if backend == "cython":
        pytest.importorskip("tinylm.kernels.cpu.lstm", reason="the Cython kernels are not built here")
    kind, config = STEPPER_MODELS[name]
    with backends.use_backend(backend):
        model = int8_model(kind, config)
        ids = np.random.default_rng(5).integers(0, config["vocab_size"], size=(2, 7))
        expected = forward_logits(model, ids)[:, -1]  # (B, V) after all seven tokens
        stepper = model.stepper()
        _, arrays = stepper.start(ids[:, :3])
        logits, _ = stepper.start(ids[:, 3:], arrays)  # the state as step returns it: arrays
        np.testing.assert_allclose(backends.to_device(logits, "cpu"), expected, rtol=1e-4, atol=1e-5)
        with tinylm.no_grad():
            _, tensors = model(ids[:, :3])  # forward's state: Tensors
        logits, _ = stepper.start(ids[:, 3:], tensors)
        np.testing.assert_allclose(backends.to_device(logits, "cpu"), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", ["numpy", "cython"])
@pytest.mark.parametrize("name", [n for n in STEPPER_MODELS if n.startswith("lstm")])
def test_the_int8_stepper_refuses_a_bad_id_at_batch_1_as_at_any_batch(name, backend):
    if backend == "cython":
        pytest.importorskip("tinylm.kernels.cpu.lstm", reason="the Cython kernels are not built here")
    kind, config = STEPPER_MODELS[name]
    vocab = config["vocab_size"]
    with backends.use_backend(backend):
        stepper = int8_model(kind, config).stepper()
        for ids in (np.array([vocab]), np.array([-1]), np.array([vocab], np.uint8), np.array([2**40])):
            with pytest.raises(IndexError, match=rf"LSTMStepper.step: ids \(1,\) must be .* in \[0, {vocab}\)"):
                stepper.step(ids)
        _, state = stepper.step(np.array([1, 2]))
        with pytest.raises(IndexError, match=r"ids \(1,\) must be \(B,\) = \(2,\)"):
            stepper.step(np.array([3]), state)
        with pytest.raises(IndexError):  # not integers: refused by the general path's indexing
            stepper.step(np.array([1.0]))
        logits, _ = stepper.step(np.array([vocab - 1], np.int16))
        assert logits.shape == (1, vocab)


def test_without_a_token_table_the_int8_stepper_multiplies_layer_0_by_int8_weights_too():
    """V > 4E: no token table, so each step multiplies the embedding row by W_ih0: through
    int8_matmul on the int8 values (halving their scales halves that product's share)."""
    kind, config = STEPPER_MODELS["lstm, 3 layers, no table"]
    with backends.use_backend("numpy"):
        model = int8_model(kind, config)
        stepper = model.stepper()
        assert stepper.token_gates is None
        ids = np.array([3, 7])
        state = stepper.initial_state(2)
        first, _ = stepper.step(ids, state)
        q, scale = model.int8_weights["lstm.weight_ih_l0"]
        model.int8_weights = {**model.int8_weights, "lstm.weight_ih_l0": (q, scale / 2)}
        second, _ = model.stepper().step(ids, state)
        assert np.abs(first - second).max() > 1e-4  # the float W_ih0 (unchanged) would give the same logits


def test_the_int8_run_folder_has_the_permissions_of_any_new_folder(lstm_run, tmp_path):
    out, _ = quantized(lstm_run, tmp_path, "--no-eval")
    umask = os.umask(0)
    os.umask(umask)
    assert (out.stat().st_mode & 0o777) == (0o777 & ~umask)  # mkdtemp's 0700 would hide it from others
