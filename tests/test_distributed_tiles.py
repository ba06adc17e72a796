"""One image's network calls over the ranks (invdiff.distributed.tiles), and ``torchrun -m invdiff solve``.

A gloo job of 2 ranks runs this file's ``_worker`` under ``torch.distributed.run``: a patch prior
(a small random UNet with position channels) denoises a 40×56 image with its patches split over
the ranks; DiffPIR and DPS (whose vector–Jacobian products go through the split) solve a small
inpainting problem with it; an exact Gaussian prior's batch is split by :class:`RankBatchPrior`.
Each rank's results are compared here with the one-process computation. A second job runs the
command line under torchrun: rank 0 alone writes, and writes what one process writes.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from invdiff import Problem, distributed, solve
from invdiff.distributed.tiles import RankBatchPrior, distribute_prior, split_rows
from invdiff.operators import random_inpainting
from invdiff.priors import GaussianPrior, PatchPrior
from invdiff.priors.unet import UNet, UNetConfig
from invdiff.solvers import DPS, DiffPIR

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="this torch build has no torch.distributed with the gloo backend")

ROOT = Path(__file__).resolve().parents[1]


def _patch_prior() -> PatchPrior:
    torch.manual_seed(0)
    net = UNet(UNetConfig(channels=1, base=8, mults=(1, 2), blocks=1, attention_levels=(), cond_channels=2))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    return PatchPrior(net.eval().requires_grad_(False), patch=16, frame=64)


def _problem():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 40, 56, generator=g)
    return Problem.simulate(x, random_inpainting((1, 40, 56), 0.5, generator=g), 0.05, generator=g)


def _gaussian():
    return GaussianPrior(torch.full((1, 4, 4), 0.5, dtype=torch.float64), torch.full((1, 4, 4), 0.04,
                                                                                    dtype=torch.float64))


def _cases(prior):
    """name -> () -> tensor: what the worker computes with the distributed prior and the test with the local one."""
    pb = _problem()
    x = torch.rand(3, 1, 40, 56, generator=torch.Generator().manual_seed(2))
    return {
        "denoise": lambda: prior.denoise(x, 0.3),
        "diffpir": lambda: solve(pb, prior, DiffPIR(lam=1.0, zeta=0.5), steps=6,
                                 generator=torch.Generator().manual_seed(3), progress=False).x_hat,
        "dps": lambda: solve(pb, prior, DPS(zeta=0.5), steps=6, generator=torch.Generator().manual_seed(3),
                             progress=False).x_hat,
    }


def _worker(out: Path) -> None:
    torch.set_num_threads(1)
    with distributed.process_group():
        me = distributed.rank()
        local = _patch_prior()
        spread = distribute_prior(local)
        res = {"type": type(spread).__name__, "same_object": spread is local,
               "local_untouched": local.batch_map is None}
        for name, fn in _cases(spread).items():
            res[name] = fn()
        calls = []
        counted = lambda z, s, p: calls.append(z.shape[0]) or local.patch_denoise(z, s, p)  # noqa: E731
        split_rows(counted, torch.rand(7, 1, 16, 16), torch.ones(7, 1, 1, 1), torch.zeros(7, 2, 16, 16))
        res["rows_here"] = calls
        gauss = distribute_prior(_gaussian())
        res["gauss_type"] = type(gauss).__name__
        res["gauss"] = gauss.denoise(torch.rand(5, 1, 4, 4, dtype=torch.float64,
                                                generator=torch.Generator().manual_seed(4)), 0.2)
        torch.save(res, out / f"rank-{me}.pt")


def _launch(args, out, world=2):
    env = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCH_VARIABLES}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p]),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(world), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiles")
    _launch([str(Path(__file__).resolve()), str(out)], out)
    return [torch.load(out / f"rank-{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("name", ["denoise", "diffpir", "dps"])
def test_patches_over_two_ranks_equal_one_process(ranks, name):
    want = _cases(_patch_prior())[name]()
    for r in ranks:
        assert r["type"] == "PatchPrior" and not r["same_object"] and r["local_untouched"]
        assert torch.allclose(r[name], want, atol=1e-5, rtol=0), float((r[name] - want).abs().max())
    assert torch.equal(ranks[0][name], ranks[1][name])  # every rank holds the same iterate


def test_rows_are_split_contiguously_and_batches_of_any_prior_too(ranks):
    assert [r["rows_here"] for r in ranks] == [[4], [3]]  # 7 patches: 4 on rank 0, 3 on rank 1
    want = _gaussian().denoise(torch.rand(5, 1, 4, 4, dtype=torch.float64,
                                          generator=torch.Generator().manual_seed(4)), 0.2)
    for r in ranks:
        assert r["gauss_type"] == "RankBatchPrior"
        assert torch.allclose(r["gauss"], want, atol=1e-12)


def test_without_a_process_group_nothing_changes():
    prior = _patch_prior()
    assert distribute_prior(prior) is prior
    g = _gaussian()
    assert distribute_prior(g) is g
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    assert torch.equal(RankBatchPrior(g).denoise(x, 0.1), g.denoise(x, 0.1))


def test_torchrun_solve_writes_on_rank_0_what_one_process_writes(tmp_path):
    """``torchrun --nproc-per-node 2 -m invdiff solve`` with 2 samples: the batch is split over the ranks,
    rank 0 writes the outputs, the other rank writes nothing, and the reconstruction is the one-process one.

    MRI, whose data step is a closed form: a float32 network call on a batch of 1 and of 2 differs by
    rounding (~5e-7, other convolution kernels), which CG on 8-view CT's ill-conditioned normal
    equations amplifies to ~1e-3 in three steps — a property of float32 CT, not of the split."""
    args = ["--problem", "mri-4x", "--solver", "diffpir", "--steps", "3", "--samples", "2", "--no-progress"]
    proc = _launch(["-m", "invdiff", "solve", *args, "--out", str(tmp_path / "two")], tmp_path)
    assert proc.stdout.count("wrote") >= 1 and proc.stdout.count("network calls") == 1  # rank 0 reports alone
    from invdiff.cli import main

    assert main(["solve", *args, "--out", str(tmp_path / "one")]) == 0
    two, one = np.load(tmp_path / "two" / "reconstruction.npy"), np.load(tmp_path / "one" / "reconstruction.npy")
    assert np.allclose(two, one, atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
