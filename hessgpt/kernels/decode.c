/* HessGPT native CPU kernels for batch-1 decoding, fp32 or int8 weights (llama2.c / llama.cpp style).
 *
 *   hg_gemv    y = W x (+ res)              W row-major [out, in], rows split across threads
 *   hg_gemm    Y = X W^T (+ res)            a few rows of X (batched decode), W fp32 or int8, read once
 *   hg_decode  one whole decode step        token at position pos -> logits [vocab], KV cache written in place;
 *                                           weights fp32, int8 with per-row scales, or int4 in llama.cpp's Q4_0
 *                                           blocks (32 weights, one scale each); fp32 activations
 *   hg_decode_rows  the same for B rows     each row its token, position and cache slot; each weight read once
 *                                           for all rows (batched decode, engine.BatchDecoder)
 *
 * Built by build.py with the system C compiler (-O3 -march=native) on first use and loaded with ctypes: no
 * Python or torch headers. Tensors are passed as raw float pointers; the caller (hessgpt/kernels/__init__.py)
 * guarantees contiguous fp32 CPU storage and the shapes documented on hg_model below.
 *
 * Batch-1 decode reads every weight once per token, so it is bound by memory bandwidth (large models) or by
 * per-op overhead (small ones). The GEMV streams each thread's block of weight rows front to back, one row
 * at a time with 4 independent FMA chains, and hg_decode runs the whole step inside one parallel region with spin
 * barriers between its phases, so a token costs one dispatch instead of ~16 PyTorch ops per layer.
 *
 * Threads: a persistent pool (pthreads; workers spin briefly, then sleep on a condition variable) whose size
 * follows the nthreads argument, the calling thread being thread 0. Compiled with -DHG_OPENMP, OpenMP parallel
 * regions replace the pool (the same barrier is used inside them).
 */
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef HG_OPENMP
#include <omp.h>
#endif

#if !defined(__AVX2__) || !defined(__FMA__)
#error "hessgpt kernels need AVX2 and FMA"
#endif

#define MAXT 64

/* ---- SIMD helpers --------------------------------------------------------------------------------------- */

#ifdef __AVX512F__
/* dot(w, x) over n floats: 4 independent FMA chains of 16 lanes, masked tail (reads nothing past the end). */
static inline float dot1(const float *w, const float *x, long n) {
    __m512 a = _mm512_setzero_ps(), b = a, c = a, d = a;
    long k = 0;
    for (; k + 64 <= n; k += 64) {
        a = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(x + k), a);
        b = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + 16), _mm512_loadu_ps(x + k + 16), b);
        c = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + 32), _mm512_loadu_ps(x + k + 32), c);
        d = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + 48), _mm512_loadu_ps(x + k + 48), d);
    }
    for (; k < n; k += 16) {
        __mmask16 m = n - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - k)) - 1);
        a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + k), _mm512_maskz_loadu_ps(m, x + k), a);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d)));
}

/* (w0 . x, w1 . x): two rows read side by side, x loaded once. */
static inline void dot2(const float *w0, const float *w1, const float *x, long n, float *out) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
    long k = 0;
    for (; k + 32 <= n; k += 32) {
        __m512 x0 = _mm512_loadu_ps(x + k), x1 = _mm512_loadu_ps(x + k + 16);
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k), x0, a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k), x0, a1);
        b0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k + 16), x1, b0);
        b1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k + 16), x1, b1);
    }
    for (; k < n; k += 16) {
        __mmask16 m = n - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - k)) - 1);
        __m512 x0 = _mm512_maskz_loadu_ps(m, x + k);
        a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w0 + k), x0, a0);
        a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w1 + k), x0, a1);
    }
    out[0] = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
    out[1] = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
}

static inline void dot2_q8(const int8_t *w0, const int8_t *w1, const float *x, long n, float *out) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
    long k = 0;
#define Q16(w, off) _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)((w) + k + (off)))))
    for (; k + 32 <= n; k += 32) {
        __m512 x0 = _mm512_loadu_ps(x + k), x1 = _mm512_loadu_ps(x + k + 16);
        a0 = _mm512_fmadd_ps(Q16(w0, 0), x0, a0);
        a1 = _mm512_fmadd_ps(Q16(w1, 0), x0, a1);
        b0 = _mm512_fmadd_ps(Q16(w0, 16), x1, b0);
        b1 = _mm512_fmadd_ps(Q16(w1, 16), x1, b1);
    }
#undef Q16
    float s0 = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0)), s1 = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
    for (; k < n; k++) {
        s0 += w0[k] * x[k];
        s1 += w1[k] * x[k];
    }
    out[0] = s0;
    out[1] = s1;
}

/* dot(q, x) for int8 q: each 16 weights sign-extended to int32, converted to fp32, FMA'd (the caller scales). */
static inline float dot_q8(const int8_t *w, const float *x, long n) {
    __m512 a = _mm512_setzero_ps(), b = a, c = a, d = a;
    long k = 0;
#define Q16(off) _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(w + k + (off)))))
    for (; k + 64 <= n; k += 64) {
        a = _mm512_fmadd_ps(Q16(0), _mm512_loadu_ps(x + k), a);
        b = _mm512_fmadd_ps(Q16(16), _mm512_loadu_ps(x + k + 16), b);
        c = _mm512_fmadd_ps(Q16(32), _mm512_loadu_ps(x + k + 32), c);
        d = _mm512_fmadd_ps(Q16(48), _mm512_loadu_ps(x + k + 48), d);
    }
    for (; k + 16 <= n; k += 16) a = _mm512_fmadd_ps(Q16(0), _mm512_loadu_ps(x + k), a);
#undef Q16
    float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d)));
    for (; k < n; k++) s += w[k] * x[k];
    return s;
}

/* y[0:n] += p * v[0:n] */
static inline void axpy(float p, const float *v, float *y, long n) {
    __m512 pp = _mm512_set1_ps(p);
    long k = 0;
    for (; k < n; k += 16) {
        __mmask16 m = n - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - k)) - 1);
        _mm512_mask_storeu_ps(y + k, m, _mm512_fmadd_ps(pp, _mm512_maskz_loadu_ps(m, v + k), _mm512_maskz_loadu_ps(m, y + k)));
    }
}

