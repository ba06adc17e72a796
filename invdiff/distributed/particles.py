"""SMC's particles over the ranks of a ``torch.distributed`` process group.

Each of the ``R`` ranks holds ``K/R`` particles of every problem and runs the same
:class:`invdiff.solvers.SMC` code (one batched network call over its own particles per step);
:class:`RankParticles`, the particle communicator (:mod:`invdiff.solvers.resampling`), does the
exchanges that couple them:

===================  ===========================  ==========================================
when                 what                         traffic per rank
===================  ===========================  ==========================================
every step           ESS: two log-sum-exps        4 all-reduces of ``N`` numbers (max, sum)
resampling           log-weights                  all-gather of the ``(N, K)`` log-weights
resampling           ancestors                    broadcast of ``(N, K)`` indices from rank 0
resampling           the particles that move      point-to-point, each moved row once
last step            every particle               all-gather of ``K·N`` images
===================  ===========================  ==========================================

**Moving particles.** After resampling, slot ``j`` holds a copy of particle ``a_j``; a rank needs
only the ancestors of its own slots that live on other ranks, and receives each of them once
(however many slots copy it) straight from its owner (``isend``/``irecv``). With systematic or
stratified resampling the ancestors are sorted (``a_j`` is non-decreasing in ``j``), so only the
particles near the rank boundaries move, as many as the weight each rank gains or loses; with
multinomial resampling (ancestors in random order) at most ``(R−1)/R`` of the slots of a
resampled problem, fewer where slots share an ancestor (41 % in the 2-rank tests). An all-gather of
the particles instead would bring ``(R−1)·K·N/R`` rows to every rank at every resampling.

**What equals the one-process run.** Every rank draws the whole ``K``-particle noise from its
generator (all start from the same seed, so all hold the same state) and keeps its own rows
(cost: drawing ``K·N`` noise images per step on every rank instead of ``K·N/R``). So, with the
same seed: the particles, their log-weights, potentials and the resampling ancestors at every
step, the draws and the weighted mean equal those of ``invdiff.solve(..., SMC(particles=K))``
bit for bit where the prior and the operator compute each image the same in a batch of ``K·N/R``
as in one of ``K·N`` (the exact Gaussian denoiser and a dense operator at 16 vs 8 images, and
phantom64's network at 8 vs 4, on this project's CPU), and to float rounding where the kernels
change with the batch size (the same Gaussian denoiser at 4 vs 2 images: 4e-16). The ESS is normalised
by the all-reduced log-sum-exp, whose sums run in another order than one process's: it equals
the one-process ESS to rounding (relative 1e-15), not bit for bit — so the decision to resample
could differ only for an ESS within rounding of ``ess_threshold·K``. The last ESS (from the
gathered log-weights) is bit-equal.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass, replace

import torch
import torch.distributed as dist

from ..solve import solve
from . import DistributedError, is_initialized, rank, world_size

__all__ = ["RankParticles", "solve_particles", "PER_PARTICLE_RECORDS"]

#: Per-step records that hold one value per particle (``(steps, K·N)``, particle-major): gathered
#: from every rank. The others (``"ess"``) are per problem, already the same on every rank.
PER_PARTICLE_RECORDS = ("residual",)


class RankParticles:
    """Particle communicator over the default ``torch.distributed`` process group.

    Rank ``r`` holds the rows ``[r·L, (r+1)·L)`` of every particle tensor (module
    :mod:`invdiff.solvers.resampling`). Tensors travel on their own device: CPU tensors need the
    gloo backend, CUDA tensors nccl. Collective: every rank must call each method in the same
    order with tensors of the same shapes.
    """

    def __init__(self):
        if not is_initialized():
            raise DistributedError("RankParticles needs a process group (invdiff.distributed.process_group())")
        self.rank = rank()
        self.size = world_size()
        #: Particle rows this rank has received from the others in :meth:`take` (the traffic of resampling).
        self.rows_received = 0

    def logsumexp(self, t: torch.Tensor) -> torch.Tensor:
        """``log Σ exp`` over the last axis of every rank's ``t``: ``(N, L) → (N,)``, the same on every rank."""
        top = t.amax(-1)
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # all −inf (or +inf): no shift
        total = torch.exp(t - top[..., None]).sum(-1)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return torch.log(total) + top

    def all_gather(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """Every rank's ``t`` (same shape on every rank) concatenated along ``dim`` in rank order."""
        t = t.contiguous()
        parts = [torch.empty_like(t) for _ in range(self.size)]
        dist.all_gather(parts, t)
        return torch.cat(parts, dim)

    def broadcast(self, t: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``t``, on every rank (a new tensor; ``t`` is not modified)."""
        out = t.clone().contiguous()
        dist.broadcast(out, src=0)
        return out

    def take(self, tensors, index: torch.Tensor) -> list:
        """This rank's rows of ``whole[index]`` for each tensor (``None`` passes through).

        ``index`` ``(R·L,)`` holds, for every row of the whole system, the row it copies; it must be
        the same on every rank. Tensors of one dtype and device travel together: each rank sends
        to each other rank, once, the rows of its own that the other's slots copy.
        """
        present = [t for t in tensors if t is not None]
        if not present:
            return list(tensors)
        rows = present[0].shape[0]
        index = index.reshape(-1).to("cpu")
        if index.numel() != rows * self.size or any(t.shape[0] != rows for t in present):
            raise ValueError(f"take: {index.numel()} indices for {self.size} ranks of {rows} rows each")
        groups: dict = {}
        for i, t in enumerate(tensors):
            if t is not None:
                groups.setdefault((t.dtype, t.device), []).append(i)
        out = list(tensors)
        for tag, members in enumerate(groups.values()):
            packed = torch.cat([tensors[i].reshape(rows, -1) for i in members], 1)
            moved = self._take_rows(packed, index, rows, tag)
            widths = [tensors[i][:1].numel() for i in members]  # numbers per row
            for i, part in zip(members, torch.split(moved, widths, 1)):
                out[i] = part.reshape(tensors[i].shape)
        return out

    def _take_rows(self, packed: torch.Tensor, index: torch.Tensor, rows: int, tag: int) -> torch.Tensor:
        """``packed`` ``(L, W)``: this rank's rows of the whole ``(R·L, W)`` taken at ``index``."""
        me = self.rank
        mine = index[me * rows:(me + 1) * rows]
        owner = mine // rows
        ops, received = [], {}
        for peer in range(self.size):
            if peer == me:
                continue
            theirs = index[peer * rows:(peer + 1) * rows]
            wanted = torch.unique(theirs[theirs // rows == me])  # sorted; each row once
            if wanted.numel():
                payload = packed[(wanted - me * rows).to(packed.device)].contiguous()
                ops.append(dist.P2POp(dist.isend, payload, peer, tag=tag))
            needed = torch.unique(mine[owner == peer])
            if needed.numel():
                buffer = packed.new_empty((needed.numel(), packed.shape[1]))
                received[peer] = (needed, buffer)
                self.rows_received += needed.numel()
                ops.append(dist.P2POp(dist.irecv, buffer, peer, tag=tag))
        if ops:
            for request in dist.batch_isend_irecv(ops):
                request.wait()
        out = packed.new_empty(packed.shape)
        here = owner == me
        out[here.to(packed.device)] = packed[(mine[here] - me * rows).to(packed.device)]
        for peer, (needed, buffer) in received.items():
            there = owner == peer
            out[there.to(packed.device)] = buffer[torch.searchsorted(needed, mine[there]).to(packed.device)]
        return out


def solve_particles(problem, prior, solver, *, steps: int = 100, generator: torch.Generator | None = None,
                    comm=None, **kwargs):
    """:func:`invdiff.solve` with the particles of a particle solver (SMC) split over the ranks.

    Inside a process group of ``N`` ranks (:func:`invdiff.distributed.process_group`), each rank
    runs ``K/N`` of the ``K = solver.particles`` particles of every problem (module docstring);
    without one (or with one rank) this is exactly ``invdiff.solve``. Call it on every rank with
    the same arguments and a generator seeded the same way.

    Parameters
    ----------
    problem, prior : Problem, Prior
        As for :func:`invdiff.solve`, the same on every rank.
    solver : SMC
        A particle solver (a dataclass with a ``comm`` field); ``particles`` a multiple of ``N``.
    steps : int
        Number of noise levels.
    generator : torch.Generator, optional
        Seeded the same on every rank (the particles of the one-process run need it).
    comm : particle communicator, optional
        Default :class:`RankParticles` over the default process group.
    **kwargs
        Passed to :func:`invdiff.solve` (``sigmas``, ``num_samples``, ``record``, ``callback``,
        ``progress`` — shown on rank 0 only). A ``callback`` sees this rank's particles.

    Returns
    -------
    Result
        On every rank the whole result of rank 0's draw: ``samples`` ``(K·S, B, ...)``, ``x_hat``,
        ``std`` and the records (per-particle ones gathered in particle order, see
        :data:`PER_PARTICLE_RECORDS`) are the same on every rank; ``seconds``,
        ``network_seconds`` and ``peak_memory_mb`` are each rank's own, as are ``nfe`` (every
        rank makes the one-process number of batched calls, on ``K/N`` particles) and ``vjp``.

    Raises
    ------
    TypeError
        ``solver`` has no particles to split.
    ValueError
        ``K`` is not a multiple of ``N`` (both named).
    """
    if not (is_dataclass(solver) and any(f.name == "comm" for f in fields(solver))):
        raise TypeError(f"solve_particles splits the particles of a particle solver (SMC); "
                        f"{type(solver).__name__} has none: use invdiff.solve")
    if comm is None:
        if not is_initialized() or world_size() == 1:
            return solve(problem, prior, solver, steps=steps, generator=generator, **kwargs)
        comm = RankParticles()
    if solver.particles % comm.size:
        raise ValueError(f"rank {comm.rank} of {comm.size}: {type(solver).__name__}'s K={solver.particles} particles "
                         f"cannot be split over N={comm.size} ranks: K must be a multiple of N")
    kwargs["progress"] = kwargs.get("progress", True) and comm.rank == 0
    result = solve(problem, prior, replace(solver, comm=comm), steps=steps, generator=generator, **kwargs)
    trace = {k: (comm.all_gather(v, 1) if k in PER_PARTICLE_RECORDS else v) for k, v in result.trace.items()}
    return replace(result, trace=trace)
