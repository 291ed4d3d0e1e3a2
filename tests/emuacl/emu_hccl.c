/*
 * emu_hccl.c - HCCL collectives between ranks of one process.
 *
 * Owns: communicators and groups (HcclCommInitAll from one thread; root info
 * or a rank table: ranks = threads meeting at a barrier keyed by the root info
 * or the table's path), the deposit/complete protocol of AllReduce, AllGather
 * and Broadcast, and the stream-order wait on an incomplete collective.
 *
 * Protocol: each rank's call DEPOSITS its contribution to collective #k of its
 * communicator (a copy of its send data) and returns at once; the last rank to
 * deposit #k computes the result (f32 for float types, int64 for integers, then
 * rounded to the dtype) and writes every rank's recv buffer. Any later work on a
 * stream that deposited an incomplete collective first waits for it (bounded by
 * EMUACL_HCCL_TIMEOUT_MS, then 507046 naming the ranks that never joined). So
 * one host thread can drive all ranks if it enqueues rank by rank up to each
 * collective; a wrong order shows up as a timeout, not as wrong numbers.
 */
#define _GNU_SOURCE
#include "emu.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAGIC_COMM 0x48434321u
enum { H_INT8 = 0, H_INT16 = 1, H_INT32 = 2, H_FP16 = 3, H_FP32 = 4, H_INT64 = 5, H_BF16 = 11 };
static const char *const coll_names[] = {"HcclAllReduce", "HcclAllGather", "HcclBroadcast"};

static size_t hsize(int dt)
{
    switch (dt) {
    case H_INT8: return 1;
    case H_INT16: case H_FP16: case H_BF16: return 2;
    case H_INT32: case H_FP32: return 4;
    case H_INT64: return 8;
    default: return 0;
    }
}
static bool hfloat(int dt) { return dt == H_FP16 || dt == H_FP32 || dt == H_BF16; }

static float hload_f(const unsigned char *b, int dt, uint64_t e)
{
    uint16_t h;
    float f;
    switch (dt) {
    case H_FP32: memcpy(&f, b + e * 4, 4); return f;
    case H_FP16: memcpy(&h, b + e * 2, 2); return emu_f16_to_f32(h);
    default: memcpy(&h, b + e * 2, 2); return emu_bf16_to_f32(h);
    }
}
static void hstore_f(unsigned char *b, int dt, uint64_t e, float v)
{
    uint16_t h;
    switch (dt) {
    case H_FP32: memcpy(b + e * 4, &v, 4); break;
    case H_FP16: h = emu_f32_to_f16(v); memcpy(b + e * 2, &h, 2); break;
    default: h = emu_f32_to_bf16(v); memcpy(b + e * 2, &h, 2); break;
    }
}
static int64_t hload_i(const unsigned char *b, int dt, uint64_t e)
{
    switch (dt) {
    case H_INT8: return (int8_t)b[e];
    case H_INT16: { int16_t x; memcpy(&x, b + e * 2, 2); return x; }
    case H_INT32: { int32_t x; memcpy(&x, b + e * 4, 4); return x; }
    default: { int64_t x; memcpy(&x, b + e * 8, 8); return x; }
    }
}
static void hstore_i(unsigned char *b, int dt, uint64_t e, int64_t v)
{
    switch (dt) {
    case H_INT8: b[e] = (unsigned char)v; break;
    case H_INT16: { int16_t x = (int16_t)v; memcpy(b + e * 2, &x, 2); break; }
    case H_INT32: { int32_t x = (int32_t)v; memcpy(b + e * 4, &x, 4); break; }
    default: memcpy(b + e * 8, &v, 8); break;
    }
}

/* ---------------------------------------------------------------- groups */

static struct emu_group *group_new(int n)
{
    struct emu_group *g = calloc(1, sizeof *g);
    g->n = n;
    g->alive = n;
    g->id = G.next_group_id++;
    g->comms = calloc((size_t)n, sizeof *g->comms);
    return g;
}

static struct emu_comm *comm_new(struct emu_group *g, int rank, int dev)
{
    struct emu_comm *c = calloc(1, sizeof *c);
    c->magic = MAGIC_COMM;
    c->g = g;
    c->rank = rank;
    c->dev = dev;
    g->comms[rank] = c;
    emu_add(c);
    return c;
}

static int comm_get(const char *fn, HcclComm h, struct emu_comm **out)
{
    struct emu_comm *c = h;
    if (!emu_known(c) || c->magic != MAGIC_COMM)
        return emu_fail(HCCL_E_PARA, "%s: %p is not a live HcclComm", fn, h);
    *out = c;
    return 0;
}

