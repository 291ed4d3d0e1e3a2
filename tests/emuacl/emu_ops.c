/*
 * emu_ops.c - the dense aclnn operators and the operator dispatch.
 *
 * Owns: the shape/dtype check helpers, Embedding, IndexSelect, RmsNorm,
 * AddRmsNorm, Matmul, Addmm, SwiGlu, Silu, Mul, Add, InplaceAdd, Cast, ArgMax
 * (GetWorkspaceSize checks + math), and emu_op_run, which runs any validated
 * call. Math: inputs widened to f32, f32 accumulation in natural order, one
 * rounding to the output dtype on store. Outputs may alias inputs: every op
 * computes into a temporary before storing.
 */
#define _GNU_SOURCE
#include "emu_op.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- checks */

int emu_bad(emu_call *c, const char *fmt, ...)
{
    char buf[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return emu_fail(ACLNN_ERR_PARAM_INVALID, "%s: %s", c->fn, buf);
}

static void shape_str(const struct emu_tensor *t, char *buf, size_t n)
{
    size_t at = (size_t)snprintf(buf, n, "[");
    for (int k = 0; k < t->ndim && at < n; k++)
        at += (size_t)snprintf(buf + at, n - at, "%s%lld", k ? "," : "", (long long)t->dims[k]);
    if (at < n)
        snprintf(buf + at, n - at, "]");
}

int emu_need_ndim(emu_call *c, const struct emu_tensor *t, const char *arg, int ndim)
{
    if (t->ndim == ndim)
        return 0;
    char s[128];
    shape_str(t, s, sizeof s);
    return emu_bad(c, "%s must be %d-D, got shape %s", arg, ndim, s);
}

int emu_need_dim(emu_call *c, const struct emu_tensor *t, const char *arg, int k, int64_t want)
{
    if (k < t->ndim && t->dims[k] == want)
        return 0;
    char s[128];
    shape_str(t, s, sizeof s);
    return emu_bad(c, "%s dim %d must be %lld, got shape %s", arg, k, (long long)want, s);
}

int emu_need_float(emu_call *c, const struct emu_tensor *t, const char *arg)
{
    if (emu_is_float(t->dtype))
        return 0;
    return emu_bad(c, "%s has dtype %s; float32/float16/bfloat16 expected", arg, emu_dtype_name(t->dtype));
}

int emu_need_index(emu_call *c, const struct emu_tensor *t, const char *arg)
{
    if (emu_is_index(t->dtype))
        return 0;
    return emu_bad(c, "%s has dtype %s; int32/int64 expected", arg, emu_dtype_name(t->dtype));
}

int emu_need_same_dtype(emu_call *c, const struct emu_tensor *a, const char *an, const struct emu_tensor *b,
                        const char *bn)
{
    if (a->dtype == b->dtype)
        return 0;
    return emu_bad(c, "mixed dtypes: %s is %s but %s is %s", an, emu_dtype_name(a->dtype), bn,
                   emu_dtype_name(b->dtype));
}

int emu_need_same_shape(emu_call *c, const struct emu_tensor *a, const char *an, const struct emu_tensor *b,
                        const char *bn)
{
    bool same = a->ndim == b->ndim;
    for (int k = 0; same && k < a->ndim; k++)
        same = a->dims[k] == b->dims[k];
    if (same)
        return 0;
    char s1[128], s2[128];
    shape_str(a, s1, sizeof s1);
    shape_str(b, s2, sizeof s2);
    return emu_bad(c, "%s shape %s differs from %s shape %s", an, s1, bn, s2);
}

int emu_need_contig(emu_call *c, const struct emu_tensor *t, const char *arg)
{
    int64_t want = 1;
    for (int k = t->ndim - 1; k >= 0; k--) {
        if (t->dims[k] != 1 && t->strides[k] != want)
            return emu_bad(c, "%s must be contiguous (stride of dim %d is %lld, expected %lld)", arg, k,
                           (long long)t->strides[k], (long long)want);
        want *= t->dims[k];
    }
    return 0;
}

int emu_no_f32(emu_call *c, const struct emu_tensor *t, const char *op)
{
    if (t->dtype != ACL_FLOAT || G.env.f32)
        return 0;
    return emu_bad(c, "float32 is not supported by %s on Ascend910B4; EMUACL_F32=1 enables the emulator's f32 mode",
                   op);
}

int64_t emu_flat_off(const struct emu_tensor *t, int64_t i)
{
    int64_t off = t->offset;
    for (int k = t->ndim - 1; k >= 0; k--) {
        int64_t d = t->dims[k] ? t->dims[k] : 1;
        off += (i % d) * t->strides[k];
        i /= d;
    }
    return off;
}

#define CHECK(x)                                                                                                   \
    do {                                                                                                           \
        if (rc == 0)                                                                                               \
            rc = (x);                                                                                              \
    } while (0)

/* ---------------------------------------------------------------- Embedding / IndexSelect */

EXPORT aclnnStatus aclnnEmbeddingGetWorkspaceSize(const aclTensor *weight, const aclTensor *indices,
                                                  const aclTensor *out, uint64_t *ws, aclOpExecutor **ex)
{
    emu_call c;
    struct emu_opcall *o;
    if (emu_gws_begin(&c, &o, __func__, OP_EMBEDDING, "aclnnEmbedding"))
        return emu_leave(&c);
    int rc = 0;
    CHECK(emu_arg_tensor(&c, o, 0, weight, "weight", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 1, indices, "indices", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 2, out, "out", IO_OUT, false));
    struct emu_tensor *w = &o->t[0], *ix = &o->t[1], *y = &o->t[2];
    CHECK(emu_need_ndim(&c, w, "weight", 2));
    CHECK(emu_need_float(&c, w, "weight"));
    CHECK(emu_need_ndim(&c, ix, "indices", 1));
    CHECK(emu_need_index(&c, ix, "indices"));
    CHECK(emu_need_ndim(&c, y, "out", 2));
    CHECK(emu_need_dim(&c, y, "out", 0, ix->dims[0]));
    CHECK(emu_need_dim(&c, y, "out", 1, w->dims[1]));
    CHECK(emu_need_same_dtype(&c, w, "weight", y, "out"));
    return emu_gws_end(&c, o, rc, ws, ex);
}
EMU_LAUNCH(aclnnEmbedding, OP_EMBEDDING)

EXPORT aclnnStatus aclnnIndexSelectGetWorkspaceSize(const aclTensor *self, int64_t dim, const aclTensor *index,
                                                    aclTensor *out, uint64_t *ws, aclOpExecutor **ex)
{
    emu_call c;
    struct emu_opcall *o;
    if (emu_gws_begin(&c, &o, __func__, OP_INDEX_SELECT, "aclnnIndexSelect"))
        return emu_leave(&c);
    int rc = 0;
    CHECK(emu_arg_tensor(&c, o, 0, self, "self", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 1, index, "index", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 2, out, "out", IO_OUT, false));
    struct emu_tensor *x = &o->t[0], *ix = &o->t[1], *y = &o->t[2];
    if (rc == 0 && dim != 0)
        rc = emu_bad(&c, "dim %lld: the emulator supports dim 0 only", (long long)dim);
    CHECK(emu_need_ndim(&c, x, "self", 2));
    CHECK(emu_need_ndim(&c, ix, "index", 1));
    CHECK(emu_need_index(&c, ix, "index"));
    CHECK(emu_need_ndim(&c, y, "out", 2));
    CHECK(emu_need_dim(&c, y, "out", 0, ix->dims[0]));
    CHECK(emu_need_dim(&c, y, "out", 1, x->dims[1]));
    CHECK(emu_need_same_dtype(&c, x, "self", y, "out"));
    o->i[0] = dim;
    return emu_gws_end(&c, o, rc, ws, ex);
}
EMU_LAUNCH(aclnnIndexSelect, OP_INDEX_SELECT)

/* rows of src selected by idx into dst (Embedding and IndexSelect) */
static int run_gather(struct emu_opcall *o)
{
    const struct emu_tensor *src = &o->t[0], *ix = &o->t[1], *dst = &o->t[2];
    int64_t R = ix->dims[0], C = src->dims[1], V = src->dims[0];
    float *row = malloc((size_t)(C ? C : 1) * sizeof(float));
    int rc = 0;
    for (int64_t r = 0; r < R && rc == 0; r++) {
        int64_t id = emu_ldi(ix, ix->offset + r * ix->strides[0]);
        if (id < 0 || id >= V) {
            rc = emu_fail(ACLNN_ERR_PARAM_INVALID, "%s: index %lld at position %lld is out of range [0, %lld)",
                          o->name, (long long)id, (long long)r, (long long)V);
            break;
        }
        for (int64_t j = 0; j < C; j++)
            row[j] = emu_ldf(src, off2(src, id, j));
        for (int64_t j = 0; j < C; j++)
            emu_stf(dst, off2(dst, r, j), row[j]);
    }
    free(row);
    return rc;
}

/* ---------------------------------------------------------------- RmsNorm / AddRmsNorm */

static int check_norm(emu_call *c, struct emu_opcall *o, int xs, int gs, int ys, int rs)
{
    int rc = 0;
    struct emu_tensor *x = &o->t[xs], *g = &o->t[gs], *y = &o->t[ys], *r = &o->t[rs];
    CHECK(emu_need_ndim(c, x, "x", 2));
    CHECK(emu_need_float(c, x, "x"));
    CHECK(emu_need_ndim(c, g, "gamma", 1));
    CHECK(emu_need_dim(c, g, "gamma", 0, x->dims[1]));
    CHECK(emu_need_same_dtype(c, x, "x", g, "gamma"));
    CHECK(emu_need_same_shape(c, y, "yOut", x, "x"));
    CHECK(emu_need_same_dtype(c, x, "x", y, "yOut"));
    CHECK(emu_need_ndim(c, r, "rstdOut", 2));
    CHECK(emu_need_dim(c, r, "rstdOut", 0, x->dims[0]));
    CHECK(emu_need_dim(c, r, "rstdOut", 1, 1));
    if (rc == 0 && r->dtype != ACL_FLOAT)
        rc = emu_bad(c, "rstdOut must be float32, got %s", emu_dtype_name(r->dtype));
    return rc;
}

EXPORT aclnnStatus aclnnRmsNormGetWorkspaceSize(const aclTensor *x, const aclTensor *gamma, double epsilon,
                                                const aclTensor *yOut, const aclTensor *rstdOut, uint64_t *ws,
                                                aclOpExecutor **ex)
{
    emu_call c;
    struct emu_opcall *o;
    if (emu_gws_begin(&c, &o, __func__, OP_RMS_NORM, "aclnnRmsNorm"))
        return emu_leave(&c);
    int rc = 0;
    CHECK(emu_arg_tensor(&c, o, 0, x, "x", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 1, gamma, "gamma", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 2, yOut, "yOut", IO_OUT, false));
    CHECK(emu_arg_tensor(&c, o, 3, rstdOut, "rstdOut", IO_OUT, false));
    CHECK(check_norm(&c, o, 0, 1, 2, 3));
    o->d[0] = epsilon;
    return emu_gws_end(&c, o, rc, ws, ex);
}
EMU_LAUNCH(aclnnRmsNorm, OP_RMS_NORM)

EXPORT aclnnStatus aclnnAddRmsNormGetWorkspaceSize(const aclTensor *x1, const aclTensor *x2, const aclTensor *gamma,
                                                   double epsilon, aclTensor *yOut, aclTensor *rstdOut,
                                                   aclTensor *xOut, uint64_t *ws, aclOpExecutor **ex)
{
    emu_call c;
    struct emu_opcall *o;
    if (emu_gws_begin(&c, &o, __func__, OP_ADD_RMS_NORM, "aclnnAddRmsNorm"))
        return emu_leave(&c);
    int rc = 0;
    CHECK(emu_arg_tensor(&c, o, 0, x1, "x1", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 1, x2, "x2", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 2, gamma, "gamma", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 3, yOut, "yOut", IO_OUT, false));
    CHECK(emu_arg_tensor(&c, o, 4, rstdOut, "rstdOut", IO_OUT, false));
    CHECK(emu_arg_tensor(&c, o, 5, xOut, "xOut", IO_OUT, false));
    CHECK(check_norm(&c, o, 0, 2, 3, 4));
    CHECK(emu_need_same_shape(&c, &o->t[1], "x2", &o->t[0], "x1"));
    CHECK(emu_need_same_dtype(&c, &o->t[1], "x2", &o->t[0], "x1"));
    CHECK(emu_need_same_shape(&c, &o->t[5], "xOut", &o->t[0], "x1"));
    CHECK(emu_need_same_dtype(&c, &o->t[5], "xOut", &o->t[0], "x1"));
    o->d[0] = epsilon;
    return emu_gws_end(&c, o, rc, ws, ex);
}
EMU_LAUNCH(aclnnAddRmsNorm, OP_ADD_RMS_NORM)

static int run_norm(struct emu_opcall *o, bool add)
{
    const struct emu_tensor *x1 = &o->t[0], *x2 = add ? &o->t[1] : NULL, *g = &o->t[add ? 2 : 1];
    const struct emu_tensor *y = &o->t[add ? 3 : 2], *r = &o->t[add ? 4 : 3], *xo = add ? &o->t[5] : NULL;
    int64_t T = x1->dims[0], H = x1->dims[1];
    float *xr = malloc((size_t)(H ? H : 1) * sizeof(float));
    for (int64_t t = 0; t < T; t++) {
        for (int64_t j = 0; j < H; j++) {
            float v = emu_ldf(x1, off2(x1, t, j));
            if (add) /* the residual sum as stored (rounded to the dtype) feeds the norm */
                v = emu_round(x1->dtype, v + emu_ldf(x2, off2(x2, t, j)));
            xr[j] = v;
        }
        float ss = 0.0f;
        for (int64_t j = 0; j < H; j++)
            ss += xr[j] * xr[j];
        float rstd = 1.0f / sqrtf(ss / (float)H + (float)o->d[0]);
        if (add)
            for (int64_t j = 0; j < H; j++)
                emu_stf(xo, off2(xo, t, j), xr[j]);
        for (int64_t j = 0; j < H; j++)
            emu_stf(y, off2(y, t, j), (xr[j] * rstd) * emu_ldf(g, g->offset + j * g->strides[0]));
        emu_stf(r, off2(r, t, 0), rstd);
    }
    free(xr);
    return 0;
}

/* ---------------------------------------------------------------- Matmul / Addmm */

static int check_mm(emu_call *c, struct emu_opcall *o, int as, int bs, int ys, int64_t cube)
{
    int rc = 0;
    struct emu_tensor *a = &o->t[as], *b = &o->t[bs], *y = &o->t[ys];
    const char *an = as == 0 ? "self" : "mat1";
    CHECK(emu_need_ndim(c, a, an, 2));
    CHECK(emu_need_float(c, a, an));
    CHECK(emu_need_ndim(c, b, "mat2", 2));
    CHECK(emu_need_dim(c, b, "mat2", 0, a->dims[1]));
    CHECK(emu_need_same_dtype(c, a, an, b, "mat2"));
    CHECK(emu_need_ndim(c, y, "out", 2));
    CHECK(emu_need_dim(c, y, "out", 0, a->dims[0]));
    CHECK(emu_need_dim(c, y, "out", 1, b->dims[1]));
    CHECK(emu_need_same_dtype(c, a, an, y, "out"));
    if (rc == 0 && (cube < 0 || cube > 3))
        rc = emu_bad(c, "cubeMathType %lld is not 0..3", (long long)cube);
    return rc;
}

EXPORT aclnnStatus aclnnMatmulGetWorkspaceSize(const aclTensor *self, const aclTensor *mat2, aclTensor *out,
                                               int8_t cubeMathType, uint64_t *ws, aclOpExecutor **ex)
{
    emu_call c;
    struct emu_opcall *o;
    if (emu_gws_begin(&c, &o, __func__, OP_MATMUL, "aclnnMatmul"))
        return emu_leave(&c);
    int rc = 0;
    CHECK(emu_arg_tensor(&c, o, 0, self, "self", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 1, mat2, "mat2", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 2, out, "out", IO_OUT, false));
    CHECK(check_mm(&c, o, 0, 1, 2, cubeMathType));
    o->i[0] = cubeMathType;
    return emu_gws_end(&c, o, rc, ws, ex);
}
EMU_LAUNCH(aclnnMatmul, OP_MATMUL)

EXPORT aclnnStatus aclnnAddmmGetWorkspaceSize(const aclTensor *self, const aclTensor *mat1, const aclTensor *mat2,
                                              const aclScalar *beta, const aclScalar *alpha, aclTensor *out,
                                              int8_t cubeMathType, uint64_t *ws, aclOpExecutor **ex)
{
    emu_call c;
    struct emu_opcall *o;
    if (emu_gws_begin(&c, &o, __func__, OP_ADDMM, "aclnnAddmm"))
        return emu_leave(&c);
    int rc = 0;
    CHECK(emu_arg_tensor(&c, o, 0, self, "self", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 1, mat1, "mat1", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 2, mat2, "mat2", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 3, out, "out", IO_OUT, false));
    CHECK(emu_arg_scalar(&c, beta, "beta", &o->d[0]));
    CHECK(emu_arg_scalar(&c, alpha, "alpha", &o->d[1]));
    CHECK(check_mm(&c, o, 1, 2, 3, cubeMathType));
    struct emu_tensor *b = &o->t[0], *y = &o->t[3];
    CHECK(emu_need_same_dtype(&c, b, "self", y, "out"));
    if (rc == 0) {
        int64_t M = y->dims[0], N = y->dims[1];
        bool ok = (b->ndim == 1 && b->dims[0] == N) || (b->ndim == 2 && b->dims[1] == N && (b->dims[0] == 1 || b->dims[0] == M));
        if (!ok)
            rc = emu_bad(&c, "self (bias) must be [N], [1,N] or [M,N] with M=%lld N=%lld", (long long)M, (long long)N);
    }
    o->i[0] = cubeMathType;
    return emu_gws_end(&c, o, rc, ws, ex);
}
EMU_LAUNCH(aclnnAddmm, OP_ADDMM)

static int run_mm(struct emu_opcall *o, bool addmm)
{
    const struct emu_tensor *a = &o->t[addmm ? 1 : 0], *b = &o->t[addmm ? 2 : 1], *y = &o->t[addmm ? 3 : 2];
    const struct emu_tensor *bias = addmm ? &o->t[0] : NULL;
    int64_t M = a->dims[0], K = a->dims[1], N = b->dims[1];
    float *A = malloc((size_t)(M * K + 1) * sizeof(float));
    float *Bt = malloc((size_t)(N * K + 1) * sizeof(float));
    float *Y = malloc((size_t)(M * N + 1) * sizeof(float));
    for (int64_t m = 0; m < M; m++)
        for (int64_t k = 0; k < K; k++)
            A[m * K + k] = emu_ldf(a, off2(a, m, k));
    for (int64_t k = 0; k < K; k++)
        for (int64_t n = 0; n < N; n++)
            Bt[n * K + k] = emu_ldf(b, off2(b, k, n));
    float beta = (float)o->d[0], alpha = (float)o->d[1];
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            const float *ar = A + m * K, *br = Bt + n * K;
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++)
                acc += ar[k] * br[k];
            if (addmm) {
                int64_t be = bias->ndim == 1 ? bias->offset + n * bias->strides[0]
                                             : off2(bias, bias->dims[0] == 1 ? 0 : m, n);
                acc = beta * emu_ldf(bias, be) + alpha * acc;
            }
            Y[m * N + n] = acc;
        }
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++)
            emu_stf(y, off2(y, m, n), Y[m * N + n]);
    free(A);
    free(Bt);
    free(Y);
    return 0;
}

