/*
 * selftest.c - checks the emulated CANN against its contract (README.md).
 *
 * Loads the library the way the daemon does (dlopen of libascendcl.so,
 * libnnopbase.so, libopapi.so, libhccl.so from OUT/lib64) and runs scenarios,
 * each in a fresh process (the emulator reads its environment once):
 *   main    - one object/state, runtime, registry, provenance, tensors,
 *             executors, workspace, numerics of every op, FIA pitfalls, HCCL
 *             driven by one thread and by two threads, trace lines
 *   fault   - EMUACL_FAIL injection (launch, runtime call), consumed executor
 *   f32off  - f32 refused by the ops without an f32 kernel unless EMUACL_F32=1
 *   defer   - EMUACL_DEFER=1: work runs at synchronize, not at enqueue
 *   nocompute - EMUACL_COMPUTE=0: validated and traced, no math
 * Usage: selftest OUT   (exit 0 = every check passed)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef void *P;
typedef struct {
    char internal[4108];
} RootInfo;

/* ---- the symbols used, resolved with dlsym ---- */
#define SYMS(X)                                                                                                    \
    X(int, aclInit, (const char *))                                                                                \
    X(const char *, aclGetRecentErrMsg, (void))                                                                    \
    X(int, aclrtGetDeviceCount, (uint32_t *))                                                                      \
    X(int, aclrtSetDevice, (int32_t))                                                                              \
    X(int, aclrtGetDevice, (int32_t *))                                                                            \
    X(int, aclrtCreateContext, (P *, int32_t))                                                                     \
    X(int, aclrtSetCurrentContext, (P))                                                                            \
    X(int, aclrtCreateStream, (P *))                                                                               \
    X(int, aclrtSynchronizeStream, (P))                                                                            \
    X(int, aclrtMalloc, (void **, size_t, int))                                                                    \
    X(int, aclrtFree, (void *))                                                                                    \
    X(int, aclrtMallocHost, (void **, size_t))                                                                     \
    X(int, aclrtMemcpy, (void *, size_t, const void *, size_t, int))                                               \
    X(int, aclrtMemset, (void *, size_t, int32_t, size_t))                                                         \
    X(int, aclrtMemcpyAsync, (void *, size_t, const void *, size_t, int, P))                                      \
    X(int, aclrtGetMemInfo, (int, size_t *, size_t *))                                                             \
    X(int, aclrtCreateEvent, (P *))                                                                                \
    X(int, aclrtRecordEvent, (P, P))                                                                               \
    X(int, aclrtEventElapsedTime, (float *, P, P))                                                                 \
    X(const char *, aclrtGetSocName, (void))                                                                       \
    X(const char *, emuaclBuildInfo, (void))                                                                       \
    X(P, aclCreateTensor, (const int64_t *, uint64_t, int, const int64_t *, int64_t, int, const int64_t *, uint64_t, \
                           void *))                                                                                \
    X(int, aclDestroyTensor, (P))                                                                                  \
    X(P, aclCreateIntArray, (const int64_t *, uint64_t))                                                           \
    X(P, aclCreateScalar, (void *, int))                                                                           \
    X(P, aclCreateTensorList, (const P *, uint64_t))                                                               \
    X(int, aclSetAclOpExecutorRepeatable, (P))                                                                     \
    X(int, aclDestroyAclOpExecutor, (P))                                                                           \
    X(int, aclSetInputTensorAddr, (P, size_t, P, void *))                                                         \
    X(int, aclSetOutputTensorAddr, (P, size_t, P, void *))                                                        \
    X(int, aclDestroyTensorList, (P))                                                          \
    X(int, aclnnMatmulGetWorkspaceSize, (P, P, P, int8_t, uint64_t *, P *))                                        \
    X(int, aclnnMatmul, (void *, uint64_t, P, P))                                                                  \
    X(int, aclnnAddmmGetWorkspaceSize, (P, P, P, P, P, P, int8_t, uint64_t *, P *))                                \
    X(int, aclnnAddmm, (void *, uint64_t, P, P))                                                                   \
    X(int, aclnnEmbeddingGetWorkspaceSize, (P, P, P, uint64_t *, P *))                                             \
    X(int, aclnnEmbedding, (void *, uint64_t, P, P))                                                               \
    X(int, aclnnRmsNormGetWorkspaceSize, (P, P, double, P, P, uint64_t *, P *))                                    \
    X(int, aclnnRmsNorm, (void *, uint64_t, P, P))                                                                 \
    X(int, aclnnAddRmsNormGetWorkspaceSize, (P, P, P, double, P, P, P, uint64_t *, P *))                           \
    X(int, aclnnAddRmsNorm, (void *, uint64_t, P, P))                                                              \
    X(int, aclnnRopeWithSinCosCacheGetWorkspaceSize, (P, P, P, P, P, int64_t, bool, P, P, uint64_t *, P *))        \
    X(int, aclnnRopeWithSinCosCache, (void *, uint64_t, P, P))                                                     \
    X(int, aclnnApplyRotaryPosEmbV2GetWorkspaceSize, (P, P, P, P, int64_t, char *, uint64_t *, P *))               \
    X(int, aclnnApplyRotaryPosEmbV2, (void *, uint64_t, P, P))                                                     \
    X(int, aclnnScatterPaKvCacheGetWorkspaceSize, (P, P, P, P, P, P, P, P, char *, char *, P, P, uint64_t *, P *)) \
    X(int, aclnnScatterPaKvCache, (void *, uint64_t, P, P))                                                        \
    X(int, aclnnInplaceIndexCopyGetWorkspaceSize, (P, int64_t, P, P, uint64_t *, P *))                             \
    X(int, aclnnInplaceIndexCopy, (void *, uint64_t, P, P))                                                        \
    X(int, aclnnFusedInferAttentionScoreV3GetWorkspaceSize,                                                        \
      (P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, int64_t, double, int64_t,  \
       int64_t, char *, int64_t, int64_t, int64_t, int64_t, int64_t, bool, int64_t, int64_t, P, P, uint64_t *,   \
       P *))                                                                                                       \
    X(int, aclnnFusedInferAttentionScoreV3, (void *, uint64_t, P, P))                                              \
    X(int, aclnnSwiGluGetWorkspaceSize, (P, int64_t, P, uint64_t *, P *))                                          \
    X(int, aclnnSwiGlu, (void *, uint64_t, P, P))                                                                  \
    X(int, aclnnSiluGetWorkspaceSize, (P, P, uint64_t *, P *))                                                     \
    X(int, aclnnSilu, (void *, uint64_t, P, P))                                                                    \
    X(int, aclnnMulGetWorkspaceSize, (P, P, P, uint64_t *, P *))                                                   \
    X(int, aclnnMul, (void *, uint64_t, P, P))                                                                     \
    X(int, aclnnAddGetWorkspaceSize, (P, P, P, P, uint64_t *, P *))                                                \
    X(int, aclnnAdd, (void *, uint64_t, P, P))                                                                     \
    X(int, aclnnInplaceAddGetWorkspaceSize, (P, P, P, uint64_t *, P *))                                            \
    X(int, aclnnInplaceAdd, (void *, uint64_t, P, P))                                                              \
    X(int, aclnnCastGetWorkspaceSize, (P, int, P, uint64_t *, P *))                                                \
    X(int, aclnnCast, (void *, uint64_t, P, P))                                                                    \
    X(int, aclnnArgMaxGetWorkspaceSize, (P, int64_t, bool, P, uint64_t *, P *))                                    \
    X(int, aclnnArgMax, (void *, uint64_t, P, P))                                                                  \
    X(int, aclnnIndexSelectGetWorkspaceSize, (P, int64_t, P, P, uint64_t *, P *))                                  \
    X(int, aclnnIndexSelect, (void *, uint64_t, P, P))                                                             \
    X(int, HcclGetRootInfo, (RootInfo *))                                                                          \
    X(int, HcclCommInitRootInfo, (uint32_t, const RootInfo *, uint32_t, P *))                                      \
    X(int, HcclCommInitAll, (uint32_t, int32_t *, P *))                                                            \
    X(int, HcclCommInitClusterInfo, (const char *, uint32_t, P *))                                                 \
    X(int, aclrtStreamWaitEvent, (P, P))                                                            \
    X(int, HcclAllReduce, (void *, void *, uint64_t, int, int, P, P))                                              \
    X(int, HcclAllGather, (void *, void *, uint64_t, int, P, P))                                                   \
    X(int, HcclBroadcast, (void *, uint64_t, int, uint32_t, P, P))                                                 \
    X(int, HcclGetRankSize, (P, uint32_t *))                                                                       \
    X(int, HcclCommDestroy, (P))