static struct emu_coll *coll_find(struct emu_group *g, uint64_t k)
{
    for (struct emu_coll *c = g->colls; c; c = c->next)
        if (c->k == k)
            return c;
    return NULL;
}

static void coll_free(struct emu_group *g, struct emu_coll *c)
{
    for (struct emu_coll **pp = &g->colls; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    for (int r = 0; r < g->n; r++)
        free(c->dep[r]);
    free(c->dep);
    free(c->recv);
    free(c);
}

static void deadline_in(struct timespec *ts, long ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

int emu_stream_wait_coll(struct emu_stream *s)
{
    struct emu_group *g = s->pend_group;
    if (!g)
        return 0;
    struct timespec dl;
    deadline_in(&dl, G.env.hccl_timeout_ms);
    struct emu_coll *c;
    while ((c = coll_find(g, s->pend_k)) != NULL) {
        int e = pthread_cond_timedwait(&G.cv, &G.mu, &dl);
        if (s->pend_group != g) /* the group was destroyed meanwhile */
            return 0;
        if (e == ETIMEDOUT && (c = coll_find(g, s->pend_k)) != NULL) {
            char missing[512];
            size_t at = 0;
            missing[0] = 0;
            for (int r = 0; r < g->n && at < sizeof missing; r++)
                if (!c->dep[r])
                    at += (size_t)snprintf(missing + at, sizeof missing - at, "%s%d", at ? "," : "", r);
            s->pend_group = NULL;
            return emu_fail(ACL_ERROR_RT_STREAM_SYNC_TIMEOUT,
                            "%s #%llu of HCCL group %d (%d ranks) did not complete within %ld ms "
                            "(EMUACL_HCCL_TIMEOUT_MS): ranks %s never joined; with one host thread driving "
                            "several ranks, enqueue every rank up to the collective before any later work",
                            coll_names[c->kind], (unsigned long long)s->pend_k, g->id, g->n, G.env.hccl_timeout_ms,
                            missing);
        }
    }
    s->pend_group = NULL;
    return 0;
}

/* All ranks deposited collective c: write every rank's result (a recv buffer
 * freed since its rank deposited is skipped rather than written). */
static void coll_complete(struct emu_group *g, struct emu_coll *c)
{
    size_t es = hsize(c->dtype);
    /* EMUACL_COMPUTE=0: the collective completes (ordering, waits, checks) without moving data */
    uint64_t n = G.env.compute ? c->count : 0;
    size_t rbytes = n * es * (c->kind == COLL_ALLGATHER ? (size_t)g->n : 1);
    for (int r = 0; r < g->n; r++) {
        const struct emu_alloc *a = emu_find(c->recv[r]);
        if (rbytes && (!a || a->dev < 0 || (uintptr_t)c->recv[r] + rbytes > a->base + a->size)) {
            emu_debug("%s #%llu: rank %d's recv buffer was freed before the collective completed",
                      coll_names[c->kind], (unsigned long long)c->k, r);
            c->recv[r] = NULL;
        }
    }
    if (c->kind == COLL_ALLREDUCE) {
        unsigned char *res = malloc(n * es + 1);
        for (uint64_t e = 0; e < n; e++) {
            if (hfloat(c->dtype)) {
                float acc = hload_f(c->dep[0], c->dtype, e);
                for (int r = 1; r < g->n; r++) {
                    float v = hload_f(c->dep[r], c->dtype, e);
                    acc = c->op == 0 ? acc + v : c->op == 1 ? acc * v : c->op == 2 ? (v > acc ? v : acc) : (v < acc ? v : acc);
                }
                hstore_f(res, c->dtype, e, acc);
            } else {
                int64_t acc = hload_i(c->dep[0], c->dtype, e);
                for (int r = 1; r < g->n; r++) {
                    int64_t v = hload_i(c->dep[r], c->dtype, e);
                    acc = c->op == 0 ? (int64_t)((uint64_t)acc + (uint64_t)v)
                        : c->op == 1 ? (int64_t)((uint64_t)acc * (uint64_t)v)
                        : c->op == 2 ? (v > acc ? v : acc) : (v < acc ? v : acc);
                }
                hstore_i(res, c->dtype, e, acc);
            }
        }
        for (int r = 0; r < g->n; r++)
            if (c->recv[r])
                memcpy(c->recv[r], res, n * es);
        free(res);
    } else if (c->kind == COLL_ALLGATHER) { /* rank-major */
        for (int r = 0; r < g->n; r++)
            for (int q = 0; q < g->n && c->recv[r]; q++)
                memcpy((unsigned char *)c->recv[r] + (size_t)q * n * es, c->dep[q], n * es);
    } else {
        for (int r = 0; r < g->n; r++)
            if (r != c->root && c->recv[r])
                memcpy(c->recv[r], c->dep[c->root], n * es);
    }
    coll_free(g, c);
    pthread_cond_broadcast(&G.cv);
}

int emu_hccl_deposit(struct emu_stream *s, struct emu_hdep *d)
{
    struct emu_comm *cm = d->comm;
    if (!emu_known(cm) || cm->magic != MAGIC_COMM)
        return emu_fail(HCCL_E_PARA, "%s: communicator destroyed before its queued collective ran",
                        coll_names[d->kind]);
    struct emu_group *g = cm->g;
    uint64_t k = cm->next_k + 1;
    struct emu_coll *c = coll_find(g, k);
    if (!c) {
        c = calloc(1, sizeof *c);
        c->k = k;
        c->kind = d->kind;
        c->dtype = d->dtype;
        c->op = d->op;
        c->root = d->root;
        c->count = d->count;
        c->dep = calloc((size_t)g->n, sizeof *c->dep);
        c->recv = calloc((size_t)g->n, sizeof *c->recv);
        c->next = g->colls;
        g->colls = c;
    } else if (c->kind != d->kind || c->dtype != d->dtype || c->op != d->op || c->root != d->root ||
               c->count != d->count) {
        return emu_fail(HCCL_E_PARA,
                        "%s #%llu: rank %d passes kind %s count %llu dtype %d op %d root %d, but an earlier rank "
                        "passed %s count %llu dtype %d op %d root %d",
                        coll_names[d->kind], (unsigned long long)k, cm->rank, coll_names[d->kind],
                        (unsigned long long)d->count, d->dtype, d->op, d->root, coll_names[c->kind],
                        (unsigned long long)c->count, c->dtype, c->op, c->root);
    }
    size_t bytes = d->count * hsize(d->dtype);
    c->dep[cm->rank] = malloc(bytes + 1);
    if (d->kind != COLL_BROADCAST || cm->rank == d->root)
        memcpy(c->dep[cm->rank], d->send, bytes);
    c->recv[cm->rank] = d->recv;
    c->ndep++;
    cm->next_k = k;
    s->pend_group = g;
    s->pend_k = k;
    if (c->ndep == g->n)
        coll_complete(g, c);
    return 0;
}

/* ---------------------------------------------------------------- rendezvous */

/* Ranks of a root-info / rank-table communicator meet here: the group is made
 * by the first rank to arrive and published when the last one joins. */
struct rdv {
    char key[4200];
    int joined, picked;
    bool complete;
    struct emu_group *g;
    struct rdv *next;
};
static struct rdv *rdvs;
static unsigned long root_counter;

static void rdv_unlink(struct rdv *r)
{
    for (struct rdv **pp = &rdvs; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            return;
        }
}

static int rendezvous(const char *fn, const char *key, uint32_t n, uint32_t rank, HcclComm *comm)
{
    if (!comm)
        return emu_fail(HCCL_E_PTR, "%s: comm is NULL", fn);
    if (n == 0 || rank >= n)
        return emu_fail(HCCL_E_PARA, "%s: rank %u out of range for %u ranks", fn, rank, n);
    int dev = emu_cur_dev();
    if (dev < 0)
        return emu_fail(HCCL_E_PARA, "%s: the calling thread has no current device (aclrtSetDevice first)", fn);
    struct rdv *r;
    for (r = rdvs; r; r = r->next)
        if (!r->complete && strcmp(r->key, key) == 0)
            break;
    if (!r) {
        r = calloc(1, sizeof *r);
        snprintf(r->key, sizeof r->key, "%s", key);
        r->g = group_new((int)n);
        r->next = rdvs;
        rdvs = r;
    }
    struct emu_group *g = r->g;
    if (g->n != (int)n)
        return emu_fail(HCCL_E_PARA, "%s: rank %u says %u ranks, an earlier rank said %d", fn, rank, n, g->n);
    if (g->comms[rank])
        return emu_fail(HCCL_E_PARA, "%s: rank %u joined twice", fn, rank);
    struct emu_comm *me = comm_new(g, (int)rank, dev);
    if (++r->joined == g->n) {
        r->complete = true;
        pthread_cond_broadcast(&G.cv);
    }
    struct timespec dl;
    deadline_in(&dl, G.env.hccl_timeout_ms);
    while (!r->complete) {
        if (pthread_cond_timedwait(&G.cv, &G.mu, &dl) == ETIMEDOUT && !r->complete) {
            char missing[512];
            size_t at = 0;
            missing[0] = 0;
            for (int q = 0; q < g->n && at < sizeof missing; q++)
                if (!g->comms[q])
                    at += (size_t)snprintf(missing + at, sizeof missing - at, "%s%d", at ? "," : "", q);
            g->comms[rank] = NULL;
            emu_del(me);
            free(me);
            if (--r->joined == 0) {
                rdv_unlink(r);
                free(g->comms);
                free(g);
                free(r);
            }
            return emu_fail(HCCL_E_TIMEOUT, "%s: ranks %s did not join within %ld ms (EMUACL_HCCL_TIMEOUT_MS)", fn,
                            missing, G.env.hccl_timeout_ms);
        }
    }
    if (++r->picked == g->n) {
        rdv_unlink(r);
        free(r);
    }
    *comm = me;
    return 0;
}

EXPORT HcclResult HcclGetRootInfo(HcclRootInfo *rootInfo)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT | F_HCCL))
        return emu_leave(&c);
    if (!rootInfo)
        c.rc = emu_fail(HCCL_E_PTR, "HcclGetRootInfo: rootInfo is NULL");
    else {
        memset(rootInfo, 0, sizeof *rootInfo);
        snprintf(rootInfo->internal, sizeof rootInfo->internal, "emuacl-root:%ld:%lu", (long)getpid(),
                 ++root_counter);
    }
    return emu_leave(&c);
}

