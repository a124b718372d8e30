"""The training entry point, generate and evaluate, on tiny models and a tiny corpus."""

import csv
import json
import math
import subprocess
import sys
from io import StringIO

import numpy as np
import pytest

import tinylm
from tinylm import checkpoint, evaluate, generate, train
from tinylm.data import DataError, load_corpus
from tinylm.models import LSTMLanguageModel, TransformerLanguageModel
from tinylm.tasks import LanguageModelTask

CORPUS = ("Alice was beginning to get very tired of sitting by her sister on the bank, "
          "and of having nothing to do. ") * 30

TINY = {
    "lstm": ["--model", "lstm", "--embedding-dim", "16", "--hidden-dim", "32", "--n-layers", "1"],
    "transformer": ["--model", "transformer", "--d-model", "16", "--n-heads", "2", "--n-layers", "1"],
}


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return path


def run_train(corpus, out, *extra, model="lstm", steps=40):
    args = ["--data", str(corpus), "--out", str(out), "--steps", str(steps), "--batch-size", "8", "--seq-len", "16",
            "--eval-every", "10", "--sample-tokens", "0", "--lr", "0.01", "--warmup-steps", "5", *TINY[model], *extra]
    train.main(args)
    with open(out / "metrics.csv", newline="") as f:
        return [row for row in csv.DictReader(f) if row["val_loss"]]  # the evaluation rows


@pytest.mark.parametrize("backend", ["numpy", "cython"])
@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_a_few_dozen_steps_lower_the_loss(tmp_path, corpus, model, backend):
    rows = run_train(corpus, tmp_path / "run", "--backend", backend, model=model)
    first, last = float(rows[0]["val_loss"]), float(rows[-1]["val_loss"])
    vocabulary = len(set(CORPUS)) + 1
    assert last < first and last < 0.8 * math.log(vocabulary), (first, last)
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40]
    for name in ("config.json", "tokenizer.json", "metrics.csv", "loss.png", "checkpoint/model.safetensors",
                 "checkpoint/optimizer.safetensors", "checkpoint/trainer.json"):
        assert (tmp_path / "run" / name).is_file(), name


def test_a_failed_write_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    checkpoint.save_checkpoint(run, {"w": np.ones(3, np.float32)}, {"state": {}, "param_groups": []}, {"step": 1})

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(checkpoint, "write_json", crash)  # dies half-way through writing step 2
    with pytest.raises(OSError):
        checkpoint.save_checkpoint(run, {"w": np.zeros(3, np.float32)}, {"state": {}, "param_groups": []}, {"step": 2})
    model, _, trainer = checkpoint.load_checkpoint(run)
    assert trainer["step"] == 1 and model["w"].tolist() == [1, 1, 1]


def test_a_crash_between_the_renames_falls_back_to_the_old_checkpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    checkpoint.save_checkpoint(run, {"w": np.ones(2, np.float32)}, {"state": {}, "param_groups": []}, {"step": 7})
    (run / "checkpoint").rename(run / ".checkpoint-old")  # as if killed right after the first rename
    assert checkpoint.load_checkpoint(run)[2]["step"] == 7


def test_checkpoints_hold_no_pickle_and_use_pytorch_names(tmp_path, corpus):
    run_train(corpus, tmp_path / "run", steps=10)
    from safetensors.numpy import load_file

    names = list(load_file(str(tmp_path / "run" / "checkpoint" / "model.safetensors")))
    assert "lstm.weight_ih_l0" in names and "embedding.weight" in names and "fc.bias" in names
    for path in (tmp_path / "run").rglob("*"):
        assert path.suffix in {".json", ".safetensors", ".csv", ".png", ""}, path


def test_generate_and_evaluate_load_a_checkpoint(tmp_path, corpus, capsys):
    run_train(corpus, tmp_path / "run", steps=20)
    out = StringIO()
    generate.main(["--checkpoint", str(tmp_path / "run"), "--prompt", "Alice", "--max-new-tokens", "25", "--seed", "1"],
                  out=out)
    text = out.getvalue()
    assert text.startswith("Alice") and len(text) >= len("Alice") + 25
    result = evaluate.main(["--checkpoint", str(tmp_path / "run")])
    assert 0 < result["loss"] < math.log(40) and 0 <= result["accuracy"] <= 1
    assert "perplexity" in capsys.readouterr().out


