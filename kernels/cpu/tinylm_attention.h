/* One head's matrix products of causal attention on the packed micro-kernel
 * (tinylm_gemm.h), float32, one thread: causal_attention.pyx runs one head per thread.
 *
 * A head's products are small ((64, 32) by (32, 64) in the default model): a BLAS call
 * costs about as much in entry, checks and packing as the arithmetic. Here both operands
 * are packed into the caller's scratch and the tiles are computed directly, and the
 * causal mask is used to skip work: row i of the scores only needs keys j <= i, so an
 * MR-row panel of them needs the key panels up to its last row; and a causal matrix
 * (probabilities p, or dL/ds) times anything needs, for that panel, only the first
 * (last row + 1) columns: everything past them is zero. A transposed causal matrix
 * (pᵀ, dL/dsᵀ) is zero before the panel's first row instead.
 *
 * Scores entries past the panels computed are left unwritten: the softmax reads only
 * j <= i and writes zeros over the rest (causal_attention.pyx). Every element is the sum
 * over the same slices of k whichever thread computes it, as in tinylm_gemm.h.
 *
 * NaN and infinity: a tile multiplies the zeros of a causal matrix too, and 0 · NaN is
 * NaN, so a NaN or infinite value at position j reaches every row that attends to j
 * (i >= j), and may reach the rows of j's own MR-row tile before j as well. The NumPy
 * reference multiplies the whole (T, T) matrices, so there it reaches every row: the
 * kernels make NaN a subset of where the reference does, never less than the rows that
 * depend on j (tests/test_kernel_causal_attention.py).
 */
#ifndef TINYLM_ATTENTION_H
#define TINYLM_ATTENTION_H
#include <math.h>
#include "tinylm_gemm.h"
#include "tinylm_math.h"

/* Scratch floats for packing one head's left operand (up to T x max(T, hs)) and right
 * operand (up to max(T, hs) x max(T, hs)), so one pair of buffers serves every product. */
static inline int64_t tinylm_attention_packed_a_floats(int64_t steps, int64_t size) {
    const int64_t MR = TINYLM_GEMM_MR, wide = steps > size ? steps : size;
    return (steps + MR - 1) / MR * MR * wide;
}

static inline int64_t tinylm_attention_packed_b_floats(int64_t steps, int64_t size) {
    const int64_t a = tinylm_gemm_packed_size(size, steps), b = tinylm_gemm_packed_size(steps, size);
    return a > b ? a : b;
}

/* s (T, T), row stride T: s[i, j] = Σ_c x[i, c] · y[j, c] for the key panels that row i's
 * MR-panel needs (j up to the panel's last row, rounded up to NR); x, y (T, hs) row-major.
 * The scores q kᵀ, and in the backward dL/dp = g vᵀ. */
static void tinylm_attention_scores(int64_t steps, int64_t size, const float *x, const float *y, float *s,
                                    float *packed_a, float *packed_b, float *tile) {
    const int64_t MR = TINYLM_GEMM_MR, NR = TINYLM_GEMM_NR, KC = TINYLM_GEMM_KC;
    tinylm_gemm_pack_a(steps, size, x, size, 1, packed_a);
    tinylm_gemm_pack_b(size, steps, y, 1, size, packed_b); /* yᵀ (hs, T): column j is row j of y */
    for (int64_t i0 = 0; i0 < steps; i0 += MR) {
        const int64_t height = tinylm_gemm_min(MR, steps - i0);
        const int64_t keys = i0 + height, panels = (keys + NR - 1) / NR;
        for (int64_t p0 = 0; p0 < size; p0 += KC) {
            const int64_t kc = tinylm_gemm_min(KC, size - p0);
            for (int64_t q = 0; q < panels; q++)
                tinylm_gemm_tile(kc, packed_a + i0 * size + p0 * MR, packed_b + (q * size + p0) * NR,
                                 s + i0 * steps + q * NR, steps, height, tinylm_gemm_min(NR, steps - q * NR),
                                 p0 > 0, tile);
        }
    }
}

/* The causal softmax of scores s (T, T) in place, float32: row i becomes
 * e^(scale·s[i, j] - m) / Σ over j <= i, zeros past i, and lse[i] = m + log Σ, m the row's
 * largest scaled score. A NaN score makes the row NaN: its exp is NaN, and so the sum.
 * Reads only j <= i. Every loop is one the compiler vectorises: the max a compare-select,
 * the sum in 16 double lanes over whole vectors (the zeros past i included). */