static inline float sumsq(const float *x, long n) { return dot1(x, x, n); }

#else /* AVX2 */
static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

static inline float dot1(const float *w, const float *x, long n) {
    __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
    long k = 0;
    for (; k + 32 <= n; k += 32) {
        a = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), a);
        b = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 8), _mm256_loadu_ps(x + k + 8), b);
        c = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 16), _mm256_loadu_ps(x + k + 16), c);
        d = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 24), _mm256_loadu_ps(x + k + 24), d);
    }
    float s = hsum8(_mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
    for (; k < n; k++) s += w[k] * x[k];
    return s;
}

static inline void dot2(const float *w0, const float *w1, const float *x, long n, float *out) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
    long k = 0;
    for (; k + 16 <= n; k += 16) {
        __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), x0, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k), x0, a1);
        b0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k + 8), x1, b0);
        b1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k + 8), x1, b1);
    }
    float s0 = hsum8(_mm256_add_ps(a0, b0)), s1 = hsum8(_mm256_add_ps(a1, b1));
    for (; k < n; k++) {
        s0 += w0[k] * x[k];
        s1 += w1[k] * x[k];
    }
    out[0] = s0;
    out[1] = s1;
}

static inline void dot2_q8(const int8_t *w0, const int8_t *w1, const float *x, long n, float *out) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
    long k = 0;
#define Q8(w, off) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((w) + k + (off)))))
    for (; k + 16 <= n; k += 16) {
        __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
        a0 = _mm256_fmadd_ps(Q8(w0, 0), x0, a0);
        a1 = _mm256_fmadd_ps(Q8(w1, 0), x0, a1);
        b0 = _mm256_fmadd_ps(Q8(w0, 8), x1, b0);
        b1 = _mm256_fmadd_ps(Q8(w1, 8), x1, b1);
    }
#undef Q8
    float s0 = hsum8(_mm256_add_ps(a0, b0)), s1 = hsum8(_mm256_add_ps(a1, b1));
    for (; k < n; k++) {
        s0 += w0[k] * x[k];
        s1 += w1[k] * x[k];
    }
    out[0] = s0;
    out[1] = s1;
}

static inline float dot_q8(const int8_t *w, const float *x, long n) {
    __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
    long k = 0;
#define Q8(off) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(w + k + (off)))))
    for (; k + 32 <= n; k += 32) {
        a = _mm256_fmadd_ps(Q8(0), _mm256_loadu_ps(x + k), a);
        b = _mm256_fmadd_ps(Q8(8), _mm256_loadu_ps(x + k + 8), b);
        c = _mm256_fmadd_ps(Q8(16), _mm256_loadu_ps(x + k + 16), c);
        d = _mm256_fmadd_ps(Q8(24), _mm256_loadu_ps(x + k + 24), d);
    }
#undef Q8
    float s = hsum8(_mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
    for (; k < n; k++) s += w[k] * x[k];
    return s;
}

static inline void axpy(float p, const float *v, float *y, long n) {
    __m256 pp = _mm256_set1_ps(p);
    long k = 0;
    for (; k + 8 <= n; k += 8) _mm256_storeu_ps(y + k, _mm256_fmadd_ps(pp, _mm256_loadu_ps(v + k), _mm256_loadu_ps(y + k)));
    for (; k < n; k++) y[k] += p * v[k];
}

static inline float sumsq(const float *x, long n) { return dot1(x, x, n); }
#endif

/* ---- int4 weights: llama.cpp's Q4_0 blocks ------------------------------------------------------------ *
 * A row of `in` weights is in/32 blocks; block b is 16 bytes at w + b * 16 and one fp32 scale d[b]: byte j holds
 * weight j in its low nibble and weight j + 16 in its high nibble, each weight = (nibble - 8) * d (kernels/int4.py).
 * Each weight is dequantized to fp32 ((nibble - 8) converted exactly, times d, rounded once) and then goes
 * through the same FMA chains, in the same order, as the fp32 dot products above (dot1, dot2): a dot product on
 * packed weights equals the fp32 one on the dequantized row bit for bit, so the batched paths, which dequantize
 * a row into scratch once for all batch rows, give the batch-1 step's numbers exactly. */
#ifdef __AVX512F__
/* block -> weights 0..15 and 16..31 as fp32, by table: T[i] = (i - 8) * d (the same products as converting and
 * multiplying), looked up with vpermps, which reads only the low 4 bits of each index: the zero-extended bytes
 * index the low nibbles as they are and the high nibbles shifted down by 4. 6 vector ops a block instead of 12. */
static inline void q4_block(const uint8_t *p, float d, __m512 *w0, __m512 *w1) {
    const __m512 T = _mm512_mul_ps(_mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7),
                                   _mm512_set1_ps(d));
    const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
    *w0 = _mm512_permutexvar_ps(v, T);
    *w1 = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), T);
}

/* dot2 on two Q4_0 rows (n a multiple of 32): its chains a (weights 0..15 of every 32) and b (16..31) */
static inline void dot2_q4(const uint8_t *q0, const float *d0, const uint8_t *q1, const float *d1, const float *x,
                           long n, float *out) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
    for (long k = 0, blk = 0; k < n; k += 32, blk++) {
        __m512 x0 = _mm512_loadu_ps(x + k), x1 = _mm512_loadu_ps(x + k + 16), l0, h0, l1, h1;
        q4_block(q0 + blk * 16, d0[blk], &l0, &h0);
        q4_block(q1 + blk * 16, d1[blk], &l1, &h1);
        a0 = _mm512_fmadd_ps(l0, x0, a0);
        a1 = _mm512_fmadd_ps(l1, x0, a1);
        b0 = _mm512_fmadd_ps(h0, x1, b0);
        b1 = _mm512_fmadd_ps(h1, x1, b1);
    }
    out[0] = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
    out[1] = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
}

