/*
 * emu_runtime.c - the ACL runtime (acl_rt.h) on host memory.
 *
 * Owns: aclInit/aclFinalize, devices and contexts (thread-local current
 * context), streams and their work queues (run at enqueue, or queued until
 * synchronize with EMUACL_DEFER=1), events, device memory (host memory
 * registered per device, charged against EMUACL_HBM_FREE), memcpy/memset with
 * provenance checks, and the two string getters.
 */
#define _GNU_SOURCE
#include "emu_op.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define MAGIC_CTX 0x43545821u
#define MAGIC_STREAM 0x53545221u
#define MAGIC_EVENT 0x45564e21u

static __thread struct emu_ctx *tl_ctx;

static struct emu_stream **streams; /* every live stream (for SynchronizeDevice) */
static size_t nstreams, capstreams;

int emu_cur_dev(void)
{
    if (tl_ctx && emu_known(tl_ctx))
        return tl_ctx->dev;
    return -1;
}

static int need_ctx(const char *fn)
{
    if (emu_cur_dev() < 0)
        return emu_fail(ACL_ERROR_RT_CONTEXT_NULL,
                        "%s: the calling thread has no current device/context (call aclrtSetDevice or "
                        "aclrtSetCurrentContext first)",
                        fn);
    return 0;
}

static int check_dev_id(const char *fn, int32_t id)
{
    if (id < 0 || id >= G.env.devices)
        return emu_fail(ACL_ERROR_INVALID_DEVICE, "%s: device id %d is out of range (EMUACL_DEVICES=%d)", fn, id,
                        G.env.devices);
    return 0;
}

EXPORT const char *emuaclBuildInfo(void)
{
    return "emuacl 1 (emulated CANN on host memory; not NPU numerics)";
}

EXPORT aclError aclInit(const char *configPath)
{
    emu_call c;
    if (emu_enter(&c, __func__, 0))
        return emu_leave(&c);
    (void)configPath;
    if (G.inited)
        c.rc = emu_fail(ACL_ERROR_REPEAT_INITIALIZE, "aclInit: already initialized");
    else
        G.inited = true;
    return emu_leave(&c);
}

EXPORT aclError aclFinalize(void)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    G.inited = false;
    return emu_leave(&c);
}

EXPORT const char *aclGetRecentErrMsg(void)
{
    emu_call c;
    emu_enter(&c, __func__, F_NOFAULT);
    const char *m = emu_errmsg();
    emu_leave(&c);
    return m;
}

EXPORT const char *aclrtGetSocName(void)
{
    emu_call c;
    emu_enter(&c, __func__, F_NOFAULT);
    emu_leave(&c);
    return "Ascend910B4";
}

EXPORT aclError aclrtGetDeviceCount(uint32_t *count)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    if (!count)
        c.rc = emu_fail(ACL_ERROR_INVALID_PARAM, "aclrtGetDeviceCount: count is NULL");
    else
        *count = (uint32_t)G.env.devices;
    return emu_leave(&c);
}

/* ---------------------------------------------------------------- contexts */

static struct emu_ctx *ctx_new(int dev, bool is_default)
{
    struct emu_ctx *x = calloc(1, sizeof *x);
    x->magic = MAGIC_CTX;
    x->dev = dev;
    x->is_default = is_default;
    emu_add(x);
    return x;
}

EXPORT aclError aclrtSetDevice(int32_t id)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    if ((c.rc = check_dev_id(__func__, id)) == 0) {
        struct emu_dev *d = &G.dev[id];
        if (!d->default_ctx)
            d->default_ctx = ctx_new(id, true);
        d->default_refs++;
        tl_ctx = d->default_ctx;
        c.dev = id;
    }
    return emu_leave(&c);
}

EXPORT aclError aclrtResetDevice(int32_t id)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    if ((c.rc = check_dev_id(__func__, id)) == 0) {
        struct emu_dev *d = &G.dev[id];
        if (d->default_refs > 0)
            d->default_refs--;
        if (tl_ctx && emu_known(tl_ctx) && tl_ctx->dev == id)
            tl_ctx = NULL;
    }
    return emu_leave(&c);
}

