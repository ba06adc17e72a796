"""``invdiff demo``: sparse-view CT of a real, held-out CT slice with the shipped ``ct`` prior.

The image is a 128×128 window (kidney, spine and ribs) of the real CT corpus's test slice — an
abdominal CT from pydicom-data that the prior never saw in training, at the 256-px scale of the
``ct256-*`` problems (:mod:`invdiff.data.corpora`, shipped in the package). It is measured with
16-view parallel-beam CT and ``sigma_y = 0.005``, reconstructed with FBP and with DiffPIR
(``num_samples`` posterior samples in one batch; the λ, ζ chosen for the ``ct`` prior on the CT
validation slice for ``ct256-sparse-8``, ``benchmarks/tune_presets.md``); the demo prints PSNR/SSIM of both and writes a
PNG of truth, FBP, the reconstruction (sample mean) and the per-pixel posterior standard deviation.
"""

from __future__ import annotations

import os

import torch

__all__ = ["run_demo", "demo_image"]

#: rows and columns of the demo's window in the 256-px test slice of the real CT corpus
WINDOW = (slice(128, 256), slice(128, 256))
#: the named problem whose validation-tuned DiffPIR preset (λ, ζ for the ``ct`` prior) the demo uses
PRESET_FROM = "ct256-sparse-8"


def demo_image() -> "torch.Tensor":
    """The demo's ground truth, ``(1, 1, 128, 128)`` in [0, 1]: a window of the real CT test slice."""
    from .data.corpora import corpus_images

    return corpus_images("ct", "test", 256, 1)[(..., *WINDOW)].contiguous()


def run_demo(out_dir: str = "invdiff-demo", *, views: int = 16, steps: int = 50, samples: int = 4,
             seed: int = 0, progress: bool = True, device: str = "cpu") -> dict:
    """Run the demo; returns ``{"fbp": (psnr, ssim), "diffusion": (psnr, ssim), "figure": path}``.

    ``device`` is where the prior and the problem go for DiffPIR (checked first,
    :func:`invdiff.devices.resolve_device`); the noise is drawn on the CPU from the seeded
    generator, and the figure is made from the CPU."""
    from . import Problem, psnr, solve, ssim
    from .devices import resolve_device
    from .plot import save_image_row
    from .operators import ct_sparse_view
    from .priors import load_prior
    from .problems import get_problem
    from .solvers import DiffPIR, fbp

    if steps < 1 or samples < 1 or views < 1:
        raise ValueError(f"steps, samples and views must be >= 1, got {steps}, {samples}, {views}")
    dev = resolve_device(device, name="--device")
    os.makedirs(out_dir, exist_ok=True)
    if not os.access(out_dir, os.W_OK):
        raise PermissionError(f"cannot write to the output directory {out_dir!r}")
    x = demo_image()
    size = x.shape[-1]
    g = torch.Generator().manual_seed(seed)
    problem = Problem.simulate(x, ct_sparse_view(size, views), 0.005, generator=g)
    prior = load_prior("ct", device=dev)
    x_fbp = fbp(problem).clamp(0, 1)
    solver = DiffPIR(**get_problem(PRESET_FROM).presets["diffpir"])
    result = solve(problem.to(dev), prior, solver, steps=steps, num_samples=samples, generator=g,
                   progress=progress).to("cpu")
    x_hat = result.x_hat.clamp(0, 1)
    scores = {"fbp": (float(psnr(x_fbp, x)), float(ssim(x_fbp, x))),
              "diffusion": (float(psnr(x_hat, x)), float(ssim(x_hat, x)))}
    std = result.std[0, 0] if result.std is not None else torch.zeros(size, size)
    path = os.path.join(out_dir, "demo_ct.png")
    save_image_row({"truth": x[0], "FBP": x_fbp[0], "DiffPIR": x_hat[0], "posterior std": std}, path, truth=x[0],
                   titles={"posterior std": f"std ({samples} samples)"},
                   cmaps={"posterior std": "magma"}, ranges={"posterior std": (0.0, float(std.max().clamp_min(1e-6)))})
    return {**scores, "figure": path, "seconds": result.seconds}