/* dot1 on a Q4_0 row: chains a, b, c, d over each 64 weights (two blocks), an odd last block into a */
static inline float dot_q4(const uint8_t *q, const float *d, const float *x, long n) {
    __m512 a = _mm512_setzero_ps(), b = a, c = a, e = a, w0, w1;
    long k = 0, blk = 0;
    for (; k + 64 <= n; k += 64, blk += 2) {
        q4_block(q + blk * 16, d[blk], &w0, &w1);
        a = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + k), a);
        b = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + k + 16), b);
        q4_block(q + (blk + 1) * 16, d[blk + 1], &w0, &w1);
        c = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + k + 32), c);
        e = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + k + 48), e);
    }
    if (k < n) {
        q4_block(q + blk * 16, d[blk], &w0, &w1);
        a = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + k), a);
        a = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + k + 16), a);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, e)));
}
#else
static inline void q4_nibbles(const uint8_t *p, __m128i *lo, __m128i *hi) {
    const __m128i b = _mm_loadu_si128((const __m128i *)p), m = _mm_set1_epi8(0x0F), e = _mm_set1_epi8(8);
    *lo = _mm_sub_epi8(_mm_and_si128(b, m), e);                        /* weights 0..15 of the block, int8 */
    *hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(b, 4), m), e);     /* weights 16..31 */
}

/* block -> weights 0..7, 8..15, 16..23, 24..31 as fp32 */
static inline void q4_block(const uint8_t *p, float d, __m256 w[4]) {
    __m128i lo, hi;
    q4_nibbles(p, &lo, &hi);
    const __m256 dd = _mm256_set1_ps(d);
    w[0] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), dd);
    w[1] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), dd);
    w[2] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), dd);
    w[3] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), dd);
}

/* dot2's chains: a takes weights 0..7 of every 16, b 8..15 */
static inline void dot2_q4(const uint8_t *q0, const float *d0, const uint8_t *q1, const float *d1, const float *x,
                           long n, float *out) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0, w0[4], w1[4];
    for (long k = 0, blk = 0; k < n; k += 32, blk++) {
        q4_block(q0 + blk * 16, d0[blk], w0);
        q4_block(q1 + blk * 16, d1[blk], w1);
        for (int h = 0; h < 2; h++) {
            __m256 x0 = _mm256_loadu_ps(x + k + 16 * h), x1 = _mm256_loadu_ps(x + k + 16 * h + 8);
            a0 = _mm256_fmadd_ps(w0[2 * h], x0, a0);
            a1 = _mm256_fmadd_ps(w1[2 * h], x0, a1);
            b0 = _mm256_fmadd_ps(w0[2 * h + 1], x1, b0);
            b1 = _mm256_fmadd_ps(w1[2 * h + 1], x1, b1);
        }
    }
    out[0] = hsum8(_mm256_add_ps(a0, b0));
    out[1] = hsum8(_mm256_add_ps(a1, b1));
}

/* dot1's chains a, b, c, d over each 32 weights (one block) */
static inline float dot_q4(const uint8_t *q, const float *d, const float *x, long n) {
    __m256 a = _mm256_setzero_ps(), b = a, c = a, e = a, w[4];
    for (long k = 0, blk = 0; k < n; k += 32, blk++) {
        q4_block(q + blk * 16, d[blk], w);
        a = _mm256_fmadd_ps(w[0], _mm256_loadu_ps(x + k), a);
        b = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(x + k + 8), b);
        c = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(x + k + 16), c);
        e = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(x + k + 24), e);
    }
    return hsum8(_mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, e)));
}
#endif

/* A weight matrix: fp32 [out, in] when scale is NULL; int8 [out, in] with one fp32 scale per row (q4 == 0);
 * int4 Q4_0 blocks [out, in / 2 bytes] with one fp32 scale per block, [out, in / 32] (q4 == 1; in % 32 == 0).
 * Weight-only schemes: activations and accumulation stay fp32. */
typedef struct {
    const void *w;
    const float *scale;
    int q4;
} weight_t;

/* Row r of a quantized W as fp32 into f[0:n]: int8 q (the caller multiplies by row_scale), or Q4_0's dequantized
 * weights (row_scale 1): the values the packed dot products compute with. */
static inline void deq_row(weight_t W, long r, long n, float *f) {
    if (W.q4) {
        const uint8_t *q = (const uint8_t *)W.w + r * (n / 2);
        const float *d = W.scale + r * (n / 32);
        for (long b = 0; b < n / 32; b++)
            for (int j = 0; j < 16; j++) {
                f[b * 32 + j] = (float)((int)(q[b * 16 + j] & 0x0F) - 8) * d[b];
                f[b * 32 + j + 16] = (float)((int)(q[b * 16 + j] >> 4) - 8) * d[b];
            }
    } else {
        const int8_t *q = (const int8_t *)W.w + r * n;
        for (long k = 0; k < n; k++) f[k] = (float)q[k];
    }
}

static inline float row_scale(weight_t W, long r) { return W.q4 ? 1.0f : W.scale[r]; }

/* (W[ra] . x, W[rb] . x): two rows of length n read side by side. */
static inline void rows2(weight_t W, long ra, long rb, const float *x, long n, float *o) {
    if (W.q4) {
        const uint8_t *Q = W.w;
        dot2_q4(Q + ra * (n / 2), W.scale + ra * (n / 32), Q + rb * (n / 2), W.scale + rb * (n / 32), x, n, o);
    } else if (W.scale) {
        const int8_t *Q = W.w;
        dot2_q8(Q + ra * n, Q + rb * n, x, n, o);
        o[0] *= W.scale[ra];
        o[1] *= W.scale[rb];
    } else {
        const float *Wf = W.w;
        dot2(Wf + ra * n, Wf + rb * n, x, n, o);
    }
}

static inline float row1(weight_t W, long r, const float *x, long n) {
    if (W.q4) return dot_q4((const uint8_t *)W.w + r * (n / 2), W.scale + r * (n / 32), x, n);
    return W.scale ? dot_q8((const int8_t *)W.w + r * n, x, n) * W.scale[r] : dot1((const float *)W.w + r * n, x, n);
}