#define DECL(ret, name, args) static ret(*name) args;
SYMS(DECL)

enum { F32 = 0, F16 = 1, I8 = 2, I32 = 3, I64 = 9, BF16 = 27, ND = 2 };
enum { H2D = 1, D2H = 2, D2D = 3 };

static int failures, checks;
static const char *scenario = "?";

#define CHECK(cond, ...)                                                                                           \
    do {                                                                                                           \
        checks++;                                                                                                  \
        if (!(cond)) {                                                                                             \
            failures++;                                                                                            \
            printf("FAIL [%s] %s:%d: ", scenario, __FILE__, __LINE__);                                             \
            printf(__VA_ARGS__);                                                                                   \
            printf("\n");                                                                                          \
        }                                                                                                          \
    } while (0)

/* rc must be `want` and the recent error message must contain `needle` */
#define EXPECT_ERR(expr, want, needle)                                                                             \
    do {                                                                                                           \
        int rc_ = (expr);                                                                                          \
        const char *m_ = aclGetRecentErrMsg();                                                                     \
        CHECK(rc_ == (want) && m_ && strstr(m_, needle), "%s: rc %d (want %d), message \"%s\" (want \"%s\")", #expr, \
              rc_, (want), m_ ? m_ : "(null)", needle);                                                           \
    } while (0)
