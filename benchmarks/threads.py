"""Wall time of invdiff's commands by thread count, on an idle machine and beside busy neighbours.

Usage::

    python benchmarks/threads.py --out benchmarks/threads.md            # the full table
    python benchmarks/threads.py --quick                                # a dry run (tiny settings)

Each command runs in its own process with ``--threads 1``, ``--threads N`` (every CPU this
process may use) and ``--threads 0`` (invdiff's rule: the idle cores, :mod:`invdiff.threads`),
first on an otherwise idle machine, then with ``--busy K`` neighbours: processes that spin on
one core each for the whole run, as another user's job would. Run it on a machine with nothing
else going on: the load it does not start itself would skew every row.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from invdiff.threads import available_cpus

COMMANDS = {
    "demo": ["demo", "--steps", "{steps}", "--samples", "4", "--out", "{tmp}/demo", "--no-progress"],
    "solve (DPS, ct-sparse-8)": ["solve", "--problem", "ct-sparse-8", "--solver", "dps", "--steps", "{steps}",
                                 "--out", "{tmp}/solve"],
    "train (16 px phantoms)": ["train", "--data", "phantoms", "--size", "32", "--steps", "{train_steps}",
                               "--batch", "8", "--out", "{tmp}/t.safetensors", "--no-progress"],
}


def _spin():
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run(command: list[str], threads: int, fmt: dict) -> float:
    args = [a.format(**fmt) for a in command] + ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "invdiff", *args], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--busy", type=int, nargs="+", default=[0, 1], help="numbers of spinning neighbours")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--train-steps", type=int, default=40)
    p.add_argument("--quick", action="store_true", help="dry run: 5 steps, 2 training steps")
    p.add_argument("--tmp", default="/tmp/invdiff-threads")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.train_steps = 5, 2
    fmt = {"steps": args.steps, "train_steps": args.train_steps, "tmp": args.tmp}
    Path(args.tmp).mkdir(parents=True, exist_ok=True)
    cpus = available_cpus()
    counts = sorted({1, cpus, 0})
    label = {0: "0 (idle cores)", 1: "1", cpus: f"{cpus} (all)"}
    lines = ["# Threads on a shared machine", "",
             f"Command: `python benchmarks/threads.py {' '.join(sys.argv[1:] if argv is None else argv)}`", "",
             f"{cpus} CPUs; wall seconds per command (own process), by `--threads` and by the number of spinning "
             "neighbour processes.", "",
             "| command | neighbours | " + " | ".join(f"--threads {label[c]}" for c in counts) + " |",
             "|" + "---|" * (2 + len(counts))]
    for name, command in COMMANDS.items():
        for busy in args.busy:
            spinners = [_spin() for _ in range(busy)]
            try:
                time.sleep(2.0 if busy else 0.0)
                secs = [run(command, c, fmt) for c in counts]
            finally:
                for s in spinners:
                    s.kill()
            lines.append(f"| {name} | {busy} | " + " | ".join(f"{t:.1f}" for t in secs) + " |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
