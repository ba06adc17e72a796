"""Shared by the examples: the fast-mode switch and the output folder (examples/output, not tracked)."""

import os
import sys

FAST = "--fast" in sys.argv or os.environ.get("INVDIFF_EXAMPLES_FAST") == "1"
OUT = os.environ.get("INVDIFF_EXAMPLES_OUT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "output"))
os.makedirs(OUT, exist_ok=True)


def steps(full: int) -> int:
    """``full`` steps normally, 2 in fast mode (used by the test suite)."""
    return 2 if FAST else full


def restore(problem_name: str, png_name: str) -> dict:
    """Solve the named restoration problem's first test image with TV, DiffPIR and DPS (presets tuned
    on the validation split), print PSNRs and save a figure row; returns the reconstructions."""
    import torch

    from invdiff import psnr, solve
    from invdiff.plot import save_image_row
    from invdiff.priors import load_prior
    from invdiff.problems import get_problem
    from invdiff.solvers import tv

    spec = get_problem(problem_name)
    problem = spec.make("test", 1, seed=0)
    prior = load_prior(spec.prior)
    same_shape = problem.y.shape == problem.x_true.shape
    recons = {"measurement" if same_shape else "A†y": problem.y if same_shape else problem.physics.A_dagger(problem.y),
              "TV": tv(problem)}
    for name in ("diffpir", "dps"):
        recons[name] = solve(problem, prior, spec.solver(name), steps=steps(100),
                             generator=torch.Generator().manual_seed(0)).x_hat
    for name, x in recons.items():
        print(f"{name:12s} {float(psnr(x.clamp(0, 1), problem.x_true)):.2f} dB")
    save_image_row({"truth": problem.x_true[0], **{k: v.clamp(0, 1)[0] for k, v in recons.items()}},
                   os.path.join(OUT, png_name), truth=problem.x_true[0])
    return recons