static void tinylm_attention_softmax_rows(int64_t steps, float *s, float scale, float *lse) {
    enum { LANES = 16 };
    for (int64_t i = 0; i < steps; i++) {
        float *row = s + i * steps;
        const int64_t seen = i + 1; /* keys j <= i */
        const int64_t whole = tinylm_gemm_min(steps, (seen + LANES - 1) / LANES * LANES); /* zeros past seen */
        float row_max = row[0] * scale;
        for (int64_t j = 1; j < seen; j++) {
            const float value = row[j] * scale;
            row_max = value > row_max ? value : row_max;
        }
        for (int64_t j = 0; j < seen; j++) row[j] = tinylm_expf(row[j] * scale - row_max);
        for (int64_t j = seen; j < steps; j++) row[j] = 0.0f;
        double lanes[LANES] = {0};
        int64_t j = 0;
        for (; j + LANES <= whole; j += LANES)
            for (int lane = 0; lane < LANES; lane++) lanes[lane] += row[j + lane];
        for (; j < seen; j++) lanes[0] += row[j];
        double total = 0;
        for (int lane = 0; lane < LANES; lane++) total += lanes[lane];
        const float inverse = (float)(1 / total);
        for (j = 0; j < seen; j++) row[j] *= inverse;
        lse[i] = row_max + logf((float)total);
    }
}

/* The backward's two elementwise passes over a head, float32, each loop vectorised:
 * probabilities rebuilt from the scores in place, p[i, j] = e^(scale·s[i, j] - lse[i]) for
 * j <= i and 0 past i (as the forward made them); then, over dp = g vᵀ in place,
 * ds[i, j] = scale · p[i, j] · (dp[i, j] - D[i]) with D[i] = g[i] · out[i] (summed in
 * double) for j <= i, and 0 past i (p is 0 there: the causal products read those zeros). */
static void tinylm_attention_probs_rows(int64_t steps, float *s, float scale, const float *lse) {
    for (int64_t i = 0; i < steps; i++) {
        float *row = s + i * steps;
        for (int64_t j = 0; j <= i; j++) row[j] = tinylm_expf(row[j] * scale - lse[i]);
        for (int64_t j = i + 1; j < steps; j++) row[j] = 0.0f;
    }
}

static void tinylm_attention_dscores_rows(int64_t steps, int64_t size, const float *p, float *ds,
                                          const float *g, const float *out, float scale) {
    for (int64_t i = 0; i < steps; i++) {
        const float *p_row = p + i * steps, *g_row = g + i * size, *o_row = out + i * size;
        float *ds_row = ds + i * steps;
        double inner = 0;
        for (int64_t c = 0; c < size; c++) inner += (double)g_row[c] * o_row[c];
        const float d = (float)inner;
        for (int64_t j = 0; j <= i; j++) ds_row[j] = scale * (p_row[j] * (ds_row[j] - d));
        for (int64_t j = i + 1; j < steps; j++) ds_row[j] = 0.0f;
    }
}

/* out (T, n), row stride ldo, = A (T, T) · b (T, n) (b row-major, row stride ldb), where
 * A[i, p] = a[i·rsa + p·csa] is causal: zero for p > i, or, when `transposed` (A = a
 * causal matrix transposed), zero for p < i. Each MR-row panel multiplies only the range
 * of p where its rows can be nonzero. p v and dL/ds k (causal), pᵀ g and dL/dsᵀ q (transposed). */
static void tinylm_attention_causal_product(int64_t steps, int64_t n, const float *a, int64_t rsa, int64_t csa,
                                            int transposed, const float *b, int64_t ldb, float *out, int64_t ldo,
                                            float *packed_a, float *packed_b, float *tile) {
    const int64_t MR = TINYLM_GEMM_MR, NR = TINYLM_GEMM_NR, KC = TINYLM_GEMM_KC;
    const int64_t panels = (n + NR - 1) / NR;
    tinylm_gemm_pack_a(steps, steps, a, rsa, csa, packed_a);
    tinylm_gemm_pack_b(steps, n, b, ldb, 1, packed_b);
    for (int64_t i0 = 0; i0 < steps; i0 += MR) {
        const int64_t height = tinylm_gemm_min(MR, steps - i0);
        const int64_t first = transposed ? i0 : 0, last = transposed ? steps : i0 + height; /* p in [first, last) */
        for (int64_t p0 = first; p0 < last; p0 += KC) {
            const int64_t kc = tinylm_gemm_min(KC, last - p0);
            for (int64_t q = 0; q < panels; q++)
                tinylm_gemm_tile(kc, packed_a + i0 * steps + p0 * MR, packed_b + (q * steps + p0) * NR,
                                 out + i0 * ldo + q * NR, ldo, height, tinylm_gemm_min(NR, n - q * NR),
                                 p0 > first, tile);
        }
    }
}
#endif
