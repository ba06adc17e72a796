"""Mutation score per module: a ``mutmut results --all true`` listing, re-test logs of its survivors
(``KILLED name`` / ``SURVIVED name`` lines from killcheck.py) and equivalent-mutant lists (TSV: name, category,
reason). Prints the markdown table of benchmarks/mutation.md.

usage: python account.py RESULTS_ALL LOG [LOG ...] -- EQUIVALENT_TSV [...]"""
import sys, re, collections
args = sys.argv[1:]
res = args[0]; sep = args.index("--"); logs = args[1:sep]; eqs = args[sep + 1:]
status = {}
for l in open(res):
    l = l.strip()
    if not l: continue
    name, st = l.rsplit(":", 1); status[name.strip()] = st.strip()
newkill, alive = set(), set()
for f in logs:
    for l in open(f):
        p = l.split()
        if len(p) == 2 and p[0] == "KILLED": newkill.add(p[1])
        if len(p) == 2 and p[0] == "SURVIVED": alive.add(p[1])
alive -= newkill
equiv = {}
for f in eqs:
    for l in open(f):
        p = l.rstrip("\n").split("\t")
        if len(p) >= 2: equiv[p[0]] = p[1]
mod = lambda n: re.sub(r"\.x[_ǁ].*", "", n)
rows = collections.defaultdict(collections.Counter)
for n, st in status.items():
    r = rows[mod(n)]
    if st == "checked": r["not run"] += 1; continue   # "not checked"
    if st == "killed": r["killed"] += 1
    elif st == "timeout": r["timeout"] += 1
    elif st in ("survived", "tests"):
        r["survived" if st == "survived" else "no tests"] += 1
        if n in newkill: r["killed new"] += 1
        elif n in equiv: r["equivalent"] += 1
        else: r["alive"] += 1
tot = collections.defaultdict(collections.Counter)
print("| module | run | killed in run | timeout | survived (+no tests) | killed by new tests | equivalent | alive | score before | score now |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
def line(name, r):
    run = r["killed"] + r["timeout"] + r["survived"] + r["no tests"]
    if run == 0: return
    before = (r["killed"] + r["timeout"]) / run
    denom = run - r["equivalent"]
    now = (r["killed"] + r["timeout"] + r["killed new"]) / denom if denom else 1
    print(f"| {name} | {run} | {r['killed']} | {r['timeout']} | {r['survived'] + r['no tests']} | {r['killed new']} | {r['equivalent']} | {r['alive']} | {100*before:.0f} % | {100*now:.0f} % |")
for m in sorted(rows):
    line(m, rows[m]); top = ".".join(m.split(".")[:2]); tot[top].update(rows[m])
for t in sorted(tot): line("**" + t + "**", tot[t])
