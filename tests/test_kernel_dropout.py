"""The Cython dropout kernels against their NumPy reference.

Property: for any shape, dtype, p in [0, 1], seed and counter map (offset, block, gap),
both draw the same mask bit for bit and give the same outputs and gradients, on 1 or 2
threads; the share kept is about 1 - p, and the expected output equals the input; the
default counter map draws the masks drawn before the map existed; a counter map that is
negative, has gaps without blocks or would pass the uint64 range is refused.

The dropout family's tests, all in this file: the Cython kernels
(``kernels/cpu/dropout.pyx``) first, then the CUDA kernels (``kernels/cuda/dropout.cu``)
against the same reference, through the CPU emulation and on a GPU when one is usable,
and their launch wrappers' refusal of bad input."""

import numpy as np
import pytest
from cuda_support import EXAMPLES, Device, devices, dtypes, geometries, strided
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import run_with_threads, seeds

from tinylm import kernels
from tinylm.kernels.cpu import dropout as compiled
from tinylm.kernels.cuda import dropout as cuda_dropout
from tinylm.reference import dropout as ref_dropout
from tinylm.reference import dropout as reference


@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7),
       dtype=st.sampled_from([np.float32, np.float64]), p=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]),
       seed=st.integers(0, 2**64 - 1), noncontiguous=st.booleans())
def test_same_mask_and_values_as_reference(shape, dtype, p, seed, noncontiguous):
    rng = np.random.default_rng(seed % 2**32)
    x = rng.standard_normal(shape).astype(dtype)
    if noncontiguous and x.ndim >= 2:
        x = x.swapaxes(0, 1)
    y, mask = compiled.dropout_forward(x, p, seed)
    want_y, want_mask = reference.dropout_forward(x, p, seed)
    np.testing.assert_array_equal(mask, want_mask)
    np.testing.assert_array_equal(y, want_y)
    g = rng.standard_normal(x.shape).astype(dtype)
    np.testing.assert_array_equal(compiled.dropout_backward(g, mask, p), reference.dropout_backward(g, mask, p))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_the_kept_share_is_one_minus_p_and_the_mean_is_unchanged(p):
    x = np.ones(200_000, np.float32)
    y, mask = compiled.dropout_forward(x, p, 7)
    assert abs(mask.mean() - (1 - p)) < 0.005  # 0.005 is over 4 standard deviations
    assert abs(y.mean() - 1.0) < 0.02


@pytest.mark.skipif(not kernels.openmp_enabled(), reason="built without OpenMP: the kernels run on one thread only")
def test_one_and_two_threads_draw_the_same_mask():
    x = np.random.default_rng(0).standard_normal((300, 400)).astype(np.float32)
    one = run_with_threads(1, compiled.dropout_forward, x, 0.3, 12345)
    two = run_with_threads(2, compiled.dropout_forward, x, 0.3, 12345)
    np.testing.assert_array_equal(one[1], two[1])
    np.testing.assert_array_equal(one[0], two[0])


@pytest.mark.parametrize("module", [compiled, reference], ids=["cython", "numpy"])
def test_p_outside_zero_one_is_refused(module):
    with pytest.raises(ValueError, match=r"dropout: p must be in \[0, 1\], got 1.5"):
        module.dropout_forward(np.zeros(3, np.float32), 1.5, 0)


# Counter maps: small ones, and ones whose largest counter lands near (or past) the uint64 range.
offsets = st.one_of(st.integers(0, 2**20), st.integers(2**64 - 2**10, 2**64 - 1))
gaps = st.one_of(st.integers(0, 2**10), st.integers(2**62, 2**63))
counter_maps = st.tuples(offsets, st.integers(0, 12), gaps).map(lambda m: m if m[1] else (m[0], 0, 0))


def fits_in_uint64(size, offset, block, gap):
    """Whether the largest counter, plus one, stays within uint64 (what the checks demand)."""
    last = size - 1
    return size == 0 or last + offset + (last // block if block else 0) * gap + 1 <= 2**64 - 1


@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7),
       dtype=st.sampled_from([np.float32, np.float64]), p=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]),
       seed=st.integers(0, 2**64 - 1), counter_map=counter_maps)
