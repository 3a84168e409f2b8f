/* CPU kernels of the sparse-kernel execution (methods/sparse_kernels.py): one sparse Linear layer's
 * forward, input gradient and weight gradient at the active positions only, float32, single-threaded.
 *
 * The weight W (out x in) is held in CSR form: rowptr (int64, out + 1), col (int32, nnz) and the
 * values v (nnz). Activations are passed transposed, batch last and contiguous: XT (in x n), YT, GT
 * (out x n), so that every active weight touches one contiguous row of n batch values and the inner
 * loops vectorise over the batch (GCC vector extensions: 16 floats, whatever the target's width).
 *
 * The batch is cut into blocks of at most 128 columns (8 vectors), held in registers while a whole
 * row's active weights are accumulated, then stored once. A block whose width is not a multiple of 16
 * ends with a vector that overlaps the one before it (columns n-16 .. n-1): the overlapped columns are
 * computed twice, by the same operations in the same order, so they are stored twice with equal values.
 * In the dot products (weight gradient) the overlapped lanes are masked out instead.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float vf __attribute__((vector_size(64), aligned(4))); /* 16 floats, unaligned loads allowed */
typedef int32_t vi __attribute__((vector_size(64), aligned(4)));
#define W 16
#define MAXV 8

static inline vf load(const float *p) { return *(const vf *)p; }
static inline void store(float *p, vf x) { *(vf *)p = x; }
static inline vf splat(float a) { return (vf){a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a}; }
static inline float hsum(vf x) {
    float s = 0.f;
    for (int j = 0; j < W; ++j) s += x[j];
    return s;
}

/* out[r, j0 : j0 + m] = init[r] + sum over k in [ptr[r], ptr[r+1]) of v[vi(k)] * src[idx[k], j0 : j0 + m]
 * for every row r < rows, then max(., 0) if relu; src and out have row length n; 16 <= m <= 128
 * (nv = ceil(m / 16) vectors). */
static inline __attribute__((always_inline)) void
accumulate_rows(const int nv, int64_t rows, int64_t n, int64_t j0, int64_t m, const int64_t *ptr,
                const int32_t *idx, const int64_t *perm, const float *v, const float *src, const float *init,
                const int relu, float *out) {
    int64_t off[MAXV];
#pragma GCC unroll 8
    for (int q = 0; q < nv; ++q) off[q] = j0 + (q == nv - 1 ? m - W : q * W);
    for (int64_t r = 0; r < rows; ++r) {
        vf a[MAXV];
        const vf b = splat(init ? init[r] : 0.f);
#pragma GCC unroll 8
        for (int q = 0; q < nv; ++q) a[q] = b;
        for (int64_t k = ptr[r]; k < ptr[r + 1]; ++k) {
            const float *s = src + (int64_t)idx[k] * n;
            const vf w = splat(v[perm ? perm[k] : k]);
#pragma GCC unroll 8
            for (int q = 0; q < nv; ++q) a[q] += w * load(s + off[q]);
        }
        float *o = out + r * n;
        if (relu) {
#pragma GCC unroll 8
            for (int q = 0; q < nv; ++q) a[q] = (vf)((vi)a[q] & ~(a[q] < splat(0.f))); /* NaN stays NaN */
        }
#pragma GCC unroll 8
        for (int q = 0; q < nv; ++q) store(o + off[q], a[q]);
    }
}

static void rows_product(int64_t rows, int64_t n, const int64_t *ptr, const int32_t *idx, const int64_t *perm,
                         const float *v, const float *src, const float *init, const int relu, float *out) {
    if (n < W) { /* tiny batches: plain loops */
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < n; ++j) {
                float a = init ? init[r] : 0.f;
                for (int64_t k = ptr[r]; k < ptr[r + 1]; ++k) a += v[perm ? perm[k] : k] * src[(int64_t)idx[k] * n + j];
                out[r * n + j] = relu && a < 0.f ? 0.f : a;
            }
        return;
    }
    for (int64_t j0 = 0; j0 < n; j0 += MAXV * W) {
        int64_t m = n - j0 < MAXV * W ? n - j0 : MAXV * W;
        if (m < W) { j0 = n - W; m = W; } /* a last sliver: recompute the final 16 columns */
        switch ((m + W - 1) / W) {
#define CASE(NV) case NV: accumulate_rows(NV, rows, n, j0, m, ptr, idx, perm, v, src, init, relu, out); break;
            CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
#undef CASE
        }
    }
}

