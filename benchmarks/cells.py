"""A benchmark's finished cells, kept in a JSON file beside its markdown table so a run resumes.

``open_cells(out, argv)`` reads ``OUT.json`` (``{}`` when absent) and appends the command line to
its ``_commands`` list (every run's arguments, in order); ``save_cells`` writes it back atomically.
``append_run`` prints a one-shot benchmark's table and appends it, under its command, to a markdown file.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from invdiff.data.io import atomic_write


def open_cells(out: str, argv=None) -> tuple[str, dict]:
    """``(path of the JSON store, its cells)`` for the markdown file ``out``, this run's command recorded."""
    store = os.path.splitext(out)[0] + ".json"
    cells = json.load(open(store)) if os.path.exists(store) else {}
    command = " ".join(sys.argv[1:] if argv is None else argv)
    cells.setdefault("_commands", [])  # every run's command line, in order (cells are kept across runs)
    if command not in cells["_commands"]:
        cells["_commands"].append(command)
    return store, cells


def save_cells(store: str, cells: dict) -> None:
    """Write ``cells`` to ``store`` atomically (a crash leaves the previous file)."""
    atomic_write(store, lambda tmp: Path(tmp).write_text(json.dumps(cells, indent=1)))


def append_run(out: str | None, script: str, argv, text: str) -> None:
    """Print ``text``; if ``out`` is given, append it there under the command that made it
    (``python benchmarks/SCRIPT ARGS``, ``argv`` or the process's own arguments)."""
    print(text)
    if out:
        command = f"python benchmarks/{script} " + " ".join(sys.argv[1:] if argv is None else argv)
        with open(out, "a") as f:
            f.write(f"\n    {command}\n\n{text}\n")
