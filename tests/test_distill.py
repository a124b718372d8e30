"""Knowledge distillation: the ``distill_kl`` op and ``python -m tinylm.train --teacher RUN``.

The op: finite differences (float64), PyTorch's ``kl_div(log_softmax(z/T), softmax(t/T),
reduction="batchmean")`` for values and the student's gradient on both CPU backends, the
mask, and the edges (no rows counted, T != 1, logits of ±1e4, a teacher logit of -inf,
V = 1, bad input). The kernels: the reference against the formulas in float64, the Cython
kernels against the reference (hypothesis: shapes, dtypes, strides, masks, huge values).

Training: α = 0 is bit for bit the run without a teacher; a stopped distilled run
resumes bit for bit (the teacher's carried state included); the teacher is recorded in
config.json and a resume refuses a missing or changed one; the student reads with the
teacher's tokenizer and refuses conflicting flags; translation distils over its target
positions; and distillation teaches: α = 1 brings the student's predictions nearer the
teacher's than α = 0 does.
"""

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import run_with_threads, seeds

import tinylm
from tinylm import kernels, ops, runs, train
from tinylm.checkpoint import CheckpointError, read_safetensors
from tinylm.distill import model_digest
from tinylm.kernels.cpu import distill_kl as compiled
from tinylm.reference import distill_kl as reference

# ------------------------------------------------------------------------------ the op


