#!/usr/bin/env bash
# Builds the emulated CANN into OUT/lib64/libascendcl.so (+ libnnopbase.so,
# libopapi.so, libhccl.so as symlinks to the same object: one loaded object,
# one global state) and writes OUT/set_env.sh like CANN's.
# Usage: bash tests/emuacl/build.sh OUT
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 OUT" >&2
    exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$1/lib64"
out="$(cd "$1" && pwd)"
lib="$out/lib64/libascendcl.so"
srcs=("$here"/emu_*.c)
# rebuild only when a source or header is newer than the library
stale=1
if [ -f "$lib" ]; then
    stale=0
    for f in "${srcs[@]}" "$here"/*.h "$here/build.sh"; do
        if [ "$f" -nt "$lib" ]; then stale=1; fi
    done
fi
if [ "$stale" = 1 ]; then
    ${CC:-cc} -std=gnu11 -O2 -fPIC -shared -pthread -fvisibility=hidden -Wall -Wextra -Werror \
        -Wl,-soname,libascendcl.so -o "$lib.tmp" "${srcs[@]}" -lm
    mv -f "$lib.tmp" "$lib"
fi
for name in libnnopbase.so libopapi.so libhccl.so; do
    ln -sfn libascendcl.so "$out/lib64/$name"
done
cat > "$out/set_env.sh.tmp" <<ENV
# emulated CANN (tests/emuacl): source this like ascend-toolkit/set_env.sh
export ASCEND_TOOLKIT_HOME="$out"
export ASCEND_HOME_PATH="$out"
export LD_LIBRARY_PATH="$out/lib64\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
ENV
mv -f "$out/set_env.sh.tmp" "$out/set_env.sh"