def test_same_mask_as_reference_for_any_counter_map(shape, dtype, p, seed, counter_map):
    x = np.random.default_rng(seed % 2**32).standard_normal(shape).astype(dtype)
    if not fits_in_uint64(x.size, *counter_map):
        for module in (compiled, reference):
            with pytest.raises(ValueError, match="dropout_forward: the counter map .* past the uint64 range"):
                module.dropout_forward(x, p, seed, *counter_map)
        return
    y, mask = compiled.dropout_forward(x, p, seed, *counter_map)
    want_y, want_mask = reference.dropout_forward(x, p, seed, *counter_map)
    np.testing.assert_array_equal(mask, want_mask)
    np.testing.assert_array_equal(y, want_y)


def old_mask(shape, p, seed):
    """The mask as drawn before the counter map: counter k + 1 for element k, in flat C order."""
    counters = np.arange(1, int(np.prod(shape)) + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed % 2**64) + counters * np.uint64(reference.GOLDEN_GAMMA)
        bits = reference.splitmix64(z) >> np.uint64(40)
    return (bits >= reference.dropout_threshold(p)).astype(np.uint8).reshape(shape)


@pytest.mark.parametrize("shape", [(), (5,), (3, 4), (2, 3, 5)])
def test_the_default_counter_map_draws_the_masks_of_before(shape):
    x = np.ones(shape, np.float32)
    for seed in (0, 7, 2**63 + 5):
        want = old_mask(shape, 0.5, seed)
        for module in (compiled, reference):
            np.testing.assert_array_equal(module.dropout_forward(x, 0.5, seed)[1], want)
            np.testing.assert_array_equal(module.dropout_forward(x, 0.5, seed, 0, 0, 0)[1], want)
    mask = reference.dropout_forward(np.ones(4000, np.float32), 0.5, 3, 0, 7, 0)[1]  # blocks without gaps
    np.testing.assert_array_equal(mask, old_mask((4000,), 0.5, 3))
    assert not np.array_equal(reference.dropout_forward(np.ones(4000), 0.5, 3, 1)[1], mask)  # the offset moves it


@pytest.mark.parametrize("module", [compiled, reference], ids=["cython", "numpy"])
def test_a_bad_counter_map_is_refused(module):
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="dropout_forward: offset must be >= 0, got -1"):
        module.dropout_forward(x, 0.5, 0, -1)
    with pytest.raises(ValueError, match="dropout_forward: gap=4 needs a block > 0"):
        module.dropout_forward(x, 0.5, 0, 0, 0, 4)
    with pytest.raises(TypeError, match="dropout_forward: block must be an integer, got bool"):
        module.dropout_forward(x, 0.5, 0, 0, True, 0)
    with pytest.raises(TypeError, match="dropout_forward: gap must be an integer, got float"):
        module.dropout_forward(x, 0.5, 0, 0, 2, 1.0)
    with pytest.raises(ValueError, match=r"reaches 18446744073709551615 for 12 elements, past the uint64 range"):
        module.dropout_forward(x, 0.5, 0, 2**64 - 12)
    module.dropout_forward(x, 0.5, 0, 2**64 - 13)  # the largest counter plus one is 2^64 - 1: allowed


def test_a_mask_of_another_shape_is_refused():
    with pytest.raises(ValueError, match="dropout_backward: mask"):
        compiled.dropout_backward(np.zeros(4, np.float32), np.ones(3, np.uint8), 0.5)


# ---------------------------------------------------------------- CUDA (kernels/cuda/dropout.cu)
# Against the reference through the CPU emulation, and on a GPU when one is usable.

@devices
@settings(max_examples=EXAMPLES)
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9), dtype=dtypes,
       p=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]), seed=st.one_of(seeds, st.integers(-(2**70), 2**70)),
       noncontiguous=st.booleans(), geometry=geometries)
