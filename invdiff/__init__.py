"""invdiff: imaging inverse problems with pretrained diffusion priors.

The five nouns: **operator** (:mod:`invdiff.operators`), **prior** (:mod:`invdiff.priors`),
**solver** (:mod:`invdiff.solvers`), **problem** (:class:`Problem`) and **result**.
"""

from .metrics import nrmse, psnr, ssim
from .operators import OPERATORS, make_operator
from .problem import Problem
from .reconstructor import as_reconstructor
from .result import Result
from .solve import solve

__version__ = "0.1.0"

__all__ = ["Problem", "Result", "solve", "as_reconstructor", "OPERATORS", "make_operator", "psnr", "ssim", "nrmse", "__version__"]