#define OK(expr)                                                                                                   \
    do {                                                                                                           \
        int rc_ = (expr);                                                                                          \
        CHECK(rc_ == 0, "%s: rc %d: %s", #expr, rc_, aclGetRecentErrMsg());                                        \
    } while (0)

/* ---- reference conversions (independent of the emulator's) ---- */
static float bf16r(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t lsb = (u >> 16) & 1;
    u = (u + 0x7fff + lsb) & 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}
static uint16_t to_bf16(float f)
{
    f = bf16r(f);
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}
static float from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- helpers ---- */
static void *h_acl;

static void load(const char *out)
{
    const char *names[] = {"libascendcl.so", "libnnopbase.so", "libopapi.so", "libhccl.so"};
    void *h[4];
    for (int i = 0; i < 4; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/lib64/%s", out, names[i]);
        h[i] = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
        if (!h[i]) {
            printf("FAIL dlopen %s: %s\n", path, dlerror());
            exit(1);
        }
    }
    h_acl = h[0];
#define LOAD(ret, name, args)                                                                                      \
    name = (ret(*) args)dlsym(h_acl, #name);                                                                       \
    if (!name) {                                                                                                   \
        printf("FAIL missing symbol %s\n", #name);                                                                 \
        exit(1);                                                                                                   \
    }
    SYMS(LOAD)
    /* the four names are one loaded object: same handle, same symbol addresses */
    for (int i = 1; i < 4; i++) {
        CHECK(h[i] == h[0], "%s is a separate object from libascendcl.so", names[i]);
        CHECK(dlsym(h[i], "aclInit") == (void *)aclInit, "%s: aclInit differs", names[i]);
    }
}

/* contiguous ND tensor over data */
static P mk(int dtype, void *data, const int64_t *dims, int nd)
{
    int64_t strides[8], n = 1;
    for (int i = nd - 1; i >= 0; i--) {
        strides[i] = n;
        n *= dims[i];
    }
    return aclCreateTensor(dims, (uint64_t)nd, dtype, strides, 0, ND, &n, 1, data);
}
#define TEN(dt, data, ...) mk(dt, data, (const int64_t[]){__VA_ARGS__}, (int)(sizeof((int64_t[]){__VA_ARGS__}) / 8))
static void *dmalloc(size_t n)
{
    void *p = NULL;
    OK(aclrtMalloc(&p, n, 0));
    return p;
}
static void up(void *dst, const void *src, size_t n) { OK(aclrtMemcpy(dst, n, src, n, H2D)); }
static void down(void *dst, const void *src, size_t n) { OK(aclrtMemcpy(dst, n, src, n, D2H)); }

static P g_stream;
static void *g_ws;
#define WS_BYTES (8u << 20)

/* GetWorkspaceSize already ran: launch it on g_stream with g_ws and sync */
static int launch(int gws_rc, uint64_t ws, P ex, int (*fn)(void *, uint64_t, P, P))
{
    if (gws_rc)
        return gws_rc;
    CHECK(ws > 0 && ws <= WS_BYTES, "workspace size %llu", (unsigned long long)ws);
    int rc = fn(g_ws, ws, ex, g_stream);
    if (rc)
        return rc;
    return aclrtSynchronizeStream(g_stream);
}
#define RUN(name, ...)                                                                                             \
    ({                                                                                                             \
        uint64_t ws_ = 0;                                                                                          \
        P ex_ = NULL;                                                                                              \
        int r_ = name##GetWorkspaceSize(__VA_ARGS__, &ws_, &ex_);                                                  \
        launch(r_, ws_, ex_, name);                                                                                \
    })

static float frand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static bool near(float a, float b, float tol) { return fabsf(a - b) <= tol * (1.0f + fabsf(b)); }

/* ================================================================ main scenario */

static void t_runtime(void)
{
    uint32_t n = 0;
    EXPECT_ERR(aclrtGetDeviceCount(&n), 100001, "aclInit");
    OK(aclInit(NULL));
    /* the state is shared by all four names: libhccl's aclInit sees the init */
    int (*init2)(const char *) = (int (*)(const char *))dlsym(dlopen("libhccl.so", RTLD_NOW | RTLD_NOLOAD), "aclInit");
    CHECK(init2 != NULL, "libhccl.so not found by soname (RTLD_NOLOAD)");
    if (init2)
        EXPECT_ERR(init2(NULL), 100002, "already");
    OK(aclrtGetDeviceCount(&n));
    CHECK(n == 4, "device count %u (EMUACL_DEVICES=4)", n);
    CHECK(strcmp(aclrtGetSocName(), "Ascend910B4") == 0, "soc %s", aclrtGetSocName());
    CHECK(strstr(emuaclBuildInfo(), "emuacl") != NULL, "build info");
    P s;
    EXPECT_ERR(aclrtCreateStream(&s), 107002, "no current device");
    EXPECT_ERR(aclrtSetDevice(4), 200002, "out of range");
    OK(aclrtSetDevice(0));
    int32_t d = -1;
    OK(aclrtGetDevice(&d));
    CHECK(d == 0, "current device %d", d);
    P ctx;
    OK(aclrtCreateContext(&ctx, 2));
    OK(aclrtSetCurrentContext(ctx));
    OK(aclrtGetDevice(&d));
    CHECK(d == 2, "context switch: device %d", d);
    OK(aclrtSetDevice(0));
    OK(aclrtCreateStream(&g_stream));
    g_ws = dmalloc(WS_BYTES);

    /* memory accounting */
    size_t fr0, tot, fr1, fr2;
    OK(aclrtGetMemInfo(1, &fr0, &tot));
    CHECK(tot == (1u << 30), "total %zu", tot);
    void *p = dmalloc(1 << 20);
    OK(aclrtGetMemInfo(1, &fr1, &tot));
    CHECK(fr0 - fr1 >= (1u << 20) && fr0 - fr1 <= (1u << 20) + 64, "free went %zu -> %zu", fr0, fr1);
    void *big = NULL;
    EXPECT_ERR(aclrtMalloc(&big, 600u << 20, 0), 207001, "out of device memory");
    EXPECT_ERR(aclrtFree((char *)p + 64), 100000, "not the base");
    OK(aclrtFree(p));
    OK(aclrtGetMemInfo(1, &fr2, &tot));
    CHECK(fr2 == fr0, "free after aclrtFree %zu != %zu", fr2, fr0);

    /* memcpy provenance and bounds */
    char host[256] = {0};
    void *dv = dmalloc(128);
    void *pin = NULL;
    OK(aclrtMallocHost(&pin, 256));
    EXPECT_ERR(aclrtMemcpy(host, 64, host + 64, 64, H2D), 100000, "not device memory");
    EXPECT_ERR(aclrtMemcpy(host, 256, dv, 256, D2H), 100000, "past the end");
    EXPECT_ERR(aclrtMemcpy(dv, 16, host, 64, H2D), 100000, "destMax");
    EXPECT_ERR(aclrtMemcpy(dv, 64, dv, 64, H2D), 100000, "is device memory");
    OK(aclrtMemcpy(dv, 64, pin, 64, H2D)); /* pinned host is host */
    void *dv2 = dmalloc(256);
    EXPECT_ERR(aclrtMemcpyAsync((char *)dv2 + 32, 64, dv, 64, D2D, g_stream), 100000, "64-byte");
    OK(aclrtMemcpyAsync(dv2, 64, dv, 64, D2D, g_stream));
    OK(aclrtSynchronizeStream(g_stream));

    /* events */
    P e1, e2;
    OK(aclrtCreateEvent(&e1));
    OK(aclrtCreateEvent(&e2));
    OK(aclrtRecordEvent(e1, g_stream));
    OK(aclrtRecordEvent(e2, g_stream));
    OK(aclrtSynchronizeStream(g_stream));
    float ms = -1;
    OK(aclrtEventElapsedTime(&ms, e1, e2));
    CHECK(ms >= 0, "elapsed %f", ms);

    /* tensor provenance, alignment, extents (checked by GetWorkspaceSize) */
    float hbuf[64] = {0};
    uint64_t ws;
    P ex;
    P a = TEN(F32, dv2, 4, 4), b = TEN(F32, dv2, 4, 4), o = TEN(F32, dv2, 4, 4);
    P ah = TEN(F32, hbuf, 4, 4);
    EXPECT_ERR(aclnnMatmulGetWorkspaceSize(ah, b, o, 1, &ws, &ex), 161002, "self data");
    P ap = TEN(F32, pin, 4, 4);
    EXPECT_ERR(aclnnMatmulGetWorkspaceSize(ap, b, o, 1, &ws, &ex), 161002, "not device memory");
    P au = TEN(F32, (char *)dv2 + 16, 4, 4);
    EXPECT_ERR(aclnnMatmulGetWorkspaceSize(au, b, o, 1, &ws, &ex), 161002, "32-byte");
    P abig = TEN(F32, dv2, 16, 16); /* 1 KiB of storage in a 256-byte allocation */
    EXPECT_ERR(aclnnMatmulGetWorkspaceSize(abig, abig, abig, 1, &ws, &ex), 161002, "runs past the end");
    int64_t vd[2] = {4, 4}, vs[2] = {4, 1}, sd = 8;
    P aview = aclCreateTensor(vd, 2, F32, vs, 0, ND, &sd, 1, dv2); /* view reaches element 15 of 8 */
    EXPECT_ERR(aclnnMatmulGetWorkspaceSize(aview, b, o, 1, &ws, &ex), 161002, "view reaches element 15");
    P bad_shape = TEN(F32, dv2, 3, 4);
    EXPECT_ERR(aclnnMatmulGetWorkspaceSize(a, bad_shape, o, 1, &ws, &ex), 161002, "mat2 dim 0");
    CHECK(aclCreateTensor(vd, 9, F32, vs, 0, ND, &sd, 1, dv2) == NULL, "9-D tensor accepted");
    (void)a;
}

/* Matmul with a transposed strided weight view, f32 and bf16, plus executor rules */
static void t_matmul(void)
{
    enum { M = 3, K = 40, N = 5 };
    unsigned seed = 1;
    float A[M * K], W[N * K], ref[M * N], got[M * N];
    for (int i = 0; i < M * K; i++)
        A[i] = frand(&seed);
    for (int i = 0; i < N * K; i++)
        W[i] = frand(&seed);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            float acc = 0;
            for (int k = 0; k < K; k++)
                acc += A[m * K + k] * W[n * K + k];
            ref[m * N + n] = acc;
        }
    void *da = dmalloc(sizeof A), *dw = dmalloc(sizeof W), *dout = dmalloc(sizeof ref);
    up(da, A, sizeof A);
    up(dw, W, sizeof W);
    int64_t vd[2] = {K, N}, st[2] = {1, K}, sn = N * K;
    P ta = TEN(F32, da, M, K), tw = aclCreateTensor(vd, 2, F32, st, 0, ND, &sn, 1, dw), to = TEN(F32, dout, M, N);
    OK(RUN(aclnnMatmul, ta, tw, to, 1));
    down(got, dout, sizeof got);
    bool ok = true;
    for (int i = 0; i < M * N; i++)
        ok &= near(got[i], ref[i], 1e-5f);
    CHECK(ok, "f32 matmul differs from reference (got[0]=%f ref[0]=%f)", got[0], ref[0]);

    /* bf16: inputs rounded, f32 accumulation, one rounding on store */
    uint16_t Ab[M * K], Wb[N * K], ob[M * N];
    for (int i = 0; i < M * K; i++)
        Ab[i] = to_bf16(A[i]);
    for (int i = 0; i < N * K; i++)
        Wb[i] = to_bf16(W[i]);
    void *dab = dmalloc(sizeof Ab), *dwb = dmalloc(sizeof Wb), *dob = dmalloc(sizeof ob);
    up(dab, Ab, sizeof Ab);
    up(dwb, Wb, sizeof Wb);
    P tab = TEN(BF16, dab, M, K), twb = aclCreateTensor(vd, 2, BF16, st, 0, ND, &sn, 1, dwb), tob = TEN(BF16, dob, M, N);
    OK(RUN(aclnnMatmul, tab, twb, tob, 1));
    down(ob, dob, sizeof ob);
    ok = true;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            float acc = 0;
            for (int k = 0; k < K; k++)
                acc += from_bf16(Ab[m * K + k]) * from_bf16(Wb[n * K + k]);
            ok &= ob[m * N + n] == to_bf16(acc);
        }
    CHECK(ok, "bf16 matmul is not f32-accumulate + round-to-nearest-even on store");
    EXPECT_ERR(RUN(aclnnMatmul, ta, twb, to, 1), 161002, "mixed dtypes");

    /* Addmm: bias [1,N], beta 1, alpha 2 */
    float bias[N] = {1, 2, 3, 4, 5};
    void *db = dmalloc(sizeof bias);
    up(db, bias, sizeof bias);
    double one = 1.0;
    float two = 2.0f;
    P tb = TEN(F32, db, 1, N), beta = aclCreateScalar(&one, 11), alpha = aclCreateScalar(&two, F32);
    OK(RUN(aclnnAddmm, tb, ta, tw, beta, alpha, to, 1));
    down(got, dout, sizeof got);
    ok = true;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++)
            ok &= near(got[m * N + n], bias[n] + 2 * ref[m * N + n], 1e-5f);
    CHECK(ok, "addmm differs");

    /* executors: single-use, repeatable, re-addressed, workspace and stream checks */
    uint64_t ws;
    P ex;
    OK(aclnnMatmulGetWorkspaceSize(ta, tw, to, 1, &ws, &ex));
    CHECK(ws == ((512 + 4 * M * N + 31) & ~31ull), "workspace %llu", (unsigned long long)ws);
    EXPECT_ERR(aclnnMatmul(g_ws, ws - 1, ex, g_stream), 161002, "workspaceSize");
    char hostws[4096];
    EXPECT_ERR(aclnnMatmul(hostws, ws, ex, g_stream), 161002, "workspace");
    EXPECT_ERR(aclnnEmbedding(g_ws, ws, ex, g_stream), 161002, "made by aclnnMatmul");
    OK(aclnnMatmul(g_ws, ws, ex, g_stream));
    EXPECT_ERR(aclnnMatmul(g_ws, ws, ex, g_stream), 161002, "consumed");
    EXPECT_ERR(aclnnMatmul(g_ws, ws, (P)hostws, g_stream), 161002, "unknown");
    OK(aclnnMatmulGetWorkspaceSize(ta, tw, to, 1, &ws, &ex));
    OK(aclSetAclOpExecutorRepeatable(ex));
    OK(aclDestroyTensor(ta)); /* descriptors may go right after GetWorkspaceSize */
    OK(aclnnMatmul(g_ws, ws, ex, g_stream));
    float A2[M * K];
    for (int i = 0; i < M * K; i++)
        A2[i] = 2 * A[i];
    void *da2 = dmalloc(sizeof A2);
    up(da2, A2, sizeof A2);
    EXPECT_ERR(aclSetInputTensorAddr(ex, 0, NULL, (char *)da2 + 8), 161002, "32-byte");
    OK(aclSetInputTensorAddr(ex, 0, NULL, da2));
    OK(aclnnMatmul(g_ws, ws, ex, g_stream));
    OK(aclrtSynchronizeStream(g_stream));
    down(got, dout, sizeof got);
    CHECK(near(got[0], 2 * ref[0], 1e-5f), "repeatable executor with new input address: %f vs %f", got[0], 2 * ref[0]);
    void *dout2 = dmalloc(sizeof ref);
    EXPECT_ERR(aclSetOutputTensorAddr(ex, 1, NULL, dout2), 161002, "out of range");
    OK(aclSetOutputTensorAddr(ex, 0, NULL, dout2));
    OK(aclnnMatmul(g_ws, ws, ex, g_stream));
    OK(aclrtSynchronizeStream(g_stream));
    down(got, dout2, sizeof got);
    CHECK(near(got[M * N - 1], 2 * ref[M * N - 1], 1e-5f), "repeatable executor with new output address");
    /* a stream of another device */
    P s1;
    OK(aclrtSetDevice(1));
    OK(aclrtCreateStream(&s1));
    void *ws1 = dmalloc(4096);
    EXPECT_ERR(aclnnMatmul(ws1, ws, ex, s1), 161002, "device 0 but the stream is on device 1");
    OK(aclrtSetDevice(0));
    EXPECT_ERR(aclnnMatmul(g_ws, ws, ex, s1), 107003, "current context is device 0");
    OK(aclDestroyAclOpExecutor(ex));
    EXPECT_ERR(aclDestroyAclOpExecutor(ex), 161002, "unknown");
}

