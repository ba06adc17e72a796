"""Image sources of the named problems: where the ground-truth images of each split come from.

A source is a small frozen object with ``channels``, ``depth`` (``None`` for 2D images) and
``images(split, n, size)``: ``n`` seeded ground-truth images of ``split`` (``"validation"``
or ``"test"``, :data:`invdiff.data.splits.SPLIT_SEEDS`). :class:`~invdiff.problems.ProblemSpec`
holds one, so no caller decodes a data name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .splits import PHOTO_HELD_OUT, PHOTO_TRAIN, SPLIT_SEEDS

__all__ = ["ImageSource", "Phantoms", "PhantomVolume", "PhotoCrops", "RealImages", "RealVolume"]


def _generator(split: str) -> torch.Generator:
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEEDS)}, got {split!r}")
    return torch.Generator().manual_seed(SPLIT_SEEDS[split])


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    return n


class ImageSource:
    """Base class: ``channels``, ``depth`` and ``images(split, n, size)``."""

    channels: int = 1
    depth: int | None = None

    def images(self, split: str, n: int, size: int) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True)
class Phantoms(ImageSource):
    """Seeded 2D body phantoms (:func:`invdiff.data.body_phantoms`) with ``"ct"`` or ``"mri"`` contrast."""

    contrast: str = "ct"

    def images(self, split, n, size):
        from .phantoms import body_phantoms

        g = _generator(split)
        return body_phantoms(_check_n(n), size, self.contrast, generator=g)

    def __str__(self):
        return f"phantoms-{self.contrast}"


@dataclass(frozen=True)
class PhantomVolume(ImageSource):
    """One seeded body volume of ``depth`` slices (:func:`invdiff.data.body_volume`) per problem."""

    contrast: str = "ct"
    depth: int = 32

    def images(self, split, n, size):
        from .phantoms import body_volume

        g = _generator(split)
        if _check_n(n) != 1:
            raise ValueError(f"this is a volume problem: its batch is the {self.depth} slices of one volume, "
                             f"so n must be 1, got {n}")
        return body_volume(self.depth, size, self.contrast, generator=g)

    def __str__(self):
        return f"volume-{self.contrast}"


@dataclass(frozen=True)
class PhotoCrops(ImageSource):
    """RGB crops of the photographs scikit-image ships: validation from :data:`PHOTO_TRAIN`,
    test from :data:`PHOTO_HELD_OUT` (never trained on)."""

    channels: int = 3

    def images(self, split, n, size):
        from .io import photo_crops

        g = _generator(split)
        return photo_crops(PHOTO_HELD_OUT if split == "test" else PHOTO_TRAIN, _check_n(n), size, g)

    def __str__(self):
        return "photos"


@dataclass(frozen=True)
class RealImages(ImageSource):
    """Real images of one corpus of :mod:`invdiff.data.corpora` (``"ct"``, ``"mri"``, ``"photo"``):
    the validation split tunes, the test split reports; both are disjoint (by subject or source
    file) from each other and from the training split."""

    corpus: str = "ct"
    channels: int = 1

    def images(self, split, n, size):
        from .corpora import corpus_images

        if split not in SPLIT_SEEDS:
            raise ValueError(f"split must be one of {sorted(SPLIT_SEEDS)}, got {split!r}")
        return corpus_images(self.corpus, split, size, _check_n(n))

    def __str__(self):
        return f"real {self.corpus} ({self.corpus_description()})"

    def corpus_description(self) -> str:
        from .corpora import corpus

        return "; ".join(f"{split}: {', '.join(s.subject for s in corpus(self.corpus, split))}"
                         for split in ("validation", "test"))


@dataclass(frozen=True)
class RealVolume(ImageSource):
    """One real brain volume per split, shipped in ``invdiff/data/real/`` (``mri-<split>-volume.npy``,
    written by ``scripts/make_real_slices.py``): ``depth`` axial slices of ``size × size``."""

    corpus: str = "mri"
    depth: int = 64

    def images(self, split, n, size):
        import numpy as np

        from .corpora import REAL_DIR

        if split not in SPLIT_SEEDS:
            raise ValueError(f"split must be one of {sorted(SPLIT_SEEDS)}, got {split!r}")
        if _check_n(n) != 1:
            raise ValueError(f"this is a volume problem: its batch is the {self.depth} slices of one volume, "
                             f"so n must be 1, got {n}")
        path = REAL_DIR / f"{self.corpus}-{split}-volume.npy"
        if not path.is_file():
            raise FileNotFoundError(f"the {split} volume is not shipped ({path}); run scripts/make_real_slices.py")
        vol = torch.as_tensor(np.load(path).astype(np.float32) / 65535.0)
        if tuple(vol.shape) != (self.depth, size, size):
            raise ValueError(f"{path} holds a volume of shape {tuple(vol.shape)}, expected ({self.depth}, {size}, {size})")
        return vol[:, None]

    def __str__(self):
        return f"real {self.corpus} volume"
