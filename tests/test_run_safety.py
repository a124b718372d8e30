"""Nothing is lost: flags out of range are refused before any work, a run folder is never
overwritten, and a checkpoint that cannot be written leaves the previous one loadable."""

import json
import resource
import subprocess
import sys

import pytest

from tinylm import generate, train
from tinylm.runs import load_run

CORPUS = "Sphinx of black quartz, judge my vow; pack my box with five dozen liquor jugs. " * 40
TINY = ["--model", "lstm", "--embedding-dim", "8", "--hidden-dim", "16", "--n-layers", "1", "--batch-size", "4",
        "--seq-len", "8", "--sample-tokens", "0"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS)
    return path


BAD_TRAIN_FLAGS = [
    (["--steps", "0"], "argument --steps: must be a positive integer, got 0"),
    (["--batch-size", "-4"], "argument --batch-size: must be a positive integer, got -4"),
    (["--seq-len", "0"], "argument --seq-len: must be a positive integer, got 0"),
    (["--hidden-dim", "0"], "argument --hidden-dim: must be a positive integer, got 0"),
    (["--embedding-dim", "many"], "argument --embedding-dim: must be a positive integer, got 'many'"),
    (["--lr", "0"], "argument --lr: must be a finite number > 0, got 0"),
    (["--lr", "-0.1"], "argument --lr: must be a finite number > 0, got -0.1"),
    (["--lr", "nan"], "argument --lr: must be a finite number > 0, got nan"),
    (["--lr", "inf"], "argument --lr: must be a finite number > 0, got inf"),
    (["--dropout", "1"], "argument --dropout: must be a number in [0, 1), got 1"),
    (["--dropout", "-0.1"], "argument --dropout: must be a number in [0, 1), got -0.1"),
    (["--weight-decay", "nan"], "argument --weight-decay: must be a finite number >= 0, got nan"),
    (["--warmup-steps", "-1"], "argument --warmup-steps: must be an integer >= 0, got -1"),
    (["--min-lr-ratio", "2"], "argument --min-lr-ratio: must be a number in [0, 1], got 2"),
    (["--model", "transformer", "--d-model", "30", "--n-heads", "4"], "--d-model 30 must be divisible by --n-heads 4"),
    (["--model", "transformer", "--stateful"],
     "--stateful carries a model's state across batches; --model transformer carries none"),
    (["--tokenizer", "bpe", "--vocab-size", "255"], "--vocab-size must be at least 256 for BPE"),
    (["--seed", "-1"], "argument --seed: must be an integer in [0, 2**63), got -1"),
]


@pytest.mark.parametrize("flags, message", BAD_TRAIN_FLAGS, ids=[" ".join(f) for f, _ in BAD_TRAIN_FLAGS])
def test_train_refuses_flags_out_of_range_before_any_work(tmp_path, monkeypatch, capsys, flags, message):
    monkeypatch.chdir(tmp_path)  # a run would land in runs/ here
    with pytest.raises(SystemExit) as stop:
        train.main(flags)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


BAD_GENERATE_FLAGS = [
    (["--top-k", "0"], "argument --top-k: must be a positive integer, got 0"),
    (["--max-new-tokens", "-1"], "argument --max-new-tokens: must be an integer >= 0, got -1"),
    (["--temperature", "-0.5"], "argument --temperature: must be a finite number >= 0, got -0.5"),
    (["--temperature", "nan"], "argument --temperature: must be a finite number >= 0, got nan"),
    (["--seed", "-1"], "argument --seed: must be an integer in [0, 2**63), got -1"),
]


@pytest.mark.parametrize("flags, message", BAD_GENERATE_FLAGS, ids=[" ".join(f) for f, _ in BAD_GENERATE_FLAGS])
def test_generate_refuses_flags_out_of_range(capsys, flags, message):
    with pytest.raises(SystemExit) as stop:
        generate.main(["--checkpoint", "no-such-run", *flags])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and message in err, err


