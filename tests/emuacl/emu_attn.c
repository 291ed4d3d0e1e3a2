/*
 * emu_attn.c - the attention-path aclnn operators.
 *
 * Owns: RopeWithSinCosCache, ApplyRotaryPosEmbV2, ScatterPaKvCache,
 * InplaceIndexCopy and FusedInferAttentionScoreV3 (paged, TND, sparse mode 3
 * as vllm-ascend calls it): their GetWorkspaceSize checks (ASCEND.md §3 and its
 * pitfalls) and their f32 math. Index data that lives in device memory
 * (positions, slots, block tables) is checked when the op runs.
 */
#define _GNU_SOURCE
#include "emu_op.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                                                                   \
    do {                                                                                                           \
        if (rc == 0)                                                                                               \
            rc = (x);                                                                                              \
    } while (0)

/* ---------------------------------------------------------------- RoPE */

EXPORT aclnnStatus aclnnRopeWithSinCosCacheGetWorkspaceSize(const aclTensor *positions, const aclTensor *queryIn,
                                                            const aclTensor *keyIn, const aclTensor *cosSinCache,
                                                            const aclIntArray *mropeSection, int64_t headSize,
                                                            bool isNeoxStyle, aclTensor *queryOut, aclTensor *keyOut,
                                                            uint64_t *ws, aclOpExecutor **ex)
{
    emu_call c;
    struct emu_opcall *o;
    if (emu_gws_begin(&c, &o, __func__, OP_ROPE_SINCOS, "aclnnRopeWithSinCosCache"))
        return emu_leave(&c);
    int rc = 0;
    CHECK(emu_arg_tensor(&c, o, 0, positions, "positions", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 1, queryIn, "queryIn", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 2, keyIn, "keyIn", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 3, cosSinCache, "cosSinCache", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 4, queryOut, "queryOut", IO_OUT, false));
    CHECK(emu_arg_tensor(&c, o, 5, keyOut, "keyOut", IO_OUT, false));
    CHECK(emu_arg_array(&c, o, 0, mropeSection, "mropeSection", true));
    struct emu_tensor *pos = &o->t[0], *q = &o->t[1], *k = &o->t[2], *cs = &o->t[3];
    for (uint64_t i = 0; rc == 0 && o->arr[0] && i < o->arrn[0]; i++)
        if (o->arr[0][i] != 0)
            rc = emu_bad(&c, "mropeSection must be NULL or all zeros (plain rope); multimodal rope is not emulated");
    CHECK(emu_need_ndim(&c, pos, "positions", 1));
    CHECK(emu_need_index(&c, pos, "positions"));
    CHECK(emu_need_ndim(&c, q, "queryIn", 2));
    CHECK(emu_need_float(&c, q, "queryIn"));
    CHECK(emu_no_f32(&c, q, "aclnnRopeWithSinCosCache"));
    CHECK(emu_need_ndim(&c, k, "keyIn", 2));
    CHECK(emu_need_same_dtype(&c, k, "keyIn", q, "queryIn"));
    CHECK(emu_need_dim(&c, q, "queryIn", 0, pos->dims[0]));
    CHECK(emu_need_dim(&c, k, "keyIn", 0, pos->dims[0]));
    if (rc == 0 && (headSize <= 0 || headSize % 2 || q->dims[1] % headSize || k->dims[1] % headSize))
        rc = emu_bad(&c, "headSize %lld must be even and divide queryIn dim 1 (%lld) and keyIn dim 1 (%lld)",
                     (long long)headSize, (long long)q->dims[1], (long long)k->dims[1]);
    CHECK(emu_need_ndim(&c, cs, "cosSinCache", 2));
    CHECK(emu_need_dim(&c, cs, "cosSinCache", 1, headSize));
    CHECK(emu_need_same_dtype(&c, cs, "cosSinCache", q, "queryIn"));
    CHECK(emu_need_same_shape(&c, &o->t[4], "queryOut", q, "queryIn"));
    CHECK(emu_need_same_dtype(&c, &o->t[4], "queryOut", q, "queryIn"));
    CHECK(emu_need_same_shape(&c, &o->t[5], "keyOut", k, "keyIn"));
    CHECK(emu_need_same_dtype(&c, &o->t[5], "keyOut", k, "keyIn"));
    CHECK(emu_need_contig(&c, q, "queryIn"));
    CHECK(emu_need_contig(&c, k, "keyIn"));
    o->i[0] = headSize;
    o->i[1] = isNeoxStyle;
    return emu_gws_end(&c, o, rc, ws, ex);
}
EMU_LAUNCH(aclnnRopeWithSinCosCache, OP_ROPE_SINCOS)

