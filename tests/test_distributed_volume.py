"""A volume's slices over the ranks of a process group (invdiff.distributed.volume): MBIR on blocks of slices.

One gloo job of 2 ranks (and, marked slow, one of 3: a middle rank with two neighbours) runs this file's
``_worker`` under ``torch.distributed.run``, in a subprocess that imports this checkout. It solves small
volumes — CT, MRI with one mask per slice and per-slice gains, 6 and 7 (uneven) slices of 16×16, an exact
Gaussian slice prior in float64 and the shipped ``phantom64`` prior in float32 — and applies the distributed
pieces (halo ``D_z``, inner products, CG, ``‖A‖``) to its blocks. The tests compare each rank's output with
the one-process computation done here: ``invdiff.solve`` on the whole volume must give the same volume
(relative difference <= 1e-5; about 1e-15 in float64), the same per-slice residual trace, and leave the
generator in the same state; without the halo exchange it must not.
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import deepinv
import pytest
import torch
import torch.distributed as dist

from invdiff import Problem, distributed, solve
from invdiff.data import body_volume
from invdiff.distributed.volume import BlockCoupling, block_operator, skip_draws, solve_volume, split_slices
from invdiff.linalg import cg
from invdiff.operators import FiniteDifference, volume_ct, volume_mri
from invdiff.operators.checks import operator_norm
from invdiff.priors import GaussianPrior, SliceStackPrior, load_prior
from invdiff.solvers import MBIR, DiffPIR
from invdiff.solvers.mbir import Coupling

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="this torch build has no torch.distributed with the gloo backend")

ROOT = Path(__file__).resolve().parents[1]
D64 = torch.float64
N = 16  # slice size

#: name -> (problem kind, depth, MBIR settings, steps); lam > 0 everywhere, so the slices are coupled
SOLVES = {
    "ct6": ("ct", 6, dict(lam=0.05, rho=0.5), 8),
    "ct7-xt-corrector": ("ct", 7, dict(lam=0.05, rho=0.5, placement="xt", corrector=True), 8),
    "mri6-xyz-corrector": ("mri", 6, dict(lam=0.05, rho=0.5, tv="xyz", corrector=True), 8),
    "mri7": ("mri", 7, dict(lam=0.05, rho=0.5), 8),
    "phantom64-ct6": ("phantom", 6, dict(lam=2e-3, rho=5e-2), 6),
    "gains7": ("gains", 7, dict(lam=0.05, rho=0.5), 8),
}

#: per-slice gains of the "gains" problem: the largest (‖A‖) on the last rank's slices
GAINS = torch.linspace(0.5, 2.0, 7, dtype=D64)


class _Gains(deepinv.physics.LinearPhysics):
    """``(A x)_k = w_k x_k``: one gain per slice (per-slice parameters, ``‖A‖ = max_k w_k``), split by hand."""

    def __init__(self, w):
        super().__init__()
        self.w, self.batch, self.img_shape = w, w.shape[0], (1, N, N)

    def A(self, x, **kwargs):
        return self.w.reshape(-1, 1, 1, 1) * x

    def A_adjoint(self, y, **kwargs):
        return self.w.reshape(-1, 1, 1, 1) * y


def _gaussian_prior() -> GaussianPrior:
    """N(0.5, C) on 16×16 slices, C separable squared exponential (length 2 px), variance 0.04."""
    idx = torch.arange(N, dtype=D64)
    k = torch.exp(-(idx[:, None] - idx[None, :]) ** 2 / (2 * 2.0**2))
    cov = 0.04 * torch.kron(k, k) + 1e-4 * torch.eye(N * N, dtype=D64)
    return GaussianPrior(torch.full((1, N, N), 0.5, dtype=D64), cov)


def _case(kind: str, depth: int):
    """(problem, slice prior) of a small volume, built identically on every rank and here."""
    if kind == "phantom":
        vol = body_volume(depth, N, generator=torch.Generator().manual_seed(0))
        pb = Problem.simulate(vol, volume_ct(N, 6), 0.01, generator=torch.Generator().manual_seed(2))
        return pb, SliceStackPrior(load_prior("phantom64"), 4)
    p2 = _gaussian_prior()
    vol = p2.sample(depth, generator=torch.Generator().manual_seed(0))
    if kind == "gains":
        op = _Gains(GAINS[:depth])
    elif kind == "ct":
        op = volume_ct(N, 6).double()
    else:
        op = volume_mri(depth, N, 4.0, generator=torch.Generator().manual_seed(1)).double()
    pb = Problem.simulate(vol, op, 0.01, generator=torch.Generator().manual_seed(2), unit_range=False)
    return pb, SliceStackPrior(p2, 2)


def _digest(g: torch.Generator) -> str:
    return hashlib.sha256(g.get_state().numpy().tobytes()).hexdigest()


def _randn(shape, seed):
    return torch.randn(shape, dtype=D64, generator=torch.Generator().manual_seed(seed))


def _message(fn) -> str:
    try:
        fn()
    except Exception as err:  # noqa: BLE001 — the worker reports every error's type and text
        return f"{type(err).__name__}: {err}"
    return "no error"


# ---------------------------------------------------------------------------------------------------------------
# The worker: run by torch.distributed.run, one process per rank; writes rank-K.pt into the folder it is given.

def _worker(out: Path) -> None:
    torch.set_num_threads(1)
    with distributed.process_group():
        me, world = distributed.rank(), distributed.world_size()
        res = {"world": world}
        for name, (kind, depth, settings, steps) in SOLVES.items():
            pb, prior = _case(kind, depth)
            g = torch.Generator().manual_seed(3)
            split = (lambda lo, hi: _Gains(GAINS[lo:hi])) if kind == "gains" else None  # noqa: E731
            r = solve_volume(pb, prior, MBIR(**settings), steps=steps, generator=g, progress=False, operator=split)
            res[name] = None if r is None else {"x_hat": r.x_hat, "residual": r.trace["residual"], "nfe": r.nfe,
                                                "samples": r.samples}
            res[name + "/generator"] = _digest(g)
        pb, prior = _case("ct", 6)
        r = solve_volume(pb, prior, MBIR(**SOLVES["ct6"][2]), steps=8, generator=torch.Generator().manual_seed(3),
                         progress=False, halo=False)
        res["ct6-no-halo"] = None if r is None else r.x_hat
        r = solve_volume(pb, prior, MBIR(**SOLVES["ct6"][2]), steps=8, generator=torch.Generator().manual_seed(3),
                         progress=False, gather=False)
        res["ct6-blocks"] = r.x_hat

        # the pieces, on blocks of a 7-slice volume
        depth = 7
        lo, hi = split_slices(depth, world)[me]
        coupling = BlockCoupling(depth, lo, hi, per_slice_operator=False)
        for dims in (0, (0, -2, -1)):
            D = FiniteDifference(dims, halo=coupling.halo)
            x, y = _randn((depth, 1, 5, 4), 0), _randn((depth, 1 if dims == 0 else 3, 5, 4), 1)
            dx, dty = D.A(x[lo:hi]), D.A_adjoint(y[lo:hi])
            res[f"dz{dims}"] = {"Dx": dx, "Dty": dty, "<Dx,y>": coupling.dot(dx, y[lo:hi]),
                                "<x,Dty>": coupling.dot(x[lo:hi], dty)}
        a, b = _randn((depth, 1, 3, 3), 2), _randn((depth, 1, 3, 3), 3)
        res["dot"] = (coupling.dot(a[lo:hi], b[lo:hi]), coupling.norm(a[lo:hi]))
        op, Dz, rhs = volume_ct(N, 6).double(), FiniteDifference(0, halo=coupling.halo), _randn((depth, 1, N, N), 4)
        res["cg"] = cg(lambda w: op.A_adjoint(op.A(w)) + 0.5 * Dz.A_adjoint(Dz.A(w)) + 0.1 * w, rhs[lo:hi],
                       max_iter=40, tol=1e-12, batched=False, dot=coupling.dot)
        mri = volume_mri(depth, N, 4.0, generator=torch.Generator().manual_seed(1)).double()
        per_slice = BlockCoupling(depth, lo, hi, per_slice_operator=True)
        res["norm"] = [per_slice.operator_norm(op_, (1, 1, N, N), iters=20, dtype=D64,
                                               generator=torch.Generator().manual_seed(0))
                       for op_ in (block_operator(mri, lo, hi), _Gains(GAINS[lo:hi]))]

        # refusals: raised on every rank before any rank waits for another
        g = torch.Generator().manual_seed(0)
        one, one_prior = _case("ct", 1)
        res["error/one-slice"] = _message(lambda: solve_volume(one, one_prior, MBIR(), steps=2, generator=g))
        res["error/no-generator"] = _message(lambda: solve_volume(pb, prior, MBIR(), steps=2))
        res["error/not-mbir"] = _message(lambda: solve_volume(pb, prior, DiffPIR(), steps=2, generator=g))
        res["error/other-steps"] = _message(lambda: solve_volume(pb, prior, MBIR(), steps=2 + me, generator=g,
                                                                 progress=False))
        odd = GaussianPrior(torch.full((1, 5, 5), 0.5, dtype=D64), torch.full((1, 5, 5), 0.04, dtype=D64))
        odd_pb = Problem.simulate(odd.sample(4, generator=g), volume_mri(4, 5, 2.0, generator=g).double(), 0.01,
                                  generator=g, unit_range=False)
        res["error/odd-slices"] = _message(lambda: solve_volume(odd_pb, SliceStackPrior(odd, 2), MBIR(), steps=2,
                                                                generator=torch.Generator().manual_seed(0)))
        torch.save(res, out / f"rank-{me}.pt")


@pytest.fixture(scope="module", params=[2, pytest.param(3, marks=pytest.mark.slow)], ids=["2-ranks", "3-ranks"])
def ranks(request, tmp_path_factory):
    """What each rank of one gloo job returned (a list indexed by rank): 2 ranks, and 3 (a middle rank with two
    neighbours; slow)."""
    world = request.param
    out = tmp_path_factory.mktemp("volume")
    env = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCH_VARIABLES}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p]),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(world),
           str(Path(__file__).resolve()), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [torch.load(out / f"rank-{r}.pt", weights_only=False) for r in range(world)]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def one_process():
    """The reference: ``invdiff.solve`` on the whole volume in this process, per case (computed once)."""
    cache = {}

    def get(name):
        if name not in cache:
            kind, depth, settings, steps = SOLVES[name]
            pb, prior = _case(kind, depth)
            g = torch.Generator().manual_seed(3)
            cache[name] = (solve(pb, prior, MBIR(**settings), steps=steps, generator=g, progress=False), _digest(g))
        return cache[name]
    return get


# ---------------------------------------------------------------------------------------------------------------
# Over ranks.

@pytest.mark.parametrize("name", sorted(SOLVES))
def test_two_ranks_equal_one_process(ranks, one_process, name):
    ref, ref_generator = one_process(name)
    got = ranks[0][name]
    assert ranks[0]["world"] == len(ranks) and all(other[name] is None for other in ranks[1:])  # on rank 0 only
    rel = _relative(got["x_hat"], ref.x_hat)
    assert rel <= 1e-5, rel
    if got["x_hat"].dtype == D64:
        assert rel <= 1e-10, rel  # only the order of the sums differs
    assert got["residual"].shape == ref.trace["residual"].shape == (SOLVES[name][3], SOLVES[name][1])
    assert _relative(got["residual"], ref.trace["residual"]) <= 1e-5
    assert got["nfe"] == ref.nfe and torch.equal(got["samples"], got["x_hat"][None])
    # every rank's generator ends where the one-process run leaves it
    assert all(other[name + "/generator"] == ref_generator for other in ranks)


def test_without_the_halo_exchange_the_result_differs(ranks, one_process):
    """The same split with each block's TV stopping at its own edges: the z coupling across the split is lost,
    so the test above would fail without the halo."""
    ref, _ = one_process("ct6")
    rel = _relative(ranks[0]["ct6-no-halo"], ref.x_hat)
    assert rel > 1e-3, rel
    assert all(other["ct6-no-halo"] is None for other in ranks[1:])


def test_ungathered_ranks_return_their_own_slices(ranks, one_process):
    ref, _ = one_process("ct6")
    for r, (lo, hi) in enumerate(split_slices(6, len(ranks))):
        block = ranks[r]["ct6-blocks"]
        assert block.shape == (hi - lo, 1, N, N)
        assert _relative(block, ref.x_hat[lo:hi]) <= 1e-10


@pytest.mark.parametrize("dims", [0, (0, -2, -1)])
def test_halo_difference_equals_the_whole_volume_and_is_adjoint_across_ranks(ranks, dims):
    """Blocks of 7 slices (4 + 3, or 3 + 2 + 2): each rank's D x and Dᵀ y are its rows of the whole volume's, and
    ⟨D x, y⟩ = ⟨x, Dᵀ y⟩ with both inner products summed over the ranks."""
    D = FiniteDifference(dims)
    x, y = _randn((7, 1, 5, 4), 0), _randn((7, 1 if dims == 0 else 3, 5, 4), 1)
    whole_dx, whole_dty = D.A(x), D.A_adjoint(y)
    for r, (lo, hi) in enumerate(split_slices(7, len(ranks))):
        got = ranks[r][f"dz{dims}"]
        assert torch.allclose(got["Dx"], whole_dx[lo:hi], rtol=0, atol=1e-14)
        assert torch.allclose(got["Dty"], whole_dty[lo:hi], rtol=0, atol=1e-14)
    lhs, rhs = ranks[0][f"dz{dims}"]["<Dx,y>"], ranks[0][f"dz{dims}"]["<x,Dty>"]
    assert abs(float(lhs - rhs)) < 1e-12 * abs(float(lhs))
    assert abs(float(lhs - (whole_dx * y).sum())) < 1e-12 * abs(float(lhs))
    for other in ranks:  # every rank holds the same bits
        assert torch.equal(other[f"dz{dims}"]["<Dx,y>"], lhs)


def test_distributed_dot_and_cg_equal_their_local_versions(ranks):
    a, b = _randn((7, 1, 3, 3), 2), _randn((7, 1, 3, 3), 3)
    for other in ranks:
        dot, norm = other["dot"]
        assert abs(float(dot - (a * b).sum())) < 1e-12 * float(a.norm() * b.norm())
        assert abs(float(norm - a.norm())) < 1e-12 * float(a.norm())
    # the coupled system (AᵀA + ½ D_zᵀD_z + 0.1 I) v = b, CT on 7 slices: the ranks' blocks are the one-process
    # CG's, and they solve it
    op, Dz, rhs = volume_ct(N, 6).double(), FiniteDifference(0), _randn((7, 1, N, N), 4)

    def M(w):
        return op.A_adjoint(op.A(w)) + 0.5 * Dz.A_adjoint(Dz.A(w)) + 0.1 * w
    local = cg(M, rhs, max_iter=40, tol=1e-12, batched=False)
    got = torch.cat([other["cg"] for other in ranks])
    assert _relative(got, local) < 1e-10
    assert _relative(M(got), rhs) < 1e-6


def test_operator_norm_over_ranks_is_the_volume_norm(ranks):
    """‖A‖ of operators with one parameter per slice: MRI masks (all norms near 1) and gains whose largest,
    ‖A‖ = 2, sits on the last rank's slices only — every rank must find it."""
    mri = volume_mri(7, N, 4.0, generator=torch.Generator().manual_seed(1)).double()
    for k, op in enumerate((mri, _Gains(GAINS))):
        local = operator_norm(op, (1, 1, N, N), iters=20, dtype=D64, generator=torch.Generator().manual_seed(0))
        for r, other in enumerate(ranks):
            assert abs(other["norm"][k] - local) < 1e-12 * local, (k, r, other["norm"][k], local)
    assert 1.99 < local <= 2.0  # the last slice's gain, not rank 0's largest (1.25)


