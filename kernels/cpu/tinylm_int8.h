/* tinylm_int8.h: int8 weights times float32 activations, one vector at a time.
 *
 * Used by kernels/cpu/int8_matmul.pyx (int8_matmul at M = 1, and at M > 1 without BLAS)
 * and kernels/cpu/lstm.pyx (lstm_stack_step with int8 weights). The maths is that of
 * tinylm/reference/int8_matmul.py: a weight row is int8 values q[n, :] and one float32
 * scale s[n], and the scale factors out of the row's sum,
 *
 *     y[n] = s[n] · Σ_k float(q[n, k]) · x[k],
 *
 * so each int8 value is converted to float and multiplied into an accumulator, and
 * each output is scaled once. At batch 1 the time goes into reading the weights; int8
 * is 4x fewer bytes than float32, and the default LSTM's int8 weights (~0.8 MB) stay
 * in the L2 caches of two cores where its float32 ones (~3.2 MB) do not.
 *
 * The dot products of a row block, chosen at build time (setup.py compiles with
 * -march=native):
 *   - AVX-512 (__AVX512F__): 16 int8 -> 16 int32 -> 16 floats (vpmovsxbd, vcvtdq2ps),
 *     one fused multiply-add per 16 weights;
 *   - AVX2 + FMA (__AVX2__ and __FMA__): the same 8 at a time;
 *   - otherwise plain C with 8 partial sums, which GCC turns into SIMD code.
 * Four rows are done per pass so that each vector of x, once loaded, serves four rows,
 * and each row keeps its own accumulators (two per row in the vector paths, so that the
 * multiply-adds of a row do not wait on each other). The columns past the last whole
 * vector (K not a multiple of the width) go through a scalar loop: nothing is read
 * past a row's K values. The order of the additions differs between the three paths,
 * and from NumPy's, so results agree to float32 rounding, not bit for bit (with
 * integer-valued x and power-of-two scales every path is exact).
 *
 * Threads: tinylm_int8_matvec splits the output rows over `threads` OpenMP threads in
 * one contiguous block each (static), so a thread reads the same rows at every call
 * and keeps them in its core's L2. A row's result does not depend on the split.
 *
 * Nothing here checks arguments: the Python wrappers have checked shapes, dtypes and
 * contiguity, so q points at rows x cols values spaced ldq apart, x at cols floats and
 * scale and y at rows floats.
 */
#ifndef TINYLM_INT8_H
#define TINYLM_INT8_H
#include <stddef.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "tinylm_math.h"
#include "tinylm_parallel.h"
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

/* Which dot-product code this build uses: "avx512", "avx2" or "portable" (reported by
 * int8_matmul.instruction_set(), for benchmarks and tests). */
#if defined(__AVX512F__)
#define TINYLM_INT8_ISA "avx512"
#elif defined(__AVX2__) && defined(__FMA__)
#define TINYLM_INT8_ISA "avx2"
#else
#define TINYLM_INT8_ISA "portable"
#endif

static inline const char* tinylm_int8_isa(void) { return TINYLM_INT8_ISA; }

/* ---------------------------------------------------------- vector helpers */

#if defined(__AVX512F__)
/* 16 int8 at p -> 16 floats. */
static inline __m512 tinylm_int8_load16(const int8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)p)));
}
#endif

#if defined(__AVX2__) && defined(__FMA__)
/* 8 int8 at p -> 8 floats (a 64-bit load: nothing past p[7] is read). */
static inline __m256 tinylm_int8_load8(const int8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)p)));
}

static inline float tinylm_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

/* -------------------------------------------------- four rows, one vector */