EXPORT aclError aclrtGetDevice(int32_t *id)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    if (!id)
        c.rc = emu_fail(ACL_ERROR_INVALID_PARAM, "aclrtGetDevice: deviceId is NULL");
    else if ((c.rc = need_ctx(__func__)) == 0)
        *id = emu_cur_dev();
    return emu_leave(&c);
}

EXPORT aclError aclrtCreateContext(aclrtContext *ctx, int32_t id)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    if (!ctx)
        c.rc = emu_fail(ACL_ERROR_INVALID_PARAM, "aclrtCreateContext: context is NULL");
    else if ((c.rc = check_dev_id(__func__, id)) == 0) {
        /* like CANN, the new context becomes the calling thread's current one */
        tl_ctx = ctx_new(id, false);
        *ctx = tl_ctx;
        c.dev = id;
    }
    return emu_leave(&c);
}

EXPORT aclError aclrtDestroyContext(aclrtContext ctx)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    struct emu_ctx *x = ctx;
    if (!emu_known(x) || x->magic != MAGIC_CTX || x->is_default)
        c.rc = emu_fail(ACL_ERROR_INVALID_PARAM, "aclrtDestroyContext: %p is not a context made by aclrtCreateContext",
                        ctx);
    else {
        if (tl_ctx == x)
            tl_ctx = NULL;
        emu_del(x);
        x->magic = 0;
        free(x);
    }
    return emu_leave(&c);
}

EXPORT aclError aclrtSetCurrentContext(aclrtContext ctx)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    struct emu_ctx *x = ctx;
    if (!emu_known(x) || x->magic != MAGIC_CTX)
        c.rc = emu_fail(ACL_ERROR_INVALID_PARAM, "aclrtSetCurrentContext: %p is not a live context", ctx);
    else {
        tl_ctx = x;
        c.dev = x->dev;
    }
    return emu_leave(&c);
}

/* ---------------------------------------------------------------- streams */

static struct emu_stream *stream_new(int dev)
{
    struct emu_stream *s = calloc(1, sizeof *s);
    s->magic = MAGIC_STREAM;
    s->dev = dev;
    emu_add(s);
    if (nstreams == capstreams) {
        capstreams = capstreams ? capstreams * 2 : 16;
        streams = realloc(streams, capstreams * sizeof *streams);
    }
    streams[nstreams++] = s;
    return s;
}

void emu_streams_forget_group(const struct emu_group *g)
{
    for (size_t i = 0; i < nstreams; i++)
        if (streams[i]->pend_group == g)
            streams[i]->pend_group = NULL;
}

int emu_stream_get(aclrtStream h, struct emu_stream **out)
{
    if (!h) { /* the default stream of the current context */
        if (emu_cur_dev() < 0)
            return emu_fail(ACL_ERROR_RT_CONTEXT_NULL,
                            "NULL (default) stream used by a thread without a current context");
        if (!tl_ctx->default_stream)
            tl_ctx->default_stream = stream_new(tl_ctx->dev);
        *out = tl_ctx->default_stream;
        return 0;
    }
    struct emu_stream *s = h;
    if (!emu_known(s) || s->magic != MAGIC_STREAM)
        return emu_fail(ACL_ERROR_INVALID_PARAM, "stream %p is not a live stream", h);
    *out = s;
    return 0;
}

int emu_stream_for_work(const char *fn, aclrtStream h, struct emu_stream **out)
{
    int rc = emu_stream_get(h, out);
    if (rc)
        return rc;
    int cur = emu_cur_dev();
    if ((*out)->dev != cur)
        return emu_fail(ACL_ERROR_RT_STREAM_CONTEXT,
                        "%s: the stream belongs to device %d but the calling thread's current context is %s%d "
                        "(aclrtSetCurrentContext to the stream's device first)",
                        fn, (*out)->dev, cur < 0 ? "none " : "device ", cur);
    return 0;
}

EXPORT aclError aclrtCreateStream(aclrtStream *stream)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    if (!stream)
        c.rc = emu_fail(ACL_ERROR_INVALID_PARAM, "aclrtCreateStream: stream is NULL");
    else if ((c.rc = need_ctx(__func__)) == 0)
        *stream = stream_new(emu_cur_dev());
    return emu_leave(&c);
}

