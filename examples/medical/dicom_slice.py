"""A real CT slice (pydicom's CT_small test file), 32-view sparse CT, reconstructed with the phantom prior.

The prior was trained on synthetic phantoms only, so this is out of distribution: compare with FBP and TV.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import torch  # noqa: E402
from _common import OUT, steps  # noqa: E402

from invdiff import Problem, psnr, solve  # noqa: E402
from invdiff.data import dicom_sample, resize  # noqa: E402
from invdiff.operators import ct_sparse_view  # noqa: E402
from invdiff.plot import save_image_row  # noqa: E402
from invdiff.priors import load_prior  # noqa: E402
from invdiff.solvers import DiffPIR, fbp, tv  # noqa: E402

x = resize(dicom_sample("CT_small.dcm"), 64)[None]
problem = Problem.simulate(x, ct_sparse_view(64, 32), 0.005, generator=torch.Generator().manual_seed(0))
result = solve(problem, load_prior("phantom64"), DiffPIR(), steps=steps(100), generator=torch.Generator().manual_seed(0))
recons = {"FBP": fbp(problem), "TV": tv(problem), "DiffPIR": result.x_hat}
for name, xr in recons.items():
    print(f"{name:8s} {float(psnr(xr.clamp(0, 1), x)):.2f} dB")
save_image_row({"DICOM slice": x[0], **{k: v.clamp(0, 1)[0] for k, v in recons.items()}}, os.path.join(OUT, "dicom_slice.png"),
               truth=x[0])
