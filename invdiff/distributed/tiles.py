"""One large image's network calls spread over the ranks: the patches of a patch prior, or a batch.

Every rank holds the whole 2D problem and runs the same solver with the same generator; only the
denoiser's batch is split. A call ``D(z)`` on ``n`` rows (the patches of
:class:`~invdiff.priors.PatchPrior`'s grid, or the samples of a batched call) becomes

.. math:: D(z) = \\operatorname{gather}_r\\, D(z_{lo_r : hi_r}),

each rank ``r`` denoising one contiguous block of rows (:func:`~invdiff.distributed.volume.split_slices`:
as even as possible) and all ranks receiving every block. Every rank therefore gets the same
tensor a one-process call returns, the iterates stay equal on all ranks, and the network work
per rank is ``1/N`` of the call's. The split is differentiable, so DPS's vector–Jacobian
products through the denoiser are split the same way: since every rank holds the same graph
downstream, the gather's backward takes this rank's rows of the gradient (no sum over ranks, as
a data-parallel gather would do, which would count the gradient ``N`` times), and the rows'
backward gathers every rank's block of the input gradient.

Blocks differ by at most one row; each is padded to the largest before the gather (a collective
needs equal shapes) and the padding dropped after. A call with fewer rows than ranks runs whole
on every rank.
"""

from __future__ import annotations

import copy

import torch

from ..priors.patch import PatchPrior
from ..priors.prior import Prior
from . import is_initialized, rank, world_size
from .volume import split_slices

__all__ = ["split_rows", "RankBatchPrior", "distribute_prior"]


def _gather_blocks(block: torch.Tensor, blocks) -> torch.Tensor:
    """Every rank's ``block`` (rows ``blocks[r]``), concatenated in rank order, on every rank."""
    largest = max(b - a for a, b in blocks)
    pad = largest - block.shape[0]
    if pad:
        block = torch.cat([block, block.new_zeros((pad,) + tuple(block.shape[1:]))])
    parts = [torch.empty_like(block) for _ in blocks]
    torch.distributed.all_gather(parts, block.contiguous())
    return torch.cat([p[: b - a] for p, (a, b) in zip(parts, blocks)])


class _OwnRows(torch.autograd.Function):
    """``t[lo:hi]``; backward: every rank's block of the gradient gathered into the whole (the ranks
    hold the same ``t``, and each computed the gradient through its own rows only)."""

    @staticmethod
    def forward(ctx, t, blocks, me):
        ctx.blocks = blocks
        lo, hi = blocks[me]
        return t[lo:hi]

    @staticmethod
    def backward(ctx, grad):
        return _gather_blocks(grad, ctx.blocks), None, None


class _GatherRows(torch.autograd.Function):
    """The blocks gathered; backward: this rank's rows of the gradient (every rank holds the same
    downstream graph, so nothing is summed over ranks, unlike a data-parallel gather)."""

    @staticmethod
    def forward(ctx, block, blocks, me):
        ctx.rows = blocks[me]
        return _gather_blocks(block, blocks)

    @staticmethod
    def backward(ctx, grad):
        lo, hi = ctx.rows
        return grad[lo:hi], None, None


def split_rows(fn, *tensors):
    """``fn(*tensors)`` on dim-0 blocks over the ranks, gathered in rank order on every rank.

    Differentiable: gradients reach every rank's ``tensors`` whole, as in one process. Without a
    process group, with one rank, or with fewer rows than ranks: ``fn(*tensors)``.
    """
    n = tensors[0].shape[0]
    world = world_size() if is_initialized() else 1
    if world == 1 or n < world:
        return fn(*tensors)
    blocks, me = split_slices(n, world), rank()
    lo, hi = blocks[me]
    mine = [_OwnRows.apply(t, blocks, me) if t.requires_grad else t[lo:hi] for t in tensors]
    return _GatherRows.apply(fn(*mine), blocks, me)


class RankBatchPrior(Prior):
    """``prior`` with the batch of every :meth:`denoise` call split over the ranks (:func:`split_rows`)."""

    def __init__(self, prior: Prior):
        super().__init__()
        self.prior = prior
        for name in ("sigma_min", "sigma_max", "img_shape", "channels", "data_range", "data_std", "chunk_size"):
            setattr(self, name, getattr(prior, name))

    def check_input(self, x):
        self.prior.check_input(x)

    def _denoise(self, x, sigma):
        return split_rows(self.prior._denoise, x, sigma)

    def extra_repr(self) -> str:
        return f"ranks={world_size() if is_initialized() else 1}"


def distribute_prior(prior: Prior) -> Prior:
    """``prior`` with its network calls split over the ranks of the process group.

    A :class:`~invdiff.priors.PatchPrior` splits the patches of its grid (a large image's call has
    many, whatever the batch); any other prior splits the batch of each call. Returns ``prior``
    itself without a process group or with one rank. The input is not modified: the patch prior
    comes back as a shallow copy sharing the network.
    """
    if not is_initialized() or world_size() == 1:
        return prior
    if isinstance(prior, PatchPrior):
        out = copy.copy(prior)
        out.batch_map = split_rows
        return out
    return RankBatchPrior(prior)