static void work_free(struct emu_work *w)
{
    if (w->call) {
        emu_op_free_arrays(w->call);
        free(w->call);
    }
    free(w->hd);
    free(w);
}

/* A side of a queued copy: if it was device memory at enqueue, is it still? */
static bool still_valid(const void *p, size_t n, bool was_dev)
{
    const struct emu_alloc *a = emu_find(p);
    return !was_dev || (a && a->dev >= 0 && (uintptr_t)p + n <= a->base + a->size);
}

int emu_run_work(struct emu_stream *s, struct emu_work *w)
{
    switch (w->kind) {
    case WORK_OP:
        if (G.env.defer) { /* queued work: its memory may have been freed since the launch */
            for (int k = 0; k < EMU_MAXT; k++) {
                struct emu_tensor *t = &w->call->t[k];
                if (t->present && emu_check_tensor_mem(w->call->name, "a queued tensor", t))
                    return ACL_ERROR_RT_AICORE_EXCEPTION;
            }
        }
        return emu_op_run(w->call);
    case WORK_COPY:
        if (G.env.defer && w->n && (!still_valid(w->dst, w->n, w->dst_dev) || !still_valid(w->src, w->n, w->src_dev)))
            return emu_fail(ACL_ERROR_RT_AICORE_EXCEPTION,
                            "aclrtMemcpyAsync (queued): a device buffer was freed before the copy ran");
        if (w->n)
            memmove(w->dst, w->src, w->n);
        return 0;
    case WORK_SET:
        if (w->n)
            memset(w->dst, w->value, w->n);
        return 0;
    case WORK_EVENT:
        w->ev->done = true;
        w->ev->t_ms = emu_now_ms();
        return 0;
    case WORK_WAIT_EVENT:
        /* deferred mode: the recorded event's stream runs up to it first */
        if (w->ev && emu_known(w->ev) && w->ev->recorded && !w->ev->done && w->ev->stream &&
            emu_known(w->ev->stream) && w->ev->stream != s)
            return emu_stream_flush(w->ev->stream);
        return 0;
    case WORK_HCCL:
        return emu_hccl_deposit(s, w->hd);
    }
    return 0;
}

int emu_submit(struct emu_stream *s, struct emu_work *w)
{
    if (G.env.defer) {
        if (s->tail)
            s->tail->next = w;
        else
            s->head = w;
        s->tail = w;
        return 0;
    }
    int rc = emu_stream_wait_coll(s);
    if (rc == 0)
        rc = emu_run_work(s, w);
    work_free(w);
    return rc;
}

int emu_stream_flush(struct emu_stream *s)
{
    int rc = 0;
    while (s->head) {
        struct emu_work *w = s->head;
        s->head = w->next;
        if (!s->head)
            s->tail = NULL;
        if (rc == 0)
            rc = emu_stream_wait_coll(s);
        if (rc == 0) {
            rc = emu_run_work(s, w);
            if (rc)
                emu_debug("stream %p: queued work failed (%d); the rest of its queue is dropped", (void *)s, rc);
        }
        work_free(w); /* after a failure the remaining work is dropped, as a faulted NPU stream would */
    }
    if (rc == 0)
        rc = emu_stream_wait_coll(s);
    return rc;
}

EXPORT aclError aclrtDestroyStream(aclrtStream stream)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    struct emu_stream *s = NULL;
    if (!stream)
        c.rc = emu_fail(ACL_ERROR_INVALID_PARAM, "aclrtDestroyStream: stream is NULL");
    else if ((c.rc = emu_stream_get(stream, &s)) == 0) {
        c.rc = emu_stream_flush(s);
        for (size_t i = 0; i < nstreams; i++)
            if (streams[i] == s) {
                streams[i] = streams[--nstreams];
                break;
            }
        emu_del(s);
        s->magic = 0;
        free(s);
    }
    return emu_leave(&c);
}

EXPORT aclError aclrtSynchronizeStream(aclrtStream stream)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    struct emu_stream *s = NULL;
    if ((c.rc = emu_stream_get(stream, &s)) == 0)
        c.rc = emu_stream_flush(s);
    return emu_leave(&c);
}

