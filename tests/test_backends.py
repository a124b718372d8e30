"""Choosing a backend, and the kernel registry behind it."""

import subprocess
import sys

import numpy as np
import pytest

import tinylm
from tinylm import backends, ops
from tinylm.reference import embedding as reference_embedding


def test_import_tinylm_never_imports_cupy():
    code = "import sys, tinylm; tinylm.tensor([1.0]) * 2.0; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="set_backend: unknown backend 'torch'; "
                                         "choose one of numpy, cython, cupy, cuda"):
        tinylm.set_backend("torch")


@pytest.mark.skipif(backends.is_usable("cupy"), reason="this machine has a usable GPU, so there is no error to see")
@pytest.mark.parametrize("name", ["cupy", "cuda"])
def test_a_gpu_backend_without_a_gpu_gives_a_one_line_error(name):
    before = tinylm.get_backend()
    with pytest.raises(RuntimeError) as info:
        tinylm.set_backend(name)
    message = str(info.value)
    assert message.startswith(f"set_backend({name!r}):") and "\n" not in message
    assert tinylm.get_backend() == before  # a failed switch changes nothing


def test_use_backend_restores_the_previous_backend_even_after_an_error():
    before = tinylm.get_backend()
    with pytest.raises(KeyError):
        with tinylm.use_backend("numpy"):
            assert tinylm.get_backend() == "numpy"
            raise KeyError("boom")
    assert tinylm.get_backend() == before


def test_the_registry_serves_each_backend_its_kernel():
    with tinylm.use_backend("numpy"):
        assert backends.kernel("embedding_backward") is reference_embedding.embedding_backward
    with tinylm.use_backend("cython"):
        from tinylm.kernels.cpu import embedding as compiled

        assert backends.kernel("embedding_backward") is compiled.embedding_backward


def test_a_backend_without_a_kernel_falls_back_to_the_reference(monkeypatch):
    monkeypatch.setitem(backends.KERNELS, "only_reference", {"numpy": "tinylm.reference.embedding:check_ids"})
    with tinylm.use_backend("cython"):
        assert backends.kernel("only_reference") is reference_embedding.check_ids


def test_unknown_kernel_names_the_known_ones():
    with pytest.raises(KeyError, match="embedding_backward"):
        backends.kernel("no_such_kernel")


def test_the_cython_kernels_were_built_and_report_openmp():
    from tinylm import kernels

    assert isinstance(kernels.openmp_enabled(), bool)
    assert kernels.get_num_threads() >= 1


def test_embedding_gradients_agree_between_numpy_and_cython():
    rng = np.random.default_rng(0)
    weight_data = rng.standard_normal((50, 8)).astype(np.float32)
    ids = rng.integers(0, 50, size=(4, 16))
    grads = {}
    for backend in ("numpy", "cython"):
        with tinylm.use_backend(backend):
            weight = tinylm.Tensor(weight_data.copy(), requires_grad=True)
            (ops.embedding(ids, weight) * 2.0).sum().backward()
            grads[backend] = weight.grad.numpy()
    np.testing.assert_allclose(grads["cython"], grads["numpy"], rtol=1e-6)


def blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


@pytest.mark.skipif(not backends.is_usable("cython"), reason="the compiled kernels are not built")
def test_the_cython_backend_holds_numpy_blas_at_one_thread_and_gives_it_back():
    """One thread pool: under the cython backend NumPy's BLAS runs on one thread (the
    kernels' OpenMP team does the parallel work); under another backend, its own count."""
    from threadpoolctl import threadpool_limits

    if not blas_threads():
        pytest.skip("threadpoolctl finds no BLAS library it can control here")
    with tinylm.use_backend("numpy"):
        with threadpool_limits(3, user_api="blas"):  # a count no machine's default makes by chance here
            assert blas_threads() == [3] * len(blas_threads())
            with tinylm.use_backend("cython"):
                assert blas_threads() == [1] * len(blas_threads())
                tinylm.set_backend("cython")  # setting the backend in use again changes nothing
                assert blas_threads() == [1] * len(blas_threads())
            assert blas_threads() == [3] * len(blas_threads())


@pytest.mark.skipif(not backends.is_usable("cython"), reason="the compiled kernels are not built")
def test_the_gemm_kernel_starts_no_team_while_numpy_blas_has_threads_of_its_own():
    """Called directly, with no cython backend holding NumPy's BLAS at one thread, the gemm
    kernel makes one OpenBLAS call on BLAS's threads instead of a team of OpenBLAS calls
    (two pools on the same cores); with BLAS at one thread, the team."""
    from threadpoolctl import threadpool_limits

    from tinylm.kernels.cpu import blas, gemm

    if not blas_threads() or blas.numpy_cblas() is None or blas.numpy_cblas().threads is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS whose thread count can be read here")
    big = 1 << 10  # a product far above the work per thread
    with tinylm.use_backend("numpy"):
        with threadpool_limits(2, user_api="blas"):
            assert gemm._threads(big, big, big) == 1
        with threadpool_limits(1, user_api="blas"):
            assert gemm._threads(big, big, big) == tinylm.kernels.get_num_threads()


@pytest.mark.parametrize("threads", [1, 2])
def test_linear_and_matmul_agree_between_numpy_and_cython(threads):
    """The products of Linear and MatMul (through the gemm kernel: NumPy's @ on numpy, the
    OpenMP team on cython, every size parallel here) and all their gradients."""
    from strategies import run_with_threads

    from tinylm.nn import functional as F

    rng = np.random.default_rng(7)
    data = {name: rng.standard_normal(shape).astype(np.float32)
            for name, shape in (("x", (3, 40, 64)), ("w", (96, 64)), ("b", (96,)), ("m", (96, 48)),
                                ("a", (50, 64)), ("g", (3, 40, 48)))}

    def run():
        leaves = {name: tinylm.Tensor(data[name].copy(), requires_grad=True) for name in "xwbma"}
        y = F.linear(leaves["x"], leaves["w"], leaves["b"])  # (3, 40, 96)
        z = y @ leaves["m"]  # (3, 40, 48): batch axes folded into rows
        square = leaves["a"] @ leaves["w"].T  # (50, 96): 2-D @ 2-D
        ((z * tinylm.Tensor(data["g"])).sum() + (square * square).sum()).backward()
        return [t.numpy() for t in (y, z, square)] + [leaves[name].grad.numpy() for name in "xwbma"]

    results = {}
    for backend in ("numpy", "cython"):
        with tinylm.use_backend(backend):
            results[backend] = run_with_threads(threads, run)
    for got, expected in zip(results["cython"], results["numpy"]):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