static void t_embed_norm(void)
{
    enum { V = 6, H = 8, T = 3 };
    float w[V * H], out[T * H];
    for (int i = 0; i < V * H; i++)
        w[i] = (float)i * 0.25f;
    int32_t idx[T] = {5, 0, 3}, bad[T] = {1, 6, 0};
    void *dw = dmalloc(sizeof w), *di = dmalloc(sizeof idx), *dbad = dmalloc(sizeof bad), *dout = dmalloc(sizeof out);
    up(dw, w, sizeof w);
    up(di, idx, sizeof idx);
    up(dbad, bad, sizeof bad);
    P tw = TEN(F32, dw, V, H), ti = TEN(I32, di, T), tbad = TEN(I32, dbad, T), to = TEN(F32, dout, T, H);
    OK(RUN(aclnnEmbedding, tw, ti, to));
    down(out, dout, sizeof out);
    CHECK(out[0] == w[5 * H] && out[H + 1] == w[1] && out[2 * H + 7] == w[3 * H + 7], "embedding rows");
    EXPECT_ERR(RUN(aclnnEmbedding, tw, tbad, to), 161002, "out of range");
    memset(out, 0, sizeof out);
    up(dout, out, sizeof out);
    OK(RUN(aclnnIndexSelect, tw, 0, ti, to));
    down(out, dout, sizeof out);
    CHECK(out[0] == w[5 * H] && out[2 * H + 7] == w[3 * H + 7], "index select rows");
    EXPECT_ERR(RUN(aclnnIndexSelect, tw, 1, ti, to), 161002, "dim 0");

    /* RmsNorm f32 */
    float x[T * H], g[H], y[T * H], rstd[T];
    unsigned seed = 7;
    for (int i = 0; i < T * H; i++)
        x[i] = frand(&seed) * 3;
    for (int i = 0; i < H; i++)
        g[i] = 1 + frand(&seed);
    void *dx = dmalloc(sizeof x), *dg = dmalloc(sizeof g), *dy = dmalloc(sizeof y), *dr = dmalloc(sizeof rstd);
    up(dx, x, sizeof x);
    up(dg, g, sizeof g);
    P tx = TEN(F32, dx, T, H), tg = TEN(F32, dg, H), ty = TEN(F32, dy, T, H), tr = TEN(F32, dr, T, 1);
    OK(RUN(aclnnRmsNorm, tx, tg, 1e-6, ty, tr));
    down(y, dy, sizeof y);
    down(rstd, dr, sizeof rstd);
    bool ok = true;
    for (int t = 0; t < T; t++) {
        float ss = 0;
        for (int j = 0; j < H; j++)
            ss += x[t * H + j] * x[t * H + j];
        float r = 1.0f / sqrtf(ss / H + 1e-6f);
        ok &= near(rstd[t], r, 1e-6f);
        for (int j = 0; j < H; j++)
            ok &= near(y[t * H + j], x[t * H + j] * r * g[j], 1e-5f);
    }
    CHECK(ok, "rmsnorm differs");
    P tr_bad = TEN(BF16, dr, T, 1);
    EXPECT_ERR(RUN(aclnnRmsNorm, tx, tg, 1e-6, ty, tr_bad), 161002, "rstdOut must be float32");

    /* AddRmsNorm bf16 in place: xOut == x1, y from the rounded sum */
    uint16_t x1[T * H], x2[T * H], gb[H], yb[T * H], xo[T * H];
    for (int i = 0; i < T * H; i++) {
        x1[i] = to_bf16(frand(&seed));
        x2[i] = to_bf16(frand(&seed));
    }
    for (int i = 0; i < H; i++)
        gb[i] = to_bf16(g[i]);
    void *d1 = dmalloc(sizeof x1), *d2 = dmalloc(sizeof x2), *dgb = dmalloc(sizeof gb), *dyb = dmalloc(sizeof yb);
    up(d1, x1, sizeof x1);
    up(d2, x2, sizeof x2);
    up(dgb, gb, sizeof gb);
    P t1 = TEN(BF16, d1, T, H), t2 = TEN(BF16, d2, T, H), tgb = TEN(BF16, dgb, H), tyb = TEN(BF16, dyb, T, H);
    OK(RUN(aclnnAddRmsNorm, t1, t2, tgb, 1e-6, tyb, tr, t1));
    down(xo, d1, sizeof xo);
    down(yb, dyb, sizeof yb);
    ok = true;
    for (int t = 0; t < T; t++) {
        float s[H], ss = 0;
        for (int j = 0; j < H; j++) {
            s[j] = bf16r(from_bf16(x1[t * H + j]) + from_bf16(x2[t * H + j]));
            ss += s[j] * s[j];
            ok &= xo[t * H + j] == to_bf16(s[j]);
        }
        float r = 1.0f / sqrtf(ss / H + 1e-6f);
        for (int j = 0; j < H; j++)
            ok &= yb[t * H + j] == to_bf16(s[j] * r * from_bf16(gb[j]));
    }
    CHECK(ok, "add_rms_norm in place (bf16) differs");
}

