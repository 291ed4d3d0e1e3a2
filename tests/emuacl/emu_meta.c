/*
 * emu_meta.c - tensor meta (acl_meta.h, libnnopbase) and the aclnn two-phase
 * call machinery.
 *
 * Owns: aclTensor/aclIntArray/aclScalar/aclTensorList, executors (single-use
 * unless repeatable; consumed ones are kept in a quarantine ring so a reuse is
 * recognised and refused), aclSetInput/OutputTensorAddr, and the generic
 * GetWorkspaceSize (argument snapshot, provenance checks, workspace size) and
 * launch (workspace, executor, stream and device checks, run or queue) steps
 * that every operator in emu_ops.c / emu_attn.c uses.
 */
#define _GNU_SOURCE
#include "emu_op.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAGIC_TENSOR 0x54454e21u
#define MAGIC_ARRAY 0x41525221u
#define MAGIC_SCALAR 0x53434c21u
#define MAGIC_TLIST 0x544c5321u
#define MAGIC_EXEC 0x45584521u
#define ACL_DOUBLE 11

/* ---------------------------------------------------------------- descriptors */

static aclTensor *tensor_fail(emu_call *c, const char *msg)
{
    c->rc = emu_fail(ACLNN_ERR_PARAM_INVALID, "aclCreateTensor: %s", msg);
    emu_leave(c);
    return NULL;
}

EXPORT aclTensor *aclCreateTensor(const int64_t *viewDims, uint64_t viewDimsNum, aclDataType dataType,
                                  const int64_t *stride, int64_t offset, aclFormat format,
                                  const int64_t *storageDims, uint64_t storageDimsNum, void *tensorData)
{
    emu_call c;
    if (emu_enter(&c, __func__, 0)) {
        emu_leave(&c);
        return NULL;
    }
    if (viewDimsNum > EMU_MAX_DIMS)
        return tensor_fail(&c, "more than 8 view dimensions");
    if (viewDimsNum && !viewDims)
        return tensor_fail(&c, "viewDims is NULL");
    if (!emu_dtype_size(dataType))
        return tensor_fail(&c, "unsupported aclDataType");
    if (offset < 0)
        return tensor_fail(&c, "negative offset");
    if (storageDimsNum && !storageDims)
        return tensor_fail(&c, "storageDims is NULL");
    struct emu_tensor *t = calloc(1, sizeof *t);
    t->magic = MAGIC_TENSOR;
    t->ndim = (int)viewDimsNum;
    t->dtype = dataType;
    t->format = format;
    t->offset = offset;
    t->data = tensorData;
    t->present = true;
    t->dev = -1;
    int64_t reach = offset; /* largest element + 1 the view reaches */
    bool empty = false;
    int64_t contig = 1;
    for (int k = t->ndim - 1; k >= 0; k--) {
        if (viewDims[k] < 0 || (stride && stride[k] < 0)) {
            free(t);
            return tensor_fail(&c, "negative view dimension or stride");
        }
        t->dims[k] = viewDims[k];
        t->strides[k] = stride ? stride[k] : contig;
        if (__builtin_mul_overflow(contig, viewDims[k] ? viewDims[k] : 1, &contig)) {
            free(t);
            return tensor_fail(&c, "view dimensions overflow int64");
        }
        int64_t step;
        if (viewDims[k] == 0)
            empty = true;
        else if (__builtin_mul_overflow(viewDims[k] - 1, t->strides[k], &step) ||
                 __builtin_add_overflow(reach, step, &reach)) {
            free(t);
            return tensor_fail(&c, "view dimensions and strides overflow int64");
        }
    }
    if (storageDimsNum) {
        int64_t n = 1;
        for (uint64_t k = 0; k < storageDimsNum; k++) {
            if (storageDims[k] < 0 || __builtin_mul_overflow(n, storageDims[k], &n)) {
                free(t);
                return tensor_fail(&c, "negative or overflowing storage dimensions");
            }
        }
        t->storage_elems = n;
    } else {
        t->storage_elems = empty ? offset : reach + 1;
    }
    emu_add(t);
    emu_leave(&c);
    return t;
}

static bool is_tensor(const void *p) { return emu_known(p) && ((const struct emu_tensor *)p)->magic == MAGIC_TENSOR; }