def logits_pair(shape, seed, scale=1.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return ((rng.standard_normal(shape) * scale).astype(dtype), (rng.standard_normal(shape) * scale).astype(dtype))


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("masked", [False, True])
def test_gradcheck(temperature, reduction, masked):
    z, t = logits_pair((2, 3, 5), seed=1, scale=2.0)
    mask = np.array([[True, False, True], [True, True, False]]) if masked else None
    student = tinylm.tensor(z, requires_grad=True)
    assert tinylm.gradcheck(lambda s: ops.distill_kl(s, t, temperature, mask=mask, reduction=reduction), student)


def kl_in_torch(z, t, temperature):
    """(PyTorch's batchmean KL, its gradient with respect to z)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    zt = torch.tensor(z, requires_grad=True)
    loss = F.kl_div(F.log_softmax(zt / temperature, dim=-1), F.softmax(torch.tensor(t) / temperature, dim=-1),
                    reduction="batchmean")
    loss.backward()
    return loss.item(), zt.grad.numpy()


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("temperature", [0.7, 1.0, 4.0])
@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_matches_pytorch_kl_div_batchmean(dtype, tol, temperature, backend):
    z, t = logits_pair((6, 11), seed=2, scale=3.0, dtype=dtype)
    want, want_grad = kl_in_torch(z, t, temperature)
    with tinylm.use_backend(backend):
        student = tinylm.tensor(z, requires_grad=True)
        loss = ops.distill_kl(student, t, temperature)
        loss.backward()
    assert loss.dtype == dtype and student.grad.dtype == dtype
    np.testing.assert_allclose(loss.item(), want, rtol=tol, atol=tol)
    np.testing.assert_allclose(student.grad.numpy(), want_grad, rtol=tol, atol=tol)


def test_the_mask_counts_only_its_rows():
    """Over rows (B, T) with a mask: PyTorch's batchmean over the counted rows alone, and
    gradient 0 at every row left out (translation's padded target positions)."""
    z, t = logits_pair((3, 4, 7), seed=3)
    mask = np.array([[True, True, False, False], [True, False, False, False], [True, True, True, True]])
    want, want_grad = kl_in_torch(z[mask], t[mask], 2.0)
    student = tinylm.tensor(z, requires_grad=True)
    loss = ops.distill_kl(student, tinylm.tensor(t), 2.0, mask=mask)
    loss.backward()
    np.testing.assert_allclose(loss.item(), want, rtol=1e-12)
    np.testing.assert_allclose(student.grad.numpy()[mask], want_grad, rtol=1e-12, atol=1e-15)
    assert np.all(student.grad.numpy()[~mask] == 0)


def test_no_counted_rows_give_zero_loss_and_zero_gradient():
    z, t = logits_pair((2, 3, 4), seed=4)
    student = tinylm.tensor(z, requires_grad=True)
    loss = ops.distill_kl(student, t, 2.0, mask=np.zeros((2, 3), bool))
    loss.backward()
    assert loss.item() == 0.0 and np.all(student.grad.numpy() == 0)
    empty = tinylm.tensor(np.zeros((0, 5)), requires_grad=True)
    assert ops.distill_kl(empty, np.zeros((0, 5)), 1.0).item() == 0.0


def test_the_teacher_is_a_constant():
    z, t = logits_pair((4, 6), seed=5)
    student, teacher = tinylm.tensor(z, requires_grad=True), tinylm.tensor(t, requires_grad=True)
    ops.distill_kl(student, teacher, 1.5).backward()
    assert teacher.grad is None and student.grad is not None


def test_the_kl_is_zero_when_the_student_is_the_teacher_and_positive_otherwise():
    z, t = logits_pair((5, 9), seed=6)
    assert abs(ops.distill_kl(tinylm.tensor(z), z, 2.0).item()) < 1e-15
    per_row = ops.distill_kl(tinylm.tensor(z), t, 2.0, reduction="none").numpy()
    assert per_row.shape == (5,) and np.all(per_row > 0)


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_huge_logits_stay_finite(backend):
    """Logits of ±1e4 in float32: e^x would overflow without the row maximum subtracted.
    Teacher [0, 1e4] against student [1e4, 0] at T = 1: p = (0, 1), log q₁ = -1e4, KL = 1e4;
    the term with p₀ = e^-1e4 = 0 adds nothing. A teacher logit of -inf has p = 0 exactly."""
    with tinylm.use_backend(backend):
        student = tinylm.tensor(np.array([[1e4, 0.0], [1e4, -1e4]], np.float32), requires_grad=True)
        teacher = np.array([[0.0, 1e4], [-np.inf, 0.0]], np.float32)
        loss = ops.distill_kl(student, teacher, 1.0, reduction="none")
        loss.sum().backward()
    np.testing.assert_allclose(loss.numpy(), [1e4, 2e4], rtol=1e-6)
    np.testing.assert_allclose(student.grad.numpy(), [[1.0, -1.0], [1.0, -1.0]], atol=1e-6)  # q - p


def test_one_class_has_nothing_to_learn():
    student = tinylm.tensor(np.array([[3.0], [-2.0]]), requires_grad=True)
    loss = ops.distill_kl(student, np.array([[7.0], [1.0]]), 2.0)
    loss.backward()
    assert loss.item() == 0.0 and np.all(student.grad.numpy() == 0)


@pytest.mark.parametrize("call, error, message", [
    (lambda s: ops.distill_kl(s, np.zeros((3, 5)), 1.0), ValueError, r"\(2, 5\) and teacher logits \(3, 5\)"),
    (lambda s: ops.distill_kl(s, np.zeros((2, 5)), 0.0), ValueError, "temperature must be a finite number > 0, got 0"),
    (lambda s: ops.distill_kl(s, np.zeros((2, 5)), float("inf")), ValueError, "temperature must be"),
    (lambda s: ops.distill_kl(s, np.zeros((2, 5)), "2"), ValueError, "temperature must be"),
    (lambda s: ops.distill_kl(s, np.zeros((2, 5)), 1.0, mask=np.ones(3, bool)), ValueError,
     r"mask \(3,\) must be the logits' shape without V, \(2,\)"),
    (lambda s: ops.distill_kl(s, np.zeros((2, 5)), 1.0, mask=np.ones(2)), TypeError, "mask must be a bool array"),
    (lambda s: ops.distill_kl(s, np.zeros((2, 5)), 1.0, reduction="max"), ValueError, "reduction must be"),
    (lambda s: ops.distill_kl(s.numpy(), np.zeros((2, 5)), 1.0), TypeError, "student_logits must be a Tensor"),
    (lambda s: ops.distill_kl(s[:, :0], np.zeros((2, 0)), 1.0), ValueError, "have no classes"),
])
def test_bad_input_is_a_one_line_error_naming_the_op(call, error, message):
    with pytest.raises(error, match=f"distill_kl: .*{message}"):
        call(tinylm.tensor(np.zeros((2, 5))))


@st.composite
def problems(draw):
    rows, classes = draw(st.integers(0, 7)), draw(st.sampled_from([1, 2, 5, 33, 257]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(seeds))
    scale = draw(st.sampled_from([1.0, 30.0, 1e4]))
    wide = rng.standard_normal((2, rows, 2 * classes)) * scale
    z, t = (wide[:, :, ::2] if draw(st.booleans()) else wide[:, :, :classes]).astype(dtype)  # strided, or not
    mask = rng.random(rows) < 0.7 if draw(st.booleans()) else None
    return z, t, draw(st.sampled_from([0.5, 1.0, 2.0, 7.0])), mask, rng.standard_normal(rows).astype(dtype)


@settings(max_examples=60, deadline=None)
@given(problem=problems())
def test_the_reference_kernels_agree_with_a_float64_computation_and_their_own_derivation(problem):
    """The kernels against the same formulas in float64, and the backward against the
    per-row gradient written out. The tolerance scales with the size s of the logits / T:
    a rounding of log p (about ε·s) is a relative error of that size in p, which the KL,
    itself up to about s, multiplies: ε·s² (float32 at s = 8e4: ±30 in a KL of 8e4)."""
    z, t, temperature, mask, grad_kl = problem
    kl, student_lse, teacher_lse = reference.distill_kl_forward(z, t, temperature, mask)
    assert kl.dtype == student_lse.dtype == z.dtype and kl.shape == (z.shape[0],)
    z64, t64 = z.astype(np.float64) / temperature, t.astype(np.float64) / temperature
    log_q = z64 - np.logaddexp.reduce(z64, axis=1, keepdims=True) if z.size else z64
    log_p = t64 - np.logaddexp.reduce(t64, axis=1, keepdims=True) if z.size else t64
    want = (np.exp(log_p) * (log_p - log_q)).sum(axis=1)
    counted = np.ones(z.shape[0], bool) if mask is None else mask
    want[~counted] = 0
    size = max(1.0, float(np.abs(z64).max(initial=0)), float(np.abs(t64).max(initial=0)))
    eps = float(np.finfo(z.dtype).eps)
    tol = 1e-12 if z.dtype == np.float64 else 1e-5
    np.testing.assert_allclose(kl, want, rtol=tol, atol=tol + 8 * eps * size * size)
    grad = reference.distill_kl_backward(grad_kl, z, t, temperature, student_lse, teacher_lse, mask)
    want_grad = (np.exp(log_q) - np.exp(log_p)) / temperature * np.where(counted, grad_kl, 0)[:, None]
    assert grad.dtype == z.dtype and grad.shape == z.shape
    np.testing.assert_allclose(grad, want_grad, rtol=tol, atol=tol + 8 * eps * size)


# ------------------------------------------------------------- the Cython kernels (kernels/cpu/distill_kl.pyx)


@settings(max_examples=80, deadline=None)
@given(problem=problems())
def test_the_cython_kernels_match_the_reference(problem):
    """Shapes, both dtypes, strided inputs, logits of ±1e4, masks: the kernel sums in double
    where the reference sums in the logits' dtype, so float32 agrees to the reference's own
    tolerance against float64 (above), float64 to rounding."""
    z, t, temperature, mask, grad_kl = problem
    kl, student_lse, teacher_lse = compiled.distill_kl_forward(z, t, temperature, mask)
    want = reference.distill_kl_forward(z, t, temperature, mask)
    eps = float(np.finfo(z.dtype).eps)
    size = max(1.0, float(np.abs(z).max(initial=0)) / temperature, float(np.abs(t).max(initial=0)) / temperature)
    tol = 1e-12 if z.dtype == np.float64 else 1e-5
    for got, expected, atol in zip((kl, student_lse, teacher_lse), want, (8 * eps * size * size, 0, 0)):
        assert got.dtype == z.dtype and got.shape == (z.shape[0],)
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol + atol)
    if mask is not None:
        assert np.all(kl[~mask] == 0)
    grad = compiled.distill_kl_backward(grad_kl, z, t, temperature, want[1], want[2], mask)
    expected = reference.distill_kl_backward(grad_kl, z, t, temperature, want[1], want[2], mask)
    assert grad.dtype == z.dtype and grad.shape == z.shape
    np.testing.assert_allclose(grad, expected, rtol=tol, atol=tol)


@pytest.mark.skipif(not kernels.openmp_enabled(), reason="built without OpenMP: the kernels run on one thread only")
def test_one_and_two_threads_agree():
    z, t = logits_pair((512, 96), seed=7, dtype=np.float32)  # several rows per thread
    mask = np.random.default_rng(7).random(512) < 0.8
    one = run_with_threads(1, compiled.distill_kl_forward, z, t, 2.0, mask)
    two = run_with_threads(2, compiled.distill_kl_forward, z, t, 2.0, mask)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)  # rows are independent: identical, not just close
    g = np.ones(512, np.float32)
    np.testing.assert_array_equal(run_with_threads(1, compiled.distill_kl_backward, g, z, t, 2.0, *one[1:], mask),
                                  run_with_threads(2, compiled.distill_kl_backward, g, z, t, 2.0, *one[1:], mask))


@pytest.mark.parametrize("module", [compiled, reference], ids=["cython", "numpy"])
@pytest.mark.parametrize("args, error, message", [
    ((np.zeros((3, 5), np.float32), np.zeros((3, 4), np.float32), 1.0), ValueError, r"must both be \(N, V\)"),
    ((np.zeros(5, np.float32), np.zeros(5, np.float32), 1.0), ValueError, r"must both be \(N, V\)"),
    ((np.zeros((3, 5), np.float32), np.zeros((3, 5)), 1.0), TypeError, "floats of one dtype"),
    ((np.zeros((3, 0)), np.zeros((3, 0)), 1.0), ValueError, "have no classes"),
    ((np.zeros((3, 5)), np.zeros((3, 5)), -1.0), ValueError, "temperature must be a finite number > 0"),
    ((np.zeros((3, 5)), np.zeros((3, 5)), float("nan")), ValueError, "temperature must be a finite number > 0"),
    ((np.zeros((3, 5)), np.zeros((3, 5)), 1.0, np.ones(2, bool)), ValueError, r"mask \(2,\) must be \(N,\)"),
    ((np.zeros((3, 5)), np.zeros((3, 5)), 1.0, np.ones(3, np.int64)), TypeError, "mask must be a bool array"),
])
def test_bad_kernel_arguments_are_refused(module, args, error, message):
    with pytest.raises(error, match=f"distill_kl_forward: .*{message}"):
        module.distill_kl_forward(*args)


# ------------------------------------------------------------------------------ training

CORPUS = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
          "it was the age of foolishness. ") * 30
