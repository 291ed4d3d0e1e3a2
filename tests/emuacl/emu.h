/*
 * emu.h - internal header of the emulated CANN (emuacl).
 *
 * Owns: the shared types (global state, device-memory registry, tensor
 * descriptors, operator calls, streams, events, HCCL groups), the error codes
 * and the per-call plumbing (lock, fault injection, trace) that every exported
 * function goes through. Nothing here is exported: exports are marked EXPORT
 * in the .c files and the library is built with -fvisibility=hidden.
 *
 * This emulates the documented CANN contract on host memory. It is NOT NPU
 * numerics: math is f32 on the host, bf16/fp16 rounded on store.
 */
#ifndef EMUACL_EMU_H
#define EMUACL_EMU_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EXPORT __attribute__((visibility("default")))

/* ---- CANN public types (as in acl_base_rt.h / acl_meta.h / hccl_types.h) ---- */
typedef int aclError;
typedef int32_t aclnnStatus;
typedef void *aclrtStream;
typedef void *aclrtContext;
typedef void *aclrtEvent;
typedef struct emu_tensor aclTensor;
typedef struct emu_intarray aclIntArray;
typedef struct emu_scalar aclScalar;
typedef struct emu_tlist aclTensorList;
typedef struct emu_exec aclOpExecutor;
typedef int aclDataType;
typedef int aclFormat;
typedef int aclrtMemcpyKind;
typedef int aclrtMemMallocPolicy;
typedef int aclrtMemAttr;
typedef int HcclResult;
typedef void *HcclComm;
typedef int HcclDataType;
typedef int HcclReduceOp;
typedef struct {
    char internal[4108];
} HcclRootInfo;

/* ---- error codes (acl_base_rt.h, rt_error_codes.h, aclnn docs, hccl_types.h) ---- */
enum {
    ACL_SUCCESS = 0,
    ACL_ERROR_INVALID_PARAM = 100000,
    ACL_ERROR_UNINITIALIZE = 100001,
    ACL_ERROR_REPEAT_INITIALIZE = 100002,
    ACL_ERROR_RT_CONTEXT_NULL = 107002,
    ACL_ERROR_RT_STREAM_CONTEXT = 107003,
    ACL_ERROR_BAD_ALLOC = 200000,
    ACL_ERROR_INVALID_DEVICE = 200002,
    ACL_ERROR_RT_MEMORY_ALLOCATION = 207001,
    ACL_ERROR_RT_FAILURE = 500003,
    ACL_ERROR_RT_AICORE_EXCEPTION = 507015,
    ACL_ERROR_RT_STREAM_SYNC_TIMEOUT = 507046,
    ACLNN_ERR_PARAM_NULLPTR = 161001,
    ACLNN_ERR_PARAM_INVALID = 161002,
};
enum {
    HCCL_SUCCESS = 0,
    HCCL_E_PARA = 1,
    HCCL_E_PTR = 2,
    HCCL_E_MEMORY = 3,
    HCCL_E_INTERNAL = 4,
    HCCL_E_NOT_SUPPORT = 5,
    HCCL_E_TIMEOUT = 9,
    HCCL_E_OPEN_FILE_FAILURE = 10,
    HCCL_E_RUNTIME = 15,
};

/* aclDataType values the emulator supports. */
enum {
    ACL_FLOAT = 0,
    ACL_FLOAT16 = 1,
    ACL_INT8 = 2,
    ACL_INT32 = 3,
    ACL_UINT8 = 4,
    ACL_INT64 = 9,
    ACL_BOOL = 12,
    ACL_BF16 = 27,
};
#define ACL_FORMAT_ND 2
enum { MEMCPY_H2H = 0, MEMCPY_H2D = 1, MEMCPY_D2H = 2, MEMCPY_D2D = 3, MEMCPY_DEFAULT = 4 };

#define EMU_MAX_DIMS 8
#define EMU_HOST_PINNED (-1)

/* ---- environment (read once, at the first exported call) ---- */
struct emu_fault {
    char sym[96];
    long n;    /* 1-based call number that fails */
    int code;  /* returned code */
    int group; /* index of the first spec with the same symbol (shared counter) */
    long count;
};
struct emu_env {
    int devices;
    uint64_t hbm_total, hbm_free;
    bool defer, f32, compute, debug;
    long hccl_timeout_ms;
    struct emu_fault faults[32];
    int nfaults;
};