/* ---------------------------------------------------------------- SwiGlu / Silu */

EXPORT aclnnStatus aclnnSwiGluGetWorkspaceSize(const aclTensor *x, int64_t dim, const aclTensor *out, uint64_t *ws,
                                               aclOpExecutor **ex)
{
    emu_call c;
    struct emu_opcall *o;
    if (emu_gws_begin(&c, &o, __func__, OP_SWIGLU, "aclnnSwiGlu"))
        return emu_leave(&c);
    int rc = 0;
    CHECK(emu_arg_tensor(&c, o, 0, x, "x", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 1, out, "out", IO_OUT, false));
    struct emu_tensor *xt = &o->t[0], *y = &o->t[1];
    CHECK(emu_need_ndim(&c, xt, "x", 2));
    CHECK(emu_need_float(&c, xt, "x"));
    CHECK(emu_no_f32(&c, xt, "aclnnSwiGlu"));
    if (rc == 0 && dim != -1 && dim != 1)
        rc = emu_bad(&c, "dim %lld: only the last dim (-1) is supported", (long long)dim);
    if (rc == 0 && xt->dims[1] % 2)
        rc = emu_bad(&c, "x last dim %lld is odd", (long long)xt->dims[1]);
    CHECK(emu_need_ndim(&c, y, "out", 2));
    CHECK(emu_need_dim(&c, y, "out", 0, xt->dims[0]));
    CHECK(emu_need_dim(&c, y, "out", 1, xt->dims[1] / 2));
    CHECK(emu_need_same_dtype(&c, xt, "x", y, "out"));
    o->i[0] = dim;
    return emu_gws_end(&c, o, rc, ws, ex);
}
EMU_LAUNCH(aclnnSwiGlu, OP_SWIGLU)

