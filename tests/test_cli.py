"""The command line: demo, priors, solvers; one-line errors with exit code 2."""

import os

import pytest

from invdiff.cli import main


def test_demo_fast_mode(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "2", "--samples", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "FBP" in out and "DiffPIR" in out and "demo_ct.png" in out
    assert (tmp_path / "demo_ct.png").stat().st_size > 1000
    assert sorted(os.listdir(tmp_path)) == ["demo_ct.png"]  # no temporary files left


@pytest.mark.parametrize("args, message", [
    (["demo", "--steps", "0"], "--steps must be >= 1"),
    (["demo", "--samples", "-1"], "--samples must be >= 1"),
])
def test_demo_bad_arguments(args, message, capsys, tmp_path):
    assert main(args + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_demo_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["demo", "--out", str(blocker / "sub"), "--steps", "1", "--no-progress"]) == 2
    assert "error" in capsys.readouterr().err


def test_listings(capsys):
    assert main(["priors"]) == 0
    out = capsys.readouterr().out
    assert "phantom64" in out and "photo64" in out
    assert main(["solvers"]) == 0
    out = capsys.readouterr().out
    for name in ("dps", "smc", "daps", "mbir", "ddrm"):
        assert name in out