/* YT[o, :] = bias[o] + sum over row o's active k of v[k] * XT[col[k], :]  (bias may be NULL) */
void sk_forward(int64_t out, int64_t n, const int64_t *rowptr, const int32_t *col, const float *v,
                const float *xt, const float *bias, float *yt) {
    rows_product(out, n, rowptr, col, NULL, v, xt, bias, 0, yt);
}

#define GEMV_BELOW 4 /* batches below this many samples run sample by sample (gathers, no padding) */

/* y[r * ldy] = max(init[r] + sum over row r's active k of v[k] * x[idx[k]], 0 if relu): a CSR matrix-vector
 * product, each row summed in 8 interleaved partial sums (independent multiply-adds; measured 2.5x faster
 * than a vectorised loop of gathers on this project's AMD EPYC) */
static void gemv_rows(int64_t rows, const int64_t *ptr, const int32_t *idx, const float *v, const float *x,
                      const float *init, const int relu, float *y, int64_t ldy) {
    for (int64_t r = 0; r < rows; ++r) {
        float a[8] = {0.f};
        int64_t k = ptr[r];
        for (; k + 8 <= ptr[r + 1]; k += 8)
#pragma GCC unroll 8
            for (int q = 0; q < 8; ++q) a[q] += v[k + q] * x[idx[k + q]];
        for (; k < ptr[r + 1]; ++k) a[0] += v[k] * x[idx[k]];
        const float sum = (init ? init[r] : 0.f) + (((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])));
        y[r * ldy] = relu && sum < 0.f ? 0.f : sum;
    }
}

/* Inference through a chain of `layers` sparse Linear layers (each followed by a ReLU where relu[l]):
 * X (n x dims[0], row stride ldx, batch first) -> Y^T (dims[layers] x ldy, its first n columns), ldy =
 * max(n, 16). Layer l has dims[l] inputs, dims[l + 1] outputs and its CSR rowptr, col, values, bias (or
 * NULL) in ptrs[4l .. 4l + 3]. Below GEMV_BELOW samples each sample runs through the chain alone
 * (gemv_rows). Otherwise X is transposed once into a work buffer (batch last; columns n .. 15 zero-filled
 * when n < 16, so that small batches run the same vector loops), and every layer reads the previous
 * layer's output where it was written. Returns 0, or 1 when the work buffer cannot be allocated. */
int sk_infer_chain(int64_t layers, int64_t n, int64_t ldx, const float *x, const int64_t *dims,
                   void *const *ptrs, const int32_t *relu, float *yt) {
    const int64_t m = n < W ? W : n;
    int64_t hidden = 0;
    for (int64_t l = 1; l < layers; ++l) hidden = dims[l] > hidden ? dims[l] : hidden;
    if (n < GEMV_BELOW) {
        float *work = malloc(sizeof(float) * (2 * hidden + 1));
        if (!work) return 1;
        for (int64_t i = 0; i < n; ++i) {
            const float *src = x + i * ldx;
            for (int64_t l = 0; l < layers; ++l) {
                float *dst = l == layers - 1 ? yt + i : work + (l % 2) * hidden;
                gemv_rows(dims[l + 1], ptrs[4 * l], ptrs[4 * l + 1], ptrs[4 * l + 2], src, ptrs[4 * l + 3],
                          relu[l] != 0, dst, l == layers - 1 ? m : 1);
                src = dst;
            }
        }
        free(work);
        return 0;
    }
    float *work = malloc(sizeof(float) * (dims[0] + 2 * hidden) * m);
    if (!work) return 1;
    float *src = work, *buf[2] = {work + dims[0] * m, work + dims[0] * m + hidden * m};
    if (n < m) memset(src, 0, sizeof(float) * dims[0] * m);
    for (int64_t i0 = 0; i0 < n; i0 += 32) /* src[j, i] = x[i, j], in 32 x 32 tiles */
        for (int64_t j0 = 0; j0 < dims[0]; j0 += 32) {
            const int64_t i1 = i0 + 32 < n ? i0 + 32 : n, j1 = j0 + 32 < dims[0] ? j0 + 32 : dims[0];
            for (int64_t j = j0; j < j1; ++j)
                for (int64_t i = i0; i < i1; ++i) src[j * m + i] = x[i * ldx + j];
        }
    for (int64_t l = 0; l < layers; ++l) {
        float *dst = l == layers - 1 ? yt : buf[l % 2];
        rows_product(dims[l + 1], m, ptrs[4 * l], ptrs[4 * l + 1], NULL, ptrs[4 * l + 2], src, ptrs[4 * l + 3],
                     relu[l] != 0, dst);
        src = dst;
    }
    free(work);
    return 0;
}

