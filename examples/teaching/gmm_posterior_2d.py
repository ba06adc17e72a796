"""A 2D Gaussian-mixture prior, one linear measurement: the exact posterior vs DPS and SMC samples.

Left: exact posterior density (contours) with DPS samples and SMC samples. Right: DPS with four
guidance strengths ζ — too weak ignores y; too strong overshoots (at ζ = 3 the samples leave the plotted square).
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from _common import FAST, OUT, steps  # noqa: E402

from invdiff import Problem, solve  # noqa: E402
from invdiff.operators import dense_operator  # noqa: E402
from invdiff.priors import GaussianMixturePrior  # noqa: E402
from invdiff.solvers import DPS, SMC  # noqa: E402

D64 = torch.float64
angles = torch.arange(6, dtype=D64) * torch.pi / 3
means = torch.stack([0.5 + 0.3 * torch.cos(angles), 0.5 + 0.3 * torch.sin(angles)], 1).reshape(6, 1, 1, 2)
prior = GaussianMixturePrior(torch.ones(6, dtype=D64), means, 0.04**2)
M = torch.tensor([[1.0, 1.0]], dtype=D64) / 2**0.5           # we observe (x1 + x2)/√2
problem = Problem(dense_operator((1, 1, 2), M), torch.tensor([[0.75]], dtype=D64), 0.05)
post = prior.posterior(M, problem.y, 0.05)

n = 64 if FAST else 1000
g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
dps = solve(problem, prior, DPS(zeta=0.3), steps=steps(200), num_samples=n, generator=g(), progress=False).samples
smc = solve(problem, prior, SMC(particles=n), steps=steps(200), generator=g(), progress=False).samples

grid = torch.linspace(0.0, 1.0, 150, dtype=D64)
xx, yy = torch.meshgrid(grid, grid, indexing="xy")
pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1).reshape(-1, 1, 1, 2)
dens = post.log_prob(pts).exp().reshape(150, 150)

fig, ax = plt.subplots(1, 2, figsize=(10, 4.6))
ax[0].contour(xx, yy, dens**0.25, levels=8, cmap="Greys")  # 4th root: both modes visible
ax[0].scatter(*dps.reshape(-1, 2).T, s=3, alpha=0.4, label="DPS ζ=0.3")
ax[0].scatter(*smc.reshape(-1, 2).T, s=3, alpha=0.4, label=f"SMC, {n} particles")
ax[0].set_title("exact posterior (contours) and samples")
ax[0].legend(loc="upper left", fontsize=8)
ax[1].contour(xx, yy, dens**0.25, levels=8, cmap="Greys")
for zeta in (0.05, 0.3, 1.0, 3.0):
    s = solve(problem, prior, DPS(zeta=zeta), steps=steps(200), num_samples=n // 4, generator=g(), progress=False).samples
    ax[1].scatter(*s.reshape(-1, 2).T, s=4, alpha=0.5, label=f"ζ = {zeta}")
ax[1].set_title("DPS guidance strength")
ax[1].legend(loc="upper left", fontsize=8)
for a in ax:
    a.set_xlim(0, 1)
    a.set_ylim(0, 1)
    a.set_aspect("equal")
fig.tight_layout()
fig.savefig(os.path.join(OUT, "gmm_posterior_2d.png"), dpi=110)
print("wrote", os.path.join(OUT, "gmm_posterior_2d.png"))