/* Rotates one head of D values in place in x (f32) given per-pair cos/sin of
 * D/2 entries: neox = halves (HF rotate_half), else GPT-J interleaved pairs. */
static void rotate(float *x, const float *cosv, const float *sinv, int64_t D, bool neox, float *tmp)
{
    int64_t h = D / 2;
    for (int64_t i = 0; i < h; i++) {
        int64_t a = neox ? i : 2 * i, b = neox ? i + h : 2 * i + 1;
        tmp[a] = x[a] * cosv[i] - x[b] * sinv[i];
        tmp[b] = x[b] * cosv[i] + x[a] * sinv[i];
    }
    memcpy(x, tmp, (size_t)D * sizeof(float));
}

int emu_run_rope_sincos(struct emu_opcall *o)
{
    const struct emu_tensor *pos = &o->t[0], *cs = &o->t[3];
    int64_t T = pos->dims[0], D = o->i[0], maxPos = cs->dims[0];
    bool neox = o->i[1] != 0;
    float *x = malloc((size_t)D * 2 * sizeof(float)), *tmp = x + D;
    float *cosv = malloc((size_t)D * sizeof(float)), *sinv = cosv + D / 2;
    int rc = 0;
    for (int64_t t = 0; t < T && rc == 0; t++) {
        int64_t p = emu_ldi(pos, pos->offset + t * pos->strides[0]);
        if (p < 0 || p >= maxPos) {
            rc = emu_fail(ACLNN_ERR_PARAM_INVALID,
                          "aclnnRopeWithSinCosCache: position %lld of token %lld is outside the cos/sin cache "
                          "(%lld positions)",
                          (long long)p, (long long)t, (long long)maxPos);
            break;
        }
        for (int64_t i = 0; i < D / 2; i++) {
            cosv[i] = emu_ldf(cs, off2(cs, p, i));
            sinv[i] = emu_ldf(cs, off2(cs, p, D / 2 + i));
        }
        for (int w = 0; w < 2; w++) { /* query, then key */
            const struct emu_tensor *in = &o->t[1 + w], *out = &o->t[4 + w];
            int64_t heads = in->dims[1] / D;
            for (int64_t h = 0; h < heads; h++) {
                for (int64_t d = 0; d < D; d++)
                    x[d] = emu_ldf(in, off2(in, t, h * D + d));
                rotate(x, cosv, sinv, D, neox, tmp);
                for (int64_t d = 0; d < D; d++)
                    emu_stf(out, off2(out, t, h * D + d), x[d]);
            }
        }
    }
    free(x);
    free(cosv);
    return rc;
}

EXPORT aclnnStatus aclnnApplyRotaryPosEmbV2GetWorkspaceSize(aclTensor *queryRef, aclTensor *keyRef,
                                                            const aclTensor *cos, const aclTensor *sin,
                                                            int64_t layout, char *rotaryMode, uint64_t *ws,
                                                            aclOpExecutor **ex)
{
    emu_call c;
    struct emu_opcall *o;
    if (emu_gws_begin(&c, &o, __func__, OP_ROPE_V2, "aclnnApplyRotaryPosEmbV2"))
        return emu_leave(&c);
    int rc = 0;
    CHECK(emu_arg_tensor(&c, o, 0, queryRef, "queryRef", IO_INOUT, false));
    CHECK(emu_arg_tensor(&c, o, 1, keyRef, "keyRef", IO_INOUT, false));
    CHECK(emu_arg_tensor(&c, o, 2, cos, "cos", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 3, sin, "sin", IO_IN, false));
    struct emu_tensor *q = &o->t[0], *k = &o->t[1], *cs = &o->t[2], *sn = &o->t[3];
    if (rc == 0 && (!rotaryMode || strcmp(rotaryMode, "half") != 0))
        rc = emu_bad(&c, "rotaryMode must be \"half\" (A2/A3)");
    int nd = layout == 4 ? 3 : 4;
    if (rc == 0 && layout != 4 && layout != 1)
        rc = emu_bad(&c, "layout %lld: 1 (BSND) or 4 (TND) expected", (long long)layout);
    CHECK(emu_need_ndim(&c, q, "queryRef", nd));
    CHECK(emu_need_ndim(&c, k, "keyRef", nd));
    CHECK(emu_need_ndim(&c, cs, "cos", nd));
    CHECK(emu_need_float(&c, q, "queryRef"));
    CHECK(emu_no_f32(&c, q, "aclnnApplyRotaryPosEmbV2"));
    CHECK(emu_need_same_dtype(&c, k, "keyRef", q, "queryRef"));
    CHECK(emu_need_same_dtype(&c, cs, "cos", q, "queryRef"));
    CHECK(emu_need_same_dtype(&c, sn, "sin", q, "queryRef"));
    CHECK(emu_need_same_shape(&c, sn, "sin", cs, "cos"));
    if (rc == 0) {
        int64_t D = q->dims[nd - 1];
        for (int d = 0; d < nd - 2 && rc == 0; d++) {
            CHECK(emu_need_dim(&c, k, "keyRef", d, q->dims[d]));
            CHECK(emu_need_dim(&c, cs, "cos", d, q->dims[d]));
        }
        CHECK(emu_need_dim(&c, k, "keyRef", nd - 1, D));
        CHECK(emu_need_dim(&c, cs, "cos", nd - 2, 1));
        CHECK(emu_need_dim(&c, cs, "cos", nd - 1, D));
        if (rc == 0 && D % 2)
            rc = emu_bad(&c, "head dim %lld is odd", (long long)D);
    }
    CHECK(emu_need_contig(&c, q, "queryRef"));
    CHECK(emu_need_contig(&c, k, "keyRef"));
    CHECK(emu_need_contig(&c, cs, "cos"));
    CHECK(emu_need_contig(&c, sn, "sin"));
    o->i[0] = layout;
    return emu_gws_end(&c, o, rc, ws, ex);
}
EMU_LAUNCH(aclnnApplyRotaryPosEmbV2, OP_ROPE_V2)

