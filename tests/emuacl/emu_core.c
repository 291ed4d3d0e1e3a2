/*
 * emu_core.c - the emulator's process-wide plumbing.
 *
 * Owns: the global state and its mutex, the environment (EMUACL_*), the
 * per-call wrapper (fault injection, init check, JSONL trace), the thread's
 * recent error message, the handle sets used to recognise live objects, the
 * device-memory registry lookup, and dtype conversions (bf16/fp16 RNE).
 */
#define _GNU_SOURCE
#include "emu.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct emu_state G = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .cv = PTHREAD_COND_INITIALIZER,
};

static __thread char tl_msg[2048];

const char *emu_errmsg(void) { return tl_msg; }

int emu_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_msg, sizeof tl_msg, fmt, ap);
    va_end(ap);
    emu_debug("error %d: %s", code, tl_msg);
    return code;
}

void emu_debug(const char *fmt, ...)
{
    if (!G.env.debug)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "emuacl: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

double emu_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---------------------------------------------------------------- env */

static uint64_t env_u64(const char *name, uint64_t dflt)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return dflt;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end)
        return dflt;
    return (uint64_t)x;
}

static bool env_flag(const char *name, bool dflt)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return dflt;
    return strcmp(v, "0") != 0;
}

/* EMUACL_FAIL=<symbol>:<n>:<code>[,...] */
static void parse_faults(const char *spec)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        if (G.env.nfaults >= (int)(sizeof G.env.faults / sizeof G.env.faults[0]))
            break;
        char *c1 = strchr(item, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c1 || !c2)
            continue;
        *c1 = *c2 = 0;
        struct emu_fault *f = &G.env.faults[G.env.nfaults];
        snprintf(f->sym, sizeof f->sym, "%s", item);
        f->n = strtol(c1 + 1, NULL, 10);
        f->code = (int)strtol(c2 + 1, NULL, 10);
        f->count = 0;
        f->group = G.env.nfaults;
        for (int i = 0; i < G.env.nfaults; i++)
            if (strcmp(G.env.faults[i].sym, f->sym) == 0) {
                f->group = G.env.faults[i].group;
                break;
            }
        G.env.nfaults++;
    }
}

static void read_env(void)
{
    if (G.env_read)
        return;
    G.env_read = true;
    G.env.debug = env_flag("EMUACL_DEBUG", false);
    G.env.devices = (int)env_u64("EMUACL_DEVICES", 8);
    if (G.env.devices < 1)
        G.env.devices = 1;
    if (G.env.devices > 64)
        G.env.devices = 64;
    G.env.hbm_total = env_u64("EMUACL_HBM_TOTAL", 64ULL << 30);
    G.env.hbm_free = env_u64("EMUACL_HBM_FREE", G.env.hbm_total);
    if (G.env.hbm_free > G.env.hbm_total)
        G.env.hbm_free = G.env.hbm_total;
    G.env.defer = env_flag("EMUACL_DEFER", false);
    G.env.f32 = env_flag("EMUACL_F32", false);
    G.env.compute = env_flag("EMUACL_COMPUTE", true);
    G.env.hccl_timeout_ms = (long)env_u64("EMUACL_HCCL_TIMEOUT_MS", 5000);
    const char *f = getenv("EMUACL_FAIL");
    if (f && *f)
        parse_faults(f);
    const char *tp = getenv("EMUACL_TRACE");
    if (tp && *tp) {
        G.trace = fopen(tp, "a");
        if (!G.trace)
            emu_debug("cannot open EMUACL_TRACE=%s: %s", tp, strerror(errno));
    }
    G.dev = calloc((size_t)G.env.devices, sizeof *G.dev);
    emu_debug("devices=%d hbm_total=%llu hbm_free=%llu defer=%d f32=%d compute=%d", G.env.devices,
              (unsigned long long)G.env.hbm_total, (unsigned long long)G.env.hbm_free, G.env.defer,
              G.env.f32, G.env.compute);
}

/* ---------------------------------------------------------------- calls */

