"""Every example script runs in fast mode (2 steps) and writes its figure."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*/*.py"))


def test_examples_exist_for_every_area():
    areas = {p.parent.name for p in EXAMPLES}
    assert {"medical", "restoration", "teaching"} <= areas


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_runs_fast(script, tmp_path):
    env = {**os.environ, "INVDIFF_EXAMPLES_FAST": "1", "INVDIFF_EXAMPLES_OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list(tmp_path.glob("*.png")), "the example wrote no figure"
