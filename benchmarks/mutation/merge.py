"""Merge ``mutmut results --all true`` listings of successive runs: for each mutant the status of the
latest run that ran it (``not checked`` only where no run did). Prints the merged listing.

usage: python merge.py OLDEST.txt [NEWER.txt ...]"""
import sys

status, order = {}, []
for path in sys.argv[1:]:
    for line in open(path):
        line = line.strip()
        if not line or ":" not in line:
            continue
        name, st = (s.strip() for s in line.rsplit(":", 1))
        if name not in status:
            order.append(name)
        if st != "not checked" or name not in status:
            status[name] = st
for name in order:
    print(f"    {name}: {status[name]}")