/* out[r] = Σ_k q[r·ldq + k] · x[k] for r = 0..3 (unscaled). */
static inline void tinylm_int8_dot4(const float* x, const int8_t* q, ptrdiff_t ldq, ptrdiff_t cols, float out[4]) {
    const int8_t* q0 = q;
    const int8_t* q1 = q + ldq;
    const int8_t* q2 = q + 2 * ldq;
    const int8_t* q3 = q + 3 * ldq;
    ptrdiff_t k = 0;
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#if defined(__AVX512F__)
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps(), b2 = _mm512_setzero_ps(), b3 = _mm512_setzero_ps();
    for (; k + 32 <= cols; k += 32) {  /* two vectors of x per pass, one accumulator each */
        const __m512 xa = _mm512_loadu_ps(x + k), xb = _mm512_loadu_ps(x + k + 16);
        a0 = _mm512_fmadd_ps(tinylm_int8_load16(q0 + k), xa, a0);
        a1 = _mm512_fmadd_ps(tinylm_int8_load16(q1 + k), xa, a1);
        a2 = _mm512_fmadd_ps(tinylm_int8_load16(q2 + k), xa, a2);
        a3 = _mm512_fmadd_ps(tinylm_int8_load16(q3 + k), xa, a3);
        b0 = _mm512_fmadd_ps(tinylm_int8_load16(q0 + k + 16), xb, b0);
        b1 = _mm512_fmadd_ps(tinylm_int8_load16(q1 + k + 16), xb, b1);
        b2 = _mm512_fmadd_ps(tinylm_int8_load16(q2 + k + 16), xb, b2);
        b3 = _mm512_fmadd_ps(tinylm_int8_load16(q3 + k + 16), xb, b3);
    }
    for (; k + 16 <= cols; k += 16) {
        const __m512 xa = _mm512_loadu_ps(x + k);
        a0 = _mm512_fmadd_ps(tinylm_int8_load16(q0 + k), xa, a0);
        a1 = _mm512_fmadd_ps(tinylm_int8_load16(q1 + k), xa, a1);
        a2 = _mm512_fmadd_ps(tinylm_int8_load16(q2 + k), xa, a2);
        a3 = _mm512_fmadd_ps(tinylm_int8_load16(q3 + k), xa, a3);
    }
    s0 = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
    s1 = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
    s2 = _mm512_reduce_add_ps(_mm512_add_ps(a2, b2));
    s3 = _mm512_reduce_add_ps(_mm512_add_ps(a3, b3));
#elif defined(__AVX2__) && defined(__FMA__)
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
    for (; k + 16 <= cols; k += 16) {
        const __m256 xa = _mm256_loadu_ps(x + k), xb = _mm256_loadu_ps(x + k + 8);
        a0 = _mm256_fmadd_ps(tinylm_int8_load8(q0 + k), xa, a0);
        a1 = _mm256_fmadd_ps(tinylm_int8_load8(q1 + k), xa, a1);
        a2 = _mm256_fmadd_ps(tinylm_int8_load8(q2 + k), xa, a2);
        a3 = _mm256_fmadd_ps(tinylm_int8_load8(q3 + k), xa, a3);
        b0 = _mm256_fmadd_ps(tinylm_int8_load8(q0 + k + 8), xb, b0);
        b1 = _mm256_fmadd_ps(tinylm_int8_load8(q1 + k + 8), xb, b1);
        b2 = _mm256_fmadd_ps(tinylm_int8_load8(q2 + k + 8), xb, b2);
        b3 = _mm256_fmadd_ps(tinylm_int8_load8(q3 + k + 8), xb, b3);
    }
    for (; k + 8 <= cols; k += 8) {
        const __m256 xa = _mm256_loadu_ps(x + k);
        a0 = _mm256_fmadd_ps(tinylm_int8_load8(q0 + k), xa, a0);
        a1 = _mm256_fmadd_ps(tinylm_int8_load8(q1 + k), xa, a1);
        a2 = _mm256_fmadd_ps(tinylm_int8_load8(q2 + k), xa, a2);
        a3 = _mm256_fmadd_ps(tinylm_int8_load8(q3 + k), xa, a3);
    }
    s0 = tinylm_hsum8(_mm256_add_ps(a0, b0));
    s1 = tinylm_hsum8(_mm256_add_ps(a1, b1));
    s2 = tinylm_hsum8(_mm256_add_ps(a2, b2));
    s3 = tinylm_hsum8(_mm256_add_ps(a3, b3));
#else
    /* Eight partial sums per row, each a plain multiply-add chain: GCC vectorises the
     * j loops (it may not reorder one float sum, but these are eight separate sums). */
    float p0[8] = {0}, p1[8] = {0}, p2[8] = {0}, p3[8] = {0};
    for (; k + 8 <= cols; k += 8) {
        for (int j = 0; j < 8; j++) p0[j] += (float)q0[k + j] * x[k + j];
        for (int j = 0; j < 8; j++) p1[j] += (float)q1[k + j] * x[k + j];
        for (int j = 0; j < 8; j++) p2[j] += (float)q2[k + j] * x[k + j];
        for (int j = 0; j < 8; j++) p3[j] += (float)q3[k + j] * x[k + j];
    }
    for (int j = 0; j < 8; j++) {
        s0 += p0[j];
        s1 += p1[j];
        s2 += p2[j];
        s3 += p3[j];
    }
#endif
    for (; k < cols; k++) {  /* the tail: fewer columns than a vector */
        s0 += (float)q0[k] * x[k];
        s1 += (float)q1[k] * x[k];
        s2 += (float)q2[k] * x[k];
        s3 += (float)q3[k] * x[k];
    }
    out[0] = s0;
    out[1] = s1;
    out[2] = s2;
    out[3] = s3;
}