EXPORT aclError aclrtSynchronizeStreamWithTimeout(aclrtStream stream, int32_t timeout)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    (void)timeout; /* work runs on the host: only collective waits can block, bounded by EMUACL_HCCL_TIMEOUT_MS */
    struct emu_stream *s = NULL;
    if ((c.rc = emu_stream_get(stream, &s)) == 0)
        c.rc = emu_stream_flush(s);
    return emu_leave(&c);
}

EXPORT aclError aclrtSynchronizeDevice(void)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    if ((c.rc = need_ctx(__func__)) == 0) {
        int dev = emu_cur_dev();
        for (size_t i = 0; i < nstreams && c.rc == 0; i++)
            if (streams[i]->dev == dev)
                c.rc = emu_stream_flush(streams[i]);
    }
    return emu_leave(&c);
}

/* ---------------------------------------------------------------- memory */

static void registry_insert(struct emu_alloc a)
{
    if (G.nallocs == G.capallocs) {
        G.capallocs = G.capallocs ? G.capallocs * 2 : 256;
        G.allocs = realloc(G.allocs, G.capallocs * sizeof *G.allocs);
    }
    size_t i = G.nallocs;
    while (i > 0 && G.allocs[i - 1].base > a.base) {
        G.allocs[i] = G.allocs[i - 1];
        i--;
    }
    G.allocs[i] = a;
    G.nallocs++;
}

static bool host_alloc(struct emu_alloc *a)
{
    /* big blocks: lazily committed anonymous mappings, so a 60 GiB "HBM" pool costs
     * only the pages touched; small ones: 64-byte aligned heap memory */
    if (a->charged >= (1u << 20)) {
        void *p = mmap(NULL, a->charged, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
            return false;
        a->base = (uintptr_t)p;
        a->mmapped = true;
        a->mapped = a->charged;
        return true;
    }
    void *p = aligned_alloc(64, (a->charged + 63) & ~(size_t)63); /* C11: size a multiple of the alignment */
    if (!p)
        return false;
    a->base = (uintptr_t)p;
    return true;
}

static void host_release(const struct emu_alloc *a)
{
    if (a->mmapped)
        munmap((void *)a->base, a->mapped);
    else
        free((void *)a->base);
}

static ssize_t registry_index_of_base(const void *p)
{
    const struct emu_alloc *a = emu_find(p);
    if (!a || a->base != (uintptr_t)p)
        return -1;
    return a - G.allocs;
}

static void registry_remove(size_t i)
{
    memmove(&G.allocs[i], &G.allocs[i + 1], (G.nallocs - i - 1) * sizeof *G.allocs);
    G.nallocs--;
}

EXPORT aclError aclrtMalloc(void **devPtr, size_t size, aclrtMemMallocPolicy policy)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    emu_extra(&c, "bytes", "%zu", size);
    if (!devPtr || size == 0) {
        c.rc = emu_fail(ACL_ERROR_INVALID_PARAM, "aclrtMalloc: devPtr is NULL or size is 0");
    } else if (policy < 0 || policy > 2) {
        c.rc = emu_fail(ACL_ERROR_INVALID_PARAM, "aclrtMalloc: unknown aclrtMemMallocPolicy %d", policy);
    } else if ((c.rc = need_ctx(__func__)) == 0) {
        int dev = emu_cur_dev();
        struct emu_alloc a = {.size = size, .dev = dev};
        a.charged = ((size + 31) & ~(size_t)31) + 32;
        uint64_t avail = G.env.hbm_free - G.dev[dev].used;
        if (a.charged > avail) {
            c.rc = emu_fail(ACL_ERROR_RT_MEMORY_ALLOCATION,
                            "aclrtMalloc: out of device memory on device %d: asked %zu bytes, %llu free of %llu",
                            dev, size, (unsigned long long)avail, (unsigned long long)G.env.hbm_total);
        } else if (!host_alloc(&a)) {
            c.rc = emu_fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "aclrtMalloc: host allocation of %zu bytes failed",
                            a.charged);
        } else {
            G.dev[dev].used += a.charged;
            registry_insert(a);
            *devPtr = (void *)a.base;
        }
    }
    return emu_leave(&c);
}