EXPORT HcclResult HcclCommInitRootInfo(uint32_t nRanks, const HcclRootInfo *rootInfo, uint32_t rank, HcclComm *comm)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT | F_HCCL))
        return emu_leave(&c);
    if (!rootInfo || strncmp(rootInfo->internal, "emuacl-root:", 12) != 0)
        c.rc = emu_fail(HCCL_E_PARA, "HcclCommInitRootInfo: rootInfo was not made by HcclGetRootInfo");
    else {
        char key[200];
        snprintf(key, sizeof key, "root:%.180s", rootInfo->internal);
        c.rc = rendezvous(__func__, key, nRanks, rank, comm);
    }
    emu_extra(&c, "ranks", "%u", nRanks);
    emu_extra(&c, "rank", "%u", rank);
    return emu_leave(&c);
}

/* The rank count of an HCCL rank table: its "rank_id" entries. Multi-server
 * tables are refused: the emulator's ranks are threads of one process. */
static int parse_rank_table(const char *path, int *nranks)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return emu_fail(HCCL_E_OPEN_FILE_FAILURE, "HcclCommInitClusterInfo: cannot open %s: %s", path,
                        strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    size_t got;
    while ((got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
        }
    }
    fclose(f);
    buf[len] = 0;
    int n = 0;
    for (const char *p = buf; (p = strstr(p, "\"rank_id\"")) != NULL; p += 9)
        n++;
    const char *sc = strstr(buf, "\"server_count\"");
    long servers = 1;
    if (sc) {
        sc = strchr(sc + 14, ':');
        while (sc && (*sc == ':' || *sc == ' ' || *sc == '"'))
            sc++;
        if (sc)
            servers = strtol(sc, NULL, 10);
    }
    free(buf);
    if (servers > 1)
        return emu_fail(HCCL_E_NOT_SUPPORT,
                        "HcclCommInitClusterInfo: %s lists %ld servers; the emulator's ranks are threads of one "
                        "process (single-server tables only)",
                        path, servers);
    if (n == 0)
        return emu_fail(HCCL_E_PARA, "HcclCommInitClusterInfo: %s has no \"rank_id\" entries", path);
    *nranks = n;
    return 0;
}