static float silu(float g) { return g / (1.0f + expf(-g)); }

static int run_swiglu(struct emu_opcall *o)
{
    const struct emu_tensor *x = &o->t[0], *y = &o->t[1];
    int64_t T = x->dims[0], I = y->dims[1];
    float *row = malloc((size_t)(I ? I : 1) * sizeof(float));
    for (int64_t t = 0; t < T; t++) {
        for (int64_t j = 0; j < I; j++)
            row[j] = silu(emu_ldf(x, off2(x, t, j))) * emu_ldf(x, off2(x, t, I + j));
        for (int64_t j = 0; j < I; j++)
            emu_stf(y, off2(y, t, j), row[j]);
    }
    free(row);
    return 0;
}

EXPORT aclnnStatus aclnnSiluGetWorkspaceSize(const aclTensor *self, aclTensor *out, uint64_t *ws, aclOpExecutor **ex)
{
    emu_call c;
    struct emu_opcall *o;
    if (emu_gws_begin(&c, &o, __func__, OP_SILU, "aclnnSilu"))
        return emu_leave(&c);
    int rc = 0;
    CHECK(emu_arg_tensor(&c, o, 0, self, "self", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 1, out, "out", IO_OUT, false));
    CHECK(emu_need_float(&c, &o->t[0], "self"));
    CHECK(emu_need_same_shape(&c, &o->t[1], "out", &o->t[0], "self"));
    CHECK(emu_need_same_dtype(&c, &o->t[1], "out", &o->t[0], "self"));
    return emu_gws_end(&c, o, rc, ws, ex);
}
EMU_LAUNCH(aclnnSilu, OP_SILU)