/* y[r] = W[r] . x (+ res[r]) for rows r in [r0, r1). res may alias y (in-place residual add).
 * The block is cut in two halves read side by side (rows r and r + h together): two long sequential streams
 * per thread. Measured here on a 440 MB matrix, 2 threads: +15% over one row after the other, which itself
 * beats interleaving 4 adjacent rows (4 short streams that restart every row) by 8-60% depending on load. */
static void gemv_w(weight_t W, const float *x, float *y, const float *res, long in, long r0, long r1) {
    long h = (r1 - r0) / 2;
    float o[2];
    for (long r = r0; r < r0 + h; r++) {
        rows2(W, r, r + h, x, in, o);
        y[r] = res ? res[r] + o[0] : o[0];
        y[r + h] = res ? res[r + h] + o[1] : o[1];
    }
    if ((r1 - r0) & 1) {
        float s = row1(W, r1 - 1, x, in);
        y[r1 - 1] = res ? res[r1 - 1] + s : s;
    }
}

/* This thread's share [*r0, *r1) of n items, chunks rounded up to a multiple of `align`. */
static inline void split(long n, int tid, int nth, long align, long *r0, long *r1) {
    long chunk = (n + nth - 1) / nth;
    chunk = (chunk + align - 1) / align * align;
    long a = tid * chunk, b = a + chunk;
    *r0 = a < n ? a : n;
    *r1 = b < n ? b : n;
}

/* ---- thread pool and barrier ---------------------------------------------------------------------------- */

typedef void (*task_fn)(void *arg, int tid, int nth);

typedef struct {
    _Alignas(64) atomic_int count;
    _Alignas(64) atomic_int phase;
} barrier_t;

static barrier_t BAR;

/* One wait iteration: pause, and after a while also yield the core (a thread we wait for may be runnable on
 * it: on a busy machine pure spinning would hold it off for a whole time slice). */
static inline void relax(long *spins) {
    _mm_pause();
    if (++*spins > 4096) sched_yield();
}

/* Sense-counting spin barrier: every thread reads the phase before arriving; the last arrival resets the
 * count and bumps the phase, releasing the others. */
static void barrier(int nth) {
    if (nth == 1) return;
    int phase = atomic_load_explicit(&BAR.phase, memory_order_acquire);
    if (atomic_fetch_add_explicit(&BAR.count, 1, memory_order_acq_rel) == nth - 1) {
        atomic_store_explicit(&BAR.count, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&BAR.phase, 1, memory_order_release);
    } else {
        long spins = 0;
        while (atomic_load_explicit(&BAR.phase, memory_order_acquire) == phase) relax(&spins);
    }
}

static long SPIN_NS = 1000000;   /* how long an idle worker spins before sleeping (hg_set_spin_us): 1 ms */

#ifndef HG_OPENMP
static struct {
    int nth;             /* threads in the pool, the caller included; 1 = no workers */
    pid_t pid;           /* the process that created the workers (threads do not survive fork) */
    pthread_t th[MAXT];
    unsigned start_gen;  /* gen when the workers were created */
    _Alignas(64) atomic_uint gen;   /* bumped once per dispatched task */
    _Alignas(64) atomic_int done;   /* workers finished with the current task */
    _Alignas(64) atomic_int sleepers;
    atomic_int stop;
    task_fn fn;
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} P = {.nth = 1, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void *worker(void *p) {
    int tid = (int)(intptr_t)p;
    unsigned seen = P.start_gen;   /* not P.gen: a task may have been dispatched before this thread started */
    for (;;) {
        unsigned g;
        long spins = 0, t0 = 0;
        while ((g = atomic_load_explicit(&P.gen, memory_order_acquire)) == seen) {
            relax(&spins);
            if ((spins & 255) == 0) {
                long t = now_ns();
                if (!t0) t0 = t;
                else if (t - t0 > SPIN_NS) {   /* idle: sleep until the next dispatch */
                    pthread_mutex_lock(&P.mu);
                    atomic_fetch_add(&P.sleepers, 1);
                    while ((g = atomic_load(&P.gen)) == seen) pthread_cond_wait(&P.cv, &P.mu);
                    atomic_fetch_sub(&P.sleepers, 1);
                    pthread_mutex_unlock(&P.mu);
                    break;
                }
            }
        }
        seen = g;
        if (atomic_load(&P.stop)) return NULL;
        P.fn(P.arg, tid, P.nth);
        atomic_fetch_add_explicit(&P.done, 1, memory_order_release);
    }
}

static void wake_all(void) {
    /* seq_cst: either a sleeping worker registered before we read `sleepers` (we wake it), or it sees the new gen */
    if (atomic_load(&P.sleepers) > 0) {
        pthread_mutex_lock(&P.mu);
        pthread_cond_broadcast(&P.cv);
        pthread_mutex_unlock(&P.mu);
    }
}

static void pool_resize(int nth) {
    if (nth < 1) nth = 1;
    if (nth > MAXT) nth = MAXT;
    if (P.nth > 1 && P.pid == getpid()) {   /* stop the old workers (after a fork they no longer exist) */
        atomic_store(&P.stop, 1);
        atomic_fetch_add(&P.gen, 1);
        pthread_mutex_lock(&P.mu);
        pthread_cond_broadcast(&P.cv);
        pthread_mutex_unlock(&P.mu);
        for (int i = 1; i < P.nth; i++) pthread_join(P.th[i], NULL);
    }
    atomic_store(&P.stop, 0);
    atomic_store(&P.sleepers, 0);
    P.nth = 1;
    P.pid = getpid();
    P.start_gen = atomic_load(&P.gen);
    for (int i = 1; i < nth; i++) {
        if (pthread_create(&P.th[i], NULL, worker, (void *)(intptr_t)i) != 0) break;
        P.nth = i + 1;
    }
}

static pthread_mutex_t RUN_MU = PTHREAD_MUTEX_INITIALIZER;   /* one task at a time (ctypes drops the GIL) */

static void run_locked(task_fn fn, void *arg, int nth) {
    if (nth <= 1) {   /* one thread: run here, keep the pool (sleeping) for the next parallel call */
        fn(arg, 0, 1);
        return;
    }
    if (nth > MAXT) nth = MAXT;
    if (nth != P.nth || P.pid != getpid()) pool_resize(nth);
    if (P.nth == 1) {
        fn(arg, 0, 1);
        return;
    }
    P.fn = fn;
    P.arg = arg;
    atomic_store(&P.done, 0);
    atomic_fetch_add(&P.gen, 1);
    wake_all();
    fn(arg, 0, P.nth);
    long spins = 0;
    while (atomic_load_explicit(&P.done, memory_order_acquire) != P.nth - 1) relax(&spins);
}

static void run(task_fn fn, void *arg, int nth) {
    pthread_mutex_lock(&RUN_MU);
    run_locked(fn, arg, nth);
    pthread_mutex_unlock(&RUN_MU);
}
#else
static void run(task_fn fn, void *arg, int nth) {
    if (nth <= 1) {
        fn(arg, 0, 1);
        return;
    }
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&mu);
#pragma omp parallel num_threads(nth)
    fn(arg, omp_get_thread_num(), omp_get_num_threads());
    pthread_mutex_unlock(&mu);
}
#endif