EXPORT aclnnStatus aclDestroyTensor(const aclTensor *tensor)
{
    emu_call c;
    if (emu_enter(&c, __func__, 0))
        return emu_leave(&c);
    if (!is_tensor(tensor))
        c.rc = emu_fail(ACLNN_ERR_PARAM_INVALID, "aclDestroyTensor: %p is not a live aclTensor", (const void *)tensor);
    else {
        emu_del(tensor);
        ((struct emu_tensor *)tensor)->magic = 0;
        free((void *)tensor);
    }
    return emu_leave(&c);
}

EXPORT aclIntArray *aclCreateIntArray(const int64_t *value, uint64_t size)
{
    emu_call c;
    if (emu_enter(&c, __func__, 0)) {
        emu_leave(&c);
        return NULL;
    }
    if (size && !value) {
        c.rc = emu_fail(ACLNN_ERR_PARAM_NULLPTR, "aclCreateIntArray: value is NULL");
        emu_leave(&c);
        return NULL;
    }
    struct emu_intarray *a = calloc(1, sizeof *a);
    a->magic = MAGIC_ARRAY;
    a->n = size;
    a->v = malloc((size ? size : 1) * sizeof(int64_t));
    if (size)
        memcpy(a->v, value, size * sizeof(int64_t));
    emu_add(a);
    emu_extra(&c, "size", "%llu", (unsigned long long)size);
    emu_leave(&c);
    return a;
}

static bool is_array(const void *p) { return emu_known(p) && ((const struct emu_intarray *)p)->magic == MAGIC_ARRAY; }

EXPORT aclnnStatus aclDestroyIntArray(const aclIntArray *array)
{
    emu_call c;
    if (emu_enter(&c, __func__, 0))
        return emu_leave(&c);
    if (!is_array(array))
        c.rc = emu_fail(ACLNN_ERR_PARAM_INVALID, "aclDestroyIntArray: %p is not a live aclIntArray", (const void *)array);
    else {
        struct emu_intarray *a = (struct emu_intarray *)array;
        emu_del(a);
        a->magic = 0;
        free(a->v);
        free(a);
    }
    return emu_leave(&c);
}

EXPORT aclScalar *aclCreateScalar(void *value, aclDataType dataType)
{
    emu_call c;
    if (emu_enter(&c, __func__, 0)) {
        emu_leave(&c);
        return NULL;
    }
    double v;
    bool ok = value != NULL;
    if (ok) {
        switch (dataType) {
        case ACL_FLOAT: { float f; memcpy(&f, value, 4); v = f; break; }
        case ACL_DOUBLE: memcpy(&v, value, 8); break;
        case ACL_FLOAT16: { uint16_t h; memcpy(&h, value, 2); v = emu_f16_to_f32(h); break; }
        case ACL_BF16: { uint16_t h; memcpy(&h, value, 2); v = emu_bf16_to_f32(h); break; }
        case ACL_INT8: v = *(const int8_t *)value; break;
        case ACL_UINT8: v = *(const uint8_t *)value; break;
        case ACL_BOOL: v = *(const uint8_t *)value != 0; break;
        case ACL_INT32: { int32_t x; memcpy(&x, value, 4); v = x; break; }
        case ACL_INT64: { int64_t x; memcpy(&x, value, 8); v = (double)x; break; }
        default: ok = false;
        }
    }
    if (!ok) {
        c.rc = emu_fail(ACLNN_ERR_PARAM_INVALID, "aclCreateScalar: value is NULL or dtype %d unsupported", dataType);
        emu_leave(&c);
        return NULL;
    }
    struct emu_scalar *s = calloc(1, sizeof *s);
    s->magic = MAGIC_SCALAR;
    s->dtype = dataType;
    s->v = v;
    emu_add(s);
    emu_leave(&c);
    return s;
}

static bool is_scalar(const void *p) { return emu_known(p) && ((const struct emu_scalar *)p)->magic == MAGIC_SCALAR; }