/* ------------------------------------------------------------ one row */

/* Σ_k q[k] · x[k] (unscaled), for the last rows < 4 of a block. */
static inline float tinylm_int8_dot1(const float* x, const int8_t* q, ptrdiff_t cols) {
    ptrdiff_t k = 0;
    float s = 0.0f;
#if defined(__AVX512F__)
    __m512 a = _mm512_setzero_ps();
    for (; k + 16 <= cols; k += 16) a = _mm512_fmadd_ps(tinylm_int8_load16(q + k), _mm512_loadu_ps(x + k), a);
    s = _mm512_reduce_add_ps(a);
#elif defined(__AVX2__) && defined(__FMA__)
    __m256 a = _mm256_setzero_ps();
    for (; k + 8 <= cols; k += 8) a = _mm256_fmadd_ps(tinylm_int8_load8(q + k), _mm256_loadu_ps(x + k), a);
    s = tinylm_hsum8(a);
#else
    float p[8] = {0};
    for (; k + 8 <= cols; k += 8)
        for (int j = 0; j < 8; j++) p[j] += (float)q[k + j] * x[k + j];
    for (int j = 0; j < 8; j++) s += p[j];
#endif
    for (; k < cols; k++) s += (float)q[k] * x[k];
    return s;
}

/* ------------------------------------------------------------ rows */

/* Rows [begin, end): y[n] = s[n] · Σ_k q[n, k] x[k], or y[n] += that when `accumulate`
 * (the second half of lstm_stack_step's [W_ih | W_hh] rows, with its own scales). */
static inline void tinylm_int8_rows(const float* x, const int8_t* q, ptrdiff_t ldq, const float* scale, float* y,
                                    ptrdiff_t begin, ptrdiff_t end, ptrdiff_t cols, int accumulate) {
    float sums[4];
    ptrdiff_t n = begin;
    for (; n + 4 <= end; n += 4) {
        tinylm_int8_dot4(x, q + n * ldq, ldq, cols, sums);
        for (int r = 0; r < 4; r++) y[n + r] = (accumulate ? y[n + r] : 0.0f) + scale[n + r] * sums[r];
    }
    for (; n < end; n++) {
        const float sum = tinylm_int8_dot1(x, q + n * ldq, cols);
        y[n] = (accumulate ? y[n] : 0.0f) + scale[n] * sum;
    }
}

/* y (rows,) = s · (q x), q (rows, cols) int8 with rows ldq apart, x (cols,), y written
 * (or added to, with `accumulate`); the rows split over `threads` OpenMP threads, one
 * contiguous block each, a multiple of 4 rows long (one serial call when threads <= 1). */