STEPS = 30
TINY = ["--seq-len", "12", "--batch-size", "4", "--eval-every", "10", "--log-every", "4", "--sample-tokens", "5",
        "--lr", "0.01", "--warmup-steps", "3"]
STUDENT = ["--model", "lstm", "--embedding-dim", "8", "--hidden-dim", "16", "--n-layers", "1", "--dropout", "0.2"]
TIMED_COLUMNS = ("elapsed_s", "tokens_per_s")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, corpus):
    """An LSTM teacher trained for 60 steps (hidden 32, 2 layers)."""
    run = tmp_path_factory.mktemp("teacher") / "run"
    train.main(["--data", str(corpus), *TINY, "--steps", "60", "--model", "lstm", "--embedding-dim", "16",
                "--hidden-dim", "32", "--n-layers", "2", "--seed", "1", "--backend", "cython", "--out", str(run)])
    return run


def untimed_metrics(run):
    rows = list(csv.reader(io.StringIO((run / "metrics.csv").read_text())))
    keep = [i for i, name in enumerate(rows[0]) if name not in TIMED_COLUMNS]
    return [[row[i] for i in keep] for row in rows]


def weights(run):
    return {name: (run / "checkpoint" / name).read_bytes() for name in ("model.safetensors", "optimizer.safetensors")}


