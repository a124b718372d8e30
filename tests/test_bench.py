"""The benchmark harness runs and reports (smoke test: tiny sizes, one repeat; never a speed)."""

import json

import pytest

from tinylm import backends
from tinylm.bench import __main__ as bench


def test_kernel_report_is_written_and_every_kernel_is_correct(tmp_path, capsys):
    result = bench.main(["--sizes", "tiny", "--repeat", "1", "--warmup", "0", "--out", str(tmp_path)])
    rows = result["kernels"]
    assert {r["kernel"] for r in rows} == set(bench.CASES)
    assert all(r["correct"] and r["median_s"] > 0 for r in rows)
    assert {"numpy", "cython"} <= {r["backend"] for r in rows}
    saved = json.loads((tmp_path / "kernels.json").read_text())
    assert saved["machine"]["cores"] >= 1 and saved["roofs"]["sgemm_gflops"] > 0
    assert (tmp_path / "kernels.csv").read_text().startswith("kernel,")
    assert (tmp_path / "kernel_embedding_backward.png").stat().st_size > 0
    assert "| embedding_backward | tiny |" in capsys.readouterr().out


def adam_that_forgets_the_moments(param, grad, exp_avg, exp_avg_sq, *rest):
    """A broken kernel with the right signature: it updates the parameter only."""
    param -= 1e-3 * grad


@pytest.fixture
def broken_cython_adam(monkeypatch):
    """The registry serves ``adam_that_forgets_the_moments`` as the cython adam_update."""
    monkeypatch.setitem(backends.KERNELS, "adam_update", {
        "numpy": "tinylm.reference.adam:adam_update",
        "cython": f"{__name__}:adam_that_forgets_the_moments",
    })
    monkeypatch.setattr(backends, "_loaded", {})


def test_a_wrong_kernel_is_reported_wrong_and_not_timed(tmp_path, broken_cython_adam):
    with pytest.raises(RuntimeError, match="disagree with the reference"):
        bench.main(["--kernels", "adam_update", "--backends", "numpy,cython", "--sizes", "tiny", "--repeat", "1",
                    "--warmup", "0", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "kernels.json").read_text())["kernels"]
    wrong = next(r for r in rows if r["backend"] == "cython")
    assert wrong["correct"] is False and "median_s" not in wrong


def test_training_benchmark_checks_every_backend_against_the_first_loss(tmp_path):
    result = bench.main(["--train", "--train-size", "tiny", "--repeat", "1", "--warmup", "1", "--no-memory",
                         "--out", str(tmp_path)])
    rows = result["training"]
    assert {r["model"] for r in rows} == {"lstm", "transformer"}
    assert all(r["correct"] and r["train_tokens_per_s"] > 0 and r["sample_tokens_per_s"] > 0 for r in rows)
    assert (tmp_path / "training_throughput.png").exists() and (tmp_path / "training.csv").exists()


def test_training_benchmark_workers_take_the_thread_count(tmp_path):
    """--threads reaches the spawned worker of every backend (each reports its count)."""
    rows = bench.main(["--train", "--train-size", "tiny", "--backends", "numpy,cython", "--repeat", "1",
                       "--warmup", "1", "--no-memory", "--threads", "1", "--out", str(tmp_path)])["training"]
    assert rows and all(r["threads"] == 1 for r in rows)


def test_training_benchmark_catches_a_broken_optimizer(tmp_path, broken_cython_adam):
    with pytest.raises(RuntimeError, match="disagree"):
        bench.main(["--train", "--train-size", "tiny", "--backends", "numpy,cython", "--repeat", "1", "--no-memory",
                    "--out", str(tmp_path)])


def test_an_explicit_shape_runs_the_kernels_it_fits(tmp_path):
    rows = bench.main(["--sizes", "16x4x8", "--kernels", "embedding_backward,adam_update", "--repeat", "1",
                       "--warmup", "0", "--out", str(tmp_path)])["kernels"]
    assert {r["kernel"] for r in rows} == {"embedding_backward"}


def test_without_pytorch_the_torch_column_is_left_out(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    rows = bench.main(["--sizes", "tiny", "--kernels", "embedding_backward", "--backends", "numpy,torch",
                       "--repeat", "1", "--warmup", "0", "--out", str(tmp_path)])["kernels"]
    assert [r["backend"] for r in rows] == ["numpy"]


def test_bad_arguments_name_the_flag():
    with pytest.raises(ValueError, match="--kernels: unknown nope"):
        bench.main(["--kernels", "nope"])
    with pytest.raises(ValueError, match="--sizes: 'huge'"):
        bench.main(["--sizes", "huge"])
