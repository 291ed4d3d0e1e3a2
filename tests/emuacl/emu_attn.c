/* placeholder, replaced below */
#include "emu_op.h"
int emu_run_rope_sincos(struct emu_opcall *o) { (void)o; return 0; }
int emu_run_rope_v2(struct emu_opcall *o) { (void)o; return 0; }
int emu_run_scatter_pa(struct emu_opcall *o) { (void)o; return 0; }
int emu_run_index_copy(struct emu_opcall *o) { (void)o; return 0; }
int emu_run_fia(struct emu_opcall *o) { (void)o; return 0; }