int emu_run_rope_v2(struct emu_opcall *o)
{
    const struct emu_tensor *cs = &o->t[2], *sn = &o->t[3];
    int nd = o->t[0].ndim;
    int64_t D = o->t[0].dims[nd - 1], rows = emu_numel(cs) / (D ? D : 1), h = D / 2;
    float *x = malloc((size_t)D * 4 * sizeof(float)), *tmp = x + D, *cv = tmp + D, *sv = cv + D;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t d = 0; d < D; d++) {
            cv[d] = emu_ldf(cs, emu_flat_off(cs, r * D + d));
            sv[d] = emu_ldf(sn, emu_flat_off(sn, r * D + d));
        }
        for (int w = 0; w < 2; w++) {
            const struct emu_tensor *t = &o->t[w];
            int64_t heads = t->dims[nd - 2];
            for (int64_t hd = 0; hd < heads; hd++) {
                int64_t base = (r * heads + hd) * D;
                for (int64_t d = 0; d < D; d++)
                    x[d] = emu_ldf(t, emu_flat_off(t, base + d));
                /* q*cos + rotate_half(q)*sin with full-width cos/sin */
                for (int64_t i = 0; i < h; i++) {
                    tmp[i] = x[i] * cv[i] - x[i + h] * sv[i];
                    tmp[i + h] = x[i + h] * cv[i + h] + x[i] * sv[i + h];
                }
                for (int64_t d = 0; d < D; d++)
                    emu_stf(t, emu_flat_off(t, base + d), tmp[d]);
            }
        }
    }
    free(x);
    return 0;
}

/* ---------------------------------------------------------------- KV cache writes */