EXPORT aclError aclrtFree(void *devPtr)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    ssize_t i = registry_index_of_base(devPtr);
    if (i < 0 || G.allocs[i].dev < 0) {
        c.rc = emu_fail(ACL_ERROR_INVALID_PARAM, "aclrtFree: %p is not the base of a device allocation", devPtr);
    } else {
        struct emu_alloc a = G.allocs[i];
        emu_extra(&c, "bytes", "%zu", a.size);
        G.dev[a.dev].used -= a.charged;
        registry_remove((size_t)i);
        host_release(&a);
    }
    return emu_leave(&c);
}

EXPORT aclError aclrtMallocHost(void **hostPtr, size_t size)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    emu_extra(&c, "bytes", "%zu", size);
    if (!hostPtr || size == 0) {
        c.rc = emu_fail(ACL_ERROR_INVALID_PARAM, "aclrtMallocHost: hostPtr is NULL or size is 0");
    } else {
        struct emu_alloc a = {.size = size, .dev = EMU_HOST_PINNED};
        a.charged = ((size + 31) & ~(size_t)31) + 32;
        if (!host_alloc(&a)) {
            c.rc = emu_fail(ACL_ERROR_BAD_ALLOC, "aclrtMallocHost: allocation of %zu bytes failed", size);
        } else {
            registry_insert(a);
            *hostPtr = (void *)a.base;
        }
    }
    return emu_leave(&c);
}

EXPORT aclError aclrtFreeHost(void *hostPtr)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    ssize_t i = registry_index_of_base(hostPtr);
    if (i < 0 || G.allocs[i].dev != EMU_HOST_PINNED) {
        c.rc = emu_fail(ACL_ERROR_INVALID_PARAM, "aclrtFreeHost: %p is not the base of an aclrtMallocHost block",
                        hostPtr);
    } else {
        struct emu_alloc a = G.allocs[i];
        registry_remove((size_t)i);
        host_release(&a);
    }
    return emu_leave(&c);
}

EXPORT aclError aclrtGetMemInfo(aclrtMemAttr attr, size_t *freeb, size_t *total)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    if (!freeb || !total)
        c.rc = emu_fail(ACL_ERROR_INVALID_PARAM, "aclrtGetMemInfo: free or total is NULL");
    else if (attr < 0 || attr > 1)
        c.rc = emu_fail(ACL_ERROR_INVALID_PARAM, "aclrtGetMemInfo: attr %d is not ACL_DDR_MEM(0)/ACL_HBM_MEM(1)",
                        attr);
    else if ((c.rc = need_ctx(__func__)) == 0) {
        int dev = emu_cur_dev();
        if (attr == 1) {
            *freeb = (size_t)(G.env.hbm_free - G.dev[dev].used);
            *total = (size_t)G.env.hbm_total;
        } else { /* the emulated chip has no separate DDR */
            *freeb = 0;
            *total = 0;
        }
        emu_extra(&c, "free", "%zu", *freeb);
    }
    return emu_leave(&c);
}

/* A [p, p+n) range on the side of a copy: must it be device memory? Checks
 * provenance and bounds; `what` names it in the message. */
static int check_side(const char *fn, const char *what, const void *p, size_t n, bool want_dev)
{
    const struct emu_alloc *a = emu_find(p);
    bool is_dev = a && a->dev >= 0;
    if (want_dev && !is_dev)
        return emu_fail(ACL_ERROR_INVALID_PARAM, "%s: %s %p is not device memory (not inside any aclrtMalloc block)",
                        fn, what, p);
    if (!want_dev && is_dev)
        return emu_fail(ACL_ERROR_INVALID_PARAM, "%s: %s %p is device memory (device %d) but the copy kind says host",
                        fn, what, p, a->dev);
    if (a && (uintptr_t)p + n > a->base + a->size)
        return emu_fail(ACL_ERROR_INVALID_PARAM,
                        "%s: %s range [%p, +%zu) runs past the end of its allocation (%zu bytes at %p)", fn, what, p,
                        n, a->size, (void *)a->base);
    return 0;
}