def test_dropout_matches_bit_for_bit(device, shape, dtype, p, seed, noncontiguous, geometry):
    device.require()
    threads, max_blocks = geometry
    rng = np.random.default_rng(abs(seed) % 2**32)
    x = strided(rng, shape, dtype, noncontiguous)
    y, mask = cuda_dropout.dropout_forward(device.put(x), p, seed, threads=threads, max_blocks=max_blocks)
    expected_y, expected_mask = ref_dropout.dropout_forward(x, p, seed)
    np.testing.assert_array_equal(Device.get(mask), expected_mask)
    assert Device.get(mask).dtype == np.uint8
    np.testing.assert_array_equal(Device.get(y), expected_y)
    grad = strided(rng, shape, dtype, noncontiguous)
    got = cuda_dropout.dropout_backward(device.put(grad), device.put(expected_mask), p, threads=threads,
                                   max_blocks=max_blocks)
    np.testing.assert_array_equal(Device.get(got), ref_dropout.dropout_backward(grad, expected_mask, p))


@devices
@settings(max_examples=EXAMPLES)
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9), dtype=dtypes,
       p=st.sampled_from([0.1, 0.5, 0.9]), seed=seeds, counter_map=counter_maps, geometry=geometries)
def test_dropout_matches_bit_for_bit_for_any_counter_map(device, shape, dtype, p, seed, counter_map, geometry):
    device.require()
    threads, max_blocks = geometry
    x = strided(np.random.default_rng(seed), shape, dtype, False)
    if not fits_in_uint64(x.size, *counter_map):
        with pytest.raises(ValueError, match="dropout_forward: the counter map .* past the uint64 range"):
            cuda_dropout.dropout_forward(device.put(x), p, seed, *counter_map)
        return
    y, mask = cuda_dropout.dropout_forward(device.put(x), p, seed, *counter_map, threads=threads,
                                           max_blocks=max_blocks)
    expected_y, expected_mask = ref_dropout.dropout_forward(x, p, seed, *counter_map)
    np.testing.assert_array_equal(Device.get(mask), expected_mask)
    np.testing.assert_array_equal(Device.get(y), expected_y)
    if counter_map == (0, 0, 0):
        np.testing.assert_array_equal(Device.get(mask), old_mask(shape, p, seed))


@pytest.mark.usefixtures("launches_refused")
def test_the_cuda_wrappers_refuse_bad_input_before_launching():
    f32 = np.float32
    x = np.zeros((3, 4), f32)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\], got 1.5"):
        cuda_dropout.dropout_forward(x, 1.5, 0)
    with pytest.raises(TypeError, match="dropout_forward: seed must be an int"):
        cuda_dropout.dropout_forward(x, 0.5, 1.5)
    with pytest.raises(TypeError, match="dropout_backward: mask must be uint8"):
        cuda_dropout.dropout_backward(x, np.ones((3, 4), bool), 0.5)
    with pytest.raises(ValueError, match=r"dropout_backward: mask \(4, 3\) must have grad_y's shape \(3, 4\)"):
        cuda_dropout.dropout_backward(x, np.ones((4, 3), np.uint8), 0.5)
    with pytest.raises(TypeError, match="dropout_forward: x must be float32 or float64, got int32"):
        cuda_dropout.dropout_forward(np.zeros(3, np.int32), 0.5, 0)
    with pytest.raises(ValueError, match="dropout_forward: gap=2 needs a block > 0"):
        cuda_dropout.dropout_forward(x, 0.5, 0, 0, 0, 2)
    with pytest.raises(ValueError, match="dropout_forward: block must be >= 0, got -3"):
        cuda_dropout.dropout_forward(x, 0.5, 0, 0, -3, 2)
    with pytest.raises(ValueError, match="dropout_forward: the counter map .* past the uint64 range"):
        cuda_dropout.dropout_forward(x, 0.5, 0, 0, 1, 2**62)