static void t_elementwise(void)
{
    enum { T = 2, I = 4 };
    float x[T * 2 * I] = {1, -2, 0.5f, 3, 2, 2, -1, 0.25f, -3, 4, 0, 1, 1, -1, 2, 3};
    float y[T * I], ref[T * I];
    void *dx = dmalloc(sizeof x), *dy = dmalloc(sizeof y);
    up(dx, x, sizeof x);
    P tx = TEN(F32, dx, T, 2 * I), ty = TEN(F32, dy, T, I);
    OK(RUN(aclnnSwiGlu, tx, -1, ty));
    down(y, dy, sizeof y);
    bool ok = true;
    for (int t = 0; t < T; t++)
        for (int j = 0; j < I; j++) {
            float gg = x[t * 2 * I + j];
            ref[t * I + j] = gg / (1 + expf(-gg)) * x[t * 2 * I + I + j];
            ok &= near(y[t * I + j], ref[t * I + j], 1e-6f);
        }
    CHECK(ok, "swiglu differs");
    /* Mul with a trailing [N] broadcast, Add with alpha, InplaceAdd, Silu */
    float m[I] = {1, 2, 3, 4}, out[T * I];
    void *dm = dmalloc(sizeof m), *dout = dmalloc(sizeof out);
    up(dm, m, sizeof m);
    P tm = TEN(F32, dm, I), to = TEN(F32, dout, T, I);
    OK(RUN(aclnnMul, ty, tm, to));
    down(out, dout, sizeof out);
    CHECK(near(out[I + 3], ref[I + 3] * 4, 1e-6f), "mul broadcast");
    float half = 0.5f;
    P alpha = aclCreateScalar(&half, F32);
    OK(RUN(aclnnAdd, ty, to, alpha, to));
    down(out, dout, sizeof out);
    CHECK(near(out[1], ref[1] + 0.5f * ref[1] * 2, 1e-6f), "add alpha");
    OK(RUN(aclnnInplaceAdd, to, tm, alpha));
    float out2[T * I];
    down(out2, dout, sizeof out2);
    CHECK(near(out2[1], out[1] + 1.0f, 1e-6f), "inplace add");
    OK(RUN(aclnnSilu, to, to));
    /* Cast bf16 -> f32 and int32 -> int64 */
    uint16_t hb[2] = {to_bf16(1.5f), to_bf16(-2.25f)};
    void *dh = dmalloc(sizeof hb), *df = dmalloc(8);
    up(dh, hb, sizeof hb);
    P th = TEN(BF16, dh, 2), tf = TEN(F32, df, 2);
    OK(RUN(aclnnCast, th, F32, tf));
    float fv[2];
    down(fv, df, sizeof fv);
    CHECK(fv[0] == 1.5f && fv[1] == -2.25f, "cast bf16->f32");
    P ti = TEN(I32, df, 2);
    EXPECT_ERR(RUN(aclnnCast, th, I32, ti), 161002, "not supported");
    /* f32 -> fp16: round to nearest even, overflow to inf, subnormals */
    float fin[6] = {1.0f / 3.0f, 65520.0f, 65504.0f, 1e-7f, -2.0009765625f, 2.0029296875f};
    uint16_t want[6] = {0x3555, 0x7c00, 0x7bff, 0x0002, 0xc000, 0x4002}, got16[6];
    void *dfi = dmalloc(sizeof fin), *dfo = dmalloc(sizeof got16);
    up(dfi, fin, sizeof fin);
    P tfi = TEN(F32, dfi, 6), tfo = TEN(F16, dfo, 6);
    OK(RUN(aclnnCast, tfi, F16, tfo));
    down(got16, dfo, sizeof got16);
    bool ok16 = true;
    for (int i = 0; i < 6; i++)
        ok16 &= got16[i] == want[i];
    CHECK(ok16, "fp16 rounding: %04x %04x %04x %04x %04x %04x", got16[0], got16[1], got16[2], got16[3], got16[4],
          got16[5]);
    /* ArgMax: first max on ties, int64 out */
    float logits[2 * 5] = {0, 3, 1, 3, 2, -1, -5, -0.5f, -0.5f, -2};
    int64_t am[2];
    void *dl = dmalloc(sizeof logits), *dam = dmalloc(sizeof am);
    up(dl, logits, sizeof logits);
    P tl = TEN(F32, dl, 2, 5), tam = TEN(I64, dam, 2);
    OK(RUN(aclnnArgMax, tl, -1, false, tam));
    down(am, dam, sizeof am);
    CHECK(am[0] == 1 && am[1] == 2, "argmax %lld %lld", (long long)am[0], (long long)am[1]);
}

/* RoPE: RopeWithSinCosCache neox and GPT-J, in place, against a reference;
 * ApplyRotaryPosEmbV2 must agree with it. */
static void t_rope(void)
{
    enum { T = 3, NQ = 2, NK = 1, D = 8, MAXP = 16 };
    float q[T * NQ * D], k[T * NK * D], cache[MAXP * D], qo[T * NQ * D], ko[T * NK * D];
    unsigned seed = 3;
    for (int i = 0; i < T * NQ * D; i++)
        q[i] = frand(&seed);
    for (int i = 0; i < T * NK * D; i++)
        k[i] = frand(&seed);
    for (int p = 0; p < MAXP; p++)
        for (int i = 0; i < D / 2; i++) {
            float th = (float)p * powf(10000.0f, -2.0f * i / D);
            cache[p * D + i] = cosf(th);
            cache[p * D + D / 2 + i] = sinf(th);
        }
    int64_t pos[T] = {0, 5, 15}, badpos[T] = {0, 16, 1};
    void *dq = dmalloc(sizeof q), *dk = dmalloc(sizeof k), *dc = dmalloc(sizeof cache), *dp = dmalloc(sizeof pos);
    void *dbp = dmalloc(sizeof pos);
    up(dc, cache, sizeof cache);
    up(dp, pos, sizeof pos);
    up(dbp, badpos, sizeof badpos);
    P tq = TEN(F32, dq, T, NQ * D), tk = TEN(F32, dk, T, NK * D), tc = TEN(F32, dc, MAXP, D), tp = TEN(I64, dp, T);
    for (int neox = 1; neox >= 0; neox--) {
        up(dq, q, sizeof q);
        up(dk, k, sizeof k);
        OK(RUN(aclnnRopeWithSinCosCache, tp, tq, tk, tc, NULL, D, (bool)neox, tq, tk));
        down(qo, dq, sizeof qo);
        down(ko, dk, sizeof ko);
        bool ok = true;
        for (int t = 0; t < T; t++)
            for (int w = 0; w < 2; w++) {
                int heads = w ? NK : NQ;
                float *in = w ? k : q, *got = w ? ko : qo;
                for (int h = 0; h < heads; h++)
                    for (int i = 0; i < D / 2; i++) {
                        int a = neox ? i : 2 * i, b = neox ? i + D / 2 : 2 * i + 1;
                        float c = cache[pos[t] * D + i], s = cache[pos[t] * D + D / 2 + i];
                        float *x = in + (t * heads + h) * D, *y = got + (t * heads + h) * D;
                        ok &= near(y[a], x[a] * c - x[b] * s, 1e-6f) && near(y[b], x[b] * c + x[a] * s, 1e-6f);
                    }
            }
        CHECK(ok, "rope (neox=%d) differs from reference", neox);
    }
    P tbp = TEN(I64, dbp, T);
    EXPECT_ERR(RUN(aclnnRopeWithSinCosCache, tbp, tq, tk, tc, NULL, D, true, tq, tk), 161002, "outside the cos/sin cache");
    /* V2 with full-width cos/sin [T,1,D] */
    float cf[T * D], sf[T * D], q2[T * NQ * D];
    for (int t = 0; t < T; t++)
        for (int i = 0; i < D / 2; i++) {
            cf[t * D + i] = cf[t * D + D / 2 + i] = cache[pos[t] * D + i];
            sf[t * D + i] = sf[t * D + D / 2 + i] = cache[pos[t] * D + D / 2 + i];
        }
    void *dcf = dmalloc(sizeof cf), *dsf = dmalloc(sizeof sf);
    up(dcf, cf, sizeof cf);
    up(dsf, sf, sizeof sf);
    up(dq, q, sizeof q);
    up(dk, k, sizeof k);
    P tq3 = TEN(F32, dq, T, NQ, D), tk3 = TEN(F32, dk, T, NK, D), tcf = TEN(F32, dcf, T, 1, D), tsf = TEN(F32, dsf, T, 1, D);
    OK(RUN(aclnnApplyRotaryPosEmbV2, tq3, tk3, tcf, tsf, 4, "half"));
    down(q2, dq, sizeof q2);
    up(dq, q, sizeof q);
    up(dk, k, sizeof k);
    OK(RUN(aclnnRopeWithSinCosCache, tp, tq, tk, tc, NULL, D, true, tq, tk));
    down(qo, dq, sizeof qo);
    CHECK(memcmp(q2, qo, sizeof qo) == 0, "ApplyRotaryPosEmbV2 and RopeWithSinCosCache disagree");
    EXPECT_ERR(RUN(aclnnApplyRotaryPosEmbV2, tq3, tk3, tcf, tsf, 4, "interleave"), 161002, "half");
    /* BSND (layout 1) of the same data, B=1, S=T: same result */
    up(dq, q, sizeof q);
    up(dk, k, sizeof k);
    P tq4 = TEN(F32, dq, 1, T, NQ, D), tk4 = TEN(F32, dk, 1, T, NK, D), tc4 = TEN(F32, dcf, 1, T, 1, D),
      ts4 = TEN(F32, dsf, 1, T, 1, D);
    OK(RUN(aclnnApplyRotaryPosEmbV2, tq4, tk4, tc4, ts4, 1, "half"));
    down(q2, dq, sizeof q2);
    CHECK(memcmp(q2, qo, sizeof qo) == 0, "ApplyRotaryPosEmbV2 BSND differs from TND");
    EXPECT_ERR(RUN(aclnnApplyRotaryPosEmbV2, tq4, tk4, tc4, ts4, 4, "half"), 161002, "3-D");
}

/* Paged attention: KV written by ScatterPaKvCache, FIA V3 against a reference
 * on contiguous per-sequence K/V; the TND pitfalls are refused. */