static int check_copy(emu_call *c, void *dst, size_t destMax, const void *src, size_t count, int kind)
{
    emu_extra(c, "bytes", "%zu", count);
    emu_extra(c, "kind", "%d", kind);
    if (count == 0)
        return 0;
    if (!dst || !src)
        return emu_fail(ACL_ERROR_INVALID_PARAM, "%s: dst or src is NULL", c->fn);
    if (destMax < count)
        return emu_fail(ACL_ERROR_INVALID_PARAM, "%s: destMax %zu < count %zu", c->fn, destMax, count);
    if (kind == MEMCPY_DEFAULT) {
        const struct emu_alloc *d = emu_find(dst), *s = emu_find(src);
        bool dd = d && d->dev >= 0, sd = s && s->dev >= 0;
        kind = dd ? (sd ? MEMCPY_D2D : MEMCPY_H2D) : (sd ? MEMCPY_D2H : MEMCPY_H2H);
    }
    int rc;
    switch (kind) {
    case MEMCPY_H2H: rc = check_side(c->fn, "dst", dst, count, false); if (!rc) rc = check_side(c->fn, "src", src, count, false); return rc;
    case MEMCPY_H2D: rc = check_side(c->fn, "dst", dst, count, true); if (!rc) rc = check_side(c->fn, "src", src, count, false); return rc;
    case MEMCPY_D2H: rc = check_side(c->fn, "dst", dst, count, false); if (!rc) rc = check_side(c->fn, "src", src, count, true); return rc;
    case MEMCPY_D2D: rc = check_side(c->fn, "dst", dst, count, true); if (!rc) rc = check_side(c->fn, "src", src, count, true); return rc;
    default: return emu_fail(ACL_ERROR_INVALID_PARAM, "%s: unknown aclrtMemcpyKind %d", c->fn, kind);
    }
}

EXPORT aclError aclrtMemcpy(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    if ((c.rc = check_copy(&c, dst, destMax, src, count, kind)) == 0 && count)
        memmove(dst, src, count);
    return emu_leave(&c);
}

EXPORT aclError aclrtMemcpyAsync(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind,
                                 aclrtStream stream)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    struct emu_stream *s = NULL;
    if ((c.rc = emu_stream_for_work(__func__, stream, &s)) == 0 && (c.rc = check_copy(&c, dst, destMax, src, count, kind)) == 0) {
        const struct emu_alloc *da = emu_find(dst), *sa = emu_find(src);
        if (da && sa && da->dev >= 0 && sa->dev >= 0 && (((uintptr_t)dst | (uintptr_t)src) & 63))
            c.rc = emu_fail(ACL_ERROR_INVALID_PARAM,
                            "aclrtMemcpyAsync: device-to-device copies need 64-byte aligned addresses (dst %p, src %p)",
                            dst, (const void *)src);
        else {
            struct emu_work *w = calloc(1, sizeof *w);
            w->kind = WORK_COPY;
            w->dst = dst;
            w->src = src;
            w->dst_dev = da && da->dev >= 0;
            w->src_dev = sa && sa->dev >= 0;
            w->n = count;
            c.rc = emu_submit(s, w);
        }
    }
    return emu_leave(&c);
}

static int check_set(emu_call *c, void *p, size_t maxCount, size_t count)
{
    emu_extra(c, "bytes", "%zu", count);
    if (maxCount < count)
        return emu_fail(ACL_ERROR_INVALID_PARAM, "%s: maxCount %zu < count %zu", c->fn, maxCount, count);
    if (count == 0)
        return 0;
    return check_side(c->fn, "devPtr", p, count, true);
}

EXPORT aclError aclrtMemset(void *devPtr, size_t maxCount, int32_t value, size_t count)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    if ((c.rc = check_set(&c, devPtr, maxCount, count)) == 0 && count)
        memset(devPtr, value & 0xff, count);
    return emu_leave(&c);
}

