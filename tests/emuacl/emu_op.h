/*
 * emu_op.h - what the operator files share: the GetWorkspaceSize/launch
 * helpers of emu_meta.c and small shape/dtype checks.
 *
 * An operator is written as:
 *   GetWorkspaceSize: emu_gws_begin, one emu_arg_* per argument (snapshot +
 *   provenance), op-specific shape/dtype checks, emu_gws_end;
 *   launch: EMU_LAUNCH(name, kind) (generic);
 *   math: a run_xxx(struct emu_opcall*) dispatched by emu_op_run.
 */
#ifndef EMUACL_EMU_OP_H
#define EMUACL_EMU_OP_H

#include "emu.h"

#define IO_IN 1
#define IO_OUT 2
#define IO_INOUT 3

bool emu_gws_begin(emu_call *c, struct emu_opcall **o, const char *fn, enum emu_opkind op, const char *opname);
int emu_arg_tensor(emu_call *c, struct emu_opcall *o, int slot, const aclTensor *t, const char *arg, int io,
                   bool optional);
int emu_arg_array(emu_call *c, struct emu_opcall *o, int idx, const aclIntArray *a, const char *arg, bool optional);
int emu_arg_scalar(emu_call *c, const aclScalar *s, const char *arg, double *out);
int emu_gws_end(emu_call *c, struct emu_opcall *o, int rc, uint64_t *ws, aclOpExecutor **ex);
int emu_launch(const char *fn, enum emu_opkind op, void *workspace, uint64_t wsSize, aclOpExecutor *executor,
               aclrtStream stream);
int emu_check_tensor_mem(const char *fn, const char *arg, struct emu_tensor *t);
bool emu_is_tlist(const void *p);
int64_t emu_numel(const struct emu_tensor *t);

#define EMU_LAUNCH(NAME, KIND)                                                                                     \
    EXPORT aclnnStatus NAME(void *workspace, uint64_t workspaceSize, aclOpExecutor *executor, aclrtStream stream) \
    {                                                                                                              \
        return emu_launch(#NAME, KIND, workspace, workspaceSize, executor, stream);                               \
    }

/* Element offset of a 2-D / 3-D / 4-D index in a view. */
static inline int64_t off2(const struct emu_tensor *t, int64_t i, int64_t j)
{
    return t->offset + i * t->strides[0] + j * t->strides[1];
}
static inline int64_t off3(const struct emu_tensor *t, int64_t i, int64_t j, int64_t k)
{
    return t->offset + i * t->strides[0] + j * t->strides[1] + k * t->strides[2];
}
static inline int64_t off4(const struct emu_tensor *t, int64_t a, int64_t b, int64_t c, int64_t d)
{
    return t->offset + a * t->strides[0] + b * t->strides[1] + c * t->strides[2] + d * t->strides[3];
}
/* Element offset of flat (row-major) element index i of the view. */
int64_t emu_flat_off(const struct emu_tensor *t, int64_t i);

/* ---- checks used by GetWorkspaceSize; each sets the message and returns 161002 ---- */
int emu_need_ndim(emu_call *c, const struct emu_tensor *t, const char *arg, int ndim);
int emu_need_dim(emu_call *c, const struct emu_tensor *t, const char *arg, int k, int64_t want);
int emu_need_float(emu_call *c, const struct emu_tensor *t, const char *arg);
int emu_need_index(emu_call *c, const struct emu_tensor *t, const char *arg);
int emu_need_same_dtype(emu_call *c, const struct emu_tensor *a, const char *an, const struct emu_tensor *b,
                        const char *bn);
int emu_need_same_shape(emu_call *c, const struct emu_tensor *a, const char *an, const struct emu_tensor *b,
                        const char *bn);
int emu_need_contig(emu_call *c, const struct emu_tensor *t, const char *arg);
/* ops whose A2/A3 kernels have no f32: refused unless EMUACL_F32=1 */
int emu_no_f32(emu_call *c, const struct emu_tensor *t, const char *op);
int emu_bad(emu_call *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