def student_flags(corpus, backend="numpy", steps=STEPS, *extra):
    return ["--data", str(corpus), *TINY, *STUDENT, "--steps", str(steps), "--seed", "5", "--backend", backend,
            *extra]


@pytest.mark.parametrize("batches", ["random", "stateful"])
def test_alpha_zero_is_bit_for_bit_the_run_without_a_teacher(tmp_path, corpus, teacher, batches):
    stateful = ["--stateful"] if batches == "stateful" else []
    train.main(student_flags(corpus, "cython", STEPS, *stateful) + ["--out", str(tmp_path / "alone")])
    train.main(student_flags(corpus, "cython", STEPS, *stateful) + ["--out", str(tmp_path / "zero"), "--teacher",
                                                                     str(teacher), "--distill-alpha", "0"])
    assert untimed_metrics(tmp_path / "zero") == untimed_metrics(tmp_path / "alone")
    assert weights(tmp_path / "zero") == weights(tmp_path / "alone")
    # and a teacher with alpha > 0 does change the run
    train.main(student_flags(corpus, "cython", STEPS, *stateful) + ["--out", str(tmp_path / "half"), "--teacher",
                                                                     str(teacher)])
    assert weights(tmp_path / "half") != weights(tmp_path / "alone")


def test_config_records_the_teacher_and_train_loss_is_the_objective(tmp_path, corpus, teacher, capsys):
    run = tmp_path / "run"
    train.main(student_flags(corpus) + ["--out", str(run), "--teacher", str(teacher), "--distill-alpha", "0.7",
                                        "--distill-temperature", "3"])
    assert "distilling from" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert config["distillation"] == {"teacher": str(teacher.resolve()), "alpha": 0.7, "temperature": 3.0,
                                      "teacher_step": 60, "teacher_sha256": model_digest(teacher)}
    assert (run / "tokenizer.json").read_bytes() == (teacher / "tokenizer.json").read_bytes()
    assert runs.check_config(config) is config
    # the last row's train_loss is the objective of its steps, not the plain cross-entropy
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    alone = tmp_path / "alone"
    train.main(student_flags(corpus) + ["--out", str(alone)])
    rows_alone = list(csv.DictReader(open(alone / "metrics.csv")))
    assert rows[0]["train_loss"] != rows_alone[0]["train_loss"]  # the first window: the same start, other losses


