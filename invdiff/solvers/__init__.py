"""Solvers: posterior and unconditional samplers on one loop (:func:`invdiff.solve`), and baselines.

``SOLVERS`` maps a name to a solver class (a frozen dataclass of hyperparameters); the
contract tests iterate it. ``BASELINES`` holds the classical reconstructions.
"""

from .baselines import BASELINES, cgls, fbp, pinv, tikhonov, tune_weight, tv, wiener, zero_filled
from .bm3d import bm3d_denoise, bm3d_restore
from .wavelet import wavelet_l1
from .base import Solver, State
from .daps import DAPS
from .ddim import DDIM, Euler
from .ddrm import DDRM
from .diffpir import DiffPIR
from .dpmpp import DPMSolverPP2M
from .dps import DPS
from .heun import Heun
from .mbir import MBIR
from .pigdm import PiGDM
from .reddiff import REDDiff
from .smc import SMC

SOLVERS = {
    "diffpir": DiffPIR,
    "dps": DPS,
    "reddiff": REDDiff,
    "ddrm": DDRM,
    "pigdm": PiGDM,
    "daps": DAPS,
    "smc": SMC,
    "mbir": MBIR,
    "ddim": DDIM,
    "euler": Euler,
    "heun": Heun,
    "dpmpp2m": DPMSolverPP2M,
}

__all__ = ["SOLVERS", "Solver", "State", "DPS", "REDDiff", "SMC", "DiffPIR", "PiGDM", "DDRM", "DAPS", "MBIR", "DDIM", "Euler", "Heun", "DPMSolverPP2M", "BASELINES", "fbp", "pinv", "zero_filled",
           "cgls", "tikhonov", "wiener", "tv", "wavelet_l1", "bm3d_restore", "bm3d_denoise", "tune_weight"]