/* ---------------------------------------------------------------- elementwise: Silu, Mul, Add, InplaceAdd */

/* other is the same shape as self, or a trailing [N] / [1,N] broadcast over rows */
static int check_bcast(emu_call *c, const struct emu_tensor *self, const struct emu_tensor *other)
{
    bool same = self->ndim == other->ndim;
    for (int k = 0; same && k < self->ndim; k++)
        same = self->dims[k] == other->dims[k];
    if (same)
        return 0;
    int64_t N = self->ndim ? self->dims[self->ndim - 1] : 1;
    if ((other->ndim == 1 && other->dims[0] == N) || (other->ndim == 2 && other->dims[0] == 1 && other->dims[1] == N))
        return 0;
    return emu_bad(c, "other must have self's shape or broadcast as a trailing [N] / [1,N]");
}

static int elementwise(struct emu_opcall *o, int kind /* 0 silu, 1 mul, 2 add */)
{
    const struct emu_tensor *x = &o->t[0], *w = kind ? &o->t[1] : NULL;
    const struct emu_tensor *y = kind == 0 ? &o->t[1] : (o->op == OP_INPLACE_ADD ? &o->t[0] : &o->t[2]);
    int64_t n = emu_numel(x), xn = emu_numel(x), wn = w ? emu_numel(w) : 1;
    float *tmp = malloc((size_t)(n ? n : 1) * sizeof(float));
    float alpha = (float)o->d[0];
    for (int64_t i = 0; i < n; i++) {
        float a = emu_ldf(x, emu_flat_off(x, i));
        if (kind == 0) {
            tmp[i] = silu(a);
            continue;
        }
        float b = emu_ldf(w, emu_flat_off(w, wn == xn ? i : i % wn));
        tmp[i] = kind == 1 ? a * b : a + alpha * b;
    }
    for (int64_t i = 0; i < n; i++)
        emu_stf(y, emu_flat_off(y, i), tmp[i]);
    free(tmp);
    return 0;
}