static void t_attention(void)
{
    enum { NQ = 4, NKV = 2, D = 16, BS = 128, NB = 4, B = 2, T = 4, MAXB = 2 };
    /* seq 0: prefill of 3 tokens (kv 3); seq 1: decode of 1 token at kv 130 (crosses a block) */
    int64_t cu[B] = {3, 4}, kvl[B] = {3, 130};
    int32_t table[B * MAXB] = {2, 0, 3, 1};
    unsigned seed = 11;
    size_t cache_elems = (size_t)NB * BS * NKV * D;
    float *kc = calloc(cache_elems, 4), *vc = calloc(cache_elems, 4);
    float *Ks = malloc(sizeof(float) * B * 130 * NKV * D), *Vs = malloc(sizeof(float) * B * 130 * NKV * D);
    /* history of seq 1 (positions 0..128) written directly into the cache; the new tokens via scatter */
    float newk[T * NKV * D], newv[T * NKV * D];
    int32_t slots[T];
    for (int b = 0; b < B; b++)
        for (int p = 0; p < kvl[b]; p++) {
            int ti = b == 0 ? p : (p == 129 ? 3 : -1);
            for (int i = 0; i < NKV * D; i++) {
                float kv1 = frand(&seed), kv2 = frand(&seed);
                Ks[(b * 130 + p) * NKV * D + i] = kv1;
                Vs[(b * 130 + p) * NKV * D + i] = kv2;
                if (ti >= 0) {
                    newk[ti * NKV * D + i] = kv1;
                    newv[ti * NKV * D + i] = kv2;
                } else {
                    size_t off = ((size_t)table[b * MAXB + p / BS] * BS + p % BS) * NKV * D + i;
                    kc[off] = kv1;
                    vc[off] = kv2;
                }
            }
            if (ti >= 0)
                slots[ti] = table[b * MAXB + p / BS] * BS + p % BS;
        }
    float q[T * NQ * D], out[T * NQ * D];
    for (int i = 0; i < T * NQ * D; i++)
        q[i] = frand(&seed);
    void *dkc = dmalloc(cache_elems * 4), *dvc = dmalloc(cache_elems * 4), *dq = dmalloc(sizeof q);
    void *dout = dmalloc(sizeof out), *dtab = dmalloc(sizeof table), *dsl = dmalloc(sizeof slots);
    void *dnk = dmalloc(sizeof newk), *dnv = dmalloc(sizeof newv), *dmask = dmalloc(2048 * 2048), *dlse = dmalloc(32);
    up(dkc, kc, cache_elems * 4);
    up(dvc, vc, cache_elems * 4);
    up(dq, q, sizeof q);
    up(dtab, table, sizeof table);
    up(dsl, slots, sizeof slots);
    up(dnk, newk, sizeof newk);
    up(dnv, newv, sizeof newv);
    int8_t *mask = malloc(2048 * 2048);
    for (int i = 0; i < 2048; i++)
        for (int j = 0; j < 2048; j++)
            mask[i * 2048 + j] = j > i;
    up(dmask, mask, 2048 * 2048);
    P tnk = TEN(F32, dnk, T, NKV, D), tnv = TEN(F32, dnv, T, NKV, D), tsl = TEN(I32, dsl, T);
    P tkc4 = TEN(F32, dkc, NB, BS, NKV, D), tvc4 = TEN(F32, dvc, NB, BS, NKV, D);
    OK(RUN(aclnnScatterPaKvCache, tnk, tkc4, tsl, tnv, tvc4, NULL, NULL, NULL, "Norm", NULL, NULL, NULL));
    int32_t badslot[T] = {0, 1, -1, 2};
    void *dbs = dmalloc(sizeof badslot);
    up(dbs, badslot, sizeof badslot);
    P tbs = TEN(I32, dbs, T);
    EXPECT_ERR(RUN(aclnnScatterPaKvCache, tnk, tkc4, tbs, tnv, tvc4, NULL, NULL, NULL, "Norm", NULL, NULL, NULL), 161002,
               "outside the cache");

    P tq = TEN(F32, dq, T, NQ, D), to = TEN(F32, dout, T, NQ, D), tm = TEN(I8, dmask, 2048, 2048);
    P ttab = TEN(I32, dtab, B, MAXB), tlse = TEN(F32, dlse, 1);
    P kview = TEN(F32, dkc, NB, BS, NKV * D), vview = TEN(F32, dvc, NB, BS, NKV * D);
    P kl = aclCreateTensorList(&kview, 1), vl = aclCreateTensorList(&vview, 1);
    P acu = aclCreateIntArray(cu, B), akv = aclCreateIntArray(kvl, B);
    int64_t cu_bad[B] = {3, 3}, kv_short[1] = {3};
    P acu_bad = aclCreateIntArray(cu_bad, B), akv_short = aclCreateIntArray(kv_short, 1);
    double scale = 1.0 / sqrt((double)D);
#define FIA(cuA, kvA, tab, nh, bsz)                                                                                \
    RUN(aclnnFusedInferAttentionScoreV3, tq, kl, vl, NULL, tm, cuA, kvA, NULL, NULL, NULL, NULL, NULL, NULL, NULL,  \
        tab, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, nh, scale, 2147483647, 0,     \
        "TND", NKV, 3, 0, bsz, 0, false, 0, 0, to, tlse)
    OK(FIA(acu, akv, ttab, NQ, BS));
    down(out, dout, sizeof out);
    bool ok = true;
    for (int b = 0; b < B; b++) {
        int q0 = b ? (int)cu[b - 1] : 0, n = (int)cu[b] - q0, L = (int)kvl[b];
        for (int i = 0; i < n; i++)
            for (int h = 0; h < NQ; h++) {
                int kh = h / (NQ / NKV), last = L - n + i;
                float sc[130], mx = -INFINITY, sum = 0, acc[D] = {0};
                for (int p = 0; p <= last; p++) {
                    float dot = 0;
                    for (int d = 0; d < D; d++)
                        dot += q[((q0 + i) * NQ + h) * D + d] * Ks[(b * 130 + p) * NKV * D + kh * D + d];
                    sc[p] = dot * (float)scale;
                    mx = fmaxf(mx, sc[p]);
                }
                for (int p = 0; p <= last; p++)
                    sum += (sc[p] = expf(sc[p] - mx));
                for (int p = 0; p <= last; p++)
                    for (int d = 0; d < D; d++)
                        acc[d] += sc[p] / sum * Vs[(b * 130 + p) * NKV * D + kh * D + d];
                for (int d = 0; d < D; d++)
                    ok &= near(out[((q0 + i) * NQ + h) * D + d], acc[d], 1e-5f);
            }
    }
    CHECK(ok, "FIA V3 (paged, TND, GQA, prefill + decode across a block) differs from reference");
    EXPECT_ERR(FIA(acu_bad, akv, ttab, NQ, BS), 161002, "#6524");
    EXPECT_ERR(FIA(acu, akv_short, ttab, NQ, BS), 161002, "#8107");
    EXPECT_ERR(FIA(acu, akv, ttab, NQ, 64), 161002, "multiple of 128");
    EXPECT_ERR(FIA(acu, akv, ttab, 3, BS), 161002, "numHeads");
    P ttab1 = TEN(I32, dtab, 1, MAXB);
    EXPECT_ERR(FIA(acu, akv, ttab1, NQ, BS), 161002, "rows");
    int32_t badtab[B * MAXB] = {2, 0, 3, 9};
    up(dtab, badtab, sizeof badtab);
    EXPECT_ERR(FIA(acu, akv, ttab, NQ, BS), 161002, "outside the cache");
    /* InplaceIndexCopy on the cache viewed [NB*BS, NKV*D] */
    P flat = TEN(F32, dkc, NB * BS, NKV * D), src = TEN(F32, dnk, T, NKV * D);
    OK(RUN(aclnnInplaceIndexCopy, flat, 0, tsl, src));
    float row[NKV * D];
    down(row, (float *)dkc + (size_t)slots[3] * NKV * D, sizeof row);
    CHECK(memcmp(row, newk + 3 * NKV * D, sizeof row) == 0, "index copy row");
    /* a tensor list owns its tensors: destroying it destroys them */
    OK(aclDestroyTensorList(kl));
    EXPECT_ERR(aclDestroyTensor(kview), 161002, "not a live aclTensor");
    free(kc);
    free(vc);
    free(Ks);
    free(Vs);
    free(mask);
}