def test_generate_help_says_temperature_zero_is_greedy():
    result = subprocess.run([sys.executable, "-m", "tinylm.generate", "--help"], capture_output=True, text=True)
    assert "0 is greedy" in " ".join(result.stdout.split())


def test_out_never_overwrites_a_run(tmp_path, corpus, capsys):
    run = tmp_path / "run"
    train.main(["--data", str(corpus), "--out", str(run), "--steps", "5", "--eval-every", "5", *TINY])
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit) as stop:
        train.main(["--data", str(corpus), "--out", str(run), "--steps", "5", *TINY, "--seed", "9"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"--out {run} already holds a run; continue it with --resume {run}" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_out_may_name_an_empty_folder_and_runs_started_in_one_second_get_their_own(tmp_path, corpus, monkeypatch):
    (tmp_path / "empty").mkdir()
    train.main(["--data", str(corpus), "--out", str(tmp_path / "empty"), "--steps", "2", "--eval-every", "2", *TINY])
    assert (tmp_path / "empty" / "checkpoint" / "trainer.json").exists()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train, "datetime", type("Frozen", (), {"now": staticmethod(
        lambda: __import__("datetime").datetime(2026, 11, 29, 12, 0, 0))}))
    for _ in range(2):
        train.main(["--data", str(corpus), "--steps", "2", "--eval-every", "2", *TINY])
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["2026-11-29-120000", "2026-11-29-120000-1"]


def limit_file_size(limit):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    return apply


def test_a_full_disk_at_a_checkpoint_keeps_the_previous_one_and_stops_clearly(tmp_path, corpus):
    """RLIMIT_FSIZE makes every write past `limit` bytes fail (EFBIG) as a full disk would:
    the run is resumed with the limit below the size of its weights file."""
    run = tmp_path / "run"
    train.main(["--data", str(corpus), "--out", str(run), "--steps", "10", "--eval-every", "10", *TINY,
                "--hidden-dim", "64"])
    weights = (run / "checkpoint" / "model.safetensors").read_bytes()
    limit = len(weights) // 2  # metrics.csv and loss.png stay below it
    assert (run / "loss.png").stat().st_size < limit
    result = subprocess.run([sys.executable, "-m", "tinylm.train", "--resume", str(run), "--steps", "20"],
                            capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size(limit))
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert last.startswith(f"python -m tinylm.train: error: cannot write a checkpoint in {run}: File too large; "
                           f"the previous checkpoint in {run / 'checkpoint'} is unchanged"), last
    assert (run / "checkpoint" / "model.safetensors").read_bytes() == weights
    assert not (run / ".checkpoint-new").exists()
    assert json.loads((run / "checkpoint" / "trainer.json").read_text())["step"] == 10
    load_run(run)  # still loadable, checked whole
    train.main(["--resume", str(run), "--steps", "20"])  # and with room again, it goes on
    assert json.loads((run / "checkpoint" / "trainer.json").read_text())["step"] == 20


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the diverging run's NaNs
def test_a_new_run_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path, corpus, capsys):
    """It could not be resumed, so its folder is removed and --out can name it again."""
    from tinylm import cli

    run = tmp_path / "run"
    flags = ["--data", str(corpus), "--out", str(run), "--steps", "20", "--eval-every", "10", *TINY]
    assert cli.run(train.main, flags + ["--lr", "1e308", "--clip", "0"], prog="train") == 2
    assert "the loss is nan" in capsys.readouterr().err
    assert not run.exists()
    assert cli.run(train.main, flags, prog="train") == 0


def test_out_of_memory_is_one_line(capsys, corpus, tmp_path):
    from tinylm import cli

    status = cli.run(train.main, ["--data", str(corpus), "--out", str(tmp_path / "run"), *TINY,
                                  "--batch-size", "100000000000"], prog="train")
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert status == 2 and last.startswith("train: error: out of memory"), last
    assert not (tmp_path / "run").exists()