/* ---- device memory registry ---- */
struct emu_alloc {
    uintptr_t base;
    size_t size;    /* bytes the caller asked for: the valid range is [base, base+size) */
    size_t charged; /* rounded to 32 and padded by 32, as CANN's header says */
    int dev;        /* device id, or EMU_HOST_PINNED */
    bool mmapped;
    size_t mapped;
};

/* ---- tensors ---- */
struct emu_tensor {
    uint32_t magic;
    int ndim;
    int64_t dims[EMU_MAX_DIMS];
    int64_t strides[EMU_MAX_DIMS];
    int64_t offset;
    int dtype, format;
    int64_t storage_elems; /* product of storageDims */
    void *data;
    int dev; /* filled when an op checks the tensor */
    bool present;
};
struct emu_intarray {
    uint32_t magic;
    uint64_t n;
    int64_t *v;
};
struct emu_scalar {
    uint32_t magic;
    int dtype;
    double v; /* read as double whatever the dtype */
};
struct emu_tlist {
    uint32_t magic;
    uint64_t n;
    struct emu_tensor **t;
};

/* ---- operator calls ---- */
enum emu_opkind {
    OP_EMBEDDING,
    OP_INDEX_SELECT,
    OP_RMS_NORM,
    OP_ADD_RMS_NORM,
    OP_MATMUL,
    OP_ADDMM,
    OP_ROPE_SINCOS,
    OP_ROPE_V2,
    OP_SCATTER_PA,
    OP_INDEX_COPY,
    OP_FIA_V3,
    OP_SWIGLU,
    OP_SILU,
    OP_MUL,
    OP_ADD,
    OP_INPLACE_ADD,
    OP_CAST,
    OP_ARGMAX,
    OP_COUNT
};
#define EMU_MAXT 8
#define EMU_MAXIO 8
/* A validated operator call: a snapshot of every argument (tensor descriptors
 * by value, scalars and int arrays by value), owned by an executor. */
struct emu_opcall {
    enum emu_opkind op;
    const char *name; /* "aclnnMatmul" */
    struct emu_tensor t[EMU_MAXT];
    int nin, nout;
    int in_slot[EMU_MAXIO], out_slot[EMU_MAXIO];
    double d[4];
    int64_t i[8];
    int64_t *arr[2];
    uint64_t arrn[2];
    uint64_t ws;
};
struct emu_exec {
    uint32_t magic;
    struct emu_opcall call;
    bool repeatable, consumed;
};

/* ---- streams, events, contexts ---- */
struct emu_group;
struct emu_work;
struct emu_stream {
    uint32_t magic;
    int dev;
    struct emu_work *head, *tail; /* deferred queue (EMUACL_DEFER=1) */
    struct emu_group *pend_group; /* collective this stream waits for */
    uint64_t pend_k;
    const char *pend_name;
};
struct emu_event {
    uint32_t magic;
    bool recorded, done;
    double t_ms;
    struct emu_stream *stream;
};
struct emu_ctx {
    uint32_t magic;
    int dev;
    bool is_default;
    struct emu_stream *default_stream;
};

/* ---- HCCL ---- */
enum { COLL_ALLREDUCE, COLL_ALLGATHER, COLL_BROADCAST };
struct emu_coll {
    uint64_t k;
    int kind, dtype, op, root;
    uint64_t count;
    int ndep;
    unsigned char **dep; /* per rank: copy of the contribution */
    void **recv;         /* per rank: where the result goes */
    struct emu_coll *next;
};
struct emu_group {
    int n;
    struct emu_comm **comms;
    uint64_t done_k; /* collectives 1..done_k are complete */
    int alive;       /* comms not yet destroyed */
    int id;
    struct emu_coll *colls;
};
struct emu_comm {
    uint32_t magic;
    struct emu_group *g;
    int rank, dev;
    uint64_t next_k;
};

/* ---- the global state (one per loaded object) ---- */
struct emu_dev {
    uint64_t used;
    int default_refs;
    struct emu_ctx *default_ctx;
};
struct emu_state {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool env_read, inited;
    struct emu_env env;
    void *trace; /* FILE* */
    uint64_t seq;
    struct emu_dev *dev;
    struct emu_alloc *allocs;
    size_t nallocs, capallocs;
    int next_group_id;
};
extern struct emu_state G;

