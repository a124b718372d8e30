/* A packed single-precision matrix product, C = A·B or C += A·B, in the structure of
 * BLIS and of Goto's "Anatomy of high-performance matrix multiplication".
 *
 *   A (m, k) is read through two strides, A[i, p] = a[i·rsa + p·csa], so a transposed or
 *   strided A needs no copy; B (k, n) is packed once (tinylm_gemm_pack_b) into a buffer
 *   that many products reuse: the LSTM's recurrent weight is packed once per sequence and
 *   multiplied 64 times. C (m, n) has unit column stride and row stride ldc.
 *
 * Three ideas, from the inside out (docs/learn/14-gemm-microkernel.md draws them):
 *
 * 1. The micro-kernel keeps an MR x NR tile of C in vector registers and adds one rank-1
 *    update per step of k: NR/W vector loads of B, MR broadcasts of A, MR·NR/W fused
 *    multiply-adds (W floats per vector). Every float loaded is used MR or NR/W times, so
 *    the loads keep up with the FMA units, which is all a matrix product needs.
 * 2. Packing lays both operands out in the order the micro-kernel reads them: B as
 *    NR-wide column panels (k rows of NR floats, one after the other), A as MR-row panels
 *    (k columns of MR floats). The kernel then walks two contiguous arrays at unit stride,
 *    and the ragged edges (m, n not multiples of MR, NR) are zeros in the packed copies,
 *    so the kernel itself never branches on a size; a partial tile of C is written
 *    through a small buffer (tile), never past C's end.
 * 3. Blocking: k in slices of KC (one slice of an MR-panel and of an NR-panel stay in L1,
 *    or just past it in L2, while the tiles that use them are computed), m in blocks of MC rows (the packed MC x KC block of A
 *    stays in L2), n in chunks of NC columns (a KC x NC slice of B stays in L2 while every
 *    block of A passes), and n split between threads by whole panels, so each core reads
 *    only its own share of the packed B (the LSTM's 1 MiB weight: 512 KiB a core, in its
 *    L2) and each element of C is computed by one thread in one order: the result does
 *    not depend on the thread count.
 *
 * The instruction set is chosen at build time (setup.py compiles with -march=native):
 *   AVX-512F            8 x 32 tile, 16 zmm accumulators (of 32 registers)
 *   AVX2 + FMA          6 x 16 tile, 12 ymm accumulators (of 16), as BLIS's Haswell sgemm
 *   anything else       4 x 8 tile in plain C, which the compiler vectorises as it can (8
 *                       accumulators fit SSE2's 16 registers: 4 x 16 spilled, at a quarter the speed)
 * Define TINYLM_GEMM_NO_AVX512 (or TINYLM_GEMM_PORTABLE) to take a narrower path on a
 * wider machine; tests/test_kernel_gemm.py builds every path this CPU can run that way.
 */
#ifndef TINYLM_GEMM_H
#define TINYLM_GEMM_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "tinylm_parallel.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX512F__) && !defined(TINYLM_GEMM_NO_AVX512) && !defined(TINYLM_GEMM_PORTABLE)
#include <immintrin.h>
#define TINYLM_GEMM_ISA "avx512"
#define TINYLM_GEMM_VECTORS 1
typedef __m512 tinylm_vec;
#define TINYLM_GEMM_W 16 /* floats in a vector */
#define TINYLM_GEMM_MR 8
#define TINYLM_GEMM_NR 32
#define tinylm_vec_zero() _mm512_setzero_ps()
#define tinylm_vec_load(p) _mm512_loadu_ps(p)
#define tinylm_vec_store(p, v) _mm512_storeu_ps((p), (v))
#define tinylm_vec_broadcast(x) _mm512_set1_ps(x)
#define tinylm_vec_fma(a, b, c) _mm512_fmadd_ps((a), (b), (c)) /* a·b + c, rounded once */
#define tinylm_vec_add(a, b) _mm512_add_ps((a), (b))
#elif defined(__AVX2__) && defined(__FMA__) && !defined(TINYLM_GEMM_PORTABLE)
#include <immintrin.h>
#define TINYLM_GEMM_ISA "avx2+fma"
#define TINYLM_GEMM_VECTORS 1
typedef __m256 tinylm_vec;
#define TINYLM_GEMM_W 8
#define TINYLM_GEMM_MR 6
#define TINYLM_GEMM_NR 16
#define tinylm_vec_zero() _mm256_setzero_ps()
#define tinylm_vec_load(p) _mm256_loadu_ps(p)
#define tinylm_vec_store(p, v) _mm256_storeu_ps((p), (v))
#define tinylm_vec_broadcast(x) _mm256_set1_ps(x)
#define tinylm_vec_fma(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define tinylm_vec_add(a, b) _mm256_add_ps((a), (b))
#else
#define TINYLM_GEMM_ISA "portable"
#define TINYLM_GEMM_VECTORS 0
#define TINYLM_GEMM_MR 4
#define TINYLM_GEMM_NR 8
#endif