def test_generation_is_seeded(tmp_path, corpus):
    run_train(corpus, tmp_path / "run", steps=10, model="transformer")
    texts = []
    for seed in ("3", "3", "4"):
        out = StringIO()
        generate.main(["--checkpoint", str(tmp_path / "run"), "--prompt", "the", "--max-new-tokens", "40",
                       "--top-k", "5", "--seed", seed], out=out)
        texts.append(out.getvalue())
    assert texts[0] == texts[1] and texts[0] != texts[2]


def test_a_non_finite_loss_stops_training_naming_the_step(tmp_path, corpus):
    config = train.make_config(train.parse_args(["--data", str(corpus), *TINY["lstm"]]))
    model = LSTMLanguageModel(30, 16, 32, 1)
    model.fc.bias.data[:] = np.nan
    ids = np.arange(200) % 30
    trainer = train.Trainer(config, tmp_path, LanguageModelTask(config, None, ids, ids), model)
    with pytest.raises(RuntimeError, match=r"step 1: the loss is nan; training stopped"):
        trainer.train_step()


def test_non_finite_weights_are_never_saved_over_the_last_good_checkpoint(tmp_path, corpus):
    run_train(corpus, tmp_path / "run", steps=10)
    config, _, model, _, _ = __import__("tinylm.runs", fromlist=["load_run"]).load_run(tmp_path / "run")
    good = json.loads((tmp_path / "run" / "checkpoint" / "trainer.json").read_text())["step"]
    ids = np.arange(300) % 20
    trainer = train.Trainer(config, tmp_path / "run", LanguageModelTask(config, None, ids, ids), model)
    trainer.saved_step = good
    model.fc.weight.data[0, 0] = np.inf
    with pytest.raises(RuntimeError, match=rf"parameter fc.weight is no longer finite.*step {good}"):
        trainer.save()
    assert json.loads((tmp_path / "run" / "checkpoint" / "trainer.json").read_text())["step"] == good


