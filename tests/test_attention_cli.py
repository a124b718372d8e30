"""``python -m tinylm.attention`` on a tiny transformer trained for a few steps."""

import csv
import json
import shutil
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest

from tinylm import attention, cli, train
from tinylm.nn import functional as F
from tinylm.runs import load_run

TEXT = "I am eating at a restaurant"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A transformer run: 2 blocks x 2 heads, context 32, trained for 4 steps."""
    folder = tmp_path_factory.mktemp("attention")
    corpus = folder / "corpus.txt"
    corpus.write_text("I am eating at a restaurant, and the waiter is eating too. " * 20, encoding="utf-8")
    train.main(["--data", str(corpus), "--out", str(folder / "run"), "--model", "transformer", "--d-model", "16",
                "--n-heads", "2", "--n-layers", "2", "--steps", "4", "--batch-size", "4", "--seq-len", "32",
                "--eval-every", "4", "--sample-tokens", "0", "--warmup-steps", "2"])
    return folder / "run"


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_writes_a_heatmap_per_layer_and_head_and_every_weight_as_csv(run_dir, tmp_path):
    out = tmp_path / "maps"
    attention.main(["--checkpoint", str(run_dir), "--text", TEXT, "--out", str(out)])

    for layer in range(2):
        for head in range(2):
            png = out / f"layer{layer}_head{head}.png"
            assert png.read_bytes()[:8] == PNG_MAGIC, png
    assert sorted(p.name for p in out.iterdir()) == ["attention.csv"] + [
        f"layer{layer}_head{h}.png" for layer in range(2) for h in range(2)]

    rows = read_rows(out / "attention.csv")
    assert list(rows[0]) == attention.CSV_FIELDS
    length = len(TEXT)  # a character tokenizer: one token per character
    assert len(rows) == 2 * 2 * length * length
    row_sums = defaultdict(float)
    for row in rows:
        i, j, weight = int(row["query_position"]), int(row["key_position"]), float(row["weight"])
        assert row["query_token"] == TEXT[i] and row["key_token"] == TEXT[j]
        assert 0.0 <= weight <= 1.0
        if j > i:
            assert weight == 0.0, row  # causal: no query sees a later key
        row_sums[row["layer"], row["head"], i] += weight
    assert len(row_sums) == 2 * 2 * length
    np.testing.assert_allclose(list(row_sums.values()), 1.0, atol=1e-4)  # the CSV keeps 6 digits


def test_the_weights_are_the_ones_the_model_uses(run_dir, monkeypatch):
    """The model's forward attends through the fused ``causal_attention`` op, which keeps
    no weights. Run it once more with the op written out (``F.attention_weights``, then
    @ v), recording every weights array: the logits are the fused forward's, and the
    tool's maps, recomputed from the blocks' inputs, are the recorded weights."""
    import tinylm.nn.attention as mha

    _, tokenizer, model, _, _ = load_run(run_dir)
    model.eval()
    ids = tokenizer.encode(TEXT)
    recorded = []
    original = F.attention_weights

    def recording(*args, **kwargs):
        weights = original(*args, **kwargs)
        recorded.append(weights.numpy()[0])
        return weights

    def written_out(q, k, v):
        return F.attention_weights(q, k, is_causal=True) @ v

    fused_logits = model(ids[None, :])[0].numpy()
    monkeypatch.setattr(F, "attention_weights", recording)
    monkeypatch.setattr(mha, "causal_attention", written_out)
    written_out_logits = model(ids[None, :])[0].numpy()
    monkeypatch.undo()
    np.testing.assert_allclose(written_out_logits, fused_logits, rtol=1e-5, atol=1e-5)
    maps = attention.attention_maps(model, ids)
    assert len(maps) == len(recorded) == 2
    for ours, theirs in zip(maps, recorded):
        assert ours.shape == (2, len(TEXT), len(TEXT))
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)


def one_line_error(capsys, argv):
    code = cli.run(attention.main, argv, prog="python -m tinylm.attention")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    return err


def test_clear_errors(run_dir, tmp_path, capsys):
    err = one_line_error(capsys, ["--checkpoint", str(tmp_path / "nowhere"), "--text", TEXT])
    assert "nowhere is not a directory" in err

    err = one_line_error(capsys, ["--checkpoint", str(run_dir), "--text", "x" * 33])
    assert "--text is 33 tokens long, longer than the model's context of 32 tokens" in err

    err = one_line_error(capsys, ["--checkpoint", str(run_dir), "--text", ""])
    assert "--text is empty" in err

    lstm_run = tmp_path / "lstm-run"
    shutil.copytree(run_dir, lstm_run)
    config = json.loads((lstm_run / "config.json").read_text())
    (lstm_run / "config.json").write_text(json.dumps({**config, "model": "lstm"}))
    err = one_line_error(capsys, ["--checkpoint", str(lstm_run), "--text", TEXT])
    assert "holds a model of type 'lstm'; attention maps need a transformer" in err


def test_unknown_characters_are_noted_and_read_as_unknown(run_dir, tmp_path):
    from io import StringIO

    out = StringIO()
    attention.main(["--checkpoint", str(run_dir), "--text", "I am € a", "--out", str(tmp_path)], out=out)
    assert "1 character(s) of --text are not in the model's vocabulary" in out.getvalue()
    rows = read_rows(tmp_path / "attention.csv")
    first_column = [row for row in rows if row["layer"] == row["head"] == row["key_position"] == "0"]
    assert [row["query_token"] for row in first_column] == list("I am \ufffd a")


def test_the_module_runs_from_the_command_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tinylm.attention", "--checkpoint", str(tmp_path / "missing"),
                           "--text", TEXT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("python -m tinylm.attention: error: --checkpoint:") and done.stderr.count("\n") == 1