def ctrl_c_after(step, monkeypatch):
    original = train.Trainer.train_step

    def step_then_interrupt(self):
        loss = original(self)
        if self.step == step:
            signal.raise_signal(signal.SIGINT)
        return loss

    monkeypatch.setattr(train.Trainer, "train_step", step_then_interrupt)


@pytest.mark.parametrize("batches, backend, stop", [("stateful", "numpy", 7), ("random", "cython", 10)])
def test_a_stopped_distilled_run_resumes_bit_for_bit(tmp_path, corpus, teacher, monkeypatch, batches, backend, stop):
    """With --stateful the teacher carries its own state across batches: the checkpoint holds it."""
    flags = student_flags(corpus, backend, STEPS, *(["--stateful"] if batches == "stateful" else []),
                          "--teacher", str(teacher), "--distill-alpha", "0.6", "--distill-temperature", "1.5")
    reference_run, run = tmp_path / "whole", tmp_path / "parts"
    train.main(flags + ["--out", str(reference_run)])
    ctrl_c_after(stop, monkeypatch)
    train.main(flags + ["--out", str(run)])
    state = json.loads((run / "checkpoint" / "trainer.json").read_text())
    assert state["step"] == stop
    if batches == "stateful":
        assert np.array(state["teacher_carried"]).shape == (2, 2, 4, 32)  # (h, c), each (L, B, H) of the teacher
    monkeypatch.undo()
    train.main(["--resume", str(run)])
    assert untimed_metrics(run) == untimed_metrics(reference_run)
    assert weights(run) == weights(reference_run)


