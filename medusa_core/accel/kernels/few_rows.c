/* out[M, N] = x[M, K] @ w[N, K]^T for the few rows (1-16 in use) of a decoding or verification step.
 *
 * Why: on the CPU a step streams every weight once and does little arithmetic per weight, so it is
 * bound by memory bandwidth. MKL's sgemm/sgemv reach about half of it on this repository's AMD CPU
 * for one row and far less for 2-16 rows (benchmarks/README.md). Here each thread walks its share
 * of w four rows at a time, once, and multiplies the four rows, held in L1, with every row of x:
 * blocks of 3 x-rows by 4 w-rows keep 12 vector accumulators in registers.
 *
 * Portable C with GCC/Clang vector extensions (AVX2 + FMA under -march=native on x86-64, NEON on
 * ARM); OpenMP threads, one team per call, sized by the caller (torch's thread count).
 */
#include <stdint.h>
#include <string.h>

typedef float v8 __attribute__((vector_size(32)));

enum { W_ROWS = 4, MAX_X_ROWS = 3 };

static inline v8 load8(const float *p) {
  v8 v;
  memcpy(&v, p, sizeof v); /* unaligned load */
  return v;
}

static inline float hsum(v8 v) {
  float s = 0.f;
  for (int i = 0; i < 8; ++i) s += v[i];
  return s;
}

/* Rows m0 .. m0+R-1 of x against rows n0 .. n0+3 of w. R is a constant after inlining, so the
 * accumulator array lives in registers. */
static inline __attribute__((always_inline)) void block(int R, const float *x, const float *w, float *out,
                                                        int64_t m0, int64_t n0, int64_t N, int64_t K) {
  const float *xr = x + m0 * K, *wr = w + n0 * K;
  /* the next block of w to prefetch, or this one again at the end of w */
  const float *next = n0 + 2 * W_ROWS <= N ? wr + W_ROWS * K : wr;
  v8 acc[MAX_X_ROWS][W_ROWS];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < W_ROWS; ++c) acc[r][c] = (v8){0};
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    v8 b[W_ROWS];
    for (int c = 0; c < W_ROWS; ++c) b[c] = load8(wr + c * K + k);
    /* Ask for the next block of w now: the hardware prefetcher alone leaves 2-4 rows of x about
     * 25% slower than one row. */
    for (int c = 0; c < W_ROWS; ++c) __builtin_prefetch(next + c * K + k, 0, 0);
    for (int r = 0; r < R; ++r) {
      v8 u = load8(xr + r * K + k);
      for (int c = 0; c < W_ROWS; ++c) acc[r][c] += u * b[c];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < W_ROWS; ++c) {
      float s = hsum(acc[r][c]);
      for (int64_t j = k; j < K; ++j) s += xr[r * K + j] * wr[c * K + j];
      out[(m0 + r) * N + n0 + c] = s;
    }
}

static float dot(const float *a, const float *b, int64_t K) {
  v8 acc = {0};
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) acc += load8(a + k) * load8(b + k);
  float s = hsum(acc);
  for (; k < K; ++k) s += a[k] * b[k];
  return s;
}

void few_rows_matmul(const float *x, const float *w, float *out, int64_t M, int64_t N, int64_t K, int threads) {
  int64_t n_blocks = N / W_ROWS;
#pragma omp parallel for schedule(static) num_threads(threads) if (N * K >= 1 << 16) /* small layers: no team */
  for (int64_t b = 0; b < n_blocks; ++b) {
    int64_t n0 = b * W_ROWS, m = 0;
    for (; m + 3 <= M; m += 3) block(3, x, w, out, m, n0, N, K);
    if (M - m == 2) block(2, x, w, out, m, n0, N, K);
    if (M - m == 1) block(1, x, w, out, m, n0, N, K);
  }
  for (int64_t n = n_blocks * W_ROWS; n < N; ++n) /* the last N % 4 rows of w */
    for (int64_t m = 0; m < M; ++m) out[m * N + n] = dot(x + m * K, w + n * K, K);
}