EXPORT aclnnStatus aclDestroyScalar(const aclScalar *scalar)
{
    emu_call c;
    if (emu_enter(&c, __func__, 0))
        return emu_leave(&c);
    if (!is_scalar(scalar))
        c.rc = emu_fail(ACLNN_ERR_PARAM_INVALID, "aclDestroyScalar: %p is not a live aclScalar", (const void *)scalar);
    else {
        emu_del(scalar);
        ((struct emu_scalar *)scalar)->magic = 0;
        free((void *)scalar);
    }
    return emu_leave(&c);
}

EXPORT aclTensorList *aclCreateTensorList(const aclTensor *const *value, uint64_t size)
{
    emu_call c;
    if (emu_enter(&c, __func__, 0)) {
        emu_leave(&c);
        return NULL;
    }
    bool ok = !size || value;
    for (uint64_t i = 0; ok && i < size; i++)
        ok = is_tensor(value[i]);
    if (!ok) {
        c.rc = emu_fail(ACLNN_ERR_PARAM_INVALID, "aclCreateTensorList: value is NULL or holds a non-tensor");
        emu_leave(&c);
        return NULL;
    }
    struct emu_tlist *l = calloc(1, sizeof *l);
    l->magic = MAGIC_TLIST;
    l->n = size;
    l->t = calloc(size ? size : 1, sizeof *l->t);
    for (uint64_t i = 0; i < size; i++)
        l->t[i] = (struct emu_tensor *)value[i];
    emu_add(l);
    emu_leave(&c);
    return l;
}

bool emu_is_tlist(const void *p) { return emu_known(p) && ((const struct emu_tlist *)p)->magic == MAGIC_TLIST; }

EXPORT aclnnStatus aclDestroyTensorList(const aclTensorList *array)
{
    emu_call c;
    if (emu_enter(&c, __func__, 0))
        return emu_leave(&c);
    if (!emu_is_tlist(array))
        c.rc = emu_fail(ACLNN_ERR_PARAM_INVALID, "aclDestroyTensorList: %p is not a live aclTensorList",
                        (const void *)array);
    else {
        struct emu_tlist *l = (struct emu_tlist *)array;
        for (uint64_t i = 0; i < l->n; i++) /* the list owns its tensors (CANN frees them too) */
            if (is_tensor(l->t[i])) {
                emu_del(l->t[i]);
                l->t[i]->magic = 0;
                free(l->t[i]);
            }
        emu_del(l);
        l->magic = 0;
        free(l->t);
        free(l);
    }
    return emu_leave(&c);
}

/* ---------------------------------------------------------------- executors */

#define QUARANTINE 4096
static struct emu_exec *quarantine[QUARANTINE];
static size_t q_next;

void emu_op_free_arrays(struct emu_opcall *o)
{
    for (int i = 0; i < 2; i++) {
        free(o->arr[i]);
        o->arr[i] = NULL;
    }
}

struct emu_opcall *emu_op_clone(const struct emu_opcall *o)
{
    struct emu_opcall *n = malloc(sizeof *n);
    *n = *o;
    for (int i = 0; i < 2; i++)
        if (o->arr[i]) {
            n->arr[i] = malloc((o->arrn[i] ? o->arrn[i] : 1) * sizeof(int64_t));
            memcpy(n->arr[i], o->arr[i], o->arrn[i] * sizeof(int64_t));
        }
    return n;
}

static void exec_free(struct emu_exec *e)
{
    emu_del(e);
    e->magic = 0;
    emu_op_free_arrays(&e->call);
    free(e);
}

/* A launched single-use executor: unusable from now on, remembered a while so a
 * second launch with it is reported as reuse rather than as an unknown pointer. */
static void exec_consume(struct emu_exec *e)
{
    e->consumed = true;
    emu_op_free_arrays(&e->call);
    if (quarantine[q_next])
        exec_free(quarantine[q_next]);
    quarantine[q_next] = e;
    q_next = (q_next + 1) % QUARANTINE;
}

static int exec_get(const char *fn, aclOpExecutor *h, struct emu_exec **out)
{
    struct emu_exec *e = h;
    if (!emu_known(e) || e->magic != MAGIC_EXEC)
        return emu_fail(ACLNN_ERR_PARAM_INVALID, "%s: executor %p is unknown (never made, or destroyed)", fn, (void *)h);
    if (e->consumed)
        return emu_fail(ACLNN_ERR_PARAM_INVALID,
                        "%s: executor %p was already consumed by its launch (single-use unless "
                        "aclSetAclOpExecutorRepeatable)",
                        fn, (void *)h);
    *out = e;
    return 0;
}