bool emu_enter(emu_call *c, const char *fn, int flags)
{
    pthread_mutex_lock(&G.mu);
    read_env();
    c->fn = fn;
    c->rc = 0;
    c->elen = 0;
    c->extra[0] = 0;
    c->dev = emu_cur_dev();
    /* fault injection: count this symbol's calls once, then check its specs */
    int group = -1;
    for (int i = 0; (flags & F_NOFAULT) == 0 && i < G.env.nfaults; i++)
        if (strcmp(G.env.faults[i].sym, fn) == 0) {
            group = G.env.faults[i].group;
            break;
        }
    if (group >= 0) {
        long n = ++G.env.faults[group].count;
        for (int i = 0; i < G.env.nfaults; i++)
            if (G.env.faults[i].group == group && G.env.faults[i].n == n) {
                c->rc = emu_fail(G.env.faults[i].code, "emuacl: injected failure of %s (call %ld)", fn, n);
                emu_extra(c, "injected", "true");
                return true;
            }
    }
    if ((flags & F_INIT) && !G.inited) {
        c->rc = (flags & F_HCCL) ? HCCL_E_INTERNAL : ACL_ERROR_UNINITIALIZE;
        emu_fail(c->rc, "%s: aclInit has not been called", fn);
        return true;
    }
    return false;
}

void emu_extra(emu_call *c, const char *key, const char *fmt, ...)
{
    if (c->elen >= sizeof c->extra - 1)
        return;
    int n = snprintf(c->extra + c->elen, sizeof c->extra - c->elen, ",\"%s\":", key);
    if (n < 0 || (size_t)n >= sizeof c->extra - c->elen) {
        c->extra[c->elen] = 0;
        return;
    }
    size_t at = c->elen + (size_t)n;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(c->extra + at, sizeof c->extra - at, fmt, ap);
    va_end(ap);
    if (m < 0 || (size_t)m >= sizeof c->extra - at) {
        c->extra[c->elen] = 0; /* drop a field that does not fit, keep the JSON valid */
        return;
    }
    c->elen = at + (size_t)m;
}

int emu_leave(emu_call *c)
{
    if (G.trace) {
        FILE *f = G.trace;
        fprintf(f, "{\"seq\":%llu,\"fn\":\"%s\",\"dev\":%d,\"rc\":%d%s}\n", (unsigned long long)++G.seq, c->fn,
                c->dev, c->rc, c->extra);
        fflush(f);
    }
    pthread_mutex_unlock(&G.mu);
    return c->rc;
}

/* ---------------------------------------------------------------- handle set */
/* Open addressing set of live handle pointers (tensors, executors, streams...):
 * lets every entry point refuse an unknown or already destroyed handle. */
static const void **set_slots;
static size_t set_cap, set_len;
#define SET_TOMB ((const void *)1)

static size_t hash_ptr(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

/* Rehash without tombstones, doubling only when live entries need it (so
 * create/destroy churn of descriptors does not grow the table forever). */
static void set_grow(void)
{
    size_t live = 0;
    for (size_t i = 0; i < set_cap; i++)
        live += set_slots[i] && set_slots[i] != SET_TOMB;
    size_t ncap = set_cap ? set_cap : 1024;
    while ((live + 1) * 4 > ncap)
        ncap *= 2;
    const void **old = set_slots;
    size_t ocap = set_cap;
    set_slots = calloc(ncap, sizeof *set_slots);
    set_cap = ncap;
    set_len = 0;
    for (size_t i = 0; i < ocap; i++)
        if (old[i] && old[i] != SET_TOMB)
            emu_add(old[i]);
    free(old);
}

bool emu_known(const void *p)
{
    if (!p || !set_cap)
        return false;
    for (size_t i = hash_ptr(p) & (set_cap - 1);; i = (i + 1) & (set_cap - 1)) {
        if (set_slots[i] == p)
            return true;
        if (!set_slots[i])
            return false;
    }
}

void emu_add(const void *p)
{
    if ((set_len + 1) * 2 > set_cap)
        set_grow();
    size_t i = hash_ptr(p) & (set_cap - 1);
    while (set_slots[i] && set_slots[i] != SET_TOMB)
        i = (i + 1) & (set_cap - 1);
    set_slots[i] = p;
    set_len++;
}

void emu_del(const void *p)
{
    if (!p || !set_cap)
        return;
    for (size_t i = hash_ptr(p) & (set_cap - 1);; i = (i + 1) & (set_cap - 1)) {
        if (set_slots[i] == p) {
            set_slots[i] = SET_TOMB; /* tombstones are dropped at the next grow */
            return;
        }
        if (!set_slots[i])
            return;
    }
}

/* ---------------------------------------------------------------- registry */

const struct emu_alloc *emu_find(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    size_t lo = 0, hi = G.nallocs;
    while (lo < hi) { /* first allocation with base > a */
        size_t mid = (lo + hi) / 2;
        if (G.allocs[mid].base <= a)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return NULL;
    const struct emu_alloc *al = &G.allocs[lo - 1];
    return a < al->base + al->size ? al : NULL;
}

/* ---------------------------------------------------------------- dtypes */

size_t emu_dtype_size(int dt)
{
    switch (dt) {
    case ACL_FLOAT:
    case ACL_INT32:
        return 4;
    case ACL_FLOAT16:
    case ACL_BF16:
        return 2;
    case ACL_INT8:
    case ACL_UINT8:
    case ACL_BOOL:
        return 1;
    case ACL_INT64:
        return 8;
    default:
        return 0;
    }
}

const char *emu_dtype_name(int dt)
{
    switch (dt) {
    case ACL_FLOAT: return "float32";
    case ACL_FLOAT16: return "float16";
    case ACL_BF16: return "bfloat16";
    case ACL_INT8: return "int8";
    case ACL_UINT8: return "uint8";
    case ACL_BOOL: return "bool";
    case ACL_INT32: return "int32";
    case ACL_INT64: return "int64";
    default: return "unsupported";
    }
}

bool emu_is_float(int dt) { return dt == ACL_FLOAT || dt == ACL_FLOAT16 || dt == ACL_BF16; }
bool emu_is_index(int dt) { return dt == ACL_INT32 || dt == ACL_INT64; }

float emu_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t emu_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it quiet */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
    return (uint16_t)(u >> 16);
}

float emu_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: value = man * 2^-24 */
            float f = (float)man * 5.9604644775390625e-8f;
            return sign ? -f : f;
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t emu_f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return sign | 0x7e00; /* NaN */
    if (a >= 0x477ff000u)    /* rounds to >= 65520: overflow to inf */
        return sign | 0x7c00;
    if (a < 0x38800000u) { /* below the smallest normal 2^-14: subnormal or zero */
        float af;
        memcpy(&af, &a, 4);
        /* subnormal step is 2^-24; nearbyintf rounds half to even in the default mode */
        float q = nearbyintf(af * 16777216.0f);
        return sign | (uint16_t)q;
    }
    /* normal: rebias exponent, round the 13 dropped mantissa bits to nearest even */
    uint32_t r = a - (112u << 23);
    r += 0xfffu + ((r >> 13) & 1u);
    return sign | (uint16_t)(r >> 13);
}

