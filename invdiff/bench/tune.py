"""Tuning: every method's hyperparameter grid on a named problem's validation split.

For each method with a grid (:attr:`Method.grid <invdiff.methods.Method.grid>`; a solver's
``grid`` class attribute), every grid point runs through :meth:`Method.run
<invdiff.methods.Method.run>` — the benchmark's own code path — on validation images (split
``"validation"``, never the test split), and the point with the best mean PSNR is kept.
``benchmarks/tune_presets.py`` runs it over the named problems and writes
``invdiff/problems/presets.json``, which :class:`~invdiff.problems.ProblemSpec` reads.
"""

from __future__ import annotations

import torch

from ..methods import get_method
from .runner import not_applicable

__all__ = ["tune_problem"]


def tune_problem(name: str, methods, *, images: int = 2, steps: int = 100, seed: int = 0,
                 noise_seed: int = 1, prior=None, points: dict | None = None) -> dict:
    """Grid-search each of ``methods`` on ``images`` validation images of problem ``name``.

    Returns ``{method: {"params", "validation_psnr", "grid": [{"params", "psnr"}, …]}}`` for
    every method that has a grid and can run on the problem; methods that use a prior also get
    ``"prior"``, the name of the prior they were tuned with (so that a preset tuned with another
    prior than the problem's current one can be found, ``tests/test_problems.py``). ``noise_seed`` draws the
    measurement noise, ``seed`` the samplers. ``prior`` (a :class:`~invdiff.priors.Prior`)
    replaces the problem's own prior, e.g. to compare candidate priors on validation.
    ``points`` (``{method: [params, …]}``) replaces the grid of the methods it names, e.g. with
    the one point chosen on a smaller version of the problem where a full grid costs too much.
    """
    from ..metrics import psnr
    from ..problems import get_problem

    spec = get_problem(name)
    pb = spec.make("validation", spec.n_images(images), seed=noise_seed)
    out = {}
    prior_name = spec.prior if prior is None else getattr(prior, "name", None) or type(prior).__name__
    for m in map(get_method, methods):
        if not m.grid or not_applicable(m, spec):
            continue
        if m.uses_prior and prior is None:
            prior = spec.build_prior()
        scores = []
        for params in (points or {}).get(m.preset_key) or m.grid_points(pb):
            res = m.run(pb, prior if m.uses_prior else None, steps=steps,
                        generator=torch.Generator().manual_seed(seed), params=params)
            scores.append((float(psnr(res.x_hat.clamp(0, 1), pb.x_true).mean()), params))
        best = max(scores, key=lambda t: t[0])
        out[m.preset_key] = {"params": best[1], "validation_psnr": best[0],
                             "grid": [{"params": p, "psnr": s} for s, p in scores]}
        if m.uses_prior:
            out[m.preset_key]["prior"] = prior_name
    return out