#define TINYLM_GEMM_KC 256 /* k per slice: an MR-panel slice (8 KiB) and an NR-panel slice (16-32 KiB) */
#define TINYLM_GEMM_MC 96  /* rows of A per packed block: 96 x 256 floats = 96 KiB, in L2 */
#ifndef TINYLM_GEMM_NC
#define TINYLM_GEMM_NC 256 /* columns of B per sweep over A: a KC x NC slice of it (256 KiB) stays in L2 */
#endif
#define TINYLM_GEMM_ALIGN 64

static inline int64_t tinylm_gemm_min(int64_t x, int64_t y) { return x < y ? x : y; }

/* Floats in B packed for a (k, n) B: ceil(n / NR) panels of k x NR. */
static inline int64_t tinylm_gemm_packed_size(int64_t k, int64_t n) {
    return (n + TINYLM_GEMM_NR - 1) / TINYLM_GEMM_NR * k * TINYLM_GEMM_NR;
}

/* B[p, j] = b[p·rsb + j·csb] (k, n) -> packed: panel q (columns q·NR .. q·NR + NR - 1)
 * holds k rows of NR floats and starts at packed + q·k·NR; columns past n are zeros. */
static void tinylm_gemm_pack_b(int64_t k, int64_t n, const float *b, int64_t rsb, int64_t csb, float *packed) {
    const int64_t NR = TINYLM_GEMM_NR, panels = (n + NR - 1) / NR;
    for (int64_t q = 0; q < panels; q++) {
        const int64_t j0 = q * NR, width = tinylm_gemm_min(NR, n - j0);
        for (int64_t p = 0; p < k; p++) {
            float *dst = packed + (q * k + p) * NR;
            const float *src = b + p * rsb + j0 * csb;
            for (int64_t j = 0; j < width; j++) dst[j] = src[j * csb];
            for (int64_t j = width; j < NR; j++) dst[j] = 0.0f;
        }
    }
}

/* The mc x kc block of A at a (A[i, p] = a[i·rsa + p·csa]) -> MR-row panels: panel r
 * (rows r·MR ..) holds kc columns of MR floats at packed + r·MR·kc; rows past mc are zeros. */
static void tinylm_gemm_pack_a(int64_t mc, int64_t kc, const float *a, int64_t rsa, int64_t csa, float *packed) {
    const int64_t MR = TINYLM_GEMM_MR;
    for (int64_t i0 = 0; i0 < mc; i0 += MR) {
        const int64_t height = tinylm_gemm_min(MR, mc - i0);
        float *dst = packed + i0 * kc;
        for (int64_t p = 0; p < kc; p++) {
            for (int64_t i = 0; i < height; i++) dst[p * MR + i] = a[(i0 + i) * rsa + p * csa];
            for (int64_t i = height; i < MR; i++) dst[p * MR + i] = 0.0f;
        }
    }
}

/* The micro-kernel: the MR x NR tile at c (row stride ldc) = Σ_p a[p·MR + i] · b[p·NR + j]
 * over p < kc, plus the tile's old values when accumulate (never read otherwise: C may
 * hold garbage). a and b are one packed MR-panel and one packed NR-panel. */