def test_a_resume_refuses_a_missing_or_changed_teacher(tmp_path, corpus, teacher):
    copy = tmp_path / "teacher"
    shutil.copytree(teacher, copy)
    run = tmp_path / "run"
    train.main(student_flags(corpus, "numpy", 20) + ["--out", str(run), "--teacher", str(copy)])
    moved = tmp_path / "moved"
    copy.rename(moved)
    with pytest.raises(CheckpointError, match=f"learns from the teacher {copy}, which is missing"):
        train.main(["--resume", str(run), "--steps", "25"])
    moved.rename(copy)
    weights_file = copy / "checkpoint" / "model.safetensors"
    tensors = read_safetensors(weights_file)
    tensors["fc.bias"] = tensors["fc.bias"] + np.float32(0.5)
    from safetensors.numpy import save_file

    save_file(tensors, str(weights_file))
    with pytest.raises(CheckpointError, match="the teacher's model.safetensors has changed since this run started"):
        train.main(["--resume", str(run), "--steps", "25"])
    assert json.loads((run / "checkpoint" / "trainer.json").read_text())["step"] == 20  # nothing was trained


@pytest.mark.parametrize("argv, message", [
    (["--distill-alpha", "0.5"], "--distill-alpha only applies with --teacher RUN"),
    (["--distill-temperature", "2"], "--distill-temperature only applies with --teacher RUN"),
    (["--teacher", "T", "--distill-alpha", "1.5"], "must be a number in [0, 1], got 1.5"),
    (["--teacher", "T", "--distill-temperature", "0"], "must be a finite number > 0, got 0"),
])
def test_bad_distillation_flags_are_refused(capsys, argv, message):
    with pytest.raises(SystemExit):
        train.parse_args(argv)
    assert message in capsys.readouterr().err