EXPORT HcclResult HcclCommInitClusterInfo(const char *clusterInfo, uint32_t rank, HcclComm *comm)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT | F_HCCL))
        return emu_leave(&c);
    int n = 0;
    if (!clusterInfo)
        c.rc = emu_fail(HCCL_E_PTR, "HcclCommInitClusterInfo: clusterInfo is NULL");
    else if ((c.rc = parse_rank_table(clusterInfo, &n)) == 0) {
        char real[PATH_MAX], key[PATH_MAX + 8];
        if (!realpath(clusterInfo, real))
            snprintf(real, sizeof real, "%s", clusterInfo);
        snprintf(key, sizeof key, "table:%s", real);
        c.rc = rendezvous(__func__, key, (uint32_t)n, rank, comm);
    }
    return emu_leave(&c);
}

EXPORT HcclResult HcclCommInitAll(uint32_t ndev, int32_t *devices, HcclComm *comms)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT | F_HCCL))
        return emu_leave(&c);
    emu_extra(&c, "ranks", "%u", ndev);
    if (!devices || !comms || ndev == 0) {
        c.rc = emu_fail(HCCL_E_PTR, "HcclCommInitAll: devices or comms is NULL, or ndev is 0");
        return emu_leave(&c);
    }
    for (uint32_t i = 0; i < ndev; i++)
        if (devices[i] < 0 || devices[i] >= G.env.devices) {
            c.rc = emu_fail(HCCL_E_PARA, "HcclCommInitAll: device %d out of range (EMUACL_DEVICES=%d)", devices[i],
                            G.env.devices);
            return emu_leave(&c);
        }
    struct emu_group *g = group_new((int)ndev);
    for (uint32_t i = 0; i < ndev; i++)
        comms[i] = comm_new(g, (int)i, devices[i]);
    return emu_leave(&c);
}