/* DXT (in x n) = W^T GT: DXT[i, :] = sum over active (o, i) of v * GT[o, :], with the transposed
 * structure (tptr: in + 1, trow: the row of each entry, tperm: its index in the CSR order). */
void sk_input_grad(int64_t in, int64_t n, const int64_t *tptr, const int32_t *trow, const int64_t *tperm,
                   const float *v, const float *gt, float *dxt) {
    rows_product(in, n, tptr, trow, tperm, v, gt, NULL, 0, dxt);
}

static inline __attribute__((always_inline)) void
dot_rows(const int nv, int64_t out, int64_t n, const int64_t *rowptr, const int32_t *col, const float *gt,
         const float *xt, float *dv) {
    int64_t off[MAXV];
#pragma GCC unroll 8
    for (int q = 0; q < nv; ++q) off[q] = q == nv - 1 ? n - W : q * W;
    vf tail = splat(1.f); /* zero the lanes of the last vector that the one before it already covers */
    for (int j = 0; j < W; ++j) tail[j] = (nv - 1) * W - (n - W) > j ? 0.f : 1.f;
    for (int64_t o = 0; o < out; ++o) {
        vf g[MAXV];
#pragma GCC unroll 8
        for (int q = 0; q < nv; ++q) g[q] = load(gt + o * n + off[q]);
        g[nv - 1] *= tail;
        for (int64_t k = rowptr[o]; k < rowptr[o + 1]; ++k) {
            const float *x = xt + (int64_t)col[k] * n;
            vf a = g[0] * load(x + off[0]);
#pragma GCC unroll 8
            for (int q = 1; q < nv; ++q) a += g[q] * load(x + off[q]);
            dv[k] = hsum(a);
        }
    }
}

/* dv[k] = GT[row(k), :] . XT[col[k], :]: the weight gradient at the active positions only (SDDMM) */
void sk_weight_grad(int64_t out, int64_t n, const int64_t *rowptr, const int32_t *col, const float *gt,
                    const float *xt, float *dv) {
    if (n < W || n > MAXV * W) {
        for (int64_t o = 0; o < out; ++o)
            for (int64_t k = rowptr[o]; k < rowptr[o + 1]; ++k) {
                const float *g = gt + o * n, *x = xt + (int64_t)col[k] * n;
                float s = 0.f;
                for (int64_t j = 0; j < n; ++j) s += g[j] * x[j];
                dv[k] = s;
            }
        return;
    }
    switch ((n + W - 1) / W) {
#define CASE(NV) case NV: dot_rows(NV, out, n, rowptr, col, gt, xt, dv); break;
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
#undef CASE
    }
}

/* flat[pos[k]] = v[k]: copy the active values into the dense weight */
void sk_scatter(int64_t nnz, const int64_t *pos, const float *v, float *flat) {
    for (int64_t k = 0; k < nnz; ++k) flat[pos[k]] = v[k];
}

/* out (cols x rows) = in (rows x cols, row stride ld) transposed, in 32 x 32 tiles */
void sk_transpose(int64_t rows, int64_t cols, int64_t ld, const float *in, float *out) {
    for (int64_t i0 = 0; i0 < rows; i0 += 32)
        for (int64_t j0 = 0; j0 < cols; j0 += 32) {
            const int64_t i1 = i0 + 32 < rows ? i0 + 32 : rows, j1 = j0 + 32 < cols ? j0 + 32 : cols;
            for (int64_t j = j0; j < j1; ++j)
                for (int64_t i = i0; i < i1; ++i) out[j * rows + i] = in[i * ld + j];
        }
}

/* xs[t][i] *= (float)masks[t][i] for i < sizes[t], t < count: masking float32 tensors by bool masks (one
 * byte, 0 or 1, per element) with exactly the values of a multiply by the masks' float copies */
void sk_mask_mul(int64_t count, float *const *xs, const uint8_t *const *masks, const int64_t *sizes) {
    for (int64_t t = 0; t < count; ++t) {
        float *x = xs[t];
        const uint8_t *m = masks[t];
        for (int64_t i = 0; i < sizes[t]; ++i) x[i] *= (float)m[i];
    }
}
