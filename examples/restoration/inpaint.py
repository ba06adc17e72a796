"""box inpainting of a held-out photograph crop (inpaint-box): the classical baseline vs DiffPIR and DPS with photo64."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import torch  # noqa: E402
from _common import OUT, steps  # noqa: E402

from invdiff import psnr, solve  # noqa: E402
from invdiff.plot import save_image_row  # noqa: E402
from invdiff.priors import load_prior  # noqa: E402
from invdiff.problems import get_problem  # noqa: E402
from invdiff.solvers import DPS, DiffPIR, tv  # noqa: E402

problem = get_problem("inpaint-box").make("test", 1, seed=0)
prior = load_prior("photo64")
y = problem.y if problem.y.shape == problem.x_true.shape else problem.physics.A_dagger(problem.y)
recons = {"measurement" if problem.y.shape == problem.x_true.shape else "A†y": y, "TV": tv(problem)}
for name, solver in {"DiffPIR": DiffPIR(), "DPS": DPS(zeta=0.5)}.items():
    recons[name] = solve(problem, prior, solver, steps=steps(100), generator=torch.Generator().manual_seed(0)).x_hat
for name, x in recons.items():
    print(f"{name:8s} {float(psnr(x.clamp(0, 1), problem.x_true)):.2f} dB")
save_image_row({"truth": problem.x_true[0], **{k: v.clamp(0, 1)[0] for k, v in recons.items()}},
               os.path.join(OUT, "inpaint.png"))
