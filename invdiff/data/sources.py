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

__all__ = ["ImageSource", "Phantoms", "PhantomVolume", "PhotoCrops"]


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