/* Common checks of a collective, then its deposit as stream work. */
static int collective(emu_call *c, int kind, void *send, void *recv, uint64_t count, int dtype, int op, int root,
                      HcclComm comm, aclrtStream stream)
{
    struct emu_comm *cm = NULL;
    struct emu_stream *s = NULL;
    int rc = comm_get(c->fn, comm, &cm);
    if (rc)
        return rc;
    emu_extra(c, "count", "%llu", (unsigned long long)count);
    emu_extra(c, "rank", "%d", cm->rank);
    if (emu_stream_for_work(c->fn, stream, &s)) {
        char why[1024];
        snprintf(why, sizeof why, "%s", emu_errmsg());
        return emu_fail(HCCL_E_PARA, "%s", why);
    }
    c->dev = s->dev;
    if (s->dev != cm->dev)
        return emu_fail(HCCL_E_PARA, "%s: stream is on device %d, the communicator's rank %d on device %d", c->fn,
                        s->dev, cm->rank, cm->dev);
    size_t es = hsize(dtype);
    if (!es)
        return emu_fail(HCCL_E_PARA, "%s: HcclDataType %d is not supported by the emulator", c->fn, dtype);
    if (kind == COLL_ALLREDUCE && (op < 0 || op > 3))
        return emu_fail(HCCL_E_PARA, "%s: HcclReduceOp %d is not SUM/PROD/MAX/MIN", c->fn, op);
    if (kind == COLL_BROADCAST && (root < 0 || root >= cm->g->n))
        return emu_fail(HCCL_E_PARA, "%s: root %d out of range", c->fn, root);
    size_t sbytes = count * es, rbytes = kind == COLL_ALLGATHER ? sbytes * (size_t)cm->g->n : sbytes;
    void *bufs[2] = {send, recv};
    size_t sizes[2] = {sbytes, rbytes};
    const char *names[2] = {"sendBuf", "recvBuf"};
    for (int i = 0; i < 2; i++) {
        if (count == 0)
            break;
        const struct emu_alloc *a = emu_find(bufs[i]);
        if (!a || a->dev < 0)
            return emu_fail(HCCL_E_PTR, "%s: %s %p is not device memory", c->fn, names[i], bufs[i]);
        if (a->dev != cm->dev)
            return emu_fail(HCCL_E_PARA, "%s: %s is on device %d, rank %d is on device %d", c->fn, names[i], a->dev,
                            cm->rank, cm->dev);
        if ((uintptr_t)bufs[i] % es)
            return emu_fail(HCCL_E_PARA, "%s: %s %p is not aligned to the element size %zu", c->fn, names[i],
                            bufs[i], es);
        if ((uintptr_t)bufs[i] + sizes[i] > a->base + a->size)
            return emu_fail(HCCL_E_PARA, "%s: %s range of %zu bytes runs past its allocation", c->fn, names[i],
                            sizes[i]);
    }
    struct emu_work *w = calloc(1, sizeof *w);
    w->kind = WORK_HCCL;
    w->hd = calloc(1, sizeof *w->hd);
    *w->hd = (struct emu_hdep){.comm = cm, .kind = kind, .dtype = dtype, .op = op, .root = root, .count = count,
                               .send = send, .recv = recv};
    rc = emu_submit(s, w);
    /* waiting on an earlier collective of this stream timed out: HCCL's code for it */
    if (rc == ACL_ERROR_RT_STREAM_SYNC_TIMEOUT)
        rc = HCCL_E_TIMEOUT;
    return rc;
}