EXPORT aclnnStatus aclnnMulGetWorkspaceSize(const aclTensor *self, const aclTensor *other, aclTensor *out,
                                            uint64_t *ws, aclOpExecutor **ex)
{
    emu_call c;
    struct emu_opcall *o;
    if (emu_gws_begin(&c, &o, __func__, OP_MUL, "aclnnMul"))
        return emu_leave(&c);
    int rc = 0;
    CHECK(emu_arg_tensor(&c, o, 0, self, "self", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 1, other, "other", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 2, out, "out", IO_OUT, false));
    CHECK(emu_need_float(&c, &o->t[0], "self"));
    CHECK(emu_need_same_dtype(&c, &o->t[1], "other", &o->t[0], "self"));
    CHECK(check_bcast(&c, &o->t[0], &o->t[1]));
    CHECK(emu_need_same_shape(&c, &o->t[2], "out", &o->t[0], "self"));
    CHECK(emu_need_same_dtype(&c, &o->t[2], "out", &o->t[0], "self"));
    return emu_gws_end(&c, o, rc, ws, ex);
}
EMU_LAUNCH(aclnnMul, OP_MUL)

EXPORT aclnnStatus aclnnAddGetWorkspaceSize(const aclTensor *self, const aclTensor *other, const aclScalar *alpha,
                                            aclTensor *out, uint64_t *ws, aclOpExecutor **ex)
{
    emu_call c;
    struct emu_opcall *o;
    if (emu_gws_begin(&c, &o, __func__, OP_ADD, "aclnnAdd"))
        return emu_leave(&c);
    int rc = 0;
    CHECK(emu_arg_tensor(&c, o, 0, self, "self", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 1, other, "other", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 2, out, "out", IO_OUT, false));
    CHECK(emu_arg_scalar(&c, alpha, "alpha", &o->d[0]));
    CHECK(emu_need_float(&c, &o->t[0], "self"));
    CHECK(emu_need_same_dtype(&c, &o->t[1], "other", &o->t[0], "self"));
    CHECK(check_bcast(&c, &o->t[0], &o->t[1]));
    CHECK(emu_need_same_shape(&c, &o->t[2], "out", &o->t[0], "self"));
    CHECK(emu_need_same_dtype(&c, &o->t[2], "out", &o->t[0], "self"));
    return emu_gws_end(&c, o, rc, ws, ex);
}
EMU_LAUNCH(aclnnAdd, OP_ADD)