/* ---- per-thread scratch (attention scores) -------------------------------------------------------------- */

static float *SCRATCH[MAXT];
static long SCRATCH_N[MAXT];

static float *scratch(int tid, long n) {
    if (SCRATCH_N[tid] < n) {
        free(SCRATCH[tid]);
        SCRATCH[tid] = aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64);
        SCRATCH_N[tid] = SCRATCH[tid] ? n : 0;
    }
    return SCRATCH[tid];
}

/* ---- GEMV ------------------------------------------------------------------------------------------------ */

typedef struct {
    const float *W, *x, *res;
    float *y;
    long out, in;
} gemv_arg;

static void gemv_task(void *p, int tid, int nth) {
    gemv_arg *a = p;
    long r0, r1;
    split(a->out, tid, nth, 16, &r0, &r1);
    gemv_w((weight_t){a->W, NULL, 0}, a->x, a->y, a->res, a->in, r0, r1);
}

/* y[out] = W[out, in] x[in] (+ res[out] when res is not NULL), on nthreads threads. */
void hg_gemv(const float *W, const float *x, float *y, const float *res, long out, long in, int nthreads) {
    gemv_arg a = {W, x, res, y, out, in};
    /* small matrices: one thread (waking a worker costs more than it saves) */
    run(gemv_task, &a, out * in < 32768 ? 1 : nthreads);
}

/* ---- batched GEMM for decode (a few rows) ---------------------------------------------------------------- */

typedef struct {
    weight_t W;
    const float *x, *res;
    float *y;
    long rows, out, in;
} gemm_arg;

/* Register-blocked variant for many rows (prefill chunks): MB batch rows x MW weight rows of dot products at once,
 * the MB*MW accumulators in vector registers, so each k step loads MW weight and MB activation vectors for
 * MB*MW FMAs (a dot product per pair loads two vectors per FMA: half the FMA rate once compute-bound). */
#ifdef __AVX512F__
typedef __m512 vf;
#define VL 16
#define VZERO() _mm512_setzero_ps()
#define VLOAD(p) _mm512_loadu_ps(p)
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VSUM(v) _mm512_reduce_add_ps(v)
#define MW 4
#else
typedef __m256 vf;
#define VL 8
#define VZERO() _mm256_setzero_ps()
#define VLOAD(p) _mm256_loadu_ps(p)
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define VSUM(v) hsum8(v)
#define MW 2
#endif
#define MB 4
#ifndef GEMM_BLOCKED
#define GEMM_BLOCKED 12   /* rows from which gemm_rows uses the blocked kernel */
#endif

static inline __attribute__((always_inline)) void micro(const float *const *w, const float *x, long in, const int nb,
                                                        float o[MB][MW]) {
    vf acc[MB][MW];
    for (int i = 0; i < MB; i++)
        for (int j = 0; j < MW; j++) acc[i][j] = VZERO();
    long k = 0;
    for (; k + VL <= in; k += VL) {
        vf wv[MW];
        for (int j = 0; j < MW; j++) wv[j] = VLOAD(w[j] + k);
        for (int i = 0; i < nb; i++) {
            vf xv = VLOAD(x + i * in + k);
            for (int j = 0; j < MW; j++) acc[i][j] = VFMA(wv[j], xv, acc[i][j]);
        }
    }
    for (int i = 0; i < nb; i++)
        for (int j = 0; j < MW; j++) {
            float sc = VSUM(acc[i][j]);
            for (long t = k; t < in; t++) sc += w[j][t] * x[i * in + t];
            o[i][j] = sc;
        }
}

/* gemm_rows for B >= GEMM_BLOCKED rows; f: MW * in floats of scratch for int8 weights. */
static void gemm_rows_blocked(weight_t W, const float *x, float *y, const float *res, long B, long out, long in,
                              long r0, long r1, float *f) {
    const int quant = W.scale != NULL;
    for (long r = r0; r < r1; r += MW) {
        const int nw = r1 - r < MW ? (int)(r1 - r) : MW;
        const float *w[MW];
        for (int j = 0; j < MW; j++) {
            const int jj = j < nw ? j : nw - 1;   /* past the range: the last row again (computed, not stored) */
            if (quant) {
                if (j < nw) deq_row(W, r + j, in, f + j * in);
                w[j] = f + jj * in;
            } else {
                w[j] = (const float *)W.w + (r + jj) * in;
            }
        }
        for (long b = 0; b < B; b += MB) {
            const int nb = B - b < MB ? (int)(B - b) : MB;
            const float *xb = x + b * in;
            float o[MB][MW];
            switch (nb) {
                case 1: micro(w, xb, in, 1, o); break;
                case 2: micro(w, xb, in, 2, o); break;
                case 3: micro(w, xb, in, 3, o); break;
                default: micro(w, xb, in, MB, o); break;
            }
            for (int i = 0; i < nb; i++) {
                float *yb = y + (b + i) * out;
                const float *rb = res ? res + (b + i) * out : NULL;
                for (int j = 0; j < nw; j++) {
                    const float v = quant ? o[i][j] * row_scale(W, r + j) : o[i][j];
                    yb[r + j] = rb ? rb[r + j] + v : v;
                }
            }
        }
    }
}

