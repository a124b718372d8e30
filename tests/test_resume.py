"""A run stopped at any step and resumed ends bit for bit where the uninterrupted run ends.

For both models, random and stateful batches and both CPU backends, a run is stopped
by each kind of stop (a time limit, Ctrl-C, SIGKILL after a periodic checkpoint), then
resumed. Its final weights and optimizer state must equal the uninterrupted run's byte
for byte, and so must every column of metrics.csv but wall time and tokens/s: the
logging windows, the learning rates and every evaluation.
"""

import csv
import io
import json
import signal
import subprocess
import sys
import time

import pytest

import tinylm
from tinylm import train

CORPUS = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
          "it was the age of foolishness. ") * 30
SHAPES = {
    "lstm": ["--model", "lstm", "--embedding-dim", "16", "--hidden-dim", "32", "--n-layers", "2"],
    "transformer": ["--model", "transformer", "--d-model", "16", "--n-heads", "2", "--n-layers", "1"],
}
STEPS = 30  # evaluations at 10, 20, 30; training-loss rows every 4 steps, so windows straddle them
TIMED_COLUMNS = ("elapsed_s", "tokens_per_s")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return path


def flags(corpus, model, batches, backend, steps=STEPS):
    return ["--data", str(corpus), "--steps", str(steps), "--batch-size", "4", "--seq-len", "12",
            "--eval-every", "10", "--log-every", "4", "--sample-tokens", "5", "--dropout", "0.2", "--lr", "0.01",
            "--warmup-steps", "3", "--seed", "5", "--backend", backend, *SHAPES[model],
            *(["--stateful"] if batches == "stateful" else [])]


def untimed_metrics(run):
    """metrics.csv as text, without the columns that measure time."""
    rows = list(csv.reader(io.StringIO((run / "metrics.csv").read_text())))
    keep = [i for i, name in enumerate(rows[0]) if name not in TIMED_COLUMNS]
    return "\n".join(",".join(row[i] for i in keep) for row in rows)


def same_metrics(run, reference) -> bool:
    """metrics.csv matches but for its timed columns, with the same row endings (\r\n, csv's)."""
    same_endings = ((run / "metrics.csv").read_bytes().count(b"\r\n")
                    == (reference / "metrics.csv").read_bytes().count(b"\r\n"))
    return same_endings and untimed_metrics(run) == untimed_metrics(reference)


def final_state(run):
    return {name: (run / "checkpoint" / name).read_bytes() for name in ("model.safetensors", "optimizer.safetensors")}


_uninterrupted = {}


def uninterrupted(tmp_path_factory, corpus, model, batches, backend):
    key = (model, batches, backend)
    if key not in _uninterrupted:
        run = tmp_path_factory.mktemp("uninterrupted") / "run"
        train.main(flags(corpus, model, batches, backend) + ["--out", str(run)])
        _uninterrupted[key] = run
    return _uninterrupted[key]


def ctrl_c_after(step, monkeypatch):
    """Press Ctrl-C (a real SIGINT to this process) as training step ``step`` ends."""
    original = train.Trainer.train_step

    def step_then_interrupt(self):
        loss = original(self)
        if self.step == step:
            signal.raise_signal(signal.SIGINT)
        return loss

    monkeypatch.setattr(train.Trainer, "train_step", step_then_interrupt)


CASES = [  # (model, batches, backend, stop)
    *[(m, b, backend, "ctrl-c at 7") for m, b in (("lstm", "random"), ("lstm", "stateful"), ("transformer", "random"))
      for backend in ("numpy", "cython")],
    ("lstm", "random", "numpy", "time limit"),
    ("transformer", "random", "cython", "time limit"),
    ("lstm", "stateful", "cython", "ctrl-c at 10"),  # a stop on an evaluation step
    ("transformer", "random", "numpy", "ctrl-c at 21"),
]


@pytest.mark.parametrize("model, batches, backend, stop", CASES)
def test_a_stopped_run_resumes_bit_for_bit(tmp_path, tmp_path_factory, corpus, monkeypatch, model, batches, backend,
                                           stop):
    reference = uninterrupted(tmp_path_factory, corpus, model, batches, backend)
    run = tmp_path / "run"
    extra = ["--out", str(run)]
    if stop == "time limit":
        extra += ["--time-limit", "0"]  # stops after the first step
    else:
        ctrl_c_after(int(stop.split()[-1]), monkeypatch)
    train.main(flags(corpus, model, batches, backend) + extra)
    stopped_at = json.loads((run / "checkpoint" / "trainer.json").read_text())["step"]
    assert stopped_at < STEPS
    monkeypatch.undo()
    tinylm.set_backend("cython" if backend == "numpy" else "numpy")  # as a new process might start
    train.main(["--resume", str(run)])  # on the run's own backend, unnamed
    assert same_metrics(run, reference)
    assert final_state(run) == final_state(reference)