float emu_round(int dt, float v)
{
    switch (dt) {
    case ACL_BF16: return emu_bf16_to_f32(emu_f32_to_bf16(v));
    case ACL_FLOAT16: return emu_f16_to_f32(emu_f32_to_f16(v));
    default: return v;
    }
}

float emu_ldf(const struct emu_tensor *t, int64_t e)
{
    const unsigned char *p = (const unsigned char *)t->data;
    switch (t->dtype) {
    case ACL_FLOAT: { float f; memcpy(&f, p + e * 4, 4); return f; }
    case ACL_BF16: { uint16_t h; memcpy(&h, p + e * 2, 2); return emu_bf16_to_f32(h); }
    case ACL_FLOAT16: { uint16_t h; memcpy(&h, p + e * 2, 2); return emu_f16_to_f32(h); }
    default: return (float)emu_ldi(t, e);
    }
}

void emu_stf(const struct emu_tensor *t, int64_t e, float v)
{
    unsigned char *p = (unsigned char *)t->data;
    switch (t->dtype) {
    case ACL_FLOAT: memcpy(p + e * 4, &v, 4); break;
    case ACL_BF16: { uint16_t h = emu_f32_to_bf16(v); memcpy(p + e * 2, &h, 2); break; }
    case ACL_FLOAT16: { uint16_t h = emu_f32_to_f16(v); memcpy(p + e * 2, &h, 2); break; }
    default: emu_sti(t, e, (int64_t)v); break;
    }
}

int64_t emu_ldi(const struct emu_tensor *t, int64_t e)
{
    const unsigned char *p = (const unsigned char *)t->data;
    switch (t->dtype) {
    case ACL_INT32: { int32_t x; memcpy(&x, p + e * 4, 4); return x; }
    case ACL_INT64: { int64_t x; memcpy(&x, p + e * 8, 8); return x; }
    case ACL_INT8: return (int8_t)p[e];
    case ACL_UINT8:
    case ACL_BOOL: return p[e];
    default: return (int64_t)emu_ldf(t, e);
    }
}

void emu_sti(const struct emu_tensor *t, int64_t e, int64_t v)
{
    unsigned char *p = (unsigned char *)t->data;
    switch (t->dtype) {
    case ACL_INT32: { int32_t x = (int32_t)v; memcpy(p + e * 4, &x, 4); break; }
    case ACL_INT64: memcpy(p + e * 8, &v, 8); break;
    case ACL_INT8:
    case ACL_UINT8: p[e] = (unsigned char)v; break;
    case ACL_BOOL: p[e] = v != 0; break;
    default: emu_stf(t, e, (float)v); break;
    }
}
