#!/usr/bin/env python3
"""Attributes an insnprof.so output to functions (self counts, after
inlining: an inlined function's instructions count for its caller).

usage: attribute.py PROFILE TASK_ELF KERNEL_ELF [PHASE...]
Task addresses (below the kernel's) are looked up in TASK_ELF: tasks share
their link address, so use phases where TASK_ELF's task runs (the client's
own few instructions around its send land in TASK_ELF's names too).
"""
import bisect, subprocess, sys
from collections import defaultdict

def symbols(elf):
    out = subprocess.run(['llvm-nm', '-n', '-S', '--demangle', '--defined-only', elf],
                         capture_output=True, text=True, check=True).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4 and parts[2] in 'tTwW':
            syms.append((int(parts[0], 16), int(parts[1], 16), parts[3]))
    syms.sort()
    return syms

def lookup(syms, starts, a):
    i = bisect.bisect_right(starts, a) - 1
    if i >= 0 and a < syms[i][0] + max(syms[i][1], 4):
        return syms[i][2]
    return '?%x' % a

def short(name):
    # drop generic arguments and hashes: keep the path
    depth, o = 0, []
    for c in name:
        if c == '<':
            depth += 1
            if depth == 1:
                o.append('<..>')
        elif c == '>':
            depth -= 1
        elif depth == 0:
            o.append(c)
    return ''.join(o).replace('::h', '#')

def main(prof, task, kernel, phases):
    ts, ks = symbols(task), symbols(kernel)
    tstart, kstart = [s[0] for s in ts], [s[0] for s in ks]
    kbase = ks[0][0] if ks else 1 << 62
    per = defaultdict(lambda: defaultdict(int))
    for line in open(prof):
        p, a, n = line.split()
        a, n = int(a, 16), int(n)
        if phases and p not in phases:
            continue
        if a >= kbase and a < 0x1000000000:
            name = 'kernel: ' + short(lookup(ks, kstart, a))
        else:
            name = short(lookup(ts, tstart, a))
        per[p][name] += n
    for p in sorted(per):
        total = sum(per[p].values())
        kern = sum(v for k, v in per[p].items() if k.startswith('kernel: '))
        print(f'phase {p}: {total} instructions ({kern} in the kernel)')
        for name, n in sorted(per[p].items(), key=lambda kv: -kv[1])[:25]:
            print(f'  {n:8} {100*n/total:5.1f}%  {name}')

if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2], sys.argv[3], set(sys.argv[4:]))