/* HCCL: two ranks driven by ONE thread (deposit/complete, stream-order wait,
 * wrong order = timeout, mismatch = E_PARA), AllGather, Broadcast. */
static void t_hccl_one_thread(void)
{
    P comms[2], st[2];
    int32_t devs[2] = {0, 1};
    OK(HcclCommInitAll(2, devs, comms));
#define RANK(r) OK(aclrtSetDevice(devs[r]))
    uint32_t rs = 0;
    OK(HcclGetRankSize(comms[1], &rs));
    CHECK(rs == 2, "rank size %u", rs);
    void *x[2], *g[2], *bc[2];
    uint16_t in[2][5], got[5];
    for (int r = 0; r < 2; r++) {
        OK(aclrtSetDevice(devs[r]));
        OK(aclrtCreateStream(&st[r]));
        x[r] = dmalloc(64);
        g[r] = dmalloc(64);
        bc[r] = dmalloc(64);
        for (int i = 0; i < 5; i++)
            in[r][i] = to_bf16(0.1f * (float)(i + 1) * (float)(r + 1) + 1.0f);
        up(x[r], in[r], sizeof in[r]);
    }
    /* rank 0 deposits and returns at once: its buffer is unchanged until rank 1 joins */
    /* the thread switches to each rank's device before enqueuing that rank's work */
    RANK(0);
    OK(HcclAllReduce(x[0], x[0], 5, 11, 0, comms[0], st[0]));
    down(got, x[0], sizeof got);
    CHECK(memcmp(got, in[0], sizeof got) == 0, "all-reduce completed before every rank joined");
    EXPECT_ERR(HcclAllReduce(x[1], x[1], 5, 11, 0, comms[1], st[1]), 1, "current context is device 0");
    RANK(1);
    OK(HcclAllReduce(x[1], x[1], 5, 11, 0, comms[1], st[1]));
    bool ok = true;
    for (int r = 0; r < 2; r++) {
        OK(aclrtSynchronizeStream(st[r]));
        down(got, x[r], sizeof got);
        for (int i = 0; i < 5; i++)
            ok &= got[i] == to_bf16(from_bf16(in[0][i]) + from_bf16(in[1][i]));
    }
    CHECK(ok, "bf16 all-reduce sum differs");
    /* wrong order: rank 0 enqueues more work before rank 1 joined collective #2 */
    RANK(0);
    OK(HcclAllReduce(x[0], x[0], 5, 11, 0, comms[0], st[0]));
    EXPECT_ERR(aclrtMemcpyAsync(g[0], 64, x[0], 64, D2D, st[0]), 507046, "ranks 1 never joined");
    RANK(1);
    OK(HcclAllReduce(x[1], x[1], 5, 11, 0, comms[1], st[1]));
    /* mismatched count */
    RANK(0);
    OK(HcclAllReduce(x[0], x[0], 5, 11, 0, comms[0], st[0]));
    RANK(1);
    EXPECT_ERR(HcclAllReduce(x[1], x[1], 4, 11, 0, comms[1], st[1]), 1, "count");
    OK(HcclAllReduce(x[1], x[1], 5, 11, 0, comms[1], st[1]));
    /* AllGather int32, rank-major */
    int32_t a[2][2] = {{1, 2}, {3, 4}}, gout[4];
    for (int r = 0; r < 2; r++)
        up(x[r], a[r], sizeof a[r]);
    for (int r = 0; r < 2; r++) {
        RANK(r);
        OK(HcclAllGather(x[r], g[r], 2, 2, comms[r], st[r]));
    }
    for (int r = 0; r < 2; r++) {
        OK(aclrtSynchronizeStream(st[r]));
        down(gout, g[r], sizeof gout);
        CHECK(gout[0] == 1 && gout[1] == 2 && gout[2] == 3 && gout[3] == 4, "allgather rank %d", r);
    }
    /* Broadcast int64 from root 1 */
    int64_t b0[2] = {0, 0}, b1[2] = {7, -9}, bout[2];
    up(bc[0], b0, sizeof b0);
    up(bc[1], b1, sizeof b1);
    for (int r = 0; r < 2; r++) {
        RANK(r);
        OK(HcclBroadcast(bc[r], 2, 5, 1, comms[r], st[r]));
    }
    down(bout, bc[0], sizeof bout);
    CHECK(bout[0] == 7 && bout[1] == -9, "broadcast");
    /* a stream of the wrong device */
    RANK(0);
    EXPECT_ERR(HcclAllReduce(x[1], x[1], 5, 11, 0, comms[1], st[0]), 1, "stream is on device 0");
    OK(HcclCommDestroy(comms[0]));
    OK(HcclCommDestroy(comms[1]));
    OK(aclrtSetDevice(0));
}

static RootInfo root;
static float mt_result[2];
static int mt_rc[2];
static void *rank_thread(void *arg)
{
    int r = (int)(intptr_t)arg;
    P comm = NULL, s = NULL;
    mt_rc[r] = aclrtSetDevice(2 + r);
    if (!mt_rc[r])
        mt_rc[r] = aclrtCreateStream(&s);
    void *buf = NULL;
    if (!mt_rc[r])
        mt_rc[r] = aclrtMalloc(&buf, 64, 0);
    float v = r ? 5.0f : -2.0f;
    if (!mt_rc[r])
        mt_rc[r] = aclrtMemcpy(buf, 4, &v, 4, H2D);
    if (!mt_rc[r])
        mt_rc[r] = HcclCommInitRootInfo(2, &root, (uint32_t)r, &comm);
    if (!mt_rc[r])
        mt_rc[r] = HcclAllReduce(buf, buf, 1, 4, 2 /* MAX */, comm, s);
    if (!mt_rc[r])
        mt_rc[r] = aclrtSynchronizeStream(s);
    if (!mt_rc[r])
        mt_rc[r] = aclrtMemcpy(&mt_result[r], 4, buf, 4, D2H);
    return NULL;
}

static void t_hccl_threads(void)
{
    OK(HcclGetRootInfo(&root));
    pthread_t th[2];
    for (int r = 0; r < 2; r++)
        pthread_create(&th[r], NULL, rank_thread, (void *)(intptr_t)r);
    for (int r = 0; r < 2; r++)
        pthread_join(th[r], NULL);
    CHECK(mt_rc[0] == 0 && mt_rc[1] == 0, "rank threads rc %d %d", mt_rc[0], mt_rc[1]);
    CHECK(mt_result[0] == 5.0f && mt_result[1] == 5.0f, "root-info all-reduce MAX %f %f", mt_result[0], mt_result[1]);
    /* only one of two ranks arrives: timeout */
    RootInfo r2;
    OK(HcclGetRootInfo(&r2));
    P c = NULL;
    EXPECT_ERR(HcclCommInitRootInfo(2, &r2, 0, &c), 9, "did not join");
    /* rank tables: one server with one device works; two servers are refused */
    char path[64] = "/tmp/emuacl-ranktable-XXXXXX";
    int fd = mkstemp(path);
    const char *one = "{\"status\":\"completed\",\"version\":\"1.0\",\"server_count\":\"1\",\"server_list\":"
                      "[{\"server_id\":\"node_0\",\"device\":[{\"device_id\":\"0\",\"device_ip\":\"1.2.3.4\","
                      "\"rank_id\":\"0\"}]}]}";
    CHECK(fd >= 0 && write(fd, one, strlen(one)) == (ssize_t)strlen(one), "write rank table");
    close(fd);
    OK(HcclCommInitClusterInfo(path, 0, &c));
    uint32_t n = 0;
    OK(HcclGetRankSize(c, &n));
    CHECK(n == 1, "rank table rank count %u", n);
    OK(HcclCommDestroy(c));
    FILE *f = fopen(path, "w");
    fputs("{\"server_count\":\"2\",\"server_list\":[{\"device\":[{\"rank_id\":\"0\"}]},"
          "{\"device\":[{\"rank_id\":\"1\"}]}]}", f);
    fclose(f);
    EXPECT_ERR(HcclCommInitClusterInfo(path, 0, &c), 5, "servers");
    unlink(path);
}

