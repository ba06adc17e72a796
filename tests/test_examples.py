"""Every example script runs in fast mode (2 steps), writes its figure, and prints numbers that hold up.

In fast mode the diffusion solvers take 2 steps, so their PSNRs are not the examples' results;
what is checked is what fast mode does not change: the printed table is complete and finite, the
baseline it prints is the PSNR of that baseline (recomputed here, with our own formula, on the
problem the example builds), the classical reconstruction (fully run in fast mode too) beats the
naive inverse where the example shows that, and every diffusion result, even after 2 steps,
beats the best constant image (the truth's own mean, PSNR = −10 log10 Var(x_true)).
"""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*/*.py"))
ROUNDING = 0.005 + 1e-4  # printed with 2 decimals; float32 MSE differs from ours by ~1e-6 relative (4e-6 dB)


def _psnr(x, ref) -> float:
    """PSNR (peak 1) of one image after clamping to [0, 1], written out here (not invdiff.metrics)."""
    mse = ((x.double().clamp(0, 1) - ref.double()) ** 2).mean()
    return float(10 * torch.log10(1 / mse))


def _printed_psnrs(stdout: str) -> dict:
    """``{name: dB}`` from the example's ``name   12.34 dB`` lines."""
    rows = re.findall(r"^(\S[^\n]*?)\s+(-?\d+\.\d+|nan|inf|-inf) dB$", stdout, flags=re.M)
    return {name: float(v) for name, v in rows}


def _named_problem(name):
    from invdiff.problems import get_problem

    return get_problem(name).make("test", 1, seed=0)


def _dicom_problem():
    """The problem examples/medical/dicom_slice.py builds."""
    from invdiff import Problem
    from invdiff.data import dicom_sample, resize
    from invdiff.operators import ct_sparse_view

    x = resize(dicom_sample("CT_small.dcm"), 64)[None]
    return Problem.simulate(x, ct_sparse_view(64, 32), 0.005, generator=torch.Generator().manual_seed(0))


def _fbp(pb):
    from invdiff.solvers import fbp

    return fbp(pb)


def _zero_filled(pb):
    from invdiff.solvers import zero_filled

    return zero_filled(pb)


# example: (its problem, the naive inverse it prints and how to compute it, the classical methods
# that beat it, the diffusion methods)
TABLES = {
    "medical/sparse_view_ct.py": (lambda: _named_problem("ct-sparse-32"), "FBP", _fbp, ["TV"], ["DiffPIR"]),
    "medical/dicom_slice.py": (_dicom_problem, "FBP", _fbp, ["TV"], ["DiffPIR"]),
    "medical/mri_4x.py": (lambda: _named_problem("mri-4x"), "zero-filled", _zero_filled, ["TV"], ["DiffPIR"]),
    "restoration/deblur.py": (lambda: _named_problem("deblur-gauss"), "measurement", lambda pb: pb.y, ["TV"],
                              ["diffpir", "dps"]),
    "restoration/inpaint.py": (lambda: _named_problem("inpaint-box"), "measurement", lambda pb: pb.y, ["TV"],
                               ["diffpir", "dps"]),
    # TV is printed but does not beat the bicubic-filter pseudo-inverse on sr-4x (23.85 vs 23.95 dB)
    "restoration/super_resolution.py": (lambda: _named_problem("sr-4x"), "A†y",
                                        lambda pb: pb.physics.A_dagger(pb.y), [], ["diffpir", "dps"]),
}


def _check_table(key, stdout, tmp_path):
    make, naive, naive_fn, classical, diffusion = TABLES[key]
    printed = _printed_psnrs(stdout)
    assert set(printed) == {naive, "TV", *diffusion}, stdout
    assert all(math.isfinite(v) and 5 < v < 60 for v in printed.values()), printed
    pb = make()
    with torch.no_grad():
        assert abs(printed[naive] - _psnr(naive_fn(pb), pb.x_true)) <= ROUNDING, (printed, naive)
    for name in classical:
        assert printed[name] > printed[naive], (name, printed)
    best_constant = -10 * math.log10(float(pb.x_true.double().var(unbiased=False)))
    for name in diffusion:
        assert printed[name] > best_constant, (name, printed, best_constant)


def _check_ct_3d(stdout, tmp_path):
    """MBIR's coupling of the slices beats the same solver run slice by slice, on every plane."""
    rows = dict(re.findall(r"^(per slice|MBIR) (\{.*\})$", stdout, flags=re.M))
    assert set(rows) == {"per slice", "MBIR"}, stdout
    planes = {name: {p: float(v) for p, v in re.findall(r"'(\w+)': '(-?\d+\.\d+|nan) dB'", row)}
              for name, row in rows.items()}
    for name, by_plane in planes.items():
        assert set(by_plane) == {"axial", "coronal", "sagittal"}, rows
        assert all(math.isfinite(v) and 5 < v < 60 for v in by_plane.values()), planes
    assert all(planes["MBIR"][p] > planes["per slice"][p] for p in planes["MBIR"]), planes


def _check_gmm(stdout, tmp_path):
    # 2 steps leave the samples far from the posterior: only the figure it announces is checked
    assert stdout.strip() == f"wrote {tmp_path / 'gmm_posterior_2d.png'}"


CHECKS = {**{key: (lambda k: lambda out, tmp: _check_table(k, out, tmp))(key) for key in TABLES},
          "medical/ct_3d.py": _check_ct_3d, "teaching/gmm_posterior_2d.py": _check_gmm}


def test_examples_exist_for_every_area():
    areas = {p.parent.name for p in EXAMPLES}
    assert {"medical", "restoration", "teaching"} <= areas
    # a new example comes with the checks of what it prints
    assert {f"{p.parent.name}/{p.name}" for p in EXAMPLES} == set(CHECKS)


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_runs_fast(script, tmp_path):
    # the examples import the invdiff of this checkout (not whichever one is installed, e.g. in another worktree)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "INVDIFF_EXAMPLES_FAST": "1", "INVDIFF_EXAMPLES_OUT": str(tmp_path), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": path}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list(tmp_path.glob("*.png")), "the example wrote no figure"
    CHECKS[f"{script.parent.name}/{script.name}"](proc.stdout, tmp_path)