static inline void tinylm_int8_matvec(const float* x, const int8_t* q, ptrdiff_t ldq, const float* scale, float* y,
                                      ptrdiff_t rows, ptrdiff_t cols, int accumulate, int threads) {
    if (threads <= 1 || rows < 8) {
        tinylm_int8_rows(x, q, ldq, scale, y, 0, rows, cols, accumulate);
        return;
    }
    const ptrdiff_t block = ((rows + threads - 1) / threads + 3) / 4 * 4;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
    for (int t = 0; t < threads; t++) {
        const ptrdiff_t begin = (ptrdiff_t)t * block;
        const ptrdiff_t end = begin + block < rows ? begin + block : rows;
        if (begin < end) tinylm_int8_rows(x, q, ldq, scale, y, begin, end, cols, accumulate);
    }
}

/* ------------------------------------------------- a whole LSTM step */

/* The cell of units [j0, j1) from the gates' pre-activations p (4H,), i, f, c̃, o blocks of
 * H, activated in place. Short loops over one or two arrays each, so GCC vectorises them
 * (tinylm_expf is branch-free). */
static inline void tinylm_int8_cell(float* p, const float* c_prev, float* c_out, float* h_out, ptrdiff_t hidden,
                                    ptrdiff_t j0, ptrdiff_t j1) {
    float* restrict i = p;
    float* restrict f = p + hidden;
    float* restrict cand = p + 2 * hidden;
    float* restrict o = p + 3 * hidden;
    for (ptrdiff_t j = j0; j < j1; j++) i[j] = tinylm_sigmoidf(i[j]);
    for (ptrdiff_t j = j0; j < j1; j++) f[j] = tinylm_sigmoidf(f[j]);
    for (ptrdiff_t j = j0; j < j1; j++) cand[j] = tinylm_tanhf(cand[j]);
    for (ptrdiff_t j = j0; j < j1; j++) o[j] = tinylm_sigmoidf(o[j]);
    for (ptrdiff_t j = j0; j < j1; j++) c_out[j] = f[j] * c_prev[j] + i[j] * cand[j];
    for (ptrdiff_t j = j0; j < j1; j++) h_out[j] = o[j] * tinylm_tanhf(c_out[j]);
}

/* One time step of an L-layer LSTM stack with int8 weights, for batch-1 sampling
 * (tinylm/reference/lstm.py's lstm_stack_step; shapes as there, arrays C-contiguous):
 *
 *   gates0 (B, 4H)   layer 0's input part, bias included;   h, c (L, B, H) the state
 *   w_hh0 (4H, H) int8, w_hh0_scale (4H,)
 *   stacked (L-1, 4H, 2H) int8: [W_ih | W_hh] of each later layer, stacked_scale (L-1, 2, 4H)
 *   biases (L-1, 4H);   new_h, new_c (L, B, H) out;   pre (B, 4H) scratch
 *   fc (V, H) int8, fc_scale (V,), fc_bias (V,) or NULL;   logits (B, V) out
 *     (the output layer, logits = fc_scale · (fc new_h[L-1]) + fc_bias; none when fc is NULL)
 *
 * All layers run inside one OpenMP region. Thread t owns the hidden units [j0, j1) of
 * every layer: it computes the four gate rows of its units (rows g·H + j, g = i, f, g, o),
 * which is all a unit's cell needs, so the cell follows at once with no barrier; the
 * one barrier per layer is there because the next layer reads the whole new h. A thread
 * reads the same weight rows at every step, so its quarter-megabyte share of the default
 * model's int8 weights stays in its core's L2 from one token to the next (the float32
 * weights, four times the size, do not fit). Each unit block is a multiple of 4 rows
 * long, the dot4 grouping, so a row's sum does not depend on the thread count when H is
 * a multiple of 4.
 *
 * The output layer runs in the same region, after the last layer's barrier: thread t
 * owns a block of the V logits rows (a multiple of 4 rows long, as above), so a sampled
 * step wakes the team once, not twice (a separate int8_matmul call, with its own
 * region and Python wrapper, cost about 5 µs of a 40 µs step). */
