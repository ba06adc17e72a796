"""Solvers: posterior and unconditional samplers on one loop (:func:`invdiff.solve`), and baselines.

``SOLVERS`` maps a name to a solver class (a frozen dataclass of hyperparameters); the
contract tests iterate it. ``BASELINES`` holds the classical reconstructions.
"""

from .baselines import BASELINES, cgls, fbp, tikhonov, tune_weight, tv, wiener, zero_filled
from .base import Solver, State
from .daps import DAPS
from .ddim import DDIM
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
    "dps": DPS,
    "reddiff": REDDiff,
    "smc": SMC,
    "diffpir": DiffPIR,
    "pigdm": PiGDM,
    "ddrm": DDRM,
    "daps": DAPS,
    "mbir": MBIR,
    "ddim": DDIM,
    "euler": DDIM,  # DDIM(eta=0) is exactly Euler on the VE probability-flow ODE
    "heun": Heun,
    "dpmpp2m": DPMSolverPP2M,
}

__all__ = ["SOLVERS", "Solver", "State", "DPS", "REDDiff", "SMC", "DiffPIR", "PiGDM", "DDRM", "DAPS", "MBIR", "DDIM", "Heun", "DPMSolverPP2M", "BASELINES", "fbp", "zero_filled",
           "cgls", "tikhonov", "wiener", "tv", "tune_weight"]
