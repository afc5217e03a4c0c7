#!/usr/bin/env python3
"""The import graph of src/: edges between files and between top-level modules, circles
(strongly connected components) and upward imports (a lower layer importing a higher one).

Edges are `crate::…` and `super::…` paths (and a mod.rs's `use child::…`), resolved to the file
that defines the module; inline `#[cfg(test)] mod tests` and `*_tests.rs` files are left out.
Layers, bottom to top: time/text/api/dn/fastpath/secret_file/listen, policy, config/gateway/telemetry,
directory/audit, store, metrics/mfa (the second factor's store), control/service, portal, commands, main.

Usage: python3 .ci/imports.py src [--edges]"""
import os, re, sys
from collections import defaultdict

src = sys.argv[1]
files = []
for root, _, names in os.walk(src):
    for n in names:
        if n.endswith('.rs'):
            files.append(os.path.relpath(os.path.join(root, n), src))
fileset = set(files)

def strip_tests(text):
    m = re.search(r'^#\[cfg\(test\)\]\s*\n\s*mod \w+\s*\{', text, re.M)
    text = text[:m.start()] if m else text
    # drop comments
    return re.sub(r'//[^\n]*', '', text)

def module_dir(f):
    # directory whose children are this file's submodules' siblings for super::
    d, n = os.path.split(f)
    if n in ('mod.rs', 'lib.rs', 'main.rs'):
        return d  # self module is d; parent of d
    return os.path.join(d, n[:-3])

def resolve(parts):
    """parts relative to src root, e.g. ['store','audit','X'] -> file"""
    best = None
    for i in range(1, len(parts) + 1):
        p = os.path.join(*parts[:i])
        for cand in (p + '.rs', os.path.join(p, 'mod.rs')):
            if cand in fileset:
                best = cand
    return best

def mod_path(f):
    d, n = os.path.split(f)
    parts = [x for x in d.split(os.sep) if x]
    if n not in ('mod.rs', 'lib.rs', 'main.rs'):
        parts.append(n[:-3])
    return parts

special = {'dn': 'directory/dn.rs'}
edges = defaultdict(set)
for f in files:
    if f.endswith('tests.rs') or f in ('main.rs',):
        pass
    if re.search(r'(^|_)tests\.rs$', os.path.basename(f)):
        continue
    text = strip_tests(open(os.path.join(src, f)).read())
    me = mod_path(f)
    refs = []
    for m in re.finditer(r'\b(crate|super)((?:::\w+)+)(::\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\})?', text):
        base = m.group(1)
        segs = [s for s in m.group(2).split('::') if s]
        heads = [segs]
        if m.group(4):
            heads = [segs + [x.strip().split('::')[0]] for x in m.group(4).split(',') if x.strip()]
            heads = [h for h in heads if h[-1] not in ('self', '')] or [segs]
        for h in heads:
            if base == 'crate':
                if h and h[0] in special:
                    refs.append(special[h[0]]); continue
                parts = h
            else:
                parent = me[:-1]
                while h and h[0] == 'super':
                    h = h[1:]; parent = parent[:-1]
                parts = parent + h
            t = resolve(parts)
            if t and t != f:
                refs.append(t)
    # relative `use child::…` / `pub use child::{…}` paths into this module's children
    mydir = module_dir(f)
    for m in re.finditer(r'^\s*(?:pub(?:\([^)]*\))?\s+)?use\s+(\w+)::', text, re.M):
        if m.group(1) in ('crate', 'super', 'self', 'std', 'core'):
            continue
        t = resolve(mod_path(os.path.join(mydir, m.group(1) + '.rs')))
        if t and t != f:
            refs.append(t)
    for t in refs:
        edges[f].add(t)

def top(f):
    if f == 'directory/dn.rs': return 'dn'
    p = f.split(os.sep)[0]
    return p[:-3] if p.endswith('.rs') else p

def sccs(nodes, adj):
    index = {}; low = {}; st = []; on = set(); out = []; c = [0]
    sys.setrecursionlimit(10000)
    def visit(v):
        index[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
        for w in adj.get(v, ()):
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = st.pop(); on.discard(w); comp.append(w)
                if w == v: break
            out.append(comp)
    for v in nodes:
        if v not in index: visit(v)
    return [sorted(x) for x in out if len(x) > 1]

tedges = defaultdict(set)
for a, bs in edges.items():
    for b in bs:
        if top(a) != top(b): tedges[top(a)].add(top(b))

# layers: higher may import lower; an edge to a higher layer is "upward"
rank = {'main': 9, 'commands': 8, 'portal': 7, 'control': 6, 'service': 6, 'metrics': 5,
        'mfa': 5, 'store': 4, 'directory': 3, 'audit': 3, 'gateway': 2, 'config': 2, 'telemetry': 2,
        'policy': 1,
        'time': 0, 'text': 0, 'api': 0, 'listen': 0, 'dn': 0, 'secret_file': 0, 'fastpath': 0, 'lib': 10}
fscc = sccs(sorted(edges), edges)
tscc = sccs(sorted(tedges), tedges)
up = sorted((a, b) for a, bs in tedges.items() for b in bs if rank.get(a, 0) < rank.get(b, 0))
upfiles = sorted((a, b) for a, bs in edges.items() for b in bs if rank.get(top(a), 0) < rank.get(top(b), 0) and top(a) != 'lib')
print('file edges:', sum(len(v) for v in edges.values()))
print('module edges:', sum(len(v) for v in tedges.values()))
print('file-level cycles (SCCs >1 file, across modules shown):')
for c in fscc:
    mods = sorted(set(top(x) for x in c))
    print('  %d files, modules %s' % (len(c), mods))
    if len(mods) > 1: print('    ', c)
print('module-level cycles:', tscc)
print('upward module edges (%d):' % len(up), up)
print('upward file edges (%d):' % len(upfiles))
for a, b in upfiles: print('   ', a, '->', b)
if '--edges' in sys.argv:
    for a in sorted(tedges): print(a, '->', sorted(tedges[a]))
