"""The CPU emulation of CUDA (kernels/cuda/tinylm_cuda_emulation.h, emulation.py) does what
CUDA does, on small kernels written for the purpose: thread and block indices (1-D and
2-D blocks), shuffles with CUDA's rules for lanes out of range, block reductions,
__syncthreads with static and dynamic shared memory, atomics; and its guard bands
catch a kernel that writes outside its arguments or into a const one.

Also: a launch checks its arguments against the kernel's C signature (source.py) first.
"""

import shutil

import numpy as np
import pytest

from tinylm.kernels.cuda.emulation import emulation_unavailable_reason
from tinylm.kernels.cuda.launch import CudaSource
from tinylm.kernels.cuda.source import COMMON_HEADER, HERE, parse_kernels

reason = emulation_unavailable_reason()
needs_emulation = pytest.mark.skipif(reason is not None, reason=f"CUDA emulation unavailable: {reason}")

TEST_KERNELS = r"""
#include "tinylm_cuda_common.cuh"

__device__ int flat_thread() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }
__device__ int flat_block() { return blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z); }

extern "C" __global__ void shuffles(const int* in, int* down, int* xor_five, int* from_seven, int* ids) {
    const int threads = blockDim.x * blockDim.y * blockDim.z;
    const int g = flat_block() * threads + flat_thread();
    const int v = in[g];
    down[g] = __shfl_down_sync(TINYLM_FULL_MASK, v, 3);
    xor_five[g] = __shfl_xor_sync(TINYLM_FULL_MASK, v, 5);
    from_seven[g] = __shfl_sync(TINYLM_FULL_MASK, v, 7);
    ids[4 * g] = threadIdx.x;
    ids[4 * g + 1] = threadIdx.y;
    ids[4 * g + 2] = threadIdx.z;
    ids[4 * g + 3] = flat_block();
}

extern "C" __global__ void reductions(const double* in, double* sums, double* maxes, double* lse, long long n) {
    for (long long row = blockIdx.x; row < n; row += gridDim.x) {
        const double x = in[row * blockDim.x + threadIdx.x];
        const double s = block_sum(x);
        const double m = block_max(x);
        const MaxSum<double> ms = block_max_sum(max_sum_add(max_sum_empty<double>(), x));
        if (threadIdx.x == 1) {
            sums[row] = s;
            maxes[row] = m;
            lse[row] = ms.max + log(ms.sum);
        }
    }
}

extern "C" __global__ void neighbours(int* out) {
    __shared__ int values[1024];
    const int t = threadIdx.x;
    values[t] = t * t;
    __syncthreads();
    out[blockIdx.x * blockDim.x + t] = values[(t + 1) % blockDim.x];
}

extern "C" __global__ void reversed(float* out) {
    TINYLM_DYNAMIC_SHARED(float, values);
    const int t = threadIdx.x;
    values[t] = (float)t;
    __syncthreads();
    out[t] = values[blockDim.x - 1 - t];
}

extern "C" __global__ void unwritten_shared(float* out) {
    TINYLM_DYNAMIC_SHARED(float, values);
    out[threadIdx.x] = values[threadIdx.x];
}

extern "C" __global__ void only_block_zero_writes_shared(float* out) {
    TINYLM_DYNAMIC_SHARED(float, values);
    if (blockIdx.x == 0) values[threadIdx.x] = 1.0f;
    __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = values[threadIdx.x];
}

extern "C" __global__ void atomics(int* counter, double* total) {
    atomicAdd(counter, 1);
    atomicAdd(total, 0.5);
}

extern "C" __global__ void writes_past_the_end(float* out, long long n) {
    if (threadIdx.x == 0) out[n] = 1.0f;
}

extern "C" __global__ void writes_into_const(const float* in) {
    if (threadIdx.x == 0) const_cast<float*>(in)[0] = 2.0f;
}

extern "C" __global__ void scalars(float* out, float a, double b, int c, unsigned int d, long long e,
                                   unsigned long long f) {
    if (threadIdx.x == 0) out[0] = a + (float)b + (float)c + (float)d + (float)e + (float)f;
}
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cuda")
    shutil.copy(HERE / COMMON_HEADER, folder)
    (folder / "tests.cu").write_text(TEST_KERNELS)
    return CudaSource(str(folder / "tests.cu"))


def test_signatures_are_parsed(source):
    kernels = source.kernels
    assert set(kernels) >= {"shuffles", "reductions", "scalars"}
    params = kernels["scalars"].params
    assert [(p.name, p.c_type, p.pointer) for p in params] == [
        ("out", "float", True), ("a", "float", False), ("b", "double", False), ("c", "int", False),
        ("d", "unsigned int", False), ("e", "long long", False), ("f", "unsigned long long", False)]
    assert kernels["shuffles"].params[0].const and not kernels["shuffles"].params[1].const
    with pytest.raises(ValueError, match="half x"):
        parse_kernels('extern "C" __global__ void k(half x) {}')


@needs_emulation
@pytest.mark.parametrize("block", [(64,), (16, 4), (8, 2, 4)], ids=["1d", "2d", "3d"])
def test_thread_indices_and_shuffles_follow_cuda(source, block):
    threads, grid = int(np.prod(block)), (3, 2)
    total = threads * 6
    values = np.random.default_rng(0).integers(-1000, 1000, total).astype(np.int32)
    down, xor_five, from_seven = (np.zeros(total, np.int32) for _ in range(3))
    ids = np.zeros(4 * total, np.int32)
    source.launch("shuffles", grid, block, (values, down, xor_five, from_seven, ids))
    g = np.arange(total)
    lane, warp_start = g % 32, g - g % 32
    np.testing.assert_array_equal(down, np.where(lane + 3 < 32, values[np.minimum(g + 3, total - 1)], values))
    np.testing.assert_array_equal(xor_five, values[warp_start + (lane ^ 5)])
    np.testing.assert_array_equal(from_seven, values[warp_start + 7])
    t, b = g % threads, g // threads
    bx = (block + (1, 1))[:3]
    expected = np.stack([t % bx[0], (t // bx[0]) % bx[1], t // (bx[0] * bx[1]), b], axis=1).reshape(-1)
    np.testing.assert_array_equal(ids, expected)


@needs_emulation
@pytest.mark.parametrize("threads", [32, 64, 96, 256])
def test_block_reductions_give_every_thread_the_result(source, threads):
    rows = 5
    values = np.random.default_rng(threads).standard_normal((rows, threads)) * 30
    values[2] = -np.inf  # an all -inf row: max -inf, sum 0, lse -inf (no NaN)
    sums, maxes, lse = (np.zeros(rows) for _ in range(3))
    source.launch("reductions", 2, threads, (values, sums, maxes, lse, np.int64(rows)))
    finite = np.arange(rows) != 2
    np.testing.assert_allclose(sums[finite], values[finite].sum(axis=1), rtol=1e-12)
    np.testing.assert_array_equal(maxes, values.max(axis=1))
    expected_lse = np.log(np.exp(values[finite] - maxes[finite, None]).sum(axis=1)) + maxes[finite]
    np.testing.assert_allclose(lse[finite], expected_lse, rtol=1e-12)
    assert lse[2] == -np.inf


@needs_emulation
def test_static_and_dynamic_shared_memory_are_shared_by_the_block(source):
    out = np.zeros(2 * 64, np.int32)
    source.launch("neighbours", 2, 64, (out,))
    t = np.arange(64)
    np.testing.assert_array_equal(out, np.tile((t + 1) % 64, 2) ** 2)
    reversed_out = np.zeros(32, np.float32)
    source.launch("reversed", 1, 32, (reversed_out,), shared_bytes=32 * 4)
    np.testing.assert_array_equal(reversed_out, np.arange(31, -1, -1))


@needs_emulation
def test_unwritten_shared_memory_reads_as_nan(source):
    out = np.zeros(32, np.float32)
    source.launch("unwritten_shared", 1, 32, (out,), shared_bytes=32 * 4)
    assert np.isnan(out).all()


@needs_emulation
def test_each_block_gets_fresh_dynamic_shared_memory(source):
    """On a GPU a block never sees another block's shared memory: here, what a block did
    not write itself reads as NaN even after an earlier block wrote it."""
    out = np.zeros(3 * 32, np.float32)
    source.launch("only_block_zero_writes_shared", 3, 32, (out,), shared_bytes=32 * 4)
    assert (out[:32] == 1).all()
    assert np.isnan(out[32:]).all()


@needs_emulation
def test_atomics_add_every_contribution(source):
    counter, total = np.zeros(1, np.int32), np.zeros(1, np.float64)
    source.launch("atomics", 3, 128, (counter, total))
    assert counter[0] == 384 and total[0] == 192.0


@needs_emulation
def test_guard_bands_catch_writes_outside_an_argument(source):
    out = np.zeros(10, np.float32)
    with pytest.raises(RuntimeError, match=r"writes_past_the_end: the kernel wrote outside its argument out"):
        source.launch("writes_past_the_end", 1, 32, (out, np.int64(10)))
    with pytest.raises(RuntimeError, match="wrote into in, declared const"):
        source.launch("writes_into_const", 1, 32, (np.ones(4, np.float32),))


@needs_emulation
def test_scalars_arrive_with_their_c_types(source):
    out = np.zeros(1, np.float32)
    source.launch("scalars", 1, 32, (out, np.float32(1.5), np.float64(2.0), np.int32(-3), np.uint32(4),
                                     np.int64(-5), np.uint64(6)))
    assert out[0] == 5.5


@needs_emulation
def test_an_oversized_launch_is_an_error_not_a_crash(source):
    with pytest.raises(RuntimeError, match="more than 48 KiB"):
        source.launch("reversed", 1, 32, (np.zeros(32, np.float32),), shared_bytes=49 * 1024)
    with pytest.raises(RuntimeError, match="bad geometry"):
        source.launch("reversed", 1, 2048, (np.zeros(2048, np.float32),), shared_bytes=4)


# Argument checks happen before anything is compiled or launched: no compiler needed.

def test_arguments_are_checked_against_the_c_signature(source):
    out = np.zeros(1, np.float32)
    good = [out, np.float32(1), np.float64(2), np.int32(3), np.uint32(4), np.int64(5), np.uint64(6)]
    with pytest.raises(TypeError, match=r"scalars: a \(float a\) needs a NumPy float32 scalar, got float"):
        source.launch("scalars", 1, 32, [out, 1.0] + good[2:])
    with pytest.raises(TypeError, match=r"scalars: c \(int c\) needs a NumPy int32 scalar, got int64"):
        source.launch("scalars", 1, 32, good[:3] + [np.int64(3)] + good[4:])
    with pytest.raises(TypeError, match=r"scalars: out \(float\* out\) needs float32, got float64"):
        source.launch("scalars", 1, 32, [np.zeros(1)] + good[1:])
    with pytest.raises(ValueError, match="scalars: out must be C-contiguous"):
        source.launch("scalars", 1, 32, [np.zeros(4, np.float32)[::2]] + good[1:])
    with pytest.raises(TypeError, match="takes 7 arguments, got 6"):
        source.launch("scalars", 1, 32, good[:6])
    frozen = np.zeros(1, np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="out is written by the kernel but is read-only"):
        source.launch("scalars", 1, 32, [frozen] + good[1:])
    buffer = np.zeros(8, np.int32)
    with pytest.raises(ValueError, match="down is written by the kernel and overlaps in"):
        source.launch("shuffles", 1, 32, (buffer[:4], buffer[2:6], np.zeros(4, np.int32), np.zeros(4, np.int32),
                                          np.zeros(16, np.int32)))
    with pytest.raises(KeyError, match="no kernel named 'nope'"):
        source.launch("nope", 1, 32, ())