EXPORT aclnnStatus aclnnScatterPaKvCacheGetWorkspaceSize(
    const aclTensor *key, aclTensor *keyCacheRef, const aclTensor *slotMapping, const aclTensor *value,
    aclTensor *valueCacheRef, const aclTensor *compressLensOptional, const aclTensor *compressSeqOffsetOptional,
    const aclTensor *seqLensOptional, char *cacheModeOptional, char *scatterModeOptional,
    const aclIntArray *stridesOptional, const aclIntArray *offsetsOptional, uint64_t *ws, aclOpExecutor **ex)
{
    emu_call c;
    struct emu_opcall *o;
    if (emu_gws_begin(&c, &o, __func__, OP_SCATTER_PA, "aclnnScatterPaKvCache"))
        return emu_leave(&c);
    int rc = 0;
    CHECK(emu_arg_tensor(&c, o, 0, key, "key", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 1, keyCacheRef, "keyCacheRef", IO_INOUT, false));
    CHECK(emu_arg_tensor(&c, o, 2, slotMapping, "slotMapping", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 3, value, "value", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 4, valueCacheRef, "valueCacheRef", IO_INOUT, false));
    if (rc == 0 && (compressLensOptional || compressSeqOffsetOptional || seqLensOptional || stridesOptional ||
                    offsetsOptional))
        rc = emu_bad(&c, "compressLens/compressSeqOffset/seqLens/strides/offsets must be NULL (Norm mode only)");
    if (rc == 0 && cacheModeOptional && strcmp(cacheModeOptional, "Norm") != 0)
        rc = emu_bad(&c, "cacheMode \"%s\": only \"Norm\" is emulated", cacheModeOptional);
    if (rc == 0 && scatterModeOptional && strcmp(scatterModeOptional, "None") != 0)
        rc = emu_bad(&c, "scatterMode \"%s\": only NULL/\"None\" is emulated", scatterModeOptional);
    struct emu_tensor *k = &o->t[0], *kc = &o->t[1], *sl = &o->t[2], *v = &o->t[3], *vc = &o->t[4];
    CHECK(emu_need_ndim(&c, k, "key", 3));
    CHECK(emu_need_float(&c, k, "key"));
    CHECK(emu_no_f32(&c, k, "aclnnScatterPaKvCache"));
    CHECK(emu_need_ndim(&c, kc, "keyCacheRef", 4));
    CHECK(emu_need_ndim(&c, v, "value", 3));
    CHECK(emu_need_ndim(&c, vc, "valueCacheRef", 4));
    CHECK(emu_need_ndim(&c, sl, "slotMapping", 1));
    CHECK(emu_need_index(&c, sl, "slotMapping"));
    CHECK(emu_need_dim(&c, sl, "slotMapping", 0, k->dims[0]));
    CHECK(emu_need_same_shape(&c, v, "value", k, "key"));
    CHECK(emu_need_same_shape(&c, vc, "valueCacheRef", kc, "keyCacheRef"));
    CHECK(emu_need_dim(&c, kc, "keyCacheRef", 2, k->dims[1]));
    CHECK(emu_need_dim(&c, kc, "keyCacheRef", 3, k->dims[2]));
    CHECK(emu_need_same_dtype(&c, kc, "keyCacheRef", k, "key"));
    CHECK(emu_need_same_dtype(&c, v, "value", k, "key"));
    CHECK(emu_need_same_dtype(&c, vc, "valueCacheRef", k, "key"));
    CHECK(emu_need_contig(&c, k, "key"));
    CHECK(emu_need_contig(&c, v, "value"));
    CHECK(emu_need_contig(&c, kc, "keyCacheRef"));
    CHECK(emu_need_contig(&c, vc, "valueCacheRef"));
    return emu_gws_end(&c, o, rc, ws, ex);
}
EMU_LAUNCH(aclnnScatterPaKvCache, OP_SCATTER_PA)

int emu_run_scatter_pa(struct emu_opcall *o)
{
    const struct emu_tensor *sl = &o->t[2];
    int64_t T = sl->dims[0], NB = o->t[1].dims[0], BS = o->t[1].dims[1];
    int64_t row = o->t[0].dims[1] * o->t[0].dims[2];
    size_t es = emu_dtype_size(o->t[0].dtype);
    for (int64_t t = 0; t < T; t++) {
        int64_t s = emu_ldi(sl, sl->offset + t * sl->strides[0]);
        if (s < 0 || s >= NB * BS)
            return emu_fail(ACLNN_ERR_PARAM_INVALID,
                            "aclnnScatterPaKvCache: slot %lld of token %lld is outside the cache (%lld blocks x %lld); "
                            "negative (padding) slots are not skipped by the emulator",
                            (long long)s, (long long)t, (long long)NB, (long long)BS);
        for (int w = 0; w < 2; w++) { /* key into keyCache, value into valueCache (contiguous rows) */
            const struct emu_tensor *src = &o->t[w ? 3 : 0], *dst = &o->t[w ? 4 : 1];
            memmove((char *)dst->data + (size_t)(dst->offset + s * row) * es,
                    (const char *)src->data + (size_t)(src->offset + t * row) * es, (size_t)row * es);
        }
    }
    return 0;
}

EXPORT aclnnStatus aclnnInplaceIndexCopyGetWorkspaceSize(aclTensor *selfRef, int64_t dim, const aclTensor *index,
                                                         const aclTensor *source, uint64_t *ws, aclOpExecutor **ex)
{
    emu_call c;
    struct emu_opcall *o;
    if (emu_gws_begin(&c, &o, __func__, OP_INDEX_COPY, "aclnnInplaceIndexCopy"))
        return emu_leave(&c);
    int rc = 0;
    CHECK(emu_arg_tensor(&c, o, 0, selfRef, "selfRef", IO_INOUT, false));
    CHECK(emu_arg_tensor(&c, o, 1, index, "index", IO_IN, false));
    CHECK(emu_arg_tensor(&c, o, 2, source, "source", IO_IN, false));
    struct emu_tensor *x = &o->t[0], *ix = &o->t[1], *src = &o->t[2];
    if (rc == 0 && dim != 0)
        rc = emu_bad(&c, "dim %lld: the emulator supports dim 0 only", (long long)dim);
    CHECK(emu_need_ndim(&c, x, "selfRef", 2));
    CHECK(emu_need_ndim(&c, ix, "index", 1));
    CHECK(emu_need_index(&c, ix, "index"));
    CHECK(emu_need_ndim(&c, src, "source", 2));
    CHECK(emu_need_dim(&c, src, "source", 0, ix->dims[0]));
    CHECK(emu_need_dim(&c, src, "source", 1, x->dims[1]));
    CHECK(emu_need_same_dtype(&c, src, "source", x, "selfRef"));
    return emu_gws_end(&c, o, rc, ws, ex);
}
EMU_LAUNCH(aclnnInplaceIndexCopy, OP_INDEX_COPY)