EXPORT HcclResult HcclAllReduce(void *sendBuf, void *recvBuf, uint64_t count, HcclDataType dataType, HcclReduceOp op,
                                HcclComm comm, aclrtStream stream)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT | F_HCCL))
        return emu_leave(&c);
    c.rc = collective(&c, COLL_ALLREDUCE, sendBuf, recvBuf, count, dataType, op, 0, comm, stream);
    return emu_leave(&c);
}

EXPORT HcclResult HcclAllGather(void *sendBuf, void *recvBuf, uint64_t sendCount, HcclDataType dataType,
                                HcclComm comm, aclrtStream stream)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT | F_HCCL))
        return emu_leave(&c);
    c.rc = collective(&c, COLL_ALLGATHER, sendBuf, recvBuf, sendCount, dataType, 0, 0, comm, stream);
    return emu_leave(&c);
}

EXPORT HcclResult HcclBroadcast(void *buf, uint64_t count, HcclDataType dataType, uint32_t root, HcclComm comm,
                                aclrtStream stream)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT | F_HCCL))
        return emu_leave(&c);
    c.rc = collective(&c, COLL_BROADCAST, buf, buf, count, dataType, 0, (int)root, comm, stream);
    return emu_leave(&c);
}

EXPORT HcclResult HcclGetRankSize(HcclComm comm, uint32_t *rankSize)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT | F_HCCL))
        return emu_leave(&c);
    struct emu_comm *cm = NULL;
    if (!rankSize)
        c.rc = emu_fail(HCCL_E_PTR, "HcclGetRankSize: rankSize is NULL");
    else if ((c.rc = comm_get(__func__, comm, &cm)) == 0)
        *rankSize = (uint32_t)cm->g->n;
    return emu_leave(&c);
}

EXPORT HcclResult HcclGetRankId(HcclComm comm, uint32_t *rank)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT | F_HCCL))
        return emu_leave(&c);
    struct emu_comm *cm = NULL;
    if (!rank)
        c.rc = emu_fail(HCCL_E_PTR, "HcclGetRankId: rank is NULL");
    else if ((c.rc = comm_get(__func__, comm, &cm)) == 0)
        *rank = (uint32_t)cm->rank;
    return emu_leave(&c);
}

EXPORT HcclResult HcclCommDestroy(HcclComm comm)
{
    emu_call c;
    if (emu_enter(&c, __func__, F_INIT | F_HCCL))
        return emu_leave(&c);
    struct emu_comm *cm = NULL;
    if ((c.rc = comm_get(__func__, comm, &cm)) == 0) {
        struct emu_group *g = cm->g;
        g->comms[cm->rank] = NULL;
        emu_del(cm);
        cm->magic = 0;
        free(cm);
        if (--g->alive == 0) {
            while (g->colls)
                coll_free(g, g->colls);
            emu_streams_forget_group(g);
            free(g->comms);
            free(g);
            pthread_cond_broadcast(&G.cv);
        }
    }
    return emu_leave(&c);
}

EXPORT const char *HcclGetErrorString(HcclResult code)
{
    emu_call c;
    emu_enter(&c, __func__, F_NOFAULT);
    emu_leave(&c);
    switch (code) {
    case HCCL_SUCCESS: return "HCCL_SUCCESS: success";
    case HCCL_E_PARA: return "HCCL_E_PARA: parameter error";
    case HCCL_E_PTR: return "HCCL_E_PTR: empty pointer";
    case HCCL_E_MEMORY: return "HCCL_E_MEMORY: memory error";
    case HCCL_E_INTERNAL: return "HCCL_E_INTERNAL: internal error";
    case HCCL_E_NOT_SUPPORT: return "HCCL_E_NOT_SUPPORT: not supported";
    case HCCL_E_TIMEOUT: return "HCCL_E_TIMEOUT: timeout";
    case HCCL_E_OPEN_FILE_FAILURE: return "HCCL_E_OPEN_FILE_FAILURE: open file failure";
    case HCCL_E_RUNTIME: return "HCCL_E_RUNTIME: runtime error";
    default: return "HCCL: unknown error code";
    }
}