static inline void tinylm_gemm_micro(int64_t kc, const float *restrict a, const float *restrict b,
                                     float *restrict c, int64_t ldc, int accumulate) {
    enum { MR = TINYLM_GEMM_MR, NR = TINYLM_GEMM_NR };
#if TINYLM_GEMM_VECTORS
    enum { V = NR / TINYLM_GEMM_W }; /* vectors per row of the tile */
    tinylm_vec acc[MR][V];           /* the tile: MR·V registers, the compiler keeps them there */
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < V; v++) acc[i][v] = tinylm_vec_zero();
    for (int64_t p = 0; p < kc; p++) {  /* one rank-1 update: a column of A times a row of B */
        tinylm_vec row[V];
#pragma GCC unroll 4
        for (int v = 0; v < V; v++) row[v] = tinylm_vec_load(b + v * TINYLM_GEMM_W);
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            tinylm_vec ai = tinylm_vec_broadcast(a[i]);
#pragma GCC unroll 4
            for (int v = 0; v < V; v++) acc[i][v] = tinylm_vec_fma(ai, row[v], acc[i][v]);
        }
        a += MR;
        b += NR;
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < V; v++) {
            float *out = c + i * ldc + v * TINYLM_GEMM_W;
            tinylm_vec_store(out, accumulate ? tinylm_vec_add(tinylm_vec_load(out), acc[i][v]) : acc[i][v]);
        }
#else
    float acc[MR][NR];
    memset(acc, 0, sizeof acc);
    for (int64_t p = 0; p < kc; p++) {
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < NR; j++) acc[i][j] += a[i] * b[j];
        a += MR;
        b += NR;
    }
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) c[i * ldc + j] = accumulate ? c[i * ldc + j] + acc[i][j] : acc[i][j];
#endif
}

/* The height x width tile of C at out (at most MR x NR) from one packed MR-panel slice a
 * and NR-panel slice b: the micro-kernel straight into C for a whole tile; an edge tile
 * is computed whole into `tile` (MR·NR floats) and only its valid part written, so
 * nothing past C's edge is touched. */
static inline void tinylm_gemm_tile(int64_t kc, const float *a, const float *b, float *out, int64_t ldc,
                                    int64_t height, int64_t width, int add, float *tile) {
    const int64_t MR = TINYLM_GEMM_MR, NR = TINYLM_GEMM_NR;
    if (height == MR && width == NR) {
        tinylm_gemm_micro(kc, a, b, out, ldc, add);
        return;
    }
    tinylm_gemm_micro(kc, a, b, tile, NR, 0);
    for (int64_t r = 0; r < height; r++)
        for (int64_t j = 0; j < width; j++) out[r * ldc + j] = add ? out[r * ldc + j] + tile[r * NR + j] : tile[r * NR + j];
}

/* One thread's share of C (m, n) = A·B (or += when accumulate): the columns of B's
 * packed panels [q0, q1), for an A packed whole by tinylm_gemm_pack_a(m, k, ...) (row
 * panel r at packed_a + r·MR·k, so the slice of k from p0 starts at + p0·MR). For
 * callers that run their own OpenMP region and share one packed A among its threads
 * (the LSTM's loop over time, tinylm_lstm.h); `tile` is MR·NR floats of scratch. */
static void tinylm_gemm_panels(int64_t m, int64_t n, int64_t k, const float *packed_a, const float *packed_b,
                               int64_t q0, int64_t q1, float *c, int64_t ldc, int accumulate, float *tile) {
    const int64_t MR = TINYLM_GEMM_MR, NR = TINYLM_GEMM_NR, KC = TINYLM_GEMM_KC;
    for (int64_t p0 = 0; p0 < k; p0 += KC) {
        const int64_t kc = tinylm_gemm_min(KC, k - p0);
        const int add = accumulate || p0 > 0;
        for (int64_t q = q0; q < q1; q++) {
            const float *panel = packed_b + (q * k + p0) * NR;
            const int64_t j0 = q * NR, width = tinylm_gemm_min(NR, n - j0);
            for (int64_t i = 0; i < m; i += MR)
                tinylm_gemm_tile(kc, packed_a + i * k + p0 * MR, panel, c + i * ldc + j0, ldc,
                                 tinylm_gemm_min(MR, m - i), width, add, tile);
        }
    }
}

/* C (m, n) = A (m, k) · B (k, n), or C += A·B when accumulate, with B packed by
 * tinylm_gemm_pack_b(k, n, ...), on up to `threads` OpenMP threads (one without OpenMP).
 * Returns 0, or -1 when a thread could not allocate its packing buffer (C is then
 * partly written). The caller has checked every size and stride: nothing is checked here. */