def test_a_validation_text_too_short_is_refused_before_training(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("abcdefghij" * 12)  # 120 characters: 12 held out, fewer than --seq-len + 1
    with pytest.raises(DataError, match="the validation text has 12 tokens, fewer than --seq-len \\+ 1 = 17"):
        train.main(["--data", str(short), "--seq-len", "16", "--out", str(tmp_path / "run"), *TINY["lstm"]])


def test_models_take_ids_and_return_logits():
    ids = np.zeros((2, 5), dtype=np.int64)
    lstm = LSTMLanguageModel(11, 8, 12, 2)
    logits, (h, c) = lstm(ids)
    assert logits.shape == (2, 5, 11) and h.shape == c.shape == (2, 2, 12)
    logits_next, _ = lstm(ids, (h.detach(), c.detach()))
    assert not np.allclose(logits_next.numpy(), logits.numpy())  # the state is used
    transformer = TransformerLanguageModel(11, d_model=8, n_heads=2, n_layers=2, max_len=16)
    logits, state = transformer(ids)
    assert logits.shape == (2, 5, 11) and state is None


def test_the_transformer_is_causal():
    tinylm.manual_seed(0)
    model = TransformerLanguageModel(11, d_model=8, n_heads=2, n_layers=2, max_len=16).eval()
    a = np.array([[1, 2, 3, 4, 5]])
    b = np.array([[1, 2, 3, 9, 9]])
    np.testing.assert_allclose(model(a)[0].numpy()[0, :3], model(b)[0].numpy()[0, :3], rtol=1e-6)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", "-3"], "argument --steps: must be a positive integer, got -3"),
        (["--dropout", "1.5"], "argument --dropout: must be a number in [0, 1), got 1.5"),
        (["--model", "gru"], "argument --model: invalid choice: 'gru'"),
        (["--data", "/no/such/file.txt"], "--data: /no/such/file.txt does not exist"),
        (["--model", "transformer", "--d-model", "10", "--n-heads", "4"],
         "--d-model 10 must be divisible by --n-heads 4"),
    ],
)
def test_bad_flags_are_one_line_errors(args, message):
    result = subprocess.run([sys.executable, "-m", "tinylm.train", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_generate_with_a_missing_checkpoint_is_a_one_line_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tinylm.generate", "--checkpoint", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "config.json is missing" in result.stderr


def test_bad_corpus_paths(tmp_path):
    (tmp_path / "empty.txt").write_text("   \n")
    (tmp_path / "binary.txt").write_bytes(b"abc\x00\x01\x02")
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    (tmp_path / "folder").mkdir()
    cases = {"empty.txt": "is empty", "binary.txt": "looks binary", "latin1.txt": "is not UTF-8",
             "folder": "no .txt files"}
    for name, message in cases.items():
        with pytest.raises(DataError, match=message):
            load_corpus(str(tmp_path / name))


def test_a_folder_of_text_files_is_one_corpus(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    assert load_corpus(str(tmp_path)) == "first\n\nsecond"


def test_the_default_corpus_ships_with_python():
    text = load_corpus(None)
    assert len(text) > 400_000 and "def " in text


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path, corpus):
    import signal
    import time

    run = tmp_path / "run"
    args = ["--data", str(corpus), "--out", str(run), "--steps", "100000", "--batch-size", "4", "--seq-len", "8",
            "--eval-every", "5", "--sample-tokens", "0", *TINY["lstm"]]
    process = subprocess.Popen([sys.executable, "-m", "tinylm.train", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "checkpoint" / "trainer.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "interrupted: checkpoint at step" in err + out
    step = json.loads((run / "checkpoint" / "trainer.json").read_text())["step"]
    assert step >= 5
    train.main(["--resume", str(run), "--steps", str(step + 3)])  # and it continues from there
    assert json.loads((run / "checkpoint" / "trainer.json").read_text())["step"] == step + 3


@pytest.mark.parametrize("backend", ["numpy", "cython"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("vocab", [11, 40])  # 11 <= 4E: layer 0's gates looked up per token; 40: computed
def test_the_graph_free_lstm_stepper_gives_the_model_s_logits(backend, layers, vocab):
    """LSTMStepper (what generation uses) matches the model's forward, step after step."""
    from tinylm.models.lstm import LSTMStepper

    tinylm.manual_seed(3)
    model = LSTMLanguageModel(vocab_size=vocab, embedding_dim=6, hidden_dim=8, n_layers=layers, dropout=0.3).eval()
    tokens = np.random.default_rng(0).integers(0, vocab, size=(2, 7))  # a batch of 2, 7 steps
    with tinylm.use_backend(backend), tinylm.no_grad():
        stepper, state, step_state = LSTMStepper(model), None, None
        assert (stepper.token_gates is not None) == (vocab <= 4 * 6)
        for t in range(tokens.shape[1]):
            logits, state = model(tokens[:, t:t + 1], state)
            step_logits, step_state = stepper.step(tokens[:, t], step_state)
            np.testing.assert_allclose(step_logits, logits.numpy()[:, 0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(step_state[1], state[1].numpy(), rtol=1e-5, atol=1e-6)


def test_the_lstm_stepper_refuses_ids_out_of_range_or_of_another_batch():
    from tinylm.models.lstm import LSTMStepper

    model = LSTMLanguageModel(vocab_size=11, embedding_dim=6, hidden_dim=8, n_layers=2).eval()
    stepper = LSTMStepper(model)
    with pytest.raises(IndexError, match=r"LSTMStepper.step: ids \(1,\) must be .* in \[0, 11\)"):
        stepper.step(np.array([11]))
    with pytest.raises(IndexError, match="LSTMStepper.step"):
        stepper.step(np.array([-1]))
    _, state = stepper.step(np.array([1, 2]))
    with pytest.raises(IndexError, match=r"ids \(1,\) must be \(B,\) = \(2,\)"):
        stepper.step(np.array([3]), state)
