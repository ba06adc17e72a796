"""Named benchmark problems: operator, noise level, data splits and prior, fixed by name.

``PROBLEMS`` maps a name to a :class:`ProblemSpec`. A spec builds seeded :class:`~invdiff.Problem`
batches for two disjoint splits: ``"validation"`` (for tuning hyperparameters) and ``"test"``
(for reporting). Data:

* CT problems — body phantoms with CT contrast; MRI problems — with MRI contrast. Validation
  seed 555, test seed 777; neither overlaps the ``phantom64`` training pool (seed 10000).
* Volume problems (``ct3d-sparse-8``, ``mri3d-4x``) — one :func:`invdiff.data.body_volume` of
  32 slices per problem (``n = 1``), solved with :class:`invdiff.solvers.MBIR` on a
  :class:`invdiff.priors.SliceStackPrior`.
* Restoration problems — 64×64 RGB crops of scikit-image photographs: validation crops from the
  ``photo64`` training photographs, test crops from the held-out ones (chelsea, rocket).

``sigma_y`` is in [0, 1] intensity units (CT: of the ray-averaged sinogram). Operators with
random parts (MRI masks, random inpainting) are drawn from a fixed seed, so a name always
means the same operator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..data.sources import ImageSource, Phantoms, PhantomVolume, PhotoCrops, RealImages, RealVolume
from ..data.splits import SPLIT_SEEDS  # noqa: F401  (re-exported: the split seeds)
from ..problem import Problem

__all__ = ["ProblemSpec", "PROBLEMS", "get_problem"]


@dataclass(frozen=True)
class ProblemSpec:
    """One named problem. ``operator()`` builds the (seeded) physics; ``data`` is its image source."""

    name: str
    description: str
    operator: Callable[[], object]
    sigma_y: float
    data: ImageSource       # where the ground-truth images of each split come from (invdiff.data.sources)
    prior: str              # shipped prior name (invdiff.priors.load_prior)
    size: int = 64
    metrics: tuple = ("psnr", "ssim")
    presets: dict = field(default_factory=dict)  # solver name -> hyperparameters tuned on "validation"
                                                 # (invdiff/problems/presets.json, benchmarks/tune_presets.py)
    calibrations: dict = field(default_factory=dict)  # method name ("diffpir:8") -> conformal factors fitted
                                                      # on "validation" (calibration.json, benchmarks/uncertainty.py)
    max_images: int | None = None  # images each split holds at this size, where fewer than a benchmark asks for

    def n_images(self, requested: int) -> int:
        """How many images a benchmark or tuner asking for ``requested`` gets: ``requested``, or
        :attr:`max_images` where the splits hold fewer (stated in the problem's description)."""
        return requested if self.max_images is None else min(requested, self.max_images)

    def calibration(self, method: str):
        """The :class:`~invdiff.calibration.Calibration` of ``method`` (``"solver:S"``, S samples)
        fitted on this problem's validation split, or ``None`` where none was fitted with the
        problem's current prior (factors fitted with another prior say nothing about this one)."""
        from ..calibration import Calibration

        d = self.calibrations.get(method)
        if d is None or d.get("prior", self.prior) != self.prior:
            return None
        return Calibration.from_dict(d)

    @property
    def modality(self) -> str:
        """``"ct"``, ``"mri"`` or ``"photo"``: the kind of images of this problem."""
        return getattr(self.data, "contrast", None) or getattr(self.data, "corpus", None) or "photo"

    def support(self, x_true: torch.Tensor) -> torch.Tensor:
        """Pixels the uncertainty metrics count: inside the body (truth > 0.02) for CT and MRI, where
        the air around it would otherwise dominate the count; every pixel of a photograph."""
        if self.modality in ("ct", "mri"):
            return x_true > 0.02
        return torch.ones_like(x_true, dtype=torch.bool)

    def solver(self, name: str):
        """Solver ``name`` with this problem's tuned preset (the solver's defaults where none was tuned)."""
        from ..solvers import SOLVERS

        if name not in SOLVERS:
            raise ValueError(f"unknown solver {name!r}; known solvers: {', '.join(SOLVERS)}")
        return SOLVERS[name](**self.presets.get(name, {}))

    @property
    def channels(self) -> int:
        return self.data.channels

    @property
    def depth(self) -> int | None:
        """Slices per volume for volume problems (one volume per problem, slices on the batch axis), else None."""
        return self.data.depth

    @property
    def is_volume(self) -> bool:
        return self.data.depth is not None

    def build_prior(self, name: str | None = None, *, chunk_size: int = 8):
        """The problem's prior (or the shipped prior ``name``), ready for its images: for volumes the
        2D prior applied slice by slice, ``chunk_size`` slices at a time
        (:class:`~invdiff.priors.SliceStackPrior`)."""
        from ..priors import SliceStackPrior, load_prior

        prior = load_prior(self.prior if name is None else name)
        return SliceStackPrior(prior, chunk_size=chunk_size) if self.is_volume else prior

    def images(self, split: str, n: int) -> torch.Tensor:
        """``n`` ground-truth images of ``split`` (``"validation"`` or ``"test"``), seeded."""
        return self.data.images(split, n, self.size)

    def make(self, split: str = "test", n: int = 1, *, seed: int = 0) -> Problem:
        """A batch of ``n`` measured images of ``split``; ``seed`` draws the measurement noise."""
        x = self.images(split, n)
        return Problem.simulate(x, self.operator(), self.sigma_y, generator=torch.Generator().manual_seed(seed))


def _ops():
    from .. import operators as op

    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731 — fixed operator seeds
    return {
        "ct-sparse-8": lambda: op.ct_sparse_view(64, 8),
        "ct-sparse-32": lambda: op.ct_sparse_view(64, 32),
        "ct-limited-90": lambda: op.ct_limited_angle(64, 90.0, 45),
        "mri-4x": lambda: op.mri_cartesian(64, 4.0, generator=g(4)),
        "mri-8x": lambda: op.mri_cartesian(64, 8.0, generator=g(8)),
        "deblur-gauss": lambda: op.gaussian_blur((3, 64, 64), 2.0),
        "deblur-motion": lambda: op.motion_blur((3, 64, 64), 9.0, 30.0),
        "inpaint-box": lambda: op.box_inpainting((3, 64, 64)),
        "inpaint-random-70": lambda: op.random_inpainting((3, 64, 64), 0.7, generator=g(70)),
        "sr-4x": lambda: op.super_resolution((3, 64, 64), 4),
        "ct3d-sparse-8": lambda: op.volume_ct(64, 8),
        "mri3d-4x": lambda: op.volume_mri(32, 64, 4.0, generator=g(43)),
        # real images at real sizes
        "ct256-sparse-8": lambda: op.ct_sparse_view(256, 8),
        "ct256-sparse-32": lambda: op.ct_sparse_view(256, 32),
        "ct256-limited-90": lambda: op.ct_limited_angle(256, 90.0, 90),
        "ct256-fan-32": lambda: op.ct_sparse_view(256, 32, geometry="fan"),
        "ct512-sparse-32": lambda: op.ct_sparse_view(512, 32),
        "mri256-4x": lambda: op.mri_cartesian(256, 4.0, generator=g(256 + 4)),
        "mri256-8x": lambda: op.mri_cartesian(256, 8.0, generator=g(256 + 8)),
        "mri256-8x-mc": lambda: op.mri_cartesian(256, 8.0, coils=8, generator=g(256 + 80)),
        "photo256-deblur-gauss": lambda: op.gaussian_blur((3, 256, 256), 2.0),
        "photo256-deblur-motion": lambda: op.motion_blur((3, 256, 256), 9.0, 30.0),
        "photo256-inpaint-box": lambda: op.box_inpainting((3, 256, 256)),
        "photo256-inpaint-random-70": lambda: op.random_inpainting((3, 256, 256), 0.7, generator=g(256 + 70)),
        "photo256-sr-4x": lambda: op.super_resolution((3, 256, 256), 4),
        "mri3d-real-4x": lambda: op.volume_mri(64, 128, 4.0, generator=g(128 + 4)),
    }


def _tuned_presets() -> dict:
    """``{problem: {solver: params}}`` from ``presets.json`` (written by ``benchmarks/tune_presets.py``)."""
    import json
    from pathlib import Path

    path = Path(__file__).with_name("presets.json")
    if not path.is_file():
        return {}
    problems = json.loads(path.read_text())["problems"]
    return {name: {solver: dict(c["params"]) for solver, c in r.items()} for name, r in problems.items()}


def _calibrations() -> dict:
    """``{problem: {method: calibration dict}}`` from ``calibration.json`` (``benchmarks/uncertainty.py``)."""
    import json
    from pathlib import Path

    path = Path(__file__).with_name("calibration.json")
    return json.loads(path.read_text())["problems"] if path.is_file() else {}


def _specs() -> dict:
    ops = _ops()
    tuned = _tuned_presets()
    cal = _calibrations()
    ct, mri, photos = Phantoms("ct"), Phantoms("mri"), PhotoCrops()
    rows = [
        ("ct-sparse-8", "parallel-beam CT, 8 views over 180°", 0.005, ct, "phantom64"),
        ("ct-sparse-32", "parallel-beam CT, 32 views over 180°", 0.005, ct, "phantom64"),
        ("ct-limited-90", "parallel-beam CT, 45 views over 90° (limited angle)", 0.005, ct, "phantom64"),
        ("mri-4x", "Cartesian MRI, 4× random lines, 8 % centre", 0.005, mri, "phantom64"),
        ("mri-8x", "Cartesian MRI, 8× random lines, 8 % centre", 0.005, mri, "phantom64"),
        ("deblur-gauss", "Gaussian blur σ = 2 px (circular)", 0.02, photos, "photo64"),
        ("deblur-motion", "motion blur, 9 px at 30° (circular)", 0.02, photos, "photo64"),
        ("inpaint-box", "centred 32×32 box missing", 0.01, photos, "photo64"),
        ("inpaint-random-70", "70 % of pixels missing at random", 0.01, photos, "photo64"),
        ("sr-4x", "4× super-resolution, bicubic anti-aliasing", 0.01, photos, "photo64"),
        ("ct3d-sparse-8", "3D parallel-beam CT, 8 views per axial slice", 0.005, PhantomVolume("ct", 32), "phantom64"),
        ("mri3d-4x", "3D Cartesian MRI, 4×, an independent mask per slice", 0.005, PhantomVolume("mri", 32),
         "phantom64"),
    ]
    real_ct, real_mri, real_photo = RealImages("ct"), RealImages("mri"), RealImages("photo", channels=3)
    real = [  # (name, description, sigma_y, data, prior, size)
        ("ct256-sparse-8", "real CT, parallel beam, 8 views over 180°", 0.005, real_ct, "ct", 256),
        ("ct256-sparse-32", "real CT, parallel beam, 32 views over 180°", 0.005, real_ct, "ct", 256),
        ("ct256-limited-90", "real CT, parallel beam, 90 views over 90° (limited angle)", 0.005, real_ct,
         "ct", 256),
        ("ct256-fan-32", "real CT, fan beam, 32 views over 360° (source 4 and detector 2 image widths from the axis, "
         "10° half fan angle)", 0.005, real_ct,
         "ct", 256),
        ("ct512-sparse-32", "real CT at the native DICOM size, parallel beam, 32 views (one validation and one test "
         "image: the packages ship one 512² CT slice per split outside the held-out set)", 0.005, real_ct,
         "ct", 512),
        ("mri256-4x", "real brain MRI, Cartesian 4× random lines, 8 % centre, single coil", 0.005, real_mri,
         "mri-brain", 256),
        ("mri256-8x", "real brain MRI, Cartesian 8× random lines, 8 % centre, single coil", 0.005, real_mri,
         "mri-brain", 256),
        ("mri256-8x-mc", "real brain MRI, Cartesian 8×, 8 coils (invdiff's synthetic smooth coil maps, "
         "Σ|S|² = 1)", 0.005, real_mri, "mri-brain", 256),
        ("photo256-deblur-gauss", "real photographs, Gaussian blur σ = 2 px (circular)", 0.02, real_photo, "photo",
         256),
        ("photo256-deblur-motion", "real photographs, motion blur 9 px at 30° (circular)", 0.02, real_photo,
         "photo", 256),
        ("photo256-inpaint-box", "real photographs, centred 128×128 box missing", 0.01, real_photo, "photo", 256),
        ("photo256-inpaint-random-70", "real photographs, 70 % of pixels missing at random", 0.01, real_photo,
         "photo", 256),
        ("photo256-sr-4x", "real photographs, 4× super-resolution, bicubic anti-aliasing", 0.01, real_photo,
         "photo", 256),
        ("mri3d-real-4x", "real brain MRI volume (64 axial slices of 128², Colin27 for test), 4×, a mask per "
         "slice", 0.005, RealVolume("mri", 64), "mri-brain", 128),
    ]
    specs = {name: ProblemSpec(name, desc, ops[name], sigma_y, data, prior, presets=tuned.get(name, {}),
                               calibrations=cal.get(name, {}))
             for name, desc, sigma_y, data, prior in rows}
    specs.update({name: ProblemSpec(name, desc, ops[name], sigma_y, data, prior, size=size,
                                    presets=tuned.get(name, {}), calibrations=cal.get(name, {}),
                                    max_images=1 if size == 512 else None)
                  for name, desc, sigma_y, data, prior, size in real})
    return specs


PROBLEMS: dict[str, ProblemSpec] = _specs()


def get_problem(name: str) -> ProblemSpec:
    """The spec called ``name``; unknown names raise ``ValueError`` listing the known ones."""
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; known problems: {', '.join(PROBLEMS)}")
    return PROBLEMS[name]
