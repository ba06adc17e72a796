"""Cartesian MRI at 4× acceleration: zero-filled, TV and DiffPIR (validation-tuned preset) with the shipped prior (4 posterior samples)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import torch  # noqa: E402
from _common import FAST, OUT, steps  # noqa: E402

from invdiff import psnr, solve  # noqa: E402
from invdiff.plot import save_image_row  # noqa: E402
from invdiff.priors import load_prior  # noqa: E402
from invdiff.problems import get_problem  # noqa: E402
from invdiff.solvers import tv, zero_filled  # noqa: E402

spec = get_problem("mri-4x")
problem = spec.make("test", 1, seed=0)
result = solve(problem, load_prior("phantom64"), spec.solver("diffpir"), steps=steps(100), num_samples=1 if FAST else 4,
               generator=torch.Generator().manual_seed(0))
recons = {"zero-filled": zero_filled(problem), "TV": tv(problem), "DiffPIR": result.x_hat}
for name, x in recons.items():
    print(f"{name:12s} {float(psnr(x.clamp(0, 1), problem.x_true)):.2f} dB")
save_image_row({"truth": problem.x_true[0], **{k: v.clamp(0, 1)[0] for k, v in recons.items()}},
               os.path.join(OUT, "mri_4x.png"), truth=problem.x_true[0])
