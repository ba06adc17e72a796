"""Gaussian deblurring of a held-out photograph crop (problem ``deblur-gauss``): TV vs DiffPIR and DPS with ``photo64``."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from _common import restore  # noqa: E402

restore("deblur-gauss", "deblur.png")