/* y[b, r] = W[r] . x[b] (+ res[b, r]) for weight rows r in [r0, r1), every batch row b < B: each pair of weight
 * rows is streamed from memory once and reused from L1 for all b (the weights are read once per step). `f`:
 * 4 * in floats of scratch for int8 weights with B > 1 (each pair converted to fp32 once, exact, then fp32
 * dots for every batch row, instead of converting the int8 weights again for each of them). res may alias y. */
static void gemm_rows(weight_t W, const float *x, float *y, const float *res, long B, long out, long in, long r0,
                      long r1, float *f) {
    if (B >= GEMM_BLOCKED) {
        gemm_rows_blocked(W, x, y, res, B, out, in, r0, r1, f);
        return;
    }
    long h = (r1 - r0) / 2;
    float o[2];
    float *f0 = W.scale && B > 1 ? f : NULL, *f1 = f0 ? f0 + in : NULL;
    for (long r = r0; r < r0 + h; r++) {
        if (f0) {
            deq_row(W, r, in, f0);
            deq_row(W, r + h, in, f1);
        }
        for (long b = 0; b < B; b++) {
            if (f0) {
                dot2(f0, f1, x + b * in, in, o);
                o[0] *= row_scale(W, r);
                o[1] *= row_scale(W, r + h);
            } else {
                rows2(W, r, r + h, x + b * in, in, o);
            }
            float *yb = y + b * out;
            const float *rb = res ? res + b * out : NULL;
            yb[r] = rb ? rb[r] + o[0] : o[0];
            yb[r + h] = rb ? rb[r + h] + o[1] : o[1];
        }
    }
    if ((r1 - r0) & 1) {
        for (long b = 0; b < B; b++) {
            float sc = row1(W, r1 - 1, x + b * in, in);
            y[b * out + r1 - 1] = res ? res[b * out + r1 - 1] + sc : sc;
        }
    }
}

static void gemm_task(void *p, int tid, int nth) {
    gemm_arg *a = p;
    long r0, r1;
    split(a->out, tid, nth, 16, &r0, &r1);
    float *f = a->W.scale && a->rows > 1 ? scratch(tid, 4 * a->in) : NULL;
    gemm_rows(a->W, a->x, a->y, a->res, a->rows, a->out, a->in, r0, r1, f);
}

/* y[rows, out] = x[rows, in] W[out, in]^T (+ res[rows, out]); W fp32, int8 with per-row fp32 scales (scale not
 * NULL), or Q4_0 blocks with per-block scales (q4 = 1). For decode batches (a few rows): MKL's GEMM is slow at
 * such shapes here, and this reads each weight once for all rows, like hg_gemv does for one. */
void hg_gemm(const void *W, const float *scale, int q4, const float *x, float *y, const float *res, long rows,
             long out, long in, int nthreads) {
    gemm_arg a = {{W, scale, q4}, x, res, y, rows, out, in};
    run(gemm_task, &a, out * in * rows < 32768 ? 1 : nthreads);
}

/* ---- one whole decode step ------------------------------------------------------------------------------- */

/* Shapes (B = 1): D = dim, F = hidden, H/Hkv heads of size hd, V = vocab.
 *   embed [V, D], norm [D], head [V, D], rope [>= pos+1, hd/2, 2] (cos, sin of InferenceModel.freqs_cis);
 *   per layer: ln1 [D], wqkv [(H + 2 Hkv) hd, D] (q rows scaled and RoPE-interleaved as in InferenceModel),
 *   wo [D, H hd], ln2 [D], wgu [2F, D] (gate rows then up rows), wdown [D, F],
 *   kc, vc [Hkv, max_len, hd] (the KV cache tensors of batch row 0);
 *   scratch: x [D], xb [D], qkv [(H + 2 Hkv) hd], y [H hd], act [F];
 *   s_* [out]: per-row scales of int8 weights (quantize.py), or NULL where the weights are fp32: s_qkv, s_o,
 *   s_gu, s_down are NULL or arrays [n_layers] (entries all set), s_head is NULL or [V];
 *   q4_*: 1 where that weight (every layer's) is int4 Q4_0 blocks, its s_* then per block [out, in / 32]. */
typedef struct {
    int dim, hidden, n_layers, n_heads, n_kv, hd, vocab, max_len;
    float eps;
    const float *embed, *norm;
    const void *head;
    const float *rope;
    const float *const *ln1;
    const void *const *wqkv, *const *wo;
    const float *const *ln2;
    const void *const *wgu, *const *wdown;
    float *const *kc, *const *vc;
    float *x, *xb, *qkv, *y, *act;
    const float *const *s_qkv, *const *s_o, *const *s_gu, *const *s_down;
    const float *s_head;
    int q4_qkv, q4_o, q4_gu, q4_down, q4_head;
} hg_model;

/* Weight `name` of layer l with its scales (if quantized). */
#define LW(m, name, l) ((weight_t){(m)->w##name[l], (m)->s_##name ? (m)->s_##name[l] : NULL, (m)->q4_##name})

typedef struct {
    const hg_model *m;
    long token, pos;
    float *logits;
} step_arg;

/* xb = rmsnorm(x) * w; every thread computes the (cheap) sum of squares and writes its own slice. */
static void rmsnorm_part(const float *x, const float *w, float *xb, long n, float eps, int tid, int nth) {
    float r = 1.0f / sqrtf(sumsq(x, n) / n + eps);
    long i0, i1;
    split(n, tid, nth, 16, &i0, &i1);
    for (long i = i0; i < i1; i++) xb[i] = x[i] * r * w[i];
}