EXPORT aclnnStatus aclnnInplaceAddGetWorkspaceSize(const aclTensor *selfRef, const aclTensor *other,
                                                   const aclScalar *alpha, uint64_t *ws, aclOpExecutor **ex)
{
    emu_call c;
    struct emu_opcall *o;
    if (emu_gws_begin(&c, &o, __func__, OP_INPLACE_ADD, "aclnnInplaceAdd"))
        return emu_leave(&c);
    int rc = 0;
    CHECK(emu_arg_tensor(&c, o, 0, selfRef, "selfRef", IO_INOUT, false));
    CHECK(emu_arg_tensor(&c, o, 1, other, "other", IO_IN, false));
    CHECK(emu_arg_scalar(&c, alpha, "alpha", &o->d[0]));
    CHECK(emu_need_float(&c, &o->t[0], "selfRef"));
    CHECK(emu_need_same_dtype(&c, &o->t[1], "other", &o->t[0], "selfRef"));
    CHECK(check_bcast(&c, &o->t[0], &o->t[1]));
    return emu_gws_end(&c, o, rc, ws, ex);
}
EMU_LAUNCH(aclnnInplaceAdd, OP_INPLACE_ADD)

/* ---------------------------------------------------------------- Cast / ArgMax */

EXPORT aclnnStatus aclnnCastGetWorkspaceSize(const aclTensor *self, const aclDataType dtype, aclTensor *out,
                                             uint64_t *ws, aclOpExecutor **ex)
{
    emu_call c;
    struct emu_opcall *o;
    if (emu_gws_begin(&c, &o, __func__, OP_CAST, "aclnnCast"))
        return emu_leave(&c);
    int rc = 0;
    CHECK(emu_arg_tensor(&c, o, 0, self, "self", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 1, out, "out", IO_OUT, false));
    CHECK(emu_need_same_shape(&c, &o->t[1], "out", &o->t[0], "self"));
    if (rc == 0 && o->t[1].dtype != dtype)
        rc = emu_bad(&c, "dtype %d differs from out's dtype %s", dtype, emu_dtype_name(o->t[1].dtype));
    if (rc == 0) {
        int a = o->t[0].dtype, b = o->t[1].dtype;
        if (!((emu_is_float(a) && emu_is_float(b)) || (emu_is_index(a) && emu_is_index(b))))
            rc = emu_bad(&c, "cast %s -> %s is not supported (float<->float and int32<->int64 only)",
                         emu_dtype_name(a), emu_dtype_name(b));
    }
    o->i[0] = dtype;
    return emu_gws_end(&c, o, rc, ws, ex);
}
EMU_LAUNCH(aclnnCast, OP_CAST)

