"""The Cython embedding_backward against its NumPy reference.

Property: for any ids in range and any grad_output of matching shape (float32 or
float64, contiguous or not, any thread count) the two give the same gradient; for any
bad input both refuse with the same kind of error, and the process never crashes.

The embedding family's tests, all in this file: the Cython kernels
(``kernels/cpu/embedding.pyx``) first, then the CUDA kernels
(``kernels/cuda/embedding.cu``) against the same reference, through the CPU emulation
and on a GPU when one is usable, and their launch wrappers' refusal of bad input.
"""

import numpy as np
import pytest
from cuda_support import EXAMPLES, Device, devices, dtypes, geometries, strided
from cuda_support import close as cuda_close
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import run_with_threads, seeds

from tinylm import kernels
from tinylm.kernels.cpu.embedding import embedding_backward as compiled
from tinylm.kernels.cuda import embedding as cuda_embedding
from tinylm.reference import embedding as ref_embedding
from tinylm.reference.embedding import embedding_backward as reference

ID_DTYPES = [np.int64, np.int32, np.uint8, np.int16]
TOLERANCE = {np.float32: 1e-5, np.float64: 1e-12}  # relative; both sum in the same order


@st.composite
def embedding_problems(draw):
    ids_shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))
    dim = draw(st.sampled_from([0, 1, 3, 16, 17, 40]))
    vocab = draw(st.integers(1, 12))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(seeds))
    ids = rng.integers(0, vocab, size=ids_shape).astype(draw(st.sampled_from(ID_DTYPES)))
    scale = draw(st.sampled_from([1.0, 1e4, 1e-4]))
    if draw(st.booleans()) and dim > 0:  # a strided view, not contiguous
        grad = (scale * rng.standard_normal(ids_shape + (2 * dim,))).astype(dtype)[..., ::2]
    else:
        grad = (scale * rng.standard_normal(ids_shape + (dim,))).astype(dtype)
    if draw(st.booleans()) and ids.ndim >= 2:  # transposed ids and grad: Fortran-ordered views
        ids, grad = ids.T, np.moveaxis(grad, range(ids.ndim), range(ids.ndim - 1, -1, -1))
    return grad, ids, vocab


@given(problem=embedding_problems())
def test_compiled_matches_reference(problem):
    grad, ids, vocab = problem
    expected = reference(grad, ids, vocab)
    got = compiled(grad, ids, vocab)
    assert got.dtype == grad.dtype and got.shape == (vocab, grad.shape[-1])
    np.testing.assert_allclose(got, expected, rtol=TOLERANCE[grad.dtype.type], atol=0)


@pytest.mark.skipif(not kernels.openmp_enabled(), reason="built without OpenMP: the kernels run on one thread only")
@given(problem=embedding_problems())
def test_one_and_two_threads_give_identical_results(problem):
    grad, ids, vocab = problem
    one = run_with_threads(1, compiled, grad, ids, vocab)
    two = run_with_threads(2, compiled, grad, ids, vocab)
    np.testing.assert_array_equal(one, two)  # each element summed in the same order


def test_many_repeats_of_one_id_with_wide_rows_use_every_thread_block():
    rng = np.random.default_rng(1)
    grad = rng.standard_normal((5000, 100)).astype(np.float32)
    ids = np.zeros(5000, dtype=np.int64)
    ids[::7] = 3
    expected = reference(grad, ids, 4)
    for threads in (1, 2):
        np.testing.assert_allclose(run_with_threads(threads, compiled, grad, ids, 4), expected, rtol=1e-5)


@given(
    bad_id=st.one_of(st.integers(-(2**40), -1), st.integers(5, 2**40)),
    position=st.integers(0, 9),
    seed=seeds,
)
@pytest.mark.parametrize("kernel", [compiled, reference], ids=["cython", "numpy"])
def test_out_of_range_ids_raise_index_error_naming_the_id(kernel, bad_id, position, seed):
    ids = np.random.default_rng(seed).integers(0, 5, size=10)
    ids[position] = bad_id
    grad = np.ones((10, 4), dtype=np.float32)
    with pytest.raises(IndexError, match=rf"id {bad_id} is out of range for a vocabulary of 5"):
        kernel(grad, ids, 5)


@pytest.mark.parametrize("kernel", [compiled, reference], ids=["cython", "numpy"])
@pytest.mark.parametrize(
    "grad, ids, vocab, error",
    [
        (np.ones((3, 4), np.float32), np.zeros(4, np.int64), 2, ValueError),  # ids shape != grad rows
        (np.ones((3, 4), np.float32), np.zeros((3, 1), np.int64), 2, ValueError),
        (np.ones((3, 4), np.float32), np.zeros(3, np.float64), 2, TypeError),  # float ids
        (np.ones((3, 4), np.float32), np.zeros(3, np.int64), 0, IndexError),  # empty vocabulary
    ],
)
def test_bad_shapes_and_dtypes_are_refused(kernel, grad, ids, vocab, error):
    with pytest.raises(error, match="embedding_backward"):
        kernel(grad, ids, vocab)


def test_unsigned_ids_beyond_int64_are_reported_as_they_are():
    ids = np.array([1, 2**64 - 1], dtype=np.uint64)
    with pytest.raises(IndexError, match=f"id {2**64 - 1} is out of range"):
        compiled(np.ones((2, 3), np.float32), ids, 5)