def test_sigkill_after_a_periodic_checkpoint_resumes_bit_for_bit(tmp_path, tmp_path_factory, corpus):
    """Killed at an unknown step after the first checkpoint: the rows logged after the
    checkpoint are dropped and written again."""
    steps = 120
    args = flags(corpus, "lstm", "random", "numpy", steps=steps)
    reference = tmp_path_factory.mktemp("uninterrupted") / "run"
    train.main(args + ["--out", str(reference)])
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "tinylm.train", *args, "--out", str(run)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "checkpoint" / "trainer.json").exists() and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)  # a few more steps, some rows past the checkpoint
    process.kill()
    process.wait(timeout=60)
    assert json.loads((run / "checkpoint" / "trainer.json").read_text())["step"] < steps
    train.main(["--resume", str(run)])
    assert same_metrics(run, reference)
    assert final_state(run) == final_state(reference)


def test_a_stop_writes_its_evaluation_and_the_resume_removes_it(tmp_path, corpus, monkeypatch):
    run = tmp_path / "run"
    ctrl_c_after(7, monkeypatch)
    train.main(flags(corpus, "lstm", "random", "numpy") + ["--out", str(run)])
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["step"] for r in rows] == ["4", "7"] and rows[-1]["val_loss"]  # the stop's own evaluation
    monkeypatch.undo()
    train.main(["--resume", str(run), "--steps", "12"])
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["step"] for r in rows] == ["4", "8", "10", "12"]


def test_resuming_on_another_backend_says_that_rounding_differs(tmp_path, corpus, capsys):
    run = tmp_path / "run"
    train.main(flags(corpus, "lstm", "random", "numpy", steps=10) + ["--out", str(run)])
    train.main(["--resume", str(run), "--steps", "12", "--backend", "cython"])
    assert "the run trained on numpy; resuming on cython" in capsys.readouterr().out


# ---- translation runs: the same loop, checkpoints and resume, with a task of their own

PAIRS = [(f"{a} {b}", f"{b} {a} {a}") for a in ("red", "green", "blue", "black", "white")
         for b in ("cat", "dog", "bird", "fish", "horse", "cow")]  # 30 distinct sources, targets of 3 lengths
TRANSLATION_SHAPES = {
    "seq2seq-lstm": ["--model", "seq2seq-lstm", "--embedding-dim", "16", "--hidden-dim", "32"],
    "seq2seq-transformer": ["--model", "seq2seq-transformer", "--d-model", "16", "--n-heads", "2", "--n-layers", "1",
                            "--dim-feedforward", "32"],
}
TRANSLATION_STEPS = 12  # evaluations at 5, 10, 12; training-loss rows every 3 steps


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "pairs.tsv"
    path.write_text("".join(f"{s}\t{t}\n" for s, t in PAIRS), encoding="utf-8")
    return path


def translation_flags(pairs, model, backend):
    return ["--task", "translate", "--data", str(pairs), "--steps", str(TRANSLATION_STEPS), "--batch-size", "4",
            "--eval-every", "5", "--log-every", "3", "--dropout", "0.2", "--lr", "0.01", "--warmup-steps", "3",
            "--seed", "5", "--backend", backend, *TRANSLATION_SHAPES[model]]


TRANSLATION_CASES = [  # (model, backend, stop): both models, both CPU backends, both kinds of stop
    ("seq2seq-lstm", "numpy", "ctrl-c at 7"),
    ("seq2seq-transformer", "cython", "time limit"),
]


@pytest.mark.parametrize("model, backend, stop", TRANSLATION_CASES)
def test_a_stopped_translation_run_resumes_bit_for_bit(tmp_path, pairs, monkeypatch, model, backend, stop):
    reference = tmp_path / "uninterrupted"
    train.main(translation_flags(pairs, model, backend) + ["--out", str(reference)])
    run = tmp_path / "run"
    extra = ["--out", str(run)]
    if stop == "time limit":
        extra += ["--time-limit", "0"]  # stops after the first step
    else:
        ctrl_c_after(int(stop.split()[-1]), monkeypatch)
    train.main(translation_flags(pairs, model, backend) + extra)
    stopped_at = json.loads((run / "checkpoint" / "trainer.json").read_text())["step"]
    assert stopped_at < TRANSLATION_STEPS
    assert list(csv.reader(open(run / "metrics.csv")))[-1][0] == str(stopped_at)  # the stop's own evaluation
    monkeypatch.undo()
    tinylm.set_backend("cython" if backend == "numpy" else "numpy")  # as a new process might start
    train.main(["--resume", str(run)])  # on the run's own backend, unnamed
    assert same_metrics(run, reference)
    assert "val_bleu" in untimed_metrics(run).splitlines()[0]
    assert final_state(run) == final_state(reference)