int emu_run_index_copy(struct emu_opcall *o)
{
    const struct emu_tensor *x = &o->t[0], *ix = &o->t[1], *src = &o->t[2];
    int64_t T = ix->dims[0], R = x->dims[0], C = x->dims[1];
    for (int64_t t = 0; t < T; t++) {
        int64_t r = emu_ldi(ix, ix->offset + t * ix->strides[0]);
        if (r < 0 || r >= R)
            return emu_fail(ACLNN_ERR_PARAM_INVALID, "aclnnInplaceIndexCopy: index %lld at %lld outside [0, %lld)",
                            (long long)r, (long long)t, (long long)R);
        for (int64_t j = 0; j < C; j++)
            emu_stf(x, off2(x, r, j), emu_ldf(src, off2(src, t, j)));
    }
    return 0;
}

/* ---------------------------------------------------------------- FusedInferAttentionScoreV3 */

/* t slots: 0 query, 1 key (list[0]), 2 value (list[0]), 3 attenMask, 4 blockTable, 5 attentionOut, 6 softmaxLse;
 * arr 0 cu_q, arr 1 kv lengths; i: 0 Nq, 1 Nkv, 2 blockSize, 3 B; d0 scale */
static int fia_list(emu_call *c, struct emu_opcall *o, int slot, const aclTensorList *l, const char *arg)
{
    if (!l)
        return emu_fail(ACLNN_ERR_PARAM_NULLPTR, "%s: %s is NULL", c->fn, arg);
    if (!emu_is_tlist(l))
        return emu_bad(c, "%s (%p) is not a live aclTensorList", arg, (const void *)l);
    if (l->n != 1)
        return emu_bad(c, "%s must be a list of exactly one tensor (the paged cache), got %llu", arg,
                       (unsigned long long)l->n);
    return emu_arg_tensor(c, o, slot, l->t[0], arg, IO_IN, false);
}