static void step_task(void *p, int tid, int nth) {
    const step_arg *a = p;
    const hg_model *m = a->m;
    const long D = m->dim, F = m->hidden, H = m->n_heads, Hkv = m->n_kv, hd = m->hd, pos = a->pos, L = pos + 1;
    const long nq = H * hd, nkv = Hkv * hd, rep = H / Hkv;
    const float *cs = m->rope + pos * hd;   /* [hd/2, 2] for this position */
    long r0, r1;
    if (tid == 0) memcpy(m->x, m->embed + a->token * D, D * sizeof(float));
    barrier(nth);
    for (int l = 0; l < m->n_layers; l++) {
        float *kc = m->kc[l], *vc = m->vc[l];
        rmsnorm_part(m->x, m->ln1[l], m->xb, D, m->eps, tid, nth);
        barrier(nth);
        /* q|k|v rows (chunks of 4 keep RoPE pairs together), then RoPE q, k and store k, v in the cache */
        split(nq + 2 * nkv, tid, nth, 4, &r0, &r1);
        gemv_w(LW(m, qkv, l), m->xb, m->qkv, NULL, D, r0, r1);
        for (long r = r0; r < r1; r += 2) {
            float *v = m->qkv + r;
            long c = r % hd;
            if (r < nq + nkv) {   /* (v0 + i v1) * (cos + i sin) */
                float co = cs[c], si = cs[c + 1], v0 = v[0], v1 = v[1];
                v[0] = v0 * co - v1 * si;
                v[1] = v0 * si + v1 * co;
            }
            if (r >= nq + nkv) {
                long h = (r - nq - nkv) / hd;
                vc[(h * m->max_len + pos) * hd + c] = v[0];
                vc[(h * m->max_len + pos) * hd + c + 1] = v[1];
            } else if (r >= nq) {
                long h = (r - nq) / hd;
                kc[(h * m->max_len + pos) * hd + c] = v[0];
                kc[(h * m->max_len + pos) * hd + c + 1] = v[1];
            }
        }
        barrier(nth);
        /* attention, heads split across threads; the softmax scale is folded into wq */
        split(H, tid, nth, 1, &r0, &r1);
        float *att = scratch(tid, L);
        for (long h = r0; h < r1; h++) {
            const float *q = m->qkv + h * hd, *K = kc + (h / rep) * m->max_len * hd, *V = vc + (h / rep) * m->max_len * hd;
            float mx = -INFINITY, sum = 0.0f;
            for (long t = 0; t < L; t++) {
                att[t] = dot1(q, K + t * hd, hd);
                mx = att[t] > mx ? att[t] : mx;
            }
            for (long t = 0; t < L; t++) {
                att[t] = expf(att[t] - mx);
                sum += att[t];
            }
            float *y = m->y + h * hd, inv = 1.0f / sum;
            memset(y, 0, hd * sizeof(float));
            for (long t = 0; t < L; t++) axpy(att[t] * inv, V + t * hd, y, hd);
        }
        barrier(nth);
        /* x += Wo y */
        split(D, tid, nth, 4, &r0, &r1);
        gemv_w(LW(m, o, l), m->y, m->x, m->x, nq, r0, r1);
        barrier(nth);
        rmsnorm_part(m->x, m->ln2[l], m->xb, D, m->eps, tid, nth);
        barrier(nth);
        /* act[j] = silu(gate_j . xb) * (up_j . xb): gate row j and up row F + j read side by side */
        split(F, tid, nth, 4, &r0, &r1);
        {
            weight_t W = LW(m, gu, l);
            float o[2];
            for (long j = r0; j < r1; j++) {
                rows2(W, j, F + j, m->xb, D, o);
                m->act[j] = o[0] / (1.0f + expf(-o[0])) * o[1];
            }
        }
        barrier(nth);
        /* x += Wdown act */
        split(D, tid, nth, 4, &r0, &r1);
        gemv_w(LW(m, down, l), m->act, m->x, m->x, F, r0, r1);
        barrier(nth);
    }
    rmsnorm_part(m->x, m->norm, m->xb, D, m->eps, tid, nth);
    barrier(nth);
    split(m->vocab, tid, nth, 16, &r0, &r1);
    gemv_w((weight_t){m->head, m->s_head, m->q4_head}, m->xb, a->logits, NULL, D, r0, r1);
}

/* logits[vocab] for `token` at position `pos` (pos < max_len; the rope table must cover pos). */
void hg_decode(const hg_model *m, long token, long pos, float *logits, int nthreads) {
    step_arg a = {m, token, pos, logits};
    run(step_task, &a, nthreads);
}

/* ---- one whole decode step for several rows (batched decode) ------------------------------------------- */

/* B rows, each its own token at its own position in a cache slot: m->kc[l] / m->vc[l] point at slot 0 of a
 * slot cache [slots, Hkv, max_len, hd] (slot s at + s * Hkv * max_len * hd). Every row's k and v are written
 * before any row attends, and row b attends to its slot's positions 0..pos[b]: rows of one slot at consecutive
 * positions are a causal prefill chunk (a prompt's tokens computed in the same step as other rows' decode
 * tokens). Scratch for B rows: x [B, D], xb [B, D], qkv [B, (H + 2 Hkv) hd], y [B, H hd], act [B, F]. Every
 * weight is read once for all rows (gemm_rows); attention runs per (row, head); logits only for the n_out rows
 * out[i]. */
typedef struct {
    const hg_model *m;
    long B, n_out;
    const long *tokens, *pos, *slots, *out;
    float *x, *xb, *qkv, *y, *act, *logits;
} rows_arg;

