/* Elementwise maths for the Cython kernels: a float exp that compilers can vectorise,
 * and dropout's counter-based random bits.
 *
 * The exp:
 *
 * libm's expf is a function call, and a call inside a loop stops GCC from
 * vectorising it; NumPy's exp is vectorised, so a fused kernel calling expf per
 * element lost to NumPy's several passes (see kernels/cpu/lstm.pyx). This one is
 * straight-line arithmetic: with -O3 -fno-trapping-math GCC turns a loop over it into
 * SIMD code.
 *
 *   e^x = 2^n · e^r,  n = round(x / ln 2),  r = x - n ln 2 ∈ [-ln2/2, ln2/2]
 *
 * e^r comes from its degree-6 Taylor polynomial (ln 2 split in two parts so r is
 * exact to float precision), 2^n is written straight into the exponent bits. It stays
 * within a few ulp of glibc's expf (the test suite checks; benchmarks/NOTES.md has the figure).
 * x < -87 gives 0 (so e^-inf = 0, as a -inf mask needs) and x > 88 gives inf, a
 * little before the true overflow at 88.72: no caller here feeds it such values except
 * sigmoid's e^-x for x < -88, where 1/(1 + inf) = 0 instead of about 1e-39.
 */
#ifndef TINYLM_MATH_H
#define TINYLM_MATH_H
#include <stdint.h>
#include <string.h>

static inline float tinylm_expf(float x) {
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    const float round_magic = 12582912.0f; /* 1.5 * 2^23: adding and subtracting it rounds to an integer */
    /* NaN goes in as 0 (a NaN cast to int32 is undefined behaviour) and comes out as NaN below. */
    float clamped = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : (x == x ? x : 0.0f));
    float n = (clamped * log2e + round_magic) - round_magic;
    float r = clamped - n * ln2_hi - n * ln2_lo;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.6666667e-1f + r * (4.1666668e-2f
              + r * (8.3333338e-3f + r * 1.3888889e-3f)))));
    int32_t bits = ((int32_t)n + 127) << 23; /* 2^n as a float's bit pattern */
    float two_to_n;
    memcpy(&two_to_n, &bits, sizeof two_to_n);
    float result = x < -87.0f ? 0.0f : p * two_to_n;
    result = x == x ? result : x; /* NaN in, NaN out */
    return x > 88.0f ? __builtin_inff() : result;
}

/* The LSTM's gate nonlinearities on that exp, as _math.pxi's _sigmoid and _tanh compute
 * them in float32 (the C kernels and the Cython ones give the same bits):
 * σ(x) = 1 / (1 + e^-x), and tanh x = 2 σ(2x) - 1 with one exp. */
static inline float tinylm_sigmoidf(float x) { return 1.0f / (1.0f + tinylm_expf(-x)); }
static inline float tinylm_tanhf(float x) { return 2.0f / (1.0f + tinylm_expf(-2.0f * x)) - 1.0f; }

/* Dropout's random bits (see tinylm/reference/dropout.py): the top 24 bits of
 * SplitMix64's output at counter k, a pure function of (seed, k), so every thread
 * order and every backend draws the same mask. Unsigned arithmetic wraps mod 2^64. */
static inline uint32_t tinylm_dropout_bits(uint64_t seed, uint64_t k) {
    uint64_t z = seed + (k + 1) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (uint32_t)(z >> 40);
}

/* Dropout's counter map (see tinylm/reference/dropout.py): element k of a tensor that
 * holds some rows of a larger one draws at the larger one's counter,
 * k + offset + (k / block) * gap, or k + offset when block = 0. The Python wrapper has
 * checked that no counter (plus one) passes 2^64 - 1, so nothing here wraps. */
static inline uint64_t tinylm_dropout_counter(uint64_t k, uint64_t offset, uint64_t block, uint64_t gap) {
    return block ? k + offset + (k / block) * gap : k + offset;
}
#endif