@pytest.mark.parametrize("case, words", [
    ("one-slice", ["ValueError", "1 slice(s)", "{world} ranks"]),
    ("no-generator", ["ValueError", "needs a torch.Generator"]),
    ("not-mbir", ["TypeError", "DiffPIR"]),
    ("other-steps", ["ValueError", "called solve_volume with another steps", "there"]),
    ("odd-slices", ["ValueError", "25 numbers", "multiple of 16"]),
])
def test_refusals_over_ranks(ranks, case, words):
    for r, other in enumerate(ranks):
        text = other[f"error/{case}"]
        assert all(w.format(world=len(ranks)) in text for w in words), (r, text)


# ---------------------------------------------------------------------------------------------------------------
# In one process.

def test_split_slices_is_contiguous_and_as_even_as_possible():
    for depth in range(1, 12):
        for parts in range(1, depth + 1):
            blocks = split_slices(depth, parts)
            sizes = [hi - lo for lo, hi in blocks]
            assert blocks[0][0] == 0 and blocks[-1][1] == depth
            assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1 and sizes == sorted(sizes, reverse=True)
    assert split_slices(7, 2) == [(0, 4), (4, 7)] and split_slices(7, 3) == [(0, 3), (3, 5), (5, 7)]
    with pytest.raises(ValueError, match=r"3 slice\(s\) but the process group has 4 ranks"):
        split_slices(3, 4)
    for bad in ((0, 1), (2, 0), (2.0, 1), (True, 1)):
        with pytest.raises(ValueError, match="integer"):
            split_slices(*bad)