static inline void tinylm_int8_lstm_stack_step(
        const float* gates0, const float* h, const float* c, const int8_t* w_hh0, const float* w_hh0_scale,
        const int8_t* stacked, const float* stacked_scale, const float* biases, float* new_h, float* new_c,
        float* pre, const int8_t* fc, const float* fc_scale, const float* fc_bias, float* logits, ptrdiff_t vocab,
        ptrdiff_t layers, ptrdiff_t batch, ptrdiff_t hidden, int threads) {
    const ptrdiff_t four = 4 * hidden;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
    {
        int64_t j0, j1;  /* this thread's units, whole groups of 4 rows (the dot4 grouping) */
        tinylm_my_share(hidden, 4, &j0, &j1);
        for (ptrdiff_t k = 0; k < layers; k++) {
            for (ptrdiff_t b = 0; b < batch && j0 < j1; b++) {
                float* p = pre + b * four;
                const float* h_k = h + (k * batch + b) * hidden;
                for (ptrdiff_t g = 0; g < 4; g++) {
                    const ptrdiff_t r0 = g * hidden + j0, r1 = g * hidden + j1;
                    if (k == 0) {
                        tinylm_int8_rows(h_k, w_hh0, hidden, w_hh0_scale, p, r0, r1, hidden, 0);
                        for (ptrdiff_t r = r0; r < r1; r++) p[r] += gates0[b * four + r];
                    } else {
                        const int8_t* w = stacked + (k - 1) * four * 2 * hidden;  /* (4H, 2H) */
                        const float* s = stacked_scale + (k - 1) * 2 * four;     /* (2, 4H) */
                        const float* x = new_h + ((k - 1) * batch + b) * hidden;  /* the layer below, this step */
                        tinylm_int8_rows(x, w, 2 * hidden, s, p, r0, r1, hidden, 0);                 /* W_ih x */
                        tinylm_int8_rows(h_k, w + hidden, 2 * hidden, s + four, p, r0, r1, hidden, 1);  /* + W_hh h */
                        for (ptrdiff_t r = r0; r < r1; r++) p[r] += biases[(k - 1) * four + r];
                    }
                }
                const float* c_k = c + (k * batch + b) * hidden;
                float* h_out = new_h + (k * batch + b) * hidden;
                float* c_out = new_c + (k * batch + b) * hidden;
                tinylm_int8_cell(p, c_k, c_out, h_out, hidden, j0, j1);
            }
#ifdef _OPENMP
#pragma omp barrier
#endif
        }
        if (fc != NULL) {  /* logits (B, V) from the last layer's new h, rows [v0, v1) */
            int64_t v0, v1;
            tinylm_my_share(vocab, 4, &v0, &v1);
            for (ptrdiff_t b = 0; b < batch && v0 < v1; b++) {
                float* y = logits + b * vocab;
                tinylm_int8_rows(new_h + ((layers - 1) * batch + b) * hidden, fc, hidden, fc_scale, y, v0, v1,
                                 hidden, 0);
                if (fc_bias != NULL)
                    for (ptrdiff_t n = v0; n < v1; n++) y[n] += fc_bias[n];
            }
        }
    }
}

/* w (rows, cols) float32 = s[n] · q[n, k]: dequantized rows for the M > 1 product,
 * which then runs through sgemm. The conversion vectorises as plain C. */
static inline void tinylm_int8_dequantize(const int8_t* q, ptrdiff_t ldq, const float* scale, float* w,
                                          ptrdiff_t rows, ptrdiff_t cols) {
    for (ptrdiff_t n = 0; n < rows; n++) {
        const float s = scale[n];
        const int8_t* row = q + n * ldq;
        float* out = w + n * cols;
        for (ptrdiff_t k = 0; k < cols; k++) out[k] = s * (float)row[k];
    }
}
#endif