static void t_trace(void)
{
    const char *path = getenv("EMUACL_TRACE");
    FILE *f = path ? fopen(path, "r") : NULL;
    CHECK(f != NULL, "trace file %s", path ? path : "(unset)");
    if (!f)
        return;
    char line[1024];
    int n = 0, fia = 0, ar = 0, ws = 0, bad = 0;
    while (fgets(line, sizeof line, f)) {
        n++;
        bad += strncmp(line, "{\"seq\":", 7) != 0 || !strstr(line, "\"rc\":") || line[strlen(line) - 2] != '}';
        fia += strstr(line, "\"fn\":\"aclnnFusedInferAttentionScoreV3\"") != NULL;
        ar += strstr(line, "\"fn\":\"HcclAllReduce\"") != NULL && strstr(line, "\"count\":5") != NULL;
        ws += strstr(line, "\"fn\":\"aclnnMatmulGetWorkspaceSize\"") != NULL && strstr(line, "\"ws\":") != NULL;
    }
    fclose(f);
    CHECK(n > 100 && bad == 0, "trace: %d lines, %d malformed", n, bad);
    CHECK(fia >= 1 && ar >= 4 && ws >= 1, "trace: fia %d allreduce %d matmul-ws %d", fia, ar, ws);
}

/* ================================================================ other scenarios */

static void common_setup(void)
{
    OK(aclInit(NULL));
    OK(aclrtSetDevice(0));
    OK(aclrtCreateStream(&g_stream));
    g_ws = dmalloc(WS_BYTES);
}

static void s_fault(void)
{
    common_setup();                                 /* aclrtMalloc call 1 */
    void *a = dmalloc(64);                          /* call 2 */
    void *p = NULL;
    EXPECT_ERR(aclrtMalloc(&p, 64, 0), 207001, "emuacl: injected failure of aclrtMalloc (call 3)");
    P t = TEN(F32, a, 4, 4);
    OK(RUN(aclnnMatmul, t, t, t, 1));
    uint64_t ws;
    P ex;
    OK(aclnnMatmulGetWorkspaceSize(t, t, t, 1, &ws, &ex));
    EXPECT_ERR(aclnnMatmul(g_ws, ws, ex, g_stream), 507015, "injected failure of aclnnMatmul (call 2)");
    EXPECT_ERR(aclnnMatmul(g_ws, ws, ex, g_stream), 161002, "consumed");
    OK(RUN(aclnnMatmul, t, t, t, 1));
}

static void s_f32off(void)
{
    common_setup();
    void *a = dmalloc(64), *b = dmalloc(64);
    P x = TEN(F32, a, 2, 4), y = TEN(F32, b, 2, 2);
    EXPECT_ERR(RUN(aclnnSwiGlu, x, -1, y), 161002, "EMUACL_F32=1");
    P xb = TEN(BF16, a, 2, 4), yb = TEN(BF16, b, 2, 2);
    OK(RUN(aclnnSwiGlu, xb, -1, yb));
    P m = TEN(F32, a, 4, 4);
    OK(RUN(aclnnMatmul, m, m, m, 1));
}

static void s_defer(void)
{
    common_setup();
    float v[4] = {1, 2, 3, 4}, got[4];
    void *d = dmalloc(sizeof v), *o = dmalloc(sizeof v);
    OK(aclrtMemset(d, 16, 0, 16));
    OK(aclrtMemset(o, 16, 0, 16));
    OK(aclrtMemcpyAsync(d, 16, v, 16, H2D, g_stream));
    down(got, d, sizeof got);
    CHECK(got[3] == 0, "deferred copy ran before synchronize");
    P t = TEN(F32, d, 2, 2), to = TEN(F32, o, 2, 2);
    uint64_t ws;
    P ex;
    OK(aclnnMatmulGetWorkspaceSize(t, t, to, 1, &ws, &ex));
    OK(aclnnMatmul(g_ws, ws, ex, g_stream));
    down(got, o, sizeof got);
    CHECK(got[0] == 0, "deferred matmul ran before synchronize");
    OK(aclrtSynchronizeStream(g_stream));
    down(got, o, sizeof got);
    CHECK(got[0] == 7 && got[3] == 22, "after synchronize: %f %f", got[0], got[3]);
    /* a second stream waiting on an event recorded by the first runs the first up to it */
    P s2, ev;
    OK(aclrtCreateStream(&s2));
    OK(aclrtCreateEvent(&ev));
    float w[4] = {9, 9, 9, 9};
    void *d2 = dmalloc(sizeof w);
    OK(aclrtMemcpyAsync(d, 16, w, 16, H2D, g_stream));
    OK(aclrtRecordEvent(ev, g_stream));
    OK(aclrtStreamWaitEvent(s2, ev));
    OK(aclrtMemcpyAsync(d2, 16, d, 16, D2D, s2));
    OK(aclrtSynchronizeStream(s2));
    down(got, d2, sizeof got);
    CHECK(got[0] == 9, "stream wait event did not order the copy (%f)", got[0]);
    /* memory freed while work using it is still queued: the synchronize reports it */
    void *tmp = dmalloc(16);
    P tt = TEN(F32, tmp, 2, 2);
    OK(aclnnMatmulGetWorkspaceSize(t, t, tt, 1, &ws, &ex));
    OK(aclnnMatmul(g_ws, ws, ex, g_stream));
    OK(aclrtFree(tmp));
    EXPECT_ERR(aclrtSynchronizeStream(g_stream), 507015, "queued tensor");
    OK(aclrtSynchronizeStream(g_stream)); /* the failed queue was dropped */
}

static void s_nocompute(void)
{
    common_setup();
    float v[4] = {1, 2, 3, 4}, got[4];
    void *d = dmalloc(sizeof v), *o = dmalloc(sizeof v);
    up(d, v, sizeof v);
    OK(aclrtMemset(o, 16, 0, 16));
    P t = TEN(F32, d, 2, 2), to = TEN(F32, o, 2, 2), bad = TEN(F32, (char *)d + 8, 2, 2);
    OK(RUN(aclnnMatmul, t, t, to, 1));
    down(got, o, sizeof got);
    CHECK(got[0] == 0 && got[3] == 0, "EMUACL_COMPUTE=0 still computed");
    EXPECT_ERR(RUN(aclnnMatmul, bad, t, to, 1), 161002, "32-byte"); /* still validated */
}

static void s_main(void)
{
    t_runtime();
    t_matmul();
    t_embed_norm();
    t_elementwise();
    t_rope();
    t_attention();
    t_hccl_one_thread();
    t_hccl_threads();
    t_trace();
}

struct scen {
    const char *name;
    void (*fn)(void);
    const char *env[6];
};
static const struct scen scens[] = {
    {"main", s_main, {"EMUACL_DEVICES=4", "EMUACL_HBM_TOTAL=1073741824", "EMUACL_HBM_FREE=536870912", "EMUACL_F32=1",
                      "EMUACL_HCCL_TIMEOUT_MS=300", NULL}},
    {"fault", s_fault, {"EMUACL_FAIL=aclnnMatmul:2:507015,aclrtMalloc:3:207001", "EMUACL_F32=1", NULL}},
    {"f32off", s_f32off, {NULL}},
    {"defer", s_defer, {"EMUACL_DEFER=1", NULL}},
    {"nocompute", s_nocompute, {"EMUACL_COMPUTE=0", NULL}},
};

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3) { /* child: one scenario */
        scenario = argv[2];
        load(argv[1]);
        for (size_t i = 0; i < sizeof scens / sizeof *scens; i++)
            if (strcmp(scens[i].name, argv[2]) == 0)
                scens[i].fn();
        printf("scenario %s: %d checks, %d failed\n", scenario, checks, failures);
        return failures ? 1 : 0;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUT\n", argv[0]);
        return 2;
    }
    int bad = 0;
    char trace[4096];
    snprintf(trace, sizeof trace, "%s/selftest-trace.jsonl", argv[1]);
    for (size_t i = 0; i < sizeof scens / sizeof *scens; i++) {
        unlink(trace);
        pid_t pid = fork();
        if (pid == 0) {
            unsetenv("EMUACL_FAIL");
            unsetenv("EMUACL_DEFER");
            unsetenv("EMUACL_F32");
            unsetenv("EMUACL_COMPUTE");
            setenv("EMUACL_TRACE", trace, 1);
            for (int k = 0; scens[i].env[k]; k++)
                putenv((char *)scens[i].env[k]);
            execl("/proc/self/exe", argv[0], argv[1], scens[i].name, (char *)NULL);
            _exit(127);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        bool passed = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        printf("%s: %s\n", scens[i].name, passed ? "ok" : "FAILED");
        bad += !passed;
    }
    printf(bad ? "selftest FAILED\n" : "selftest passed\n");
    return bad ? 1 : 0;
}