EXPORT aclnnStatus aclnnFusedInferAttentionScoreV3GetWorkspaceSize(
    const aclTensor *query, const aclTensorList *key, const aclTensorList *value, const aclTensor *pseShiftOptional,
    const aclTensor *attenMaskOptional, const aclIntArray *actualSeqLengthsOptional,
    const aclIntArray *actualSeqLengthsKvOptional, const aclTensor *deqScale1Optional,
    const aclTensor *quantScale1Optional, const aclTensor *deqScale2Optional, const aclTensor *quantScale2Optional,
    const aclTensor *quantOffset2Optional, const aclTensor *antiquantScaleOptional,
    const aclTensor *antiquantOffsetOptional, const aclTensor *blockTableOptional,
    const aclTensor *queryPaddingSizeOptional, const aclTensor *kvPaddingSizeOptional,
    const aclTensor *keyAntiquantScaleOptional, const aclTensor *keyAntiquantOffsetOptional,
    const aclTensor *valueAntiquantScaleOptional, const aclTensor *valueAntiquantOffsetOptional,
    const aclTensor *keySharedPrefixOptional, const aclTensor *valueSharedPrefixOptional,
    const aclIntArray *actualSharedPrefixLenOptional, const aclTensor *queryRopeOptional,
    const aclTensor *keyRopeOptional, const aclTensor *keyRopeAntiquantScaleOptional, int64_t numHeads,
    double scaleValue, int64_t preTokens, int64_t nextTokens, char *inputLayout, int64_t numKeyValueHeads,
    int64_t sparseMode, int64_t innerPrecise, int64_t blockSize, int64_t antiquantMode, bool softmaxLseFlag,
    int64_t keyAntiquantMode, int64_t valueAntiquantMode, const aclTensor *attentionOut, const aclTensor *softmaxLse,
    uint64_t *ws, aclOpExecutor **ex)
{
    emu_call c;
    struct emu_opcall *o;
    if (emu_gws_begin(&c, &o, __func__, OP_FIA_V3, "aclnnFusedInferAttentionScoreV3"))
        return emu_leave(&c);
    (void)preTokens;
    (void)nextTokens;
    int rc = 0;
    const void *unsupported[] = {pseShiftOptional,           deqScale1Optional,          quantScale1Optional,
                                 deqScale2Optional,          quantScale2Optional,        quantOffset2Optional,
                                 antiquantScaleOptional,     antiquantOffsetOptional,    queryPaddingSizeOptional,
                                 kvPaddingSizeOptional,      keyAntiquantScaleOptional,  keyAntiquantOffsetOptional,
                                 valueAntiquantScaleOptional, valueAntiquantOffsetOptional, keySharedPrefixOptional,
                                 valueSharedPrefixOptional,  actualSharedPrefixLenOptional, queryRopeOptional,
                                 keyRopeOptional,            keyRopeAntiquantScaleOptional};
    const char *unames[] = {"pseShift", "deqScale1", "quantScale1", "deqScale2", "quantScale2", "quantOffset2",
                            "antiquantScale", "antiquantOffset", "queryPaddingSize", "kvPaddingSize",
                            "keyAntiquantScale", "keyAntiquantOffset", "valueAntiquantScale", "valueAntiquantOffset",
                            "keySharedPrefix", "valueSharedPrefix", "actualSharedPrefixLen", "queryRope", "keyRope",
                            "keyRopeAntiquantScale"};
    for (size_t i = 0; rc == 0 && i < sizeof unsupported / sizeof *unsupported; i++)
        if (unsupported[i])
            rc = emu_bad(&c, "%sOptional must be NULL (not emulated)", unames[i]);
    CHECK(emu_arg_tensor(&c, o, 0, query, "query", IO_IN, false));
    CHECK(fia_list(&c, o, 1, key, "key"));
    CHECK(fia_list(&c, o, 2, value, "value"));
    CHECK(emu_arg_tensor(&c, o, 3, attenMaskOptional, "attenMask", IO_IN, true));
    CHECK(emu_arg_tensor(&c, o, 4, blockTableOptional, "blockTable", IO_IN, true));
    CHECK(emu_arg_tensor(&c, o, 5, attentionOut, "attentionOut", IO_OUT, false));
    CHECK(emu_arg_tensor(&c, o, 6, softmaxLse, "softmaxLse", IO_OUT, true));
    CHECK(emu_arg_array(&c, o, 0, actualSeqLengthsOptional, "actualSeqLengths", true));
    CHECK(emu_arg_array(&c, o, 1, actualSeqLengthsKvOptional, "actualSeqLengthsKv", true));
    if (rc)
        return emu_gws_end(&c, o, rc, ws, ex);
    struct emu_tensor *q = &o->t[0], *k = &o->t[1], *v = &o->t[2], *m = &o->t[3], *bt = &o->t[4];
    struct emu_tensor *out = &o->t[5], *lse = &o->t[6];
    if (!inputLayout || strcmp(inputLayout, "TND") != 0)
        rc = emu_bad(&c, "inputLayout \"%s\": only \"TND\" is emulated", inputLayout ? inputLayout : "(null)");
    CHECK(emu_need_ndim(&c, q, "query", 3));
    CHECK(emu_need_float(&c, q, "query"));
    CHECK(emu_no_f32(&c, q, "aclnnFusedInferAttentionScoreV3"));
    CHECK(emu_need_contig(&c, q, "query"));
    if (rc)
        return emu_gws_end(&c, o, rc, ws, ex);
    int64_t T = q->dims[0], Nq = q->dims[1], D = q->dims[2];
    int64_t Nkv = numKeyValueHeads ? numKeyValueHeads : numHeads;
    if (numHeads != Nq)
        rc = emu_bad(&c, "numHeads %lld differs from query's %lld heads", (long long)numHeads, (long long)Nq);
    if (rc == 0 && (Nkv <= 0 || Nq % Nkv || Nq / Nkv > 64))
        rc = emu_bad(&c, "numHeads %lld must be a multiple of numKeyValueHeads %lld with a ratio <= 64",
                     (long long)Nq, (long long)Nkv);
    if (rc == 0 && sparseMode != 3)
        rc = emu_bad(&c, "sparseMode %lld: only 3 (right-down causal) is emulated", (long long)sparseMode);
    if (rc == 0 && !m->present)
        rc = emu_bad(&c, "sparseMode 3 requires attenMask (the 2048x2048 triu mask)");
    if (rc == 0 && m->dtype != ACL_INT8 && m->dtype != ACL_BOOL && m->dtype != ACL_UINT8)
        rc = emu_bad(&c, "attenMask dtype %s: int8/bool/uint8 expected", emu_dtype_name(m->dtype));
    CHECK(emu_need_ndim(&c, m, "attenMask", 2));
    CHECK(emu_need_dim(&c, m, "attenMask", 0, 2048));
    CHECK(emu_need_dim(&c, m, "attenMask", 1, 2048));
    if (rc == 0 && (innerPrecise != 0 || antiquantMode != 0 || keyAntiquantMode != 0 || valueAntiquantMode != 0))
        rc = emu_bad(&c, "innerPrecise and the antiquant modes must be 0");
    if (rc == 0 && softmaxLseFlag)
        rc = emu_bad(&c, "softmaxLseFlag true is not emulated");
    if (rc == 0 && lse->present && (lse->dtype != ACL_FLOAT || emu_numel(lse) != 1))
        rc = emu_bad(&c, "softmaxLse must be a 1-element float32 dummy when softmaxLseFlag is false");
    CHECK(emu_need_ndim(&c, k, "key", 3));
    CHECK(emu_need_same_shape(&c, v, "value", k, "key"));
    CHECK(emu_need_same_dtype(&c, k, "key", q, "query"));
    CHECK(emu_need_same_dtype(&c, v, "value", q, "query"));
    CHECK(emu_need_dim(&c, k, "key", 2, Nkv * D));
    if (rc == 0 && (blockSize <= 0 || blockSize % 128 || blockSize != k->dims[1]))
        rc = emu_bad(&c, "blockSize %lld must be a multiple of 128 and equal the cache's block size %lld",
                     (long long)blockSize, (long long)k->dims[1]);
    CHECK(emu_need_ndim(&c, out, "attentionOut", 3));
    CHECK(emu_need_same_shape(&c, out, "attentionOut", q, "query"));
    CHECK(emu_need_same_dtype(&c, out, "attentionOut", q, "query"));
    CHECK(emu_need_contig(&c, out, "attentionOut"));
    /* host sequence lengths, as vllm-ascend passes them (ASCEND.md §5 pitfall 1) */
    if (rc == 0 && !o->arr[0])
        rc = emu_bad(&c, "actualSeqLengths (cumulative query ends, TND) is required");
    if (rc == 0 && !o->arr[1])
        rc = emu_bad(&c, "actualSeqLengthsKv is required with a block table");
    if (rc)
        return emu_gws_end(&c, o, rc, ws, ex);
    int64_t B = (int64_t)o->arrn[0];
    const int64_t *cu = o->arr[0], *kv = o->arr[1];
    if (B == 0)
        rc = emu_bad(&c, "actualSeqLengths is empty");
    for (int64_t b = 0; rc == 0 && b < B; b++)
        if (cu[b] < (b ? cu[b - 1] : 0))
            rc = emu_bad(&c, "actualSeqLengths must be cumulative (nondecreasing): entry %lld is %lld after %lld",
                         (long long)b, (long long)cu[b], (long long)(b ? cu[b - 1] : 0));
    if (rc == 0 && cu[B - 1] != T)
        rc = emu_bad(&c,
                     "the last actualSeqLengths entry %lld != T=%lld: in TND it is the cumulative query length "
                     "ending at T (vllm-ascend #6524)",
                     (long long)cu[B - 1], (long long)T);
    if (rc == 0 && (int64_t)o->arrn[1] < B)
        rc = emu_bad(&c, "actualSeqLengthsKv has %llu entries for %lld sequences (vllm-ascend #8107)",
                     (unsigned long long)o->arrn[1], (long long)B);
    if (rc == 0 && !bt->present)
        rc = emu_bad(&c, "blockTable is required (paged KV)");
    if (rc == 0 && bt->dtype != ACL_INT32)
        rc = emu_bad(&c, "blockTable dtype %s: int32 expected", emu_dtype_name(bt->dtype));
    CHECK(emu_need_ndim(&c, bt, "blockTable", 2));
    if (rc == 0 && bt->dims[0] != B)
        rc = emu_bad(&c, "blockTable has %lld rows for %lld sequences", (long long)bt->dims[0], (long long)B);
    for (int64_t b = 0; rc == 0 && b < B; b++) {
        int64_t n = cu[b] - (b ? cu[b - 1] : 0), L = kv[b];
        if (L < 0 || n > L)
            rc = emu_bad(&c, "sequence %lld: %lld query tokens but kv length %lld (sparse mode 3 needs q_len <= kv_len)",
                         (long long)b, (long long)n, (long long)L);
        else if ((L + blockSize - 1) / blockSize > bt->dims[1])
            rc = emu_bad(&c, "sequence %lld: kv length %lld needs %lld blocks, blockTable has %lld columns",
                         (long long)b, (long long)L, (long long)((L + blockSize - 1) / blockSize),
                         (long long)bt->dims[1]);
    }
    o->i[0] = Nq;
    o->i[1] = Nkv;
    o->i[2] = blockSize;
    o->i[3] = B;
    o->d[0] = scaleValue;
    emu_extra(&c, "B", "%lld", (long long)B);
    emu_extra(&c, "T", "%lld", (long long)T);
    return emu_gws_end(&c, o, rc, ws, ex);
}
EMU_LAUNCH(aclnnFusedInferAttentionScoreV3, OP_FIA_V3)

