"""Print each listed mutant's diff against its original function, read from mutmut's ``mutants/`` tree
(run from the directory that holds ``mutants/``).

usage: python diffs.py RESULTS_FILE [status (default survived)] [module prefix]"""
import ast, difflib, re, sys, json
res, status = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "survived")
prefix = sys.argv[3] if len(sys.argv) > 3 else ""
names = [l.split(":")[0].strip() for l in open(res) if l.strip().endswith(status) and l.strip().startswith(prefix)]
cache = {}
def funcs(mod):
    if mod not in cache:
        import os
        path = "mutants/" + mod.replace(".", "/") + ".py"
        if not os.path.exists(path):
            path = "mutants/" + mod.replace(".", "/") + "/__init__.py"
        src = open(path).read()
        lines = src.splitlines()
        tree = ast.parse(src)
        d = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                d[node.name] = "\n".join(lines[node.lineno - 1:node.end_lineno])
        cache[mod] = d
    return cache[mod]
for n in names:
    m = re.match(r"(.*?)\.(x[_ǁ].*)__mutmut_(\d+)$", n)
    mod, fn, k = m.group(1), m.group(2), m.group(3)
    # function def names in file: class methods mangled as xǁClassǁmeth__mutmut_N
    f = funcs(mod)
    orig = f.get(fn + "__mutmut_orig"); mut = f.get(fn + "__mutmut_" + k)
    if orig is None or mut is None:
        print("###", n, "(source not found)"); continue
    mut = mut.replace(fn + "__mutmut_" + k, fn + "__mutmut_orig")
    d = [l for l in difflib.unified_diff(orig.splitlines(), mut.splitlines(), lineterm="", n=0) if not l.startswith(("---", "+++", "@@"))]
    print("###", n)
    print("\n".join(d) if d else "(no diff)")