/* ---- per-call plumbing ---- */
#define F_INIT 1   /* refuse with 100001 before aclInit */
#define F_HCCL 2   /* return codes are HcclResult */
#define F_NOFAULT 4 /* not subject to fault injection (string getters) */
typedef struct {
    const char *fn;
    int rc;
    int dev;
    char extra[256];
    size_t elen;
} emu_call;

/* Locks the global mutex, counts the call for fault injection, checks init.
 * Returns true when the call must return c->rc at once (injected or refused). */
bool emu_enter(emu_call *c, const char *fn, int flags);
/* Writes the trace line, unlocks, returns c->rc. */
int emu_leave(emu_call *c);
/* Appends ,"key":value to the trace line of this call (value is raw JSON). */
void emu_extra(emu_call *c, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Sets the calling thread's recent error message; returns code. */
int emu_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void emu_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *emu_errmsg(void);

/* ---- object sets (membership checks of handles) ---- */
bool emu_known(const void *p);
void emu_add(const void *p);
void emu_del(const void *p);

/* ---- registry ---- */
const struct emu_alloc *emu_find(const void *p); /* allocation containing p, or NULL */
int emu_cur_dev(void);                           /* calling thread's device, -1 if none */
double emu_now_ms(void);

/* ---- streams ---- */
/* Resolves a stream handle (NULL = default stream of the current context). */
int emu_stream_get(aclrtStream s, struct emu_stream **out);
/* emu_stream_get for work submission: the stream must belong to the calling
 * thread's current device (else 107003, ACL_ERROR_RT_STREAM_CONTEXT), as on an NPU
 * a thread driving several devices must switch contexts between them. */
int emu_stream_for_work(const char *fn, aclrtStream s, struct emu_stream **out);
/* Waits until the stream's pending collective completes (stream order). */
int emu_stream_wait_coll(struct emu_stream *s);
enum { WORK_OP, WORK_COPY, WORK_SET, WORK_EVENT, WORK_WAIT_EVENT, WORK_HCCL };
struct emu_work {
    int kind;
    struct emu_work *next;
    struct emu_opcall *call; /* WORK_OP: owned clone */
    void *dst;
    const void *src;
    size_t n;
    bool dst_dev, src_dev; /* WORK_COPY: which sides were device memory at enqueue */
    int value;
    struct emu_event *ev;
    struct emu_hdep *hd; /* WORK_HCCL */
};
/* Runs the item now (immediate mode) or queues it (deferred mode). */
int emu_submit(struct emu_stream *s, struct emu_work *w);
int emu_run_work(struct emu_stream *s, struct emu_work *w);
int emu_stream_flush(struct emu_stream *s);

/* ---- HCCL deposit (run as stream work) ---- */
struct emu_hdep {
    struct emu_comm *comm;
    int kind, dtype, op, root;
    uint64_t count;
    void *send, *recv;
};
int emu_hccl_deposit(struct emu_stream *s, struct emu_hdep *d);
/* A destroyed HCCL group: streams stop waiting on it. */
void emu_streams_forget_group(const struct emu_group *g);

/* ---- operators ---- */
int emu_op_run(struct emu_opcall *o); /* the math; honours EMUACL_COMPUTE */
struct emu_opcall *emu_op_clone(const struct emu_opcall *o);
void emu_op_free_arrays(struct emu_opcall *o);

/* ---- dtypes ---- */
size_t emu_dtype_size(int dtype); /* 0 when unsupported */
const char *emu_dtype_name(int dtype);
bool emu_is_float(int dtype);
bool emu_is_index(int dtype); /* int32/int64 */
float emu_bf16_to_f32(uint16_t h);
uint16_t emu_f32_to_bf16(float f);
float emu_f16_to_f32(uint16_t h);
uint16_t emu_f32_to_f16(float f);
/* Element access at an element offset from data (already including view offset). */
float emu_ldf(const struct emu_tensor *t, int64_t e);
void emu_stf(const struct emu_tensor *t, int64_t e, float v);
int64_t emu_ldi(const struct emu_tensor *t, int64_t e);
void emu_sti(const struct emu_tensor *t, int64_t e, int64_t v);
float emu_round(int dtype, float v); /* value as the dtype would store it */

#endif
