"""Solvers: classical baselines now; diffusion posterior solvers join the SOLVERS registry."""

from .baselines import BASELINES, cgls, fbp, tikhonov, tune_weight, tv, wiener, zero_filled

__all__ = ["BASELINES", "fbp", "zero_filled", "cgls", "tikhonov", "wiener", "tv", "tune_weight"]