def test_compiled_refuses_half_precision_and_negative_vocabulary():
    with pytest.raises(TypeError, match="float16"):
        compiled(np.ones((3, 4), np.float16), np.zeros(3, np.int64), 2)
    with pytest.raises(ValueError, match="num_embeddings must be >= 0"):
        compiled(np.ones((0, 4), np.float32), np.zeros(0, np.int64), -1)


# ------------------------------------------------------------------ the forward gather

from tinylm.kernels.cpu.embedding import embedding_forward as compiled_forward  # noqa: E402
from tinylm.reference.embedding import embedding_forward as reference_forward  # noqa: E402


@given(problem=embedding_problems(), seed=seeds)
def test_forward_gather_matches_reference(problem, seed):
    grad, ids, vocab = problem  # grad's shape gives D; the table is drawn fresh
    dim = grad.shape[-1]
    table = np.random.default_rng(seed).standard_normal((vocab, 2 * dim)).astype(grad.dtype)[:, ::2]  # strided
    got = compiled_forward(table, ids)
    assert got.shape == ids.shape + (dim,) and got.dtype == table.dtype
    np.testing.assert_array_equal(got, reference_forward(table, ids))  # a copy: exact


@pytest.mark.parametrize("kernel", [compiled_forward, reference_forward], ids=["cython", "numpy"])
@pytest.mark.parametrize("bad_id", [-1, 5, 2**40])
def test_forward_refuses_out_of_range_ids(kernel, bad_id):
    with pytest.raises(IndexError, match=rf"embedding_forward: id {bad_id} is out of range for a vocabulary of 5"):
        kernel(np.zeros((5, 3), np.float32), np.array([0, bad_id]))


# ---------------------------------------------------------------- CUDA (kernels/cuda/embedding.cu)
# Against the reference through the CPU emulation, and on a GPU when one is usable.

@devices
@settings(max_examples=EXAMPLES)
@given(ids_shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
       dim=st.sampled_from([1, 3, 17, 40]), vocab=st.integers(1, 9), dtype=dtypes, seed=seeds,
       id_dtype=st.sampled_from([np.int64, np.int32, np.uint8]), noncontiguous=st.booleans(), geometry=geometries)
def test_embedding(device, ids_shape, dim, vocab, dtype, seed, id_dtype, noncontiguous, geometry):
    device.require()
    threads, max_blocks = geometry
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, ids_shape).astype(id_dtype)
    weight = strided(rng, (vocab, dim), dtype, noncontiguous)
    grad = strided(rng, ids_shape + (dim,), dtype, noncontiguous)
    out = cuda_embedding.embedding_forward(device.put(weight), device.put(ids), threads=threads, max_blocks=max_blocks)
    np.testing.assert_array_equal(Device.get(out), ref_embedding.embedding_forward(weight, ids))  # a copy: exact
    got = cuda_embedding.embedding_backward(device.put(grad), device.put(ids), vocab, threads=threads,
                                            max_blocks=max_blocks)
    cuda_close(got, ref_embedding.embedding_backward(grad, ids, vocab), dtype, scale=max(1, ids.size) ** 0.5)


@pytest.mark.usefixtures("launches_refused")
def test_the_cuda_wrappers_refuse_bad_input_before_launching():
    f32 = np.float32
    weight = np.zeros((5, 3), f32)
    for bad in (-1, 5, 2**40):
        with pytest.raises(IndexError, match=rf"embedding_forward: id {bad} is out of range for a vocabulary of 5"):
            cuda_embedding.embedding_forward(weight, np.array([0, bad, 1]))
        with pytest.raises(IndexError, match=rf"embedding_backward: id {bad} is out of range"):
            cuda_embedding.embedding_backward(np.zeros((3, 3), f32), np.array([0, bad, 1]), 5)
    with pytest.raises(IndexError, match=f"id {2**64 - 1} is out of range"):  # not wrapped by a cast to int64
        cuda_embedding.embedding_forward(weight, np.array([2**64 - 1], np.uint64))
    with pytest.raises(TypeError, match="embedding_forward: ids must be an integer array, got float64"):
        cuda_embedding.embedding_forward(weight, np.zeros(3))
    with pytest.raises(TypeError, match="embedding_forward: weight must be float32 or float64, got float16"):
        cuda_embedding.embedding_forward(weight.astype(np.float16), np.zeros(3, np.int64))
    with pytest.raises(ValueError,
                       match=r"embedding_forward: weight must be \(num_embeddings, dim\), got shape \(5,\)"):
        cuda_embedding.embedding_forward(np.zeros(5, f32), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"embedding_backward: grad_output \(3, 4\) does not match ids \(4,\)"):
        cuda_embedding.embedding_backward(np.zeros((3, 4), f32), np.zeros(4, np.int64), 2)
    with pytest.raises(ValueError, match="num_embeddings must be >= 0"):
        cuda_embedding.embedding_backward(np.zeros((0, 4), f32), np.zeros(0, np.int64), -1)
    with pytest.raises(TypeError, match="num_embeddings must be an int"):
        cuda_embedding.embedding_backward(np.zeros((1, 4), f32), np.zeros(1, np.int64), 2.0)