EXPORT aclError aclrtMemsetAsync(void *devPtr, size_t maxCount, int32_t value, size_t count, aclrtStream stream)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    struct emu_stream *s = NULL;
    if ((c.rc = emu_stream_for_work(__func__, stream, &s)) == 0 && (c.rc = check_set(&c, devPtr, maxCount, count)) == 0) {
        struct emu_work *w = calloc(1, sizeof *w);
        w->kind = WORK_SET;
        w->dst = devPtr;
        w->value = value & 0xff;
        w->n = count;
        c.rc = emu_submit(s, w);
    }
    return emu_leave(&c);
}

/* ---------------------------------------------------------------- events */

static int event_get(const char *fn, aclrtEvent h, struct emu_event **out)
{
    struct emu_event *e = h;
    if (!emu_known(e) || e->magic != MAGIC_EVENT)
        return emu_fail(ACL_ERROR_INVALID_PARAM, "%s: %p is not a live event", fn, h);
    *out = e;
    return 0;
}

EXPORT aclError aclrtCreateEvent(aclrtEvent *event)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    if (!event)
        c.rc = emu_fail(ACL_ERROR_INVALID_PARAM, "aclrtCreateEvent: event is NULL");
    else if ((c.rc = need_ctx(__func__)) == 0) {
        struct emu_event *e = calloc(1, sizeof *e);
        e->magic = MAGIC_EVENT;
        emu_add(e);
        *event = e;
    }
    return emu_leave(&c);
}

EXPORT aclError aclrtDestroyEvent(aclrtEvent event)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    struct emu_event *e = NULL;
    if ((c.rc = event_get(__func__, event, &e)) == 0) {
        /* a queued record still points at it: run the recording stream first */
        if (e->recorded && !e->done && e->stream && emu_known(e->stream))
            c.rc = emu_stream_flush(e->stream);
        emu_del(e);
        e->magic = 0;
        free(e);
    }
    return emu_leave(&c);
}

EXPORT aclError aclrtRecordEvent(aclrtEvent event, aclrtStream stream)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    struct emu_event *e = NULL;
    struct emu_stream *s = NULL;
    if ((c.rc = event_get(__func__, event, &e)) == 0 && (c.rc = emu_stream_for_work(__func__, stream, &s)) == 0) {
        e->recorded = true;
        e->done = false;
        e->stream = s;
        struct emu_work *w = calloc(1, sizeof *w);
        w->kind = WORK_EVENT;
        w->ev = e;
        c.rc = emu_submit(s, w);
    }
    return emu_leave(&c);
}

EXPORT aclError aclrtSynchronizeEvent(aclrtEvent event)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    struct emu_event *e = NULL;
    if ((c.rc = event_get(__func__, event, &e)) == 0 && e->recorded && !e->done && e->stream &&
        emu_known(e->stream))
        c.rc = emu_stream_flush(e->stream);
    return emu_leave(&c);
}

EXPORT aclError aclrtStreamWaitEvent(aclrtStream stream, aclrtEvent event)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    struct emu_event *e = NULL;
    struct emu_stream *s = NULL;
    if ((c.rc = event_get(__func__, event, &e)) == 0 && (c.rc = emu_stream_for_work(__func__, stream, &s)) == 0) {
        struct emu_work *w = calloc(1, sizeof *w);
        w->kind = WORK_WAIT_EVENT;
        w->ev = e;
        c.rc = emu_submit(s, w);
    }
    return emu_leave(&c);
}

EXPORT aclError aclrtEventElapsedTime(float *ms, aclrtEvent start, aclrtEvent end)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT))
        return emu_leave(&c);
    struct emu_event *a = NULL, *b = NULL;
    if (!ms)
        c.rc = emu_fail(ACL_ERROR_INVALID_PARAM, "aclrtEventElapsedTime: ms is NULL");
    else if ((c.rc = event_get(__func__, start, &a)) == 0 && (c.rc = event_get(__func__, end, &b)) == 0) {
        if (!a->done || !b->done)
            c.rc = emu_fail(ACL_ERROR_INVALID_PARAM,
                            "aclrtEventElapsedTime: an event has not completed (record it and synchronize first)");
        else
            *ms = (float)(b->t_ms - a->t_ms);
    }
    return emu_leave(&c);
}
