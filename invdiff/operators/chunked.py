"""An operator applied a chunk of slices at a time, so its intermediate arrays stay bounded.

Slices sit on the batch axis, so every 2D operator applies to a volume ``(D, C, H, W)`` slice
by slice. Some build large intermediates per call (CT rotates a copy of every slice for every
view); :class:`Chunked` applies ``A``, ``Aᵀ`` and ``AᵀA`` to at most ``chunk`` slices at once,
like :class:`invdiff.priors.SliceStackPrior` bounds the network's activations. Operators with
per-slice parameters (``batch`` set, e.g. one MRI mask per slice) are applied whole: their
parameters are tied to the full stack.
"""

from __future__ import annotations

import torch

from ..validation import positive_int

__all__ = ["Chunked", "chunked"]


class Chunked:
    """``A``, ``A_adjoint`` and ``normal`` (``AᵀA``) of ``physics`` over chunks of ``chunk`` slices."""

    def __init__(self, physics, chunk: int | None):
        self.physics = physics
        self.chunk = None if chunk is None else positive_int(chunk, "chunk")
        # operators with per-slice parameters must see the whole stack
        self._split = self.chunk is not None and not getattr(physics, "batch", None)

    def _apply(self, f, t: torch.Tensor) -> torch.Tensor:
        if not self._split or t.shape[0] <= self.chunk:
            return f(t)
        return torch.cat([f(c) for c in t.split(self.chunk)])

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(self.physics.A, x)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._apply(self.physics.A_adjoint, y)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``AᵀA x``, a chunk at a time (one forward and one adjoint per chunk)."""
        return self._apply(lambda c: self.physics.A_adjoint(self.physics.A(c)), x)


def chunked(physics, chunk: int | None) -> Chunked:
    """Wrap ``physics`` so that it applies at most ``chunk`` slices at once (``None``: all at once)."""
    return Chunked(physics, chunk)
