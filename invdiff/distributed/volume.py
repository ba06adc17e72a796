"""A volume's slices spread over the ranks of a process group: DiffusionMBIR on blocks of slices.

A volume ``(D, C, H, W)`` is cut into contiguous blocks of slices, one per rank and as even as
possible (:func:`split_slices`: rank ``r`` of ``N`` holds slices ``lo_r … hi_r − 1``, the first
``D mod N`` ranks one slice more). Each rank runs the slice prior and the operator on its own
slices only (:func:`block_operator`), and :class:`invdiff.solvers.MBIR` runs its usual
``init``/``step``/``admm`` on the block, with a :class:`BlockCoupling` that makes its five
volume-wide quantities those of the whole volume:

* inner products and norms (the coupled CG's step sizes and stopping test, the corrector's step
  ``ε = 2 (r ‖z‖ / ‖s_θ‖)²``): ``⟨a, b⟩ = Σ_r Σ_{i ∈ block r} a_i b_i``, each rank's sum gathered
  and added in rank order, so every rank holds the same bits and takes the same branches;
* ``D_z`` across the blocks' edges: ``(D_z x)_{hi−1} = x_{hi} − x_{hi−1}`` needs the next rank's
  first slice, ``(D_z^T y)_{lo} = y_{lo−1} − y_{lo}`` the previous rank's last one: one halo slice
  is exchanged with each neighbour per application (:class:`SliceHalo`);
* ``‖A‖`` (power iteration, λ and ρ are relative to ``‖A‖²``): with a shared operator every rank
  computes the same value alone; with one operator per slice (MRI masks) the power iteration
  runs on the blocks with the norms above;
* the noise: every rank advances the one ``generator`` through the whole volume's draw and keeps
  its own block (:func:`skip_draws` discards the other slices' numbers a few slices at a time, so
  no rank holds the whole volume's noise). Each slice therefore receives exactly the numbers it
  receives in one process, whatever the split.

The iterates on rank ``r`` are then the rows ``lo_r … hi_r − 1`` of the one-process iterates,
up to the order of floating-point sums (relative differences around 1e-12 in float64).

**Memory.** The solver's working set — the iterate, the denoised estimate, ADMM's ``z`` and
``u``, ``Aᵀy``, CG's vectors, the network's activations per chunk — scales with the rank's
slices: ``1/N`` of the volume's. What each rank still holds whole is its input: the ``problem``
(the measurement of the whole volume, and the operator's per-slice parameters) that every rank
builds, and on rank 0 the gathered result.

**Cost.** Per CG iteration, two all-gathers of one number and two halo exchanges of one slice
with each neighbour; per noise draw, every rank generates (and discards most of) the whole
volume's random numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math

import deepinv
import torch

from ..devices import module_device, randn
from ..operators import mri_cartesian
from ..problem import Problem
from ..result import Result
from ..solve import solve
from ..solvers.base import noise_like
from ..solvers.mbir import MBIR, Coupling
from . import all_gather_object, is_initialized, rank, world_size

__all__ = ["split_slices", "block_operator", "skip_draws", "SliceHalo", "BlockCoupling", "solve_volume"]


def split_slices(depth: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous blocks of ``depth`` slices for ``parts`` ranks, as even as possible.

    Block ``r`` is ``[lo_r, hi_r)`` with ``hi_r − lo_r = ⌊D/N⌋ + [r < D mod N]`` and
    ``lo_0 = 0``, ``lo_{r+1} = hi_r``, ``hi_{N−1} = D``.

    Parameters
    ----------
    depth : int
        Number of slices ``D`` of the volume.
    parts : int
        Number of ranks ``N``.

    Returns
    -------
    list of (int, int)
        ``(lo, hi)`` of each rank, in rank order.

    Raises
    ------
    ValueError
        Fewer slices than ranks (a rank would hold none), naming both numbers.
    """
    for value, name in ((depth, "depth"), (parts, "parts")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if depth < parts:
        raise ValueError(f"the volume has {depth} slice(s) but the process group has {parts} ranks: every rank needs "
                         f"at least one slice (run on at most {depth} rank(s))")
    base, extra = divmod(depth, parts)
    bounds, lo = [], 0
    for r in range(parts):
        hi = lo + base + (1 if r < extra else 0)
        bounds.append((lo, hi))
        lo = hi
    return bounds


def block_operator(physics, lo: int, hi: int):
    """The operator of a volume's slices ``lo … hi − 1``, for a volume operator applied slice by slice.

    An operator shared by all slices (``physics.batch`` unset: CT, a shared MRI mask) is returned
    as is. Cartesian MRI with one mask per slice (:func:`invdiff.operators.volume_mri`) is rebuilt
    with the masks (and coil maps) of those slices, in the operator's dtype and device, so that
    ``block_operator(A, lo, hi).A(x[lo:hi]) == A.A(x)[lo:hi]``. ``physics`` is not modified.

    Parameters
    ----------
    physics : deepinv.physics.Physics
        The whole volume's operator.
    lo, hi : int
        The block's first slice and one past its last.

    Returns
    -------
    deepinv.physics.Physics
        The block's operator.

    Raises
    ------
    ValueError
        An operator with per-slice parameters of another kind, or a block outside its slices
        (pass ``operator=`` to :func:`solve_volume` to split such an operator yourself).
    """
    batch = getattr(physics, "batch", None)
    if not batch:
        return physics
    if not 0 <= lo < hi <= batch:
        raise ValueError(f"slices {lo}..{hi - 1} are not a block of the operator's {batch} slices")
    mask = getattr(physics, "mask", None)
    is_mri = isinstance(physics, (deepinv.physics.MRI, deepinv.physics.MultiCoilMRI))
    if not (is_mri and isinstance(mask, torch.Tensor) and mask.shape[0] == batch and hasattr(physics, "real_input")):
        raise ValueError(f"{type(physics).__name__.lstrip('_')} has per-slice parameters (batch = {batch}) that "
                         f"invdiff cannot split; pass operator=lambda lo, hi: <the operator of slices lo..hi-1>")
    maps = getattr(physics, "coil_maps", None)
    block = mri_cartesian(tuple(physics.img_shape), mask=mask[lo:hi, 0].detach().cpu(),
                          real_input=physics.real_input, n_slices=hi - lo,
                          coil_maps=None if maps is None else maps[0].detach().cpu())
    block = block.to(device=mask.device)
    block.mask = mask[lo:hi].clone()  # the operator's own dtype and device
    if maps is not None:
        block.coil_maps = maps[lo:hi].clone() if maps.shape[0] == batch > 1 else maps.clone()
    block.batch = hi - lo  # exactly this block's slices, one or more
    block.acceleration = getattr(physics, "acceleration", getattr(block, "acceleration", None))
    return block


def _chunk_slices(slice_shape) -> int:
    """Slices drawn (or discarded) at once: about a million numbers."""
    return max(1, 2**20 // max(1, math.prod(slice_shape)))


def skip_draws(generator: torch.Generator, slices: int, slice_shape, dtype: torch.dtype) -> None:
    """Advance ``generator`` past the standard normal draws of ``slices`` slices, a few at a time.

    After it, ``generator`` stands where ``torch.randn((slices,) + slice_shape, dtype=dtype,
    generator=generator)`` would leave it (for generators that draw a tensor slice by slice
    identically, which :func:`solve_volume` checks), without holding more than about a million
    numbers at once.

    Parameters
    ----------
    generator : torch.Generator
        Advanced in place (that is its purpose).
    slices : int
        Number of slices to skip (nothing for ``<= 0``).
    slice_shape : tuple of int
        ``(C, H, W)`` of one slice.
    dtype : torch.dtype
        The dtype of the draws to skip (a float32 and a float64 draw consume different amounts).
    """
    if slices <= 0:
        return
    chunk = min(slices, _chunk_slices(slice_shape))
    dev = "cpu" if generator is None else generator.device
    buf = torch.empty((chunk,) + tuple(slice_shape), dtype=dtype, device=dev)
    while slices > 0:
        k = min(slices, chunk)
        buf[:k].normal_(generator=generator)
        slices -= k


@functools.lru_cache(maxsize=32)
def _draws_split_exactly(slice_shape: tuple, dtype: torch.dtype, device: str) -> bool:
    """Whether one draw of 3 slices equals a draw of 1, a skipped slice, and a draw of 1 (and leaves
    the generator in the same state): true for CPU generators when a slice holds a multiple of 16
    numbers (torch draws normals in blocks of 16)."""
    g1, g2 = torch.Generator(device).manual_seed(1234), torch.Generator(device).manual_seed(1234)
    whole = torch.randn((3,) + slice_shape, generator=g1, dtype=dtype, device=device)
    first = torch.randn((1,) + slice_shape, generator=g2, dtype=dtype, device=device)
    skip_draws(g2, 1, slice_shape, dtype)
    last = torch.randn((1,) + slice_shape, generator=g2, dtype=dtype, device=device)
    return (torch.equal(whole[:1], first) and torch.equal(whole[2:], last)
            and torch.equal(g1.get_state(), g2.get_state()))


class SliceHalo:
    """Exchange of edge slices between ranks holding consecutive blocks of a volume (rank order = slice order).

    The ``halo`` of :class:`invdiff.operators.FiniteDifference`: both methods are collective
    (every rank of the group calls them, in the same order) and exchange one slice with each
    neighbouring rank by point-to-point messages.

    Parameters
    ----------
    rank, world : int
        This rank and the number of ranks; rank ``r`` holds the ``r``-th block.
    group : ProcessGroup, optional
        The process group (default: the default group).
    """

    def __init__(self, rank: int, world: int, group=None):
        self.rank, self.world, self.group = rank, world, group
        self.has_previous = rank > 0
        self.has_next = rank < world - 1

    def _exchange(self, send: torch.Tensor, to: int | None, source: int | None) -> torch.Tensor | None:
        send = send.contiguous()
        buf = None if source is None else torch.empty_like(send)
        ops = []
        if to is not None:
            ops.append(torch.distributed.P2POp(torch.distributed.isend, send, to, self.group))
        if source is not None:
            ops.append(torch.distributed.P2POp(torch.distributed.irecv, buf, source, self.group))
        if ops:
            for request in torch.distributed.batch_isend_irecv(ops):
                request.wait()
        return buf

    def from_next(self, first: torch.Tensor) -> torch.Tensor | None:
        """Send this block's first slice to the previous rank; return the next rank's first slice
        (``None`` on the last rank)."""
        return self._exchange(first, self.rank - 1 if self.has_previous else None,
                              self.rank + 1 if self.has_next else None)

    def from_previous(self, last: torch.Tensor) -> torch.Tensor | None:
        """Send this block's last slice to the next rank; return the previous rank's last slice
        (``None`` on rank 0)."""
        return self._exchange(last, self.rank + 1 if self.has_next else None,
                              self.rank - 1 if self.has_previous else None)


class BlockCoupling(Coupling):
    """MBIR's volume-wide quantities for a rank that holds the slices ``lo … hi − 1`` of a ``depth``-slice volume.

    Every method is collective: all ranks of the group call it together, in the same order (as
    MBIR's ``init``/``step`` do when every rank runs them on its block).

    Parameters
    ----------
    depth : int
        Slices of the whole volume ``D``.
    lo, hi : int
        This rank's block; the blocks of ranks ``0 … N − 1`` must be consecutive (:func:`split_slices`).
    per_slice_operator : bool
        The whole volume's operator has per-slice parameters (``batch`` set: one MRI mask per
        slice), so ``‖A‖`` is the largest over all slices and needs every block.
    halo : bool
        Exchange the edge slices for ``D_z`` (default). ``False`` leaves it out: each block's
        differences stop at its own edges (a Neumann boundary at every split), as if the blocks
        were independent volumes — not the one-process result; for comparison only.
    group : ProcessGroup, optional
        The process group (default: the default group).
    """

    def __init__(self, depth: int, lo: int, hi: int, *, per_slice_operator: bool, halo: bool = True, group=None):
        self.group = group
        self.rank = torch.distributed.get_rank(group)
        self.world = torch.distributed.get_world_size(group)
        if not 0 <= lo < hi <= depth:
            raise ValueError(f"the block {lo}..{hi - 1} is not a block of a volume of {depth} slices")
        self.depth, self.lo, self.hi = depth, lo, hi
        self.per_slice_operator = bool(per_slice_operator)
        self.halo = SliceHalo(self.rank, self.world, group) if halo else None

    def _sum(self, local: torch.Tensor) -> torch.Tensor:
        """``Σ_r local_r``: every rank's number gathered and added in rank order (the same bits on every rank)."""
        mine = local.reshape(1).contiguous()
        parts = [torch.empty_like(mine) for _ in range(self.world)]
        torch.distributed.all_gather(parts, mine, group=self.group)
        return torch.cat(parts).sum()

    def dot(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``⟨a, b⟩ = Σ_r Σ_{i ∈ block r} a_i b_i`` over the whole volume (blocks' sums in double
        precision, :meth:`Coupling.local_dot`), a 0-d tensor of ``a``'s dtype."""
        return self._sum(self.local_dot(a, b)).to(a.dtype)

    def norm(self, t: torch.Tensor) -> torch.Tensor:
        """``‖t‖₂ = (Σ_r Σ_{i ∈ block r} |t_i|²)^{1/2}`` over the whole volume, a 0-d tensor of ``t``'s real dtype."""
        m = t.abs() if t.is_complex() else t
        return self._sum(self.local_dot(m, m)).sqrt().to(m.dtype)

    def noise(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """This block's slices of one standard normal draw for the whole volume.

        The generator stands after this block's slices of the previous draw (:func:`solve_volume`
        places it so before the first); it skips the ``D − hi`` slices after the block and the
        ``lo`` before it in the new draw, and draws the block's own ``hi − lo``.
        """
        if x.shape[0] != self.hi - self.lo:
            raise ValueError(f"expected this rank's {self.hi - self.lo} slice(s), got a batch of {x.shape[0]}")
        skip_draws(generator, self.depth - (self.hi - self.lo), tuple(x.shape[1:]), x.dtype)
        return noise_like(x, generator)

    def operator_norm(self, op, x_shape, *, iters: int, dtype: torch.dtype, generator: torch.Generator,
                      device=None) -> float:
        """``‖A‖`` of the whole volume's operator (see :meth:`Coupling.operator_norm`).

        A shared operator: the same computation on every rank. One operator per slice: the power
        iteration ``x ← AᵀA x / ‖AᵀA x‖``, ``‖A‖² = lim ‖AᵀA x‖`` (``x`` of unit norm), over the
        whole stack — this block's slices of the same random start as one process, and the
        volume's norms — so its value is the largest over all slices' norms, as in one process.
        """
        if not self.per_slice_operator:
            return super().operator_norm(op, x_shape, iters=iters, dtype=dtype, generator=generator, device=device)
        slice_shape = tuple(x_shape[1:])
        skip_draws(generator, self.lo, slice_shape, dtype)
        x = randn((self.hi - self.lo,) + slice_shape, generator=generator, dtype=dtype,
                  device=module_device(op) if device is None else device)
        x = x / self.norm(x)
        s = torch.zeros((), dtype=dtype, device=x.device)
        with torch.no_grad():
            for _ in range(iters):
                z = op.A_adjoint(op.A(x))
                s = self.norm(z)
                x = z / s.clamp_min(torch.finfo(dtype).tiny)
        return float(s.sqrt())


def _digest(generator: torch.Generator) -> str:
    return hashlib.sha256(generator.get_state().cpu().numpy().tobytes()).hexdigest()[:16]


def _check_alike(fields: dict, me: int) -> None:
    """Check that every rank passed the same settings (else a collective would wait forever); a ValueError
    naming the first difference."""
    every = all_gather_object(fields)
    for r, other in enumerate(every):
        for name, value in fields.items():
            theirs = other.get(name)
            if isinstance(value, float) and isinstance(theirs, float) and math.isclose(theirs, value, rel_tol=1e-9):
                continue  # a sum over the measurement: the same data may be summed in another order on another device
            if theirs != value:
                raise ValueError(f"rank {me}: rank {r} called solve_volume with another {name} ({theirs!r} "
                                 f"there, {value!r} here); every rank must pass the same volume problem, solver, "
                                 f"steps and generator seed")


def _gather_rows(t: torch.Tensor, dim: int, sizes: list[int], me: int, group=None) -> torch.Tensor | None:
    """Rank 0: the ranks' tensors concatenated along ``dim`` (rank ``r`` holds ``sizes[r]`` rows); others: None."""
    longest = max(sizes)
    pad = list(t.shape)
    pad[dim] = longest - t.shape[dim]
    padded = torch.cat([t, t.new_zeros(pad)], dim=dim).contiguous()
    parts = [torch.empty_like(padded) for _ in sizes] if me == 0 else None
    torch.distributed.gather(padded, parts, dst=0, group=group)
    if me != 0:
        return None
    return torch.cat([p.narrow(dim, 0, n) for p, n in zip(parts, sizes)], dim=dim)


def solve_volume(problem: Problem, prior, solver: MBIR, *, steps: int = 100, sigmas=None,
                 generator: torch.Generator | None = None, progress: bool = True, record=("residual",),
                 callback=None, gather: bool = True, halo: bool = True, operator=None) -> Result | None:
    """Solve a volume problem with DiffusionMBIR, its slices split over the ranks of the process group.

    Inside a process group of ``N > 1`` ranks (e.g. under ``torchrun``, after
    :func:`invdiff.distributed.init`), every rank calls it with the same arguments; rank ``r``
    takes the slices ``lo_r … hi_r − 1`` of :func:`split_slices`, the operator of those slices
    (:func:`block_operator`) and their measurement, and runs :func:`invdiff.solve`'s loop with
    ``solver`` given a :class:`BlockCoupling`. The result equals the one-process
    ``invdiff.solve(problem, prior, solver, steps=steps, generator=generator)`` up to the order of
    floating-point sums, and ``generator`` ends in the same state. Without a process group (or with
    one rank) it *is* that call.

    Parameters
    ----------
    problem : Problem
        The whole volume's problem: ``y`` of ``D`` slices and a volume operator applied slice by
        slice (:func:`invdiff.operators.volume_ct`, :func:`invdiff.operators.volume_mri`). Every
        rank passes the same one; it is not modified.
    prior : Prior
        The slice prior (e.g. :class:`invdiff.priors.SliceStackPrior`); each rank applies it to
        its own slices only.
    solver : MBIR
        The solver; other solvers are refused (they do not couple the slices: each rank could
        solve its own slices with :func:`invdiff.solve`, but not reproduce the one-process noise).
    steps, sigmas, progress, record, callback
        As in :func:`invdiff.solve`; only rank 0 shows progress, and ``callback`` sees this
        rank's block of the state.
    generator : torch.Generator
        The only source of randomness, seeded alike on every rank (checked). Required with more
        than one rank. It must draw a tensor slice by slice identically (a CPU generator and
        slices of a multiple of 16 numbers; checked), because every rank skips the other slices'
        numbers of each draw.
    gather : bool
        True (default): rank 0 returns the whole volume's :class:`Result` and the other ranks
        ``None``. False: every rank returns its own block's ``Result`` (slices ``lo … hi − 1`` of
        ``split_slices(D, N)[rank]``; nothing gathered).
    halo : bool
        Exchange the blocks' edge slices for ``D_z`` (default); ``False`` makes the blocks
        independent sub-volumes (:class:`BlockCoupling`), for comparison only.
    operator : callable, optional
        ``(lo, hi) -> operator`` of the slices ``lo … hi − 1``, for operators with per-slice
        parameters that :func:`block_operator` cannot split.

    Returns
    -------
    Result or None
        With ``gather``: on rank 0 the volume's ``x_hat`` ``(D, C, H, W)``, ``samples``,
        ``trace`` (per slice, in slice order), ``nfe``/``vjp`` (calls on the whole volume, as in
        one process) and the slowest rank's ``seconds``, ``network_seconds`` and
        ``peak_memory_mb`` (per rank); ``None`` on the other ranks.

    Raises
    ------
    TypeError
        A solver other than MBIR.
    ValueError
        Fewer slices than ranks (both named), no generator, a generator that cannot skip slices
        exactly, or ranks called with different arguments.
    """
    if not isinstance(solver, MBIR):
        raise TypeError(f"solve_volume spreads DiffusionMBIR (invdiff.solvers.MBIR) over ranks, got "
                        f"{type(solver).__name__}: a solver that does not couple the slices can solve each rank's "
                        f"slices with invdiff.solve")
    if solver.coupling is not None:
        raise ValueError("solve_volume sets the solver's coupling itself; pass an MBIR without one")
    if not isinstance(halo, bool) or not isinstance(gather, bool):
        raise TypeError(f"halo and gather must be True or False, got {halo!r} and {gather!r}")
    world = world_size() if is_initialized() else 1
    if world == 1:
        return solve(problem, prior, solver, steps=steps, sigmas=sigmas, generator=generator, progress=progress,
                     record=record, callback=callback)
    me = rank()
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be an invdiff.Problem, got {type(problem).__name__}")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"rank {me} of {world}: solve_volume over ranks needs a torch.Generator seeded alike on every "
                         f"rank (every rank draws the whole volume's noise), got {type(generator).__name__}")
    y = problem.y
    depth = y.shape[0]
    bounds = split_slices(depth, world)
    lo, hi = bounds[me]
    slice_shape = tuple(problem.img_shape)
    device = str(generator.device)
    _check_alike({"volume shape": (depth,) + tuple(y.shape[1:]), "dtype": str(y.dtype), "slices": slice_shape,
                  "sigma_y": problem.sigma_y, "steps": steps, "sigmas": None if sigmas is None else [float(s) for s in torch.as_tensor(sigmas)],
                  "solver": solver.params(), "generator state": _digest(generator),
                  "measurement sum": float(y.double().sum()), "halo": halo, "gather": gather}, me)
    if not _draws_split_exactly(slice_shape, y.dtype, device):
        raise ValueError(f"rank {me} of {world}: this generator (on {device}) does not draw a volume's noise slice by "
                         f"slice identically for slices of {math.prod(slice_shape)} numbers in {y.dtype}, so the "
                         f"ranks cannot reproduce the one-process noise; use a CPU torch.Generator and slices of a "
                         f"multiple of 16 numbers")
    per_slice = bool(getattr(problem.physics, "batch", None))
    block_op = block_operator(problem.physics, lo, hi) if operator is None else operator(lo, hi)
    block = Problem(block_op, y[lo:hi], problem.sigma_y, None if problem.x_true is None else problem.x_true[lo:hi])
    coupling = BlockCoupling(depth, lo, hi, per_slice_operator=per_slice, halo=halo)
    skip_draws(generator, lo, slice_shape, y.dtype)  # the start x_T: this block's slices of the volume's draw
    result = solve(block, prior, dataclasses.replace(solver, coupling=coupling), steps=steps, sigmas=sigmas,
                   generator=generator, progress=progress and me == 0, record=record, callback=callback)
    skip_draws(generator, depth - hi, slice_shape, y.dtype)  # where one process leaves it
    if not gather:
        return result
    sizes = [b - a for a, b in bounds]
    x_hat = _gather_rows(result.x_hat, 0, sizes, me)
    trace = {k: _gather_rows(v, 1, sizes, me) for k, v in result.trace.items()}
    timings = all_gather_object((result.seconds, result.network_seconds, result.peak_memory_mb))
    if me != 0:
        return None
    return Result(x_hat=x_hat, samples=None if result.samples is None else x_hat[None], std=None, trace=trace,
                  nfe=result.nfe, vjp=result.vjp, seconds=max(t[0] for t in timings),
                  network_seconds=max(t[1] for t in timings), peak_memory_mb=max(t[2] for t in timings),
                  params=result.params)
