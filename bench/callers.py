#!/usr/bin/env python3
"""Who calls a hot function: reads `perf script` output (recorded with --call-graph dwarf)
on stdin and prints the share of all samples whose innermost frame matches TARGET, then
those samples grouped by their nearest DEPTH callers outside the allocator, libc and core.

Usage: perf script -i a.data | callers.py TARGET [DEPTH]
"""

import collections
import re
import sys

target = sys.argv[1]
depth = int(sys.argv[2]) if len(sys.argv) > 2 else 1
# Frames that say nothing about who asked: the allocator, libc, std's and core's plumbing.
PLUMBING = re.compile(r"^(<?core::|<?alloc::|<?bytes::|<?std::|__|malloc|cfree|realloc|_int_)")

callers = collections.Counter()
samples = hits = 0
stack = []


def flush():
    global samples, hits
    if not stack:
        return
    samples += 1
    if target in stack[0]:
        hits += 1
        frames = [f[:110] for f in stack[1:] if not PLUMBING.search(f)][:depth]
        callers[" <- ".join(frames)] += 1


for line in sys.stdin:
    if not line.strip():
        flush()
        stack = []
    elif line[0] in " \t":
        parts = line.split(None, 1)
        if len(parts) == 2:
            symbol = re.sub(r" \([^()]*\)$", "", parts[1].strip())
            stack.append(re.sub(r"\+0x[0-9a-f]+$", "", symbol))
flush()

if samples:
    print(f"{target}: {hits} of {samples} samples = {100 * hits / samples:.1f}%")
    for frames, count in callers.most_common(25):
        print(f"{100 * count / samples:5.2f}%  {frames}")