EXPORT aclnnStatus aclSetAclOpExecutorRepeatable(aclOpExecutor *executor)
{
    emu_call c;
    if (emu_enter(&c, __func__, 0))
        return emu_leave(&c);
    struct emu_exec *e = NULL;
    if ((c.rc = exec_get(__func__, executor, &e)) == 0)
        e->repeatable = true;
    return emu_leave(&c);
}

EXPORT aclnnStatus aclDestroyAclOpExecutor(aclOpExecutor *executor)
{
    emu_call c;
    if (emu_enter(&c, __func__, 0))
        return emu_leave(&c);
    struct emu_exec *e = NULL;
    if ((c.rc = exec_get(__func__, executor, &e)) == 0)
        exec_free(e);
    return emu_leave(&c);
}

/* Device memory checks of one tensor argument; fills t->dev. */
int emu_check_tensor_mem(const char *fn, const char *arg, struct emu_tensor *t)
{
    size_t es = emu_dtype_size(t->dtype);
    if (!es)
        return emu_fail(ACLNN_ERR_PARAM_INVALID, "%s: %s has unsupported dtype %d", fn, arg, t->dtype);
    if (t->format != ACL_FORMAT_ND)
        return emu_fail(ACLNN_ERR_PARAM_INVALID, "%s: %s has format %d; only ACL_FORMAT_ND (2) is supported", fn, arg,
                        t->format);
    const struct emu_alloc *a = emu_find(t->data);
    if (!a || a->dev < 0)
        return emu_fail(ACLNN_ERR_PARAM_INVALID,
                        "%s: %s data %p is not device memory (a host pointer, or a freed/unknown block)", fn, arg,
                        t->data);
    if ((uintptr_t)t->data & 31)
        return emu_fail(ACLNN_ERR_PARAM_INVALID, "%s: %s data %p is not 32-byte aligned", fn, arg, t->data);
    uint64_t avail = a->base + a->size - (uintptr_t)t->data;
    uint64_t need;
    if (__builtin_mul_overflow((uint64_t)t->storage_elems, (uint64_t)es, &need) || need > avail)
        return emu_fail(ACLNN_ERR_PARAM_INVALID,
                        "%s: %s storage of %lld elements (%s) runs past the end of its device allocation (%llu bytes "
                        "left from %p)",
                        fn, arg, (long long)t->storage_elems, emu_dtype_name(t->dtype), (unsigned long long)avail,
                        t->data);
    int64_t reach = t->offset, step;
    bool overflow = false;
    for (int k = 0; k < t->ndim; k++) {
        if (t->dims[k] == 0)
            goto ok;
        overflow |= __builtin_mul_overflow(t->dims[k] - 1, t->strides[k], &step);
        overflow |= __builtin_add_overflow(reach, step, &reach);
    }
    if (overflow || reach >= t->storage_elems)
        return emu_fail(ACLNN_ERR_PARAM_INVALID,
                        "%s: %s view reaches element %lld (offset %lld + strides) but its storage has %lld elements",
                        fn, arg, (long long)reach, (long long)t->offset, (long long)t->storage_elems);
ok:
    t->dev = a->dev;
    return 0;
}

bool emu_gws_begin(emu_call *c, struct emu_opcall **o, const char *fn, enum emu_opkind op, const char *opname)
{
    *o = NULL;
    if (emu_enter(c, fn, F_INIT))
        return true;
    *o = calloc(1, sizeof **o);
    (*o)->op = op;
    (*o)->name = opname;
    return false;
}

