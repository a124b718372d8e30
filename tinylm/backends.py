"""Backends and the kernel registry.

A *backend* decides two things: which array module new tensors live in (NumPy on the
CPU, CuPy on the GPU) and which implementation serves each *kernel*, a plain array
function with no Tensors in it, such as ``embedding_backward(grad_output, ids,
num_embeddings)``.

=========  ========  ===========================================================
backend    arrays    kernels
=========  ========  ===========================================================
numpy      NumPy     the reference: plain NumPy in ``tinylm/reference``, the oracle
cython     NumPy     compiled kernels in ``kernels/cpu/*.pyx`` (OpenMP if built so)
cupy       CuPy      the same reference code run on CuPy arrays
cuda       CuPy      raw CUDA kernels in ``kernels/cuda/*.cu`` through ``cupy.RawModule``
=========  ========  ===========================================================

``KERNELS`` below is the one registry: for each kernel name, the implementation that
serves each backend, written as ``"module:function"`` so nothing is imported before
it is needed. A backend with no entry for a kernel falls back to the reference.
``import tinylm`` never imports CuPy.

One thread pool on the CPU: while the cython backend is the one in use, NumPy's BLAS runs
on one thread, and all parallel work, the matrix products included (``gemm``: one
single-threaded BLAS call per thread on its block), runs on the kernels' OpenMP team.
Two pools on the same cores fight: OpenBLAS's threads keep spinning after each call and
take the cores an OpenMP team then needs (a transformer step took 135-187 ms instead of
57 with both pools at two threads; benchmarks/NOTES.md, "Threads"). The limit is set when
the cython backend becomes current and the BLAS's own thread count is restored when
another backend does (``_share_the_cores``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from typing import Callable, Iterator

import numpy as np

BACKENDS = ("numpy", "cython", "cupy", "cuda")
GPU_BACKENDS = ("cupy", "cuda")

KERNELS: dict[str, dict[str, str]] = {
    "gemm": {  # op(a) @ op(b), the matrix products of Linear and MatMul
        "numpy": "tinylm.reference.gemm:gemm",
        "cython": "tinylm.kernels.cpu.gemm:gemm",  # OpenBLAS blocks on the kernels' OpenMP team
    },
    "embedding_forward": {
        "numpy": "tinylm.reference.embedding:embedding_forward",
        "cython": "tinylm.kernels.cpu.embedding:embedding_forward",
        "cuda": "tinylm.kernels.cuda.embedding:embedding_forward",
    },
    "embedding_backward": {
        "numpy": "tinylm.reference.embedding:embedding_backward",
        "cython": "tinylm.kernels.cpu.embedding:embedding_backward",
        "cuda": "tinylm.kernels.cuda.embedding:embedding_backward",
    },
    "lstm_stack_step": {  # one step of every layer at once, for generation (LSTMStepper)
        "numpy": "tinylm.reference.lstm:lstm_stack_step",
        "cython": "tinylm.kernels.cpu.lstm:lstm_stack_step",
    },
    "int8_matmul": {  # x @ (scale · q)ᵀ with int8 weights: quantized generation (tinylm.quantize)
        "numpy": "tinylm.reference.int8_matmul:int8_matmul",
        "cython": "tinylm.kernels.cpu.int8_matmul:int8_matmul",
        "cuda": "tinylm.kernels.cuda.int8_matmul:int8_matmul",
    },
    "lstm_layer_forward": {
        "numpy": "tinylm.reference.lstm:lstm_layer_forward",
        "cython": "tinylm.kernels.cpu.lstm:lstm_layer_forward",
        "cuda": "tinylm.kernels.cuda.lstm:lstm_layer_forward",
    },
    "lstm_layer_forward_from_input": {  # from x: the input projection made inside the loop (nn.LSTM)
        "numpy": "tinylm.reference.lstm:lstm_layer_forward_from_input",
        "cython": "tinylm.kernels.cpu.lstm:lstm_layer_forward_from_input",
    },
    "lstm_layer_backward": {
        "numpy": "tinylm.reference.lstm:lstm_layer_backward",
        "cython": "tinylm.kernels.cpu.lstm:lstm_layer_backward",
        "cuda": "tinylm.kernels.cuda.lstm:lstm_layer_backward",
    },
    "gru_layer_forward": {
        "numpy": "tinylm.reference.gru:gru_layer_forward",
        "cython": "tinylm.kernels.cpu.gru:gru_layer_forward",
        "cuda": "tinylm.kernels.cuda.gru:gru_layer_forward",
    },
    "gru_layer_backward": {
        "numpy": "tinylm.reference.gru:gru_layer_backward",
        "cython": "tinylm.kernels.cpu.gru:gru_layer_backward",
        "cuda": "tinylm.kernels.cuda.gru:gru_layer_backward",
    },
    "rnn_layer_forward": {
        "numpy": "tinylm.reference.rnn:rnn_layer_forward",
        "cython": "tinylm.kernels.cpu.rnn:rnn_layer_forward",
        "cuda": "tinylm.kernels.cuda.rnn:rnn_layer_forward",
    },
    "rnn_layer_backward": {
        "numpy": "tinylm.reference.rnn:rnn_layer_backward",
        "cython": "tinylm.kernels.cpu.rnn:rnn_layer_backward",
        "cuda": "tinylm.kernels.cuda.rnn:rnn_layer_backward",
    },
    "cross_entropy_forward": {
        "numpy": "tinylm.reference.cross_entropy:cross_entropy_forward",
        "cython": "tinylm.kernels.cpu.cross_entropy:cross_entropy_forward",
        "cuda": "tinylm.kernels.cuda.cross_entropy:cross_entropy_forward",
    },
    "cross_entropy_backward": {
        "numpy": "tinylm.reference.cross_entropy:cross_entropy_backward",
        "cython": "tinylm.kernels.cpu.cross_entropy:cross_entropy_backward",
        "cuda": "tinylm.kernels.cuda.cross_entropy:cross_entropy_backward",
    },
    "distill_kl_forward": {  # knowledge distillation's soft loss (tinylm.ops.distill_kl)
        "numpy": "tinylm.reference.distill_kl:distill_kl_forward",
        "cython": "tinylm.kernels.cpu.distill_kl:distill_kl_forward",
    },
    "distill_kl_backward": {
        "numpy": "tinylm.reference.distill_kl:distill_kl_backward",
        "cython": "tinylm.kernels.cpu.distill_kl:distill_kl_backward",
    },
    "attention_softmax_forward": {
        "numpy": "tinylm.reference.attention_softmax:attention_softmax_forward",
        "cython": "tinylm.kernels.cpu.attention_softmax:attention_softmax_forward",
        "cuda": "tinylm.kernels.cuda.attention_softmax:attention_softmax_forward",
    },
    "attention_softmax_backward": {
        "numpy": "tinylm.reference.attention_softmax:attention_softmax_backward",
        "cython": "tinylm.kernels.cpu.attention_softmax:attention_softmax_backward",
        "cuda": "tinylm.kernels.cuda.attention_softmax:attention_softmax_backward",
    },
    "layer_norm_forward": {
        "numpy": "tinylm.reference.layer_norm:layer_norm_forward",
        "cython": "tinylm.kernels.cpu.layer_norm:layer_norm_forward",
        "cuda": "tinylm.kernels.cuda.layer_norm:layer_norm_forward",
    },
    "layer_norm_backward": {
        "numpy": "tinylm.reference.layer_norm:layer_norm_backward",
        "cython": "tinylm.kernels.cpu.layer_norm:layer_norm_backward",
        "cuda": "tinylm.kernels.cuda.layer_norm:layer_norm_backward",
    },
    "dropout_forward": {
        "numpy": "tinylm.reference.dropout:dropout_forward",
        "cython": "tinylm.kernels.cpu.dropout:dropout_forward",
        "cuda": "tinylm.kernels.cuda.dropout:dropout_forward",
    },
    "dropout_backward": {
        "numpy": "tinylm.reference.dropout:dropout_backward",
        "cython": "tinylm.kernels.cpu.dropout:dropout_backward",
        "cuda": "tinylm.kernels.cuda.dropout:dropout_backward",
    },
    "causal_attention_forward": {
        "numpy": "tinylm.reference.causal_attention:causal_attention_forward",
        "cython": "tinylm.kernels.cpu.causal_attention:causal_attention_forward",
        "cuda": "tinylm.kernels.cuda.causal_attention:causal_attention_forward",  # fused, flash-attention style
    },
    "causal_attention_backward": {
        "numpy": "tinylm.reference.causal_attention:causal_attention_backward",
        "cython": "tinylm.kernels.cpu.causal_attention:causal_attention_backward",
        "cuda": "tinylm.kernels.cuda.causal_attention:causal_attention_backward",  # fused, recomputes p from logsumexp
    },
    "gelu_forward": {
        "numpy": "tinylm.reference.gelu:gelu_forward",
        "cython": "tinylm.kernels.cpu.gelu:gelu_forward",
        "cuda": "tinylm.kernels.cuda.gelu:gelu_forward",
    },
    "gelu_backward": {
        "numpy": "tinylm.reference.gelu:gelu_backward",
        "cython": "tinylm.kernels.cpu.gelu:gelu_backward",
        "cuda": "tinylm.kernels.cuda.gelu:gelu_backward",
    },
    "adam_update": {
        "numpy": "tinylm.reference.adam:adam_update",
        "cython": "tinylm.kernels.cpu.adam:adam_update",
        "cuda": "tinylm.kernels.cuda.adam:adam_update",
    },
}

_current: str | None = None  # resolved on first use, so importing tinylm stays cheap
_loaded: dict[tuple[str, str], Callable] = {}
_blas_controller = None  # threadpoolctl's handle on the BLAS libraries, found once (a scan takes a millisecond)
_blas_limit = None  # while the cython backend is current: the limit of those libraries to one thread


# --------------------------------------------------------------------------- backends


def _check_usable(name: str) -> None:
    """Raise a one-line error when backend ``name`` cannot run on this machine."""
    if name not in BACKENDS:
        raise ValueError(f"set_backend: unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "cython":
        try:
            importlib.import_module("tinylm.kernels.cpu.embedding")
        except ImportError as exc:
            raise RuntimeError(
                f"set_backend('cython'): the compiled kernels are not importable ({exc}); "
                "install tinylm with `pip install .` or `pip install -e .` to build them"
            ) from None
    if name in GPU_BACKENDS:
        try:
            import cupy
        except ImportError:
            raise RuntimeError(
                f"set_backend({name!r}): CuPy is not installed; install the extra: pip install 'tinylm[cuda]'"
            ) from None
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # CuPy raises its own error types when no driver is present
            raise RuntimeError(f"set_backend({name!r}): no usable GPU ({type(exc).__name__}: {exc})") from None
        if count == 0:
            raise RuntimeError(f"set_backend({name!r}): no usable GPU (CUDA reports 0 devices)")


def is_usable(name: str) -> bool:
    """Whether backend ``name`` can run here (the quiet form of ``set_backend``'s check)."""
    try:
        _check_usable(name)
        return True
    except RuntimeError:
        return False


def _default_backend() -> str:
    """``$TINYLM_BACKEND`` if set, else ``cython`` when its kernels are built, else ``numpy``,
    saying once why the compiled kernels are not used (an explicit choice stays quiet)."""
    requested = os.environ.get("TINYLM_BACKEND")
    if requested:
        _check_usable(requested)
        return requested
    try:
        _check_usable("cython")
    except RuntimeError as exc:
        warnings.warn(f"tinylm: running on the numpy reference, several times slower: {exc}. "
                      "Choose it with --backend numpy (or TINYLM_BACKEND=numpy) to silence this.",
                      RuntimeWarning, stacklevel=3)
        return "numpy"
    return "cython"


def _share_the_cores(name: str) -> None:
    """One thread pool (see the module docstring): NumPy's BLAS on one thread while ``name``
    is cython, its own thread count back for any other backend. threadpoolctl's limit
    covers the BLAS libraries loaded when it first runs, NumPy's among them (it is loaded
    with NumPy); a switch then costs about 0.1 ms."""
    global _blas_controller, _blas_limit
    if name == "cython" and _blas_limit is None:
        from tinylm.kernels.cpu import blas

        if blas.numpy_cblas() is None:  # MKL, Accelerate...: no team replaces BLAS's threads, so keep them
            return
        try:
            if _blas_controller is None:
                from threadpoolctl import ThreadpoolController

                _blas_controller = ThreadpoolController()
            _blas_limit = _blas_controller.limit(limits=1, user_api="blas")
        except Exception as exc:  # threadpoolctl could not inspect this process: two pools, slower, not wrong
            warnings.warn(f"tinylm: could not hold NumPy's BLAS at one thread ({exc}); the kernels' "
                          "thread team and BLAS's threads may compete for the cores", RuntimeWarning, stacklevel=3)
    elif name != "cython" and _blas_limit is not None:
        _blas_limit.restore_original_limits()
        _blas_limit = None


def set_blas_threads(threads: int) -> None:
    """NumPy's BLAS on ``threads`` threads under every backend but cython, which holds it at
    one while it is current (``_share_the_cores``) and gives this count back when another
    backend takes over. Use it, not threadpoolctl directly, under the cython backend:
    a direct limit would undo the one pool until the next switch of backend."""
    from threadpoolctl import threadpool_limits

    held = _blas_limit is not None
    if held:
        _share_the_cores("numpy")  # give BLAS its own count back, then change that count
    threadpool_limits(int(threads), user_api="blas")
    if held:
        _share_the_cores("cython")  # and hold it at one again, remembering the new count


def get_backend() -> str:
    """The name of the backend in use."""
    global _current
    if _current is None:
        name = _default_backend()
        _share_the_cores(name)
        _current = name
    return _current


def set_backend(name: str) -> None:
    """Use backend ``name`` from now on (see the module docstring for the choices)."""
    global _current
    _check_usable(name)
    if name != _current:
        _share_the_cores(name)
    _current = name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """``with tinylm.use_backend("numpy"): ...`` runs the block on ``name``, then restores."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def kernel_for(name: str, backend: str, fallback: bool = True) -> Callable | None:
    """The implementation of kernel ``name`` for ``backend``: its own, else (with
    ``fallback``) the reference, else None."""
    if name not in KERNELS:
        raise KeyError(f"kernel: no kernel named {name!r}; known: {', '.join(sorted(KERNELS))}")
    implementations = KERNELS[name]
    if backend not in implementations:
        if not fallback:
            return None
        backend = "numpy"
    key = (name, backend)
    if key not in _loaded:
        module_name, function_name = implementations[backend].split(":")
        _loaded[key] = getattr(importlib.import_module(module_name), function_name)
    return _loaded[key]


def kernel(name: str) -> Callable:
    """The implementation of kernel ``name`` that serves the current backend."""
    return kernel_for(name, get_backend())


# ----------------------------------------------------------------------- array modules


def is_gpu_array(array) -> bool:
    """True for a CuPy array, found by its type so that CuPy is never imported here."""
    return type(array).__module__.split(".")[0] == "cupy"


def device_of(array) -> str:
    return "cuda" if is_gpu_array(array) else "cpu"


def get_array_module(array):
    """``cupy`` for CuPy arrays, ``numpy`` otherwise: write ``xp = get_array_module(x)``."""
    if is_gpu_array(array):
        import cupy

        return cupy
    return np


def default_array_module():
    """The module new tensors are created in under the current backend."""
    if get_backend() in GPU_BACKENDS:
        import cupy

        return cupy
    return np


def to_device(array, device: str):
    """Copy ``array`` to ``"cpu"`` or ``"cuda"`` (no copy if it is there already)."""
    if device == device_of(array):
        return array
    if device == "cpu":
        return array.get()
    if device == "cuda":
        import cupy

        return cupy.asarray(array)
    raise ValueError(f"to: unknown device {device!r}; use 'cpu' or 'cuda'")


def index_add(target, index, values) -> None:
    """``target[index] += values`` where repeated indices add up (NumPy's ``add.at``).

    Plain ``target[index] += values`` would keep only the last write of a repeated
    index; gradients of gathers need every contribution.
    """
    if is_gpu_array(target):
        import cupyx

        cupyx.scatter_add(target, index, values)
    else:
        np.add.at(target, index, values)