static int tinylm_sgemm_packed(int64_t m, int64_t n, int64_t k, const float *a, int64_t rsa, int64_t csa,
                               const float *packed_b, float *c, int64_t ldc, int accumulate, int threads) {
    const int64_t MR = TINYLM_GEMM_MR, NR = TINYLM_GEMM_NR, KC = TINYLM_GEMM_KC, MC = TINYLM_GEMM_MC;
    const int64_t NC = TINYLM_GEMM_NC;
    if (m <= 0 || n <= 0) return 0;
    if (k <= 0) { /* an empty sum: C = 0, or C unchanged */
        if (!accumulate)
            for (int64_t i = 0; i < m; i++) memset(c + i * ldc, 0, (size_t)n * sizeof(float));
        return 0;
    }
    const int64_t panels = (n + NR - 1) / NR;
    if (threads > panels) threads = (int)panels;
    if (threads < 1) threads = 1;
    /* The packed block of A: at most MC rows (rounded up to MR) by KC, or less for a small A. */
    const int64_t block_rows = (tinylm_gemm_min(MC, m) + MR - 1) / MR * MR;
    const int64_t block_floats = block_rows * tinylm_gemm_min(KC, k);
    const size_t block_bytes = /* aligned_alloc wants a multiple of the alignment */
        (size_t)((block_floats * 4 + TINYLM_GEMM_ALIGN - 1) / TINYLM_GEMM_ALIGN * TINYLM_GEMM_ALIGN);
    int failed = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) reduction(| : failed)
#endif
    {
        int64_t first, last; /* this thread's panels */
        tinylm_my_share(panels, 1, &first, &last);
        float *block = first < last ? (float *)aligned_alloc(TINYLM_GEMM_ALIGN, block_bytes) : NULL;
        float tile[TINYLM_GEMM_MR * TINYLM_GEMM_NR] __attribute__((aligned(TINYLM_GEMM_ALIGN)));
        if (first < last && block == NULL) failed = 1;
        for (int64_t q0 = first; block != NULL && q0 < last; q0 += NC / NR) { /* NC columns at a time */
          const int64_t q1 = tinylm_gemm_min(last, q0 + NC / NR);
          for (int64_t p0 = 0; p0 < k; p0 += KC) {
            const int64_t kc = tinylm_gemm_min(KC, k - p0);
            const int add = accumulate || p0 > 0; /* later slices of k add to what the first wrote */
            for (int64_t i0 = 0; i0 < m; i0 += MC) {
                const int64_t mc = tinylm_gemm_min(MC, m - i0);
                tinylm_gemm_pack_a(mc, kc, a + i0 * rsa + p0 * csa, rsa, csa, block);
                for (int64_t q = q0; q < q1; q++) {
                    const float *panel = packed_b + (q * k + p0) * NR;
                    const int64_t j0 = q * NR, width = tinylm_gemm_min(NR, n - j0);
                    for (int64_t i = 0; i < mc; i += MR)
                        tinylm_gemm_tile(kc, block + i * kc, panel, c + (i0 + i) * ldc + j0, ldc,
                                         tinylm_gemm_min(MR, mc - i), width, add, tile);
                }
            }
          }
        }
        free(block);
    }
    return failed ? -1 : 0;
}

/* The machine's FMA rate as this tile would see it: `iterations` rounds of MR·NR/W
 * independent vector FMAs on registers, no loads. The floating-point operations done are
 * 2·MR·NR·iterations; time it to get the peak one core reaches. Returns a value computed
 * from every accumulator, so the compiler cannot drop the loop. */
static float tinylm_gemm_fma_probe(int64_t iterations) {
    enum { MR = TINYLM_GEMM_MR, NR = TINYLM_GEMM_NR };
#if TINYLM_GEMM_VECTORS
    enum { V = NR / TINYLM_GEMM_W };
    tinylm_vec acc[MR][V], x = tinylm_vec_broadcast(0.999999f), y = tinylm_vec_broadcast(1e-7f);
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < V; v++) acc[i][v] = tinylm_vec_broadcast((float)(i + v));
    for (int64_t s = 0; s < iterations; s++)
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
            for (int v = 0; v < V; v++) acc[i][v] = tinylm_vec_fma(acc[i][v], x, y);
    float total = 0.0f, lanes[TINYLM_GEMM_W];
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < V; v++) {
            tinylm_vec_store(lanes, acc[i][v]);
            for (int l = 0; l < TINYLM_GEMM_W; l++) total += lanes[l];
        }
    return total;
#else
    float acc[MR][NR];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) acc[i][j] = (float)(i + j);
    for (int64_t s = 0; s < iterations; s++)
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < NR; j++) acc[i][j] = acc[i][j] * 0.999999f + 1e-7f;
    float total = 0.0f;
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) total += acc[i][j];
    return total;
#endif
}
#endif