static void rows_task(void *p, int tid, int nth) {
    const rows_arg *a = p;
    const hg_model *m = a->m;
    const long B = a->B, D = m->dim, F = m->hidden, H = m->n_heads, Hkv = m->n_kv, hd = m->hd;
    const long nq = H * hd, nkv = Hkv * hd, nqkv = nq + 2 * nkv, rep = H / Hkv, slot_len = Hkv * m->max_len * hd;
    long r0, r1;
    float *f = NULL;
    if (tid == 0)
        for (long b = 0; b < B; b++) memcpy(a->x + b * D, m->embed + a->tokens[b] * D, D * sizeof(float));
    barrier(nth);
    for (int l = 0; l < m->n_layers; l++) {
        for (long b = 0; b < B; b++) rmsnorm_part(a->x + b * D, m->ln1[l], a->xb + b * D, D, m->eps, tid, nth);
        barrier(nth);
        /* q|k|v rows of every batch row (chunks of 4 keep RoPE pairs together), then RoPE q, k at each row's
         * position and store k, v in each row's slot */
        split(nqkv, tid, nth, 4, &r0, &r1);
        weight_t Wqkv = LW(m, qkv, l);
        if (Wqkv.scale && B > 1) f = scratch(tid, 4 * D);
        gemm_rows(Wqkv, a->xb, a->qkv, NULL, B, nqkv, D, r0, r1, f);
        for (long b = 0; b < B; b++) {
            const long pos = a->pos[b];
            const float *cs = m->rope + pos * hd;
            float *kc = m->kc[l] + a->slots[b] * slot_len, *vc = m->vc[l] + a->slots[b] * slot_len;
            for (long r = r0; r < r1; r += 2) {
                float *v = a->qkv + b * nqkv + r;
                long c = r % hd;
                if (r < nq + nkv) {
                    float co = cs[c], si = cs[c + 1], v0 = v[0], v1 = v[1];
                    v[0] = v0 * co - v1 * si;
                    v[1] = v0 * si + v1 * co;
                }
                if (r >= nq + nkv) {
                    long hh = (r - nq - nkv) / hd;
                    vc[(hh * m->max_len + pos) * hd + c] = v[0];
                    vc[(hh * m->max_len + pos) * hd + c + 1] = v[1];
                } else if (r >= nq) {
                    long hh = (r - nq) / hd;
                    kc[(hh * m->max_len + pos) * hd + c] = v[0];
                    kc[(hh * m->max_len + pos) * hd + c + 1] = v[1];
                }
            }
        }
        barrier(nth);
        /* attention, (row, head) pairs split across threads; each row attends to its slot's positions 0..pos */
        split(B * H, tid, nth, 1, &r0, &r1);
        for (long bh = r0; bh < r1; bh++) {
            const long b = bh / H, h = bh % H, L = a->pos[b] + 1;
            const float *kc = m->kc[l] + a->slots[b] * slot_len, *vc = m->vc[l] + a->slots[b] * slot_len;
            const float *q = a->qkv + b * nqkv + h * hd, *K = kc + (h / rep) * m->max_len * hd,
                        *V = vc + (h / rep) * m->max_len * hd;
            float *att = scratch(tid, L), mx = -INFINITY, sum = 0.0f;
            for (long t = 0; t < L; t++) {
                att[t] = dot1(q, K + t * hd, hd);
                mx = att[t] > mx ? att[t] : mx;
            }
            for (long t = 0; t < L; t++) {
                att[t] = expf(att[t] - mx);
                sum += att[t];
            }
            float *y = a->y + b * nq + h * hd, inv = 1.0f / sum;
            memset(y, 0, hd * sizeof(float));
            for (long t = 0; t < L; t++) axpy(att[t] * inv, V + t * hd, y, hd);
        }
        barrier(nth);
        /* x += Wo y */
        split(D, tid, nth, 4, &r0, &r1);
        weight_t Wo = LW(m, o, l);
        if (Wo.scale && B > 1) f = scratch(tid, 4 * nq);
        gemm_rows(Wo, a->y, a->x, a->x, B, D, nq, r0, r1, f);
        barrier(nth);
        for (long b = 0; b < B; b++) rmsnorm_part(a->x + b * D, m->ln2[l], a->xb + b * D, D, m->eps, tid, nth);
        barrier(nth);
        /* act[b, j] = silu(gate_j . xb[b]) * (up_j . xb[b]): gate row j and up row F + j read once for all rows */
        split(F, tid, nth, 4, &r0, &r1);
        {
            weight_t W = LW(m, gu, l);
            float o[2];
            for (long j = r0; j < r1; j++)
                for (long b = 0; b < B; b++) {
                    rows2(W, j, F + j, a->xb + b * D, D, o);
                    a->act[b * F + j] = o[0] / (1.0f + expf(-o[0])) * o[1];
                }
        }
        barrier(nth);
        /* x += Wdown act */
        split(D, tid, nth, 4, &r0, &r1);
        weight_t Wd = LW(m, down, l);
        if (Wd.scale && B > 1) f = scratch(tid, 4 * F);
        gemm_rows(Wd, a->act, a->x, a->x, B, D, F, r0, r1, f);
        barrier(nth);
    }
    const long n = a->n_out;   /* the final norm and the head for the output rows only, packed in xb */
    for (long i = 0; i < n; i++) rmsnorm_part(a->x + a->out[i] * D, m->norm, a->xb + i * D, D, m->eps, tid, nth);
    barrier(nth);
    split(m->vocab, tid, nth, 16, &r0, &r1);
    weight_t Wh = {m->head, m->s_head, m->q4_head};
    if (Wh.scale && n > 1) f = scratch(tid, 4 * D);
    gemm_rows(Wh, a->xb, a->logits, NULL, n, m->vocab, D, r0, r1, f);
}

/* logits [n_out, vocab] of rows out[0..n_out) (ascending) of B rows: tokens[b] at position pos[b] (< max_len;
 * the rope table must cover it) of cache slot slots[b]. scratch: B * (2 D + (H + 2 Hkv) hd + H hd + F) floats. */
void hg_decode_rows(const hg_model *m, long B, const long *tokens, const long *pos, const long *slots, long n_out,
                    const long *out, float *scratch_rows, float *logits, int nthreads) {
    const long D = m->dim, nqkv = (m->n_heads + 2 * m->n_kv) * m->hd, nq = m->n_heads * m->hd;
    rows_arg a = {m, B, n_out, tokens, pos, slots, out, scratch_rows, scratch_rows + B * D, scratch_rows + 2 * B * D,
                  scratch_rows + B * (2 * D + nqkv), scratch_rows + B * (2 * D + nqkv + nq), logits};
    run(rows_task, &a, nthreads);
}

void hg_set_spin_us(long us) { SPIN_NS = us * 1000; }

/* 512 when built with AVX-512, 256 for AVX2 (for logs and tests). */
int hg_simd_width(void) {
#ifdef __AVX512F__
    return 512;
#else
    return 256;
#endif
}

int hg_openmp(void) {
#ifdef HG_OPENMP
    return 1;
#else
    return 0;
#endif
}
