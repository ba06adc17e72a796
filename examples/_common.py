"""Shared by the examples: the fast-mode switch and the output folder (examples/output, not tracked)."""

import os
import sys

FAST = "--fast" in sys.argv or os.environ.get("INVDIFF_EXAMPLES_FAST") == "1"
OUT = os.environ.get("INVDIFF_EXAMPLES_OUT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "output"))
os.makedirs(OUT, exist_ok=True)


def steps(full: int) -> int:
    """``full`` steps normally, 2 in fast mode (used by the test suite)."""
    return 2 if FAST else full