int emu_arg_tensor(emu_call *c, struct emu_opcall *o, int slot, const aclTensor *t, const char *arg, int io,
                   bool optional)
{
    if (!t) {
        if (optional)
            return 0;
        return emu_fail(ACLNN_ERR_PARAM_NULLPTR, "%s: %s is NULL", c->fn, arg);
    }
    if (!is_tensor(t))
        return emu_fail(ACLNN_ERR_PARAM_INVALID, "%s: %s (%p) is not a live aclTensor", c->fn, arg, (const void *)t);
    o->t[slot] = *t;
    int rc = emu_check_tensor_mem(c->fn, arg, &o->t[slot]);
    if (rc)
        return rc;
    if ((io & IO_IN) && o->nin < EMU_MAXIO)
        o->in_slot[o->nin++] = slot;
    if ((io & IO_OUT) && o->nout < EMU_MAXIO)
        o->out_slot[o->nout++] = slot;
    return 0;
}

int emu_arg_array(emu_call *c, struct emu_opcall *o, int idx, const aclIntArray *a, const char *arg, bool optional)
{
    if (!a) {
        if (optional)
            return 0;
        return emu_fail(ACLNN_ERR_PARAM_NULLPTR, "%s: %s is NULL", c->fn, arg);
    }
    if (!is_array(a))
        return emu_fail(ACLNN_ERR_PARAM_INVALID, "%s: %s (%p) is not a live aclIntArray", c->fn, arg, (const void *)a);
    o->arrn[idx] = a->n;
    o->arr[idx] = malloc((a->n ? a->n : 1) * sizeof(int64_t));
    memcpy(o->arr[idx], a->v, a->n * sizeof(int64_t));
    return 0;
}

int emu_arg_scalar(emu_call *c, const aclScalar *s, const char *arg, double *out)
{
    if (!s)
        return emu_fail(ACLNN_ERR_PARAM_NULLPTR, "%s: %s is NULL", c->fn, arg);
    if (!is_scalar(s))
        return emu_fail(ACLNN_ERR_PARAM_INVALID, "%s: %s (%p) is not a live aclScalar", c->fn, arg, (const void *)s);
    *out = s->v;
    return 0;
}

int64_t emu_numel(const struct emu_tensor *t)
{
    int64_t n = 1;
    for (int k = 0; k < t->ndim; k++)
        n *= t->dims[k];
    return n;
}

int emu_gws_end(emu_call *c, struct emu_opcall *o, int rc, uint64_t *ws, aclOpExecutor **ex)
{
    if (rc == 0 && (!ws || !ex))
        rc = emu_fail(ACLNN_ERR_PARAM_NULLPTR, "%s: workspaceSize or executor is NULL", c->fn);
    if (rc == 0) {
        /* workspace: a deterministic shape-derived size, never 0; capped at 16 MiB of
         * elements so in-place outputs (a whole KV cache for ScatterPaKvCache) do not ask
         * for a cache-sized workspace, which no real kernel does */
        uint64_t elems = 0;
        for (int i = 0; i < o->nout; i++)
            elems += (uint64_t)emu_numel(&o->t[o->out_slot[i]]);
        if (elems > (4u << 20))
            elems = 4u << 20;
        o->ws = (512 + 4 * elems + 31) & ~(uint64_t)31;
        struct emu_exec *e = calloc(1, sizeof *e);
        e->magic = MAGIC_EXEC;
        e->call = *o;
        emu_add(e);
        *ws = o->ws;
        *ex = e;
        emu_extra(c, "ws", "%llu", (unsigned long long)o->ws);
        free(o);
    } else if (o) {
        emu_op_free_arrays(o);
        free(o);
    }
    c->rc = rc;
    return emu_leave(c);
}