static int run_cast(struct emu_opcall *o)
{
    const struct emu_tensor *x = &o->t[0], *y = &o->t[1];
    int64_t n = emu_numel(x);
    if (emu_is_index(x->dtype)) {
        int64_t *tmp = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
        for (int64_t i = 0; i < n; i++)
            tmp[i] = emu_ldi(x, emu_flat_off(x, i));
        for (int64_t i = 0; i < n; i++)
            emu_sti(y, emu_flat_off(y, i), tmp[i]);
        free(tmp);
        return 0;
    }
    float *tmp = malloc((size_t)(n ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        tmp[i] = emu_ldf(x, emu_flat_off(x, i));
    for (int64_t i = 0; i < n; i++)
        emu_stf(y, emu_flat_off(y, i), tmp[i]);
    free(tmp);
    return 0;
}

EXPORT aclnnStatus aclnnArgMaxGetWorkspaceSize(const aclTensor *self, int64_t dim, bool keepdim, aclTensor *out,
                                               uint64_t *ws, aclOpExecutor **ex)
{
    emu_call c;
    struct emu_opcall *o;
    if (emu_gws_begin(&c, &o, __func__, OP_ARGMAX, "aclnnArgMax"))
        return emu_leave(&c);
    int rc = 0;
    CHECK(emu_arg_tensor(&c, o, 0, self, "self", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 1, out, "out", IO_OUT, false));
    CHECK(emu_need_ndim(&c, &o->t[0], "self", 2));
    CHECK(emu_need_float(&c, &o->t[0], "self"));
    if (rc == 0 && dim != 1 && dim != -1)
        rc = emu_bad(&c, "dim %lld: only the last dim (1 or -1) is supported", (long long)dim);
    if (rc == 0 && keepdim)
        rc = emu_bad(&c, "keepdim true is not supported by the emulator");
    CHECK(emu_need_ndim(&c, &o->t[1], "out", 1));
    CHECK(emu_need_dim(&c, &o->t[1], "out", 0, o->t[0].dims[0]));
    CHECK(emu_need_index(&c, &o->t[1], "out"));
    o->i[0] = dim;
    return emu_gws_end(&c, o, rc, ws, ex);
}
EMU_LAUNCH(aclnnArgMax, OP_ARGMAX)

static int run_argmax(struct emu_opcall *o)
{
    const struct emu_tensor *x = &o->t[0], *y = &o->t[1];
    int64_t R = x->dims[0], V = x->dims[1];
    for (int64_t r = 0; r < R; r++) {
        int64_t best = 0;
        float bv = V ? emu_ldf(x, off2(x, r, 0)) : 0.0f;
        for (int64_t v = 1; v < V; v++) {
            float f = emu_ldf(x, off2(x, r, v));
            if (f > bv) { /* strict: the first maximum wins ties */
                bv = f;
                best = v;
            }
        }
        emu_sti(y, y->offset + r * y->strides[0], best);
    }
    return 0;
}

/* ---------------------------------------------------------------- dispatch */

int emu_run_rope_sincos(struct emu_opcall *o);
int emu_run_rope_v2(struct emu_opcall *o);
int emu_run_scatter_pa(struct emu_opcall *o);
int emu_run_index_copy(struct emu_opcall *o);
int emu_run_fia(struct emu_opcall *o);

int emu_op_run(struct emu_opcall *o)
{
    if (!G.env.compute) /* EMUACL_COMPUTE=0: validated and traced, no math */
        return 0;
    switch (o->op) {
    case OP_EMBEDDING:
    case OP_INDEX_SELECT: return run_gather(o);
    case OP_RMS_NORM: return run_norm(o, false);
    case OP_ADD_RMS_NORM: return run_norm(o, true);
    case OP_MATMUL: return run_mm(o, false);
    case OP_ADDMM: return run_mm(o, true);
    case OP_SWIGLU: return run_swiglu(o);
    case OP_SILU: return elementwise(o, 0);
    case OP_MUL: return elementwise(o, 1);
    case OP_ADD:
    case OP_INPLACE_ADD: return elementwise(o, 2);
    case OP_CAST: return run_cast(o);
    case OP_ARGMAX: return run_argmax(o);
    case OP_ROPE_SINCOS: return emu_run_rope_sincos(o);
    case OP_ROPE_V2: return emu_run_rope_v2(o);
    case OP_SCATTER_PA: return emu_run_scatter_pa(o);
    case OP_INDEX_COPY: return emu_run_index_copy(o);
    case OP_FIA_V3: return emu_run_fia(o);
    case OP_COUNT: break;
    }
    return 0;
}