int emu_run_fia(struct emu_opcall *o)
{
    const struct emu_tensor *q = &o->t[0], *k = &o->t[1], *v = &o->t[2], *m = &o->t[3], *bt = &o->t[4];
    const struct emu_tensor *out = &o->t[5];
    int64_t Nq = o->i[0], Nkv = o->i[1], BS = o->i[2], B = o->i[3], D = q->dims[2], NB = k->dims[0];
    int64_t group = Nq / Nkv;
    float scale = (float)o->d[0];
    const int64_t *cu = o->arr[0], *kv = o->arr[1];
    /* the mask is the compressed triu(ones, 1) of sparse mode 3: spot-check it */
    if (emu_ldi(m, off2(m, 0, 0)) != 0 || emu_ldi(m, off2(m, 0, 1)) == 0 || emu_ldi(m, off2(m, 1, 0)) != 0 ||
        emu_ldi(m, off2(m, 2047, 2047)) != 0 || emu_ldi(m, off2(m, 0, 2047)) == 0)
        return emu_fail(ACLNN_ERR_PARAM_INVALID,
                        "aclnnFusedInferAttentionScoreV3: attenMask is not triu(ones, 1) with 1 = masked");
    int64_t maxL = 0;
    for (int64_t b = 0; b < B; b++)
        maxL = kv[b] > maxL ? kv[b] : maxL;
    float *qv = malloc((size_t)(D + 1) * sizeof(float)), *acc = malloc((size_t)(D + 1) * sizeof(float));
    float *sc = malloc((size_t)(maxL + 1) * sizeof(float));
    int64_t *blk = malloc((size_t)(maxL / BS + 2) * sizeof(int64_t));
    int rc = 0;
    for (int64_t b = 0; b < B && rc == 0; b++) {
        int64_t q0 = b ? cu[b - 1] : 0, n = cu[b] - q0, L = kv[b];
        for (int64_t j = 0; j < (L + BS - 1) / BS; j++) {
            blk[j] = emu_ldi(bt, off2(bt, b, j));
            if (blk[j] < 0 || blk[j] >= NB) {
                rc = emu_fail(ACLNN_ERR_PARAM_INVALID,
                              "aclnnFusedInferAttentionScoreV3: blockTable[%lld][%lld] = %lld is outside the cache's "
                              "%lld blocks",
                              (long long)b, (long long)j, (long long)blk[j], (long long)NB);
                break;
            }
        }
        for (int64_t i = 0; i < n && rc == 0; i++) {
            int64_t row = q0 + i, last = L - n + i; /* right-down causal: keys 0..=last */
            for (int64_t h = 0; h < Nq; h++) {
                int64_t kh = h / group;
                for (int64_t d = 0; d < D; d++)
                    qv[d] = emu_ldf(q, off3(q, row, h, d));
                float mx = -INFINITY;
                for (int64_t p = 0; p <= last; p++) {
                    int64_t bb = blk[p / BS], s = p % BS;
                    float dot = 0.0f;
                    for (int64_t d = 0; d < D; d++)
                        dot += qv[d] * emu_ldf(k, off3(k, bb, s, kh * D + d));
                    sc[p] = dot * scale;
                    if (sc[p] > mx)
                        mx = sc[p];
                }
                float sum = 0.0f;
                for (int64_t p = 0; p <= last; p++) {
                    sc[p] = expf(sc[p] - mx);
                    sum += sc[p];
                }
                for (int64_t d = 0; d < D; d++)
                    acc[d] = 0.0f;
                for (int64_t p = 0; p <= last; p++) {
                    int64_t bb = blk[p / BS], s = p % BS;
                    float w = sc[p] / sum;
                    for (int64_t d = 0; d < D; d++)
                        acc[d] += w * emu_ldf(v, off3(v, bb, s, kh * D + d));
                }
                for (int64_t d = 0; d < D; d++)
                    emu_stf(out, off3(out, row, h, d), acc[d]);
            }
        }
    }
    free(qv);
    free(acc);
    free(sc);
    free(blk);
    return rc;
}