int emu_launch(const char *fn, enum emu_opkind op, void *workspace, uint64_t wsSize, aclOpExecutor *executor,
               aclrtStream stream)
{
    emu_call c;
    if (emu_enter(&c, fn, F_INIT)) {
        /* an injected failure still consumes a live single-use executor */
        struct emu_exec *e = executor;
        if (emu_known(e) && e->magic == MAGIC_EXEC && !e->consumed && !e->repeatable)
            exec_consume(e);
        return emu_leave(&c);
    }
    struct emu_exec *e = NULL;
    struct emu_stream *s = NULL;
    if ((c.rc = exec_get(fn, executor, &e)))
        return emu_leave(&c);
    struct emu_opcall *o = &e->call;
    if (o->op != op) {
        c.rc = emu_fail(ACLNN_ERR_PARAM_INVALID, "%s: executor %p was made by %sGetWorkspaceSize", fn, (void *)e,
                        o->name);
        return emu_leave(&c);
    }
    if ((c.rc = emu_stream_for_work(fn, stream, &s)))
        return emu_leave(&c);
    c.dev = s->dev;
    emu_extra(&c, "ws", "%llu", (unsigned long long)wsSize);
    /* workspace: device memory of the stream's device, at least what was asked */
    const struct emu_alloc *wa = emu_find(workspace);
    if (wsSize < o->ws)
        c.rc = emu_fail(ACLNN_ERR_PARAM_INVALID, "%s: workspaceSize %llu < %llu returned by %sGetWorkspaceSize", fn,
                        (unsigned long long)wsSize, (unsigned long long)o->ws, fn);
    else if (!wa || wa->dev < 0)
        c.rc = emu_fail(ACLNN_ERR_PARAM_INVALID, "%s: workspace %p is not device memory", fn, workspace);
    else if ((uintptr_t)workspace + o->ws > wa->base + wa->size)
        c.rc = emu_fail(ACLNN_ERR_PARAM_INVALID, "%s: workspace %p has fewer than %llu bytes left in its allocation",
                        fn, workspace, (unsigned long long)o->ws);
    else if (wa->dev != s->dev)
        c.rc = emu_fail(ACLNN_ERR_PARAM_INVALID, "%s: workspace is on device %d, the stream on device %d", fn, wa->dev,
                        s->dev);
    /* every tensor: still in live device memory, on the stream's device */
    for (int k = 0; c.rc == 0 && k < EMU_MAXT; k++) {
        struct emu_tensor *t = &o->t[k];
        if (!t->present)
            continue;
        char arg[32];
        snprintf(arg, sizeof arg, "tensor #%d", k);
        if ((c.rc = emu_check_tensor_mem(fn, arg, t)) == 0 && t->dev != s->dev)
            c.rc = emu_fail(ACLNN_ERR_PARAM_INVALID, "%s: %s is on device %d but the stream is on device %d", fn, arg,
                            t->dev, s->dev);
    }
    if (c.rc)
        return emu_leave(&c);
    /* the launch captures the arguments as they are now (later SetTensorAddr
     * calls on a repeatable executor do not change queued work) */
    struct emu_work *w = calloc(1, sizeof *w);
    w->kind = WORK_OP;
    w->call = emu_op_clone(o);
    if (!e->repeatable)
        exec_consume(e);
    c.rc = emu_submit(s, w);
    return emu_leave(&c);
}

static int set_addr(const char *fn, aclOpExecutor *executor, size_t index, aclTensor *tensor, void *addr, bool out)
{
    struct emu_exec *e = NULL;
    int rc = exec_get(fn, executor, &e);
    if (rc)
        return rc;
    struct emu_opcall *o = &e->call;
    int n = out ? o->nout : o->nin;
    if (index >= (size_t)n)
        return emu_fail(ACLNN_ERR_PARAM_INVALID, "%s: index %zu out of range: %s has %d %s tensors", fn, index, o->name,
                        n, out ? "output" : "input");
    int slot = out ? o->out_slot[index] : o->in_slot[index];
    struct emu_tensor t = o->t[slot];
    t.data = addr;
    char arg[48];
    snprintf(arg, sizeof arg, "%s tensor %zu", out ? "output" : "input", index);
    if ((rc = emu_check_tensor_mem(fn, arg, &t)))
        return rc;
    o->t[slot] = t;
    if (is_tensor(tensor))
        tensor->data = addr;
    return 0;
}

EXPORT aclnnStatus aclSetInputTensorAddr(aclOpExecutor *executor, const size_t index, aclTensor *tensor, void *addr)
{
    emu_call c;
    if (emu_enter(&c, __func__, 0))
        return emu_leave(&c);
    c.rc = set_addr(__func__, executor, index, tensor, addr, false);
    return emu_leave(&c);
}

EXPORT aclnnStatus aclSetOutputTensorAddr(aclOpExecutor *executor, const size_t index, aclTensor *tensor, void *addr)
{
    emu_call c;
    if (emu_enter(&c, __func__, 0))
        return emu_leave(&c);
    c.rc = set_addr(__func__, executor, index, tensor, addr, true);
    return emu_leave(&c);
}