@pytest.mark.parametrize("dtype", [torch.float32, D64])
def test_skipped_slices_leave_the_generator_where_one_draw_does(dtype):
    """The noise design's premise: a draw of the whole volume equals, block by block, skipping the other slices'
    numbers and drawing one's own (torch draws normals in blocks of 16; slices of 256 numbers)."""
    shape = (1, N, N)
    whole_g, part_g = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    whole = torch.randn((7,) + shape, generator=whole_g, dtype=dtype)
    skip_draws(part_g, 2, shape, dtype)
    mine = torch.randn((3,) + shape, generator=part_g, dtype=dtype)
    skip_draws(part_g, 2, shape, dtype)
    assert torch.equal(mine, whole[2:5])
    assert torch.equal(part_g.get_state(), whole_g.get_state())


@pytest.mark.parametrize("coils", [1, 3])
def test_block_operator_is_the_volume_operator_on_its_slices(coils):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, N, N, generator=g, dtype=D64)
    mri = volume_mri(5, N, 4.0, coils=coils, generator=torch.Generator().manual_seed(1)).double()
    mask_before = mri.mask.clone()
    y = mri.A(x)
    for lo, hi in ((0, 2), (2, 5), (4, 5)):
        block = block_operator(mri, lo, hi)
        assert block.batch == hi - lo and block.mask.dtype == D64
        assert torch.equal(block.A(x[lo:hi]), y[lo:hi])
        assert torch.equal(block.A_adjoint(y[lo:hi]), mri.A_adjoint(y)[lo:hi])
    assert torch.equal(mri.mask, mask_before) and mri.batch == 5  # not modified
    ct = volume_ct(N, 4)
    assert block_operator(ct, 1, 3) is ct  # shared by all slices