def test_teacher_flags_are_refused_with_resume(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--resume", "somewhere", "--teacher", "T"])
    assert "--teacher cannot be given with --resume" in capsys.readouterr().err


def test_the_student_takes_the_teachers_tokenizer_and_refuses_another(tmp_path, corpus, teacher):
    with pytest.raises(ValueError, match=r"--tokenizer bpe: the student uses its teacher's tokenizer, and the "
                                         r"teacher .* has tokenizer 'char'; leave --tokenizer out"):
        train.main(student_flags(corpus) + ["--teacher", str(teacher), "--tokenizer", "bpe",
                                            "--out", str(tmp_path / "a")])
    with pytest.raises(ValueError, match="--vocab-size 300: .* has vocab_size 512"):
        train.main(student_flags(corpus) + ["--teacher", str(teacher), "--vocab-size", "300",
                                            "--out", str(tmp_path / "b")])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(CheckpointError, match="--teacher .*nowhere: no such run folder"):
        train.main(student_flags(corpus) + ["--teacher", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c")])


def test_check_config_refuses_a_bad_distillation_block(tmp_path, corpus, teacher):
    config = json.loads((teacher / "config.json").read_text())
    good = {"teacher": str(teacher.resolve()), "alpha": 0.5, "temperature": 2.0, "teacher_step": 60,
            "teacher_sha256": "0" * 64}
    runs.check_config({**config, "distillation": good})
    for change, message in [({"teacher": "relative/path"}, "absolute path"),
                            ({"teacher_sha256": "xyz"}, "64 lowercase hex digits"),
                            ({"alpha": 1.5}, r"alpha must be a number in \[0, 1\]"),
                            ({"temperature": -1}, "temperature must be a finite number > 0"),
                            ({"teacher_step": "60"}, "teacher_step must be an integer >= 0")]:
        with pytest.raises(CheckpointError, match=f"config.json: distillation.{message}|{message}"):
            runs.check_config({**config, "distillation": {**good, **change}})


PAIRS = [(f"{a} {b}", f"{b} {a} {a}") for a in ("red", "green", "blue", "black", "white")
         for b in ("cat", "dog", "bird", "fish", "horse", "cow")]


def test_translation_distils_over_its_target_positions_and_refuses_a_language_model_teacher(tmp_path, corpus,
                                                                                             teacher):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"{s}\t{t}\n" for s, t in PAIRS), encoding="utf-8")
    common = ["--task", "translate", "--data", str(pairs), "--batch-size", "4", "--eval-every", "5", "--log-every",
              "3", "--lr", "0.01", "--warmup-steps", "3", "--backend", "numpy", "--embedding-dim", "8"]
    translation_teacher = tmp_path / "teacher"
    train.main(common + ["--steps", "6", "--hidden-dim", "32", "--out", str(translation_teacher)])
    with pytest.raises(ValueError, match="a translate run cannot teach a language-model run"):
        train.main(student_flags(corpus) + ["--teacher", str(translation_teacher), "--out", str(tmp_path / "x")])
    with pytest.raises(ValueError, match="a language-model run cannot teach a translate run"):
        train.main(common + ["--steps", "6", "--hidden-dim", "16", "--teacher", str(teacher), "--out",
                             str(tmp_path / "y")])
    student = tmp_path / "student"
    train.main(common + ["--steps", "6", "--hidden-dim", "16", "--teacher", str(translation_teacher), "--out",
                         str(student)])
    for name in ("source_tokenizer.json", "target_tokenizer.json"):
        assert (student / name).read_bytes() == (translation_teacher / name).read_bytes()
    losses = [float(row["train_loss"]) for row in csv.DictReader(open(student / "metrics.csv"))]
    assert all(np.isfinite(losses))  # padded positions (IGNORE) are left out of the KL, as of the cross-entropy


def kl_to_teacher(student_run, teacher_run, temperature=1.0) -> float:
    """The mean KL(teacher ‖ student) at T over windows of the validation text."""
    config, tokenizer, student, _, _ = runs.load_run(student_run)
    _, _, teacher_model, _, _ = runs.load_run(teacher_run)
    student.eval()
    teacher_model.eval()
    ids = tokenizer.encode(CORPUS[-len(CORPUS) // 10:])
    windows = np.stack([ids[i:i + 12] for i in range(0, len(ids) - 12, 6)])  # (B, 12)
    with tinylm.no_grad():
        z, _ = student(windows)
        t, _ = teacher_model(windows)
        return ops.distill_kl(z, t.numpy(), temperature).item()


def test_distillation_teaches(tmp_path, corpus, teacher):
    """The same student, steps and batches: trained on the teacher alone (α = 1) it ends far
    nearer the teacher's predictions than trained on the text alone (α = 0), and nearer
    than it started."""
    steps = 120  # the student alone then fits the text's one-hot targets past the (60-step) teacher
    for alpha in ("0", "1"):
        train.main(student_flags(corpus, "cython", steps) + ["--out", str(tmp_path / alpha), "--teacher",
                                                             str(teacher), "--distill-alpha", alpha])
    start = tmp_path / "start"
    train.main(student_flags(corpus, "cython", 1) + ["--out", str(start), "--lr", "1e-9"])
    kl = {name: kl_to_teacher(tmp_path / name, teacher) for name in ("0", "1", "start")}
    assert kl["1"] < 0.5 * kl["0"], kl
    assert kl["1"] < 0.5 * kl["start"], kl


def test_a_two_process_distilled_run_matches_one_process(tmp_path, corpus, teacher):
    """Under mpiexec each rank's teacher computes its own rows and each rank's KL is scaled
    like its cross-entropy: the same run as one process, up to the order of summation."""
    mpiexec = Path(sys.executable).parent / "mpiexec"
    pytest.importorskip("mpi4py", reason='needs MPI: pip install ".[mpi]"')
    if not mpiexec.exists():
        pytest.skip('needs MPI: pip install ".[mpi]" (the mpich wheel brings mpiexec)')
    flags = student_flags(corpus, "numpy", 6, "--teacher", str(teacher), "--distill-alpha", "0.7", "--dropout", "0")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    for processes, out in ((2, tmp_path / "two"), (1, tmp_path / "one")):
        argv = [sys.executable, "-m", "tinylm.train", *flags, "--out", str(out)]
        argv = [str(mpiexec), "-n", "2", *argv] if processes == 2 else argv
        result = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
    two = read_safetensors(tmp_path / "two" / "checkpoint" / "model.safetensors")
    one = read_safetensors(tmp_path / "one" / "checkpoint" / "model.safetensors")
    for name in one:  # float32: the same computation up to summation order
        np.testing.assert_allclose(two[name], one[name], rtol=1e-4, atol=1e-5, err_msg=name)
    losses = [[float(row["train_loss"]) for row in csv.DictReader(open(run / "metrics.csv"))]
              for run in (tmp_path / "two", tmp_path / "one")]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
