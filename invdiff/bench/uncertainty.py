"""Calibration of a method's posterior std maps on a named problem, and its coverage on the test split.

:func:`calibrate_problem` fits the split-conformal factors (:mod:`invdiff.calibration`) of a
sampling method (``"diffpir:8"``: 8 samples) on the problem's **validation** split only — the
split is fixed here, not a parameter, so test images cannot leak into a factor.
:func:`coverage_record` scores a result against its truth: raw coverage at ±1 and ±2 std, the
coverage a calibrated map reaches at the 68.27 %, 95 % and 95.45 % levels, interval widths.
``benchmarks/uncertainty.py`` runs both for every sampling solver and writes
``invdiff/problems/calibration.json`` and ``benchmarks/uncertainty.md``.
"""

from __future__ import annotations

import torch

from ..calibration import Calibration, fit_conformal
from ..methods import get_method
from ..metrics import LEVELS, coverage, nominal_coverage, std_multiplier

__all__ = ["run_samples", "calibrate_problem", "coverage_record", "CALIBRATION_SPLIT"]

#: the only split the conformal factors are fitted on
CALIBRATION_SPLIT = "validation"


def run_samples(problem: str, method: str, split: str, *, images: int, steps: int, seed: int,
                params: dict | None = None):
    """Run sampling ``method`` (``"solver:S"``, ``S >= 2`` samples; SMC's ``"smc"`` gives its
    particles as samples) on ``images`` images of ``split``.

    For a volume problem (one volume whose slices are coupled, e.g. ``"mbir:4"``) the ``S``
    samples are ``S`` solves with independent generators. Returns ``(result, truth, mask)``;
    ``mask`` is the problem's support (pixels inside the body for CT and MRI, every pixel of a
    photograph). ``params`` overrides the problem's preset.
    """
    from ..problems import get_problem

    spec = get_problem(problem)
    m = get_method(method)
    pb = spec.make(split, images, seed=seed)
    merged = {**spec.presets.get(m.preset_key, {}), **(params or {})}
    prior = spec.build_prior()
    if spec.is_volume and getattr(m, "samples", 1) > 1:
        res = _repeated(get_method(m.preset_key), m.samples, pb, prior, steps, seed, merged)
    else:
        res = m.run(pb, prior, steps=steps, generator=torch.Generator().manual_seed(seed), params=merged)
    if res.std is None:
        raise ValueError(f"method {method!r} gave one sample per image; a std map needs at least 2: use "
                         f"{m.name.partition(':')[0]}:S with S >= 2 (e.g. {m.name.partition(':')[0]}:8)")
    return res, pb.x_true, spec.support(pb.x_true)


def _repeated(method, samples: int, pb, prior, steps: int, seed: int, params: dict):
    """``samples`` solves of ``method`` with independent generators, as one :class:`~invdiff.result.Result`."""
    from ..result import Result

    runs = [method.run(pb, prior, steps=steps, generator=torch.Generator().manual_seed(seed + 7919 * s),
                       params=params) for s in range(samples)]
    draws = torch.stack([r.x_hat for r in runs])
    return Result(x_hat=draws.mean(0), samples=draws, std=draws.std(0), nfe=sum(r.nfe for r in runs),
                  vjp=sum(r.vjp for r in runs), seconds=sum(r.seconds for r in runs),
                  network_seconds=sum(r.network_seconds for r in runs), params=runs[0].params)


def calibrate_problem(problem: str, method: str, *, images: int = 4, steps: int = 100, seed: int = 555,
                      params: dict | None = None, levels=LEVELS) -> tuple[Calibration, object]:
    """Fit the conformal factors of ``method`` on ``images`` images of the problem's validation split.

    Returns ``(calibration, result)`` (the validation run, for its raw coverage).
    """
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ValueError(f"the calibration split needs at least one image, got images={images!r}")
    res, truth, mask = run_samples(problem, method, CALIBRATION_SPLIT, images=images, steps=steps, seed=seed,
                                   params=params)
    cal = fit_conformal(res.x_hat, res.std, truth, res.num_samples, mask=mask, levels=levels, steps=steps,
                        source=f"{problem} {CALIBRATION_SPLIT} ({images} images, seed {seed}), {method}")
    return cal, res


def coverage_record(result, truth: torch.Tensor, mask: torch.Tensor | None = None,
                    calibration: Calibration | None = None) -> dict:
    """Coverage of ``result``'s std map against ``truth`` (pooled over the images' counted pixels).

    Keys: ``raw_1std``/``raw_2std`` (truth within ±1 / ±2 std), ``nominal_1std``/``nominal_2std``
    (what an exact Gaussian sampler with this many samples gives), ``width_2std`` (mean width of
    ±2 std); ``curve``: observed coverage at each level of :data:`invdiff.metrics.LEVELS` with the
    exact-Gaussian half-width for this many samples (``raw``) and, with a calibration, with its
    factors (``calibrated``); with a calibration also ``cal_68``/``cal_95``/``cal_9545``
    (coverage of the calibrated intervals at those levels) and ``scale_95`` (calibrated over
    Gaussian half-width at 95 %).
    """
    std = result.std
    if std is None:
        raise ValueError("a coverage needs a posterior std map: at least 2 samples from a sampling solver")
    S = result.num_samples
    mask = torch.ones_like(truth, dtype=torch.bool) if mask is None else mask.expand_as(truth)
    counts = mask.flatten(1).sum(1).double()

    def pooled(k: float) -> float:
        """Fraction of all counted pixels (of all images) within ``x_hat ± k std``."""
        return float((coverage(result.x_hat, std, truth, k, mask=mask) * counts).sum() / counts.sum())

    rec = {"num_samples": S, "pixels": int(counts.sum()), "raw_1std": pooled(1.0), "raw_2std": pooled(2.0),
           "nominal_1std": nominal_coverage(1.0, S), "nominal_2std": nominal_coverage(2.0, S)}
    rec["width_2std"] = float(4 * std[mask].double().mean())
    rec["curve"] = {"level": list(LEVELS), "raw": [pooled(std_multiplier(p, S)) for p in LEVELS]}
    if calibration is not None:
        rec["curve"]["calibrated"] = [pooled(calibration.factor(p)) if calibration.levels[0] <= p <= calibration.levels[-1]
                                      else float("nan") for p in LEVELS]
        for key, level in (("cal_68", 0.6827), ("cal_95", 0.95), ("cal_9545", 0.9545)):
            rec[key] = pooled(calibration.factor(level))
        rec["scale_95"] = calibration.scale(0.95)
    return rec