def test_block_operator_refuses_per_slice_parameters_it_cannot_split():
    from invdiff.operators import dense_operator

    op = dense_operator((1, 2, 2), torch.eye(4))
    op.batch = 3
    with pytest.raises(ValueError, match="cannot split; pass operator="):
        block_operator(op, 0, 1)
    with pytest.raises(ValueError, match="not a block"):
        block_operator(volume_mri(3, N, 4.0, generator=torch.Generator().manual_seed(1)), 2, 4)


def test_cg_takes_the_inner_product_it_is_given():
    """``dot`` replaces the inner product: the whole-tensor one reproduces ``batched=False``, a per-element one
    ``batched=True``, and a weighted one ⟨a, b⟩_W = Σ w a b solves the system that is symmetric in it."""
    D, rho = FiniteDifference(0), 3.0
    b = _randn((6, 1, 2, 2), 0)

    def M(v):
        return v + rho * D.A_adjoint(D.A(v))
    coupled = cg(M, b, max_iter=8, tol=1e-12, batched=False)
    assert torch.equal(cg(M, b, max_iter=8, tol=1e-12, dot=lambda u, v: (u * v).sum()), coupled)
    per_slice = cg(lambda v: 2 * v, b, max_iter=3)  # M = 2 I, one system per slice
    assert torch.equal(cg(lambda v: 2 * v, b, max_iter=3, batched=False,
                          dot=lambda u, v: (u * v).flatten(1).sum(1).reshape(-1, 1, 1, 1)), per_slice)
    w = torch.rand(6, 1, 2, 2, dtype=D64, generator=torch.Generator().manual_seed(1)) + 0.5
    # W⁻¹M is symmetric in ⟨·,·⟩_W: CG on W⁻¹M x = W⁻¹b with that inner product solves M x = b
    x = cg(lambda v: M(v) / w, b / w, max_iter=60, tol=1e-13, dot=lambda u, v: (w * u * v).sum())
    assert torch.allclose(M(x), b, atol=1e-9)


def test_without_a_process_group_it_is_solve():
    assert not distributed.is_initialized()
    pb, prior = _case("ct", 4)
    settings = dict(lam=0.05, rho=0.5)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = solve_volume(pb, prior, MBIR(**settings), steps=3, generator=g1, progress=False)
    b = solve(pb, prior, MBIR(**settings), steps=3, generator=g2, progress=False)
    assert torch.equal(a.x_hat, b.x_hat) and torch.equal(g1.get_state(), g2.get_state())
    with pytest.raises(TypeError, match="DiffPIR"):
        solve_volume(pb, prior, DiffPIR(), steps=2)
    with pytest.raises(ValueError, match="coupling"):
        solve_volume(pb, prior, MBIR(coupling=Coupling()), steps=2)


def test_mbir_coupling_is_not_a_hyperparameter():
    assert "coupling" not in MBIR(coupling=Coupling()).params() and MBIR(coupling=Coupling()) == MBIR()
    with pytest.raises(TypeError, match="coupling"):
        MBIR(coupling="halo")
    with pytest.raises(TypeError, match="halo"):
        FiniteDifference(0, halo=object())


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
