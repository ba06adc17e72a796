"""SMC's particles over ranks (invdiff.distributed.particles) equal the one-process run.

One 2-rank gloo job (two processes started here, running this file) solves tiny exact-Gaussian
problems (``invdiff.reference.gaussian_dense``: exact denoiser, no network) with ``K = 8``
particles in several SMC configurations, each rank holding 4 (and ``K = 2``, one per rank); the
same solves run here in one process. With the same seed the particles and log-weights at every step, the resampling, the
draws, the weighted mean and the per-particle residuals must agree to 1e-10 (bit for bit when
the batched arithmetic of the prior and operator does not depend on the batch size), the ESS
trace to 1e-10 relative (it is normalised by an all-reduce, equal to rounding). The job also
runs a communicator whose log-sum-exp forgets the other rank (local normalisation only) — the
same comparison must catch it — and asks for K = 3 over 2 ranks. Last, each rank seeds its
generator differently (not the one-process run any more, but still SMC: equal in distribution):
its 256 particles must sample the exact posterior as well as one process does.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from invdiff import solve
from invdiff.reference import gaussian_dense
from invdiff.solvers import DDIM, SMC
from invdiff.solvers.resampling import LocalParticles

ROOT = Path(__file__).resolve().parents[1]
STEPS = 30
TOL = 1e-10

#: name -> (SMC's arguments, solve's arguments); K = 8 over 2 ranks
SCENARIOS = {
    "systematic": (dict(particles=8), {}),
    "multinomial": (dict(particles=8, twist=False, resampling="multinomial", ess_threshold=0.9), {"num_samples": 2}),
    "jacobian": (dict(particles=8, cov="jacobian", cg_iters=3, resampling="stratified", potential="max"), {}),
    "one-per-rank": (dict(particles=2, ess_threshold=1.0), {}),
    "always": (dict(particles=8, ess_threshold=1.0), {}),  # the run the broken communicator repeats
}


#: the per-rank-seed run, compared in distribution: 256 particles, 50 steps
MOMENTS = (dict(particles=256), {})
MOMENT_STEPS = 50


def _problem():
    prior, pb, _ = gaussian_dense(16, 4, 0.05, batch=2)
    return prior, pb


def _run(solve_fn, smc_kwargs, solve_kwargs, gather=None, seed=0, steps=STEPS, **extra):
    """One solve; with the particles and log-weights after every step (gathered over the ranks)."""
    prior, pb = _problem()
    xs, log_ws = [], []

    def keep(i, sigma, state):
        xs.append(state.x.detach().clone())
        log_ws.append(state.log_w.detach().clone())

    res = solve_fn(pb, prior, SMC(**smc_kwargs), steps=steps, generator=torch.Generator().manual_seed(seed),
                   progress=False, record=("ess", "residual"), callback=keep, **solve_kwargs, **extra)
    if gather is not None:  # every step but the last holds this rank's particles (the last gathers them)
        xs = [gather(x, 0) for x in xs[:-1]] + xs[-1:]
        log_ws = [gather(w, 1) for w in log_ws[:-1]] + log_ws[-1:]
    return {"samples": res.samples, "x_hat": res.x_hat, "std": res.std, "ess": res.trace["ess"],
            "residual": res.trace["residual"], "x": torch.stack(xs), "log_w": torch.stack(log_ws),
            "nfe": res.nfe, "params": res.params}


def _mismatches(ref: dict, got: dict) -> list:
    """The quantities of ``got`` that differ from the one-process ``ref`` beyond the claimed tolerance."""
    bad = [k for k in ("samples", "x_hat", "std", "x", "log_w", "residual")
           if ref[k].shape != got[k].shape or float((ref[k] - got[k]).abs().max()) > TOL]
    if ref["ess"].shape != got["ess"].shape or float(((ref["ess"] - got["ess"]) / ref["ess"]).abs().max()) > TOL:
        bad.append("ess")
    return bad + [k for k in ("nfe", "params") if ref[k] != got[k]]


# -- the 2-rank job (this file run as a script on each rank) ----------------------------------

def _worker(out: Path) -> None:
    from invdiff import distributed
    from invdiff.distributed.particles import RankParticles, solve_particles

    class LocalNormalisation(RankParticles):
        """A broken all-reduce: each rank normalises over its own particles only."""

        def logsumexp(self, t):
            return torch.logsumexp(t, dim=-1)

    with distributed.process_group(connect_timeout=60, timeout=60):
        comm = RankParticles()
        gather = comm.all_gather
        found = {}
        for name, (smc_kwargs, solve_kwargs) in SCENARIOS.items():
            before = comm.rows_received
            found[name] = _run(solve_particles, smc_kwargs, solve_kwargs, gather, comm=comm)
            found[name]["rows_received"] = comm.rows_received - before
        found["default-comm"] = _run(solve_particles, *SCENARIOS["systematic"], gather)
        found["broken"] = _run(solve_particles, *SCENARIOS["always"], gather, comm=LocalNormalisation())
        found["seed-per-rank"] = _run(solve_particles, *MOMENTS, gather, seed=100 + distributed.rank(),
                                      steps=MOMENT_STEPS)
        prior, pb = _problem()
        try:
            solve_particles(pb, prior, SMC(particles=3), steps=2, progress=False)
        except ValueError as err:
            found["indivisible"] = str(err)
        torch.save(found, out / f"rank{distributed.rank()}.pt")



@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, free_port):
    """What each of the 2 ranks returned (a torchrun-like launch: RANK, WORLD_SIZE, MASTER_* set)."""
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("this torch build has no torch.distributed with the gloo backend")
    out = tmp_path_factory.mktemp("ranks")
    port = str(free_port())
    procs = []
    for r in (0, 1):
        env = {**os.environ, "RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": port, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
        procs.append(subprocess.Popen([sys.executable, __file__, str(out)], env=env, cwd=out,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    deadline = time.monotonic() + 240
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("the 2-rank job did not finish in 240 s")
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    return [torch.load(out / f"rank{r}.pt") for r in (0, 1)]


@pytest.fixture(scope="module")
def one_process():
    return {name: _run(solve, *args) for name, args in SCENARIOS.items()}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_two_ranks_equal_one_process(two_ranks, one_process, name):
    """Particles and log-weights at every step, draws, mean, std, residuals and ESS: the one-process
    values to 1e-10 (bit for bit where BLAS computes each particle the same in a batch of 4·N as in
    one of 8·N: here all but one-per-rank, whose batches of 2 and 4 differ in the last bit), and
    every rank returns the same result, bit for bit."""
    ref = one_process[name]
    rank0, rank1 = two_ranks[0][name], two_ranks[1][name]
    assert _mismatches(ref, rank0) == []
    for k in ("samples", "x_hat", "std", "ess", "residual"):
        assert torch.equal(rank0[k], rank1[k]), k
    K, S = SCENARIOS[name][0]["particles"], SCENARIOS[name][1].get("num_samples", 1)
    assert rank0["samples"].shape[:2] == (K * S, 2) and rank0["residual"].shape == (STEPS, K * S * 2)


def test_the_runs_resample_and_move_particles_between_ranks(two_ranks, one_process):
    """Each scenario resamples at least once before the last step (its ESS fell below the threshold
    and the weights were reset), and resampling moved particles from one rank to the other."""
    for name, (smc_kwargs, _) in SCENARIOS.items():
        ref, K = one_process[name], smc_kwargs["particles"]
        threshold = smc_kwargs.get("ess_threshold", 0.5) * K
        resampled = (ref["ess"][:-1] < threshold).any(1)
        reset = (ref["log_w"][:-1] == 0).all(-1).any(-1)  # a problem's weights all reset to 0 after the step
        assert int(resampled.sum()) >= 1 and torch.equal(resampled, reset), name
        assert two_ranks[0][name]["rows_received"] + two_ranks[1][name]["rows_received"] > 0, name
    # systematic resampling keeps ancestors in order: fewer rows move than an all-gather would bring
    sys_ref = one_process["systematic"]
    events = int(((sys_ref["ess"][:-1] < 4).sum()))
    assert two_ranks[0]["systematic"]["rows_received"] < events * 4


def test_the_default_communicator_is_the_process_group(two_ranks, one_process):
    assert _mismatches(one_process["systematic"], two_ranks[0]["default-comm"]) == []


def test_a_broken_all_reduce_is_caught(two_ranks, one_process):
    """Normalising each rank's log-weights over its own particles (no all-reduce) gives each rank
    its own ESS: the comparison above finds it (the particles stay equal here, since resampling
    happens at every step either way)."""
    ref = one_process["always"]
    assert _mismatches(ref, two_ranks[0]["always"]) == []
    broken = two_ranks[0]["broken"]
    assert _mismatches(ref, broken) == ["ess"]
    assert float(broken["ess"][:-1].max()) <= 4 + 1e-9 < float(ref["ess"][:-1].max())


def test_particles_not_divisible_by_ranks_are_refused(two_ranks):
    for r in (0, 1):
        msg = two_ranks[r]["indivisible"]
        assert f"rank {r} of 2" in msg and "K=3" in msg and "N=2" in msg


def _moment_errors(res, post):
    """RMS error of the weighted mean, and RMS relative error of the particles' variance."""
    var = res["samples"].var(0).reshape(post.var.shape)
    return (float((res["x_hat"] - post.mean).pow(2).mean().sqrt()),
            float(((var - post.var) / post.var).pow(2).mean().sqrt()))


def test_ranks_seeded_differently_still_sample_the_posterior(two_ranks):
    """Rank r seeded 100 + r: its noise is not the one-process noise, so only the law is the same.
    Its weighted mean and variance must be as close to the exact posterior as those of one-process
    runs with 8 seeds (at most 1.5 times the worst of them: at K = 256 and 50 steps their errors,
    0.022-0.036 for the mean and 23-34 % for the variance, are the sampler's own, mostly the
    discretisation bias and the isotropic twist); both ranks return rank 0's draw."""
    _, _, post = gaussian_dense(16, 4, 0.05, batch=2)
    got = two_ranks[0]["seed-per-rank"]
    assert all(torch.equal(got[k], two_ranks[1]["seed-per-rank"][k]) for k in ("samples", "x_hat"))
    runs = [_run(solve, *MOMENTS, seed=s, steps=MOMENT_STEPS) for s in range(8)]
    assert not any(torch.allclose(got["x_hat"], r["x_hat"]) for r in runs)  # another draw indeed
    worst = [max(e) for e in zip(*(_moment_errors(r, post) for r in runs))]
    mean_err, var_err = _moment_errors(got, post)
    assert mean_err <= 1.5 * worst[0] and var_err <= 1.5 * worst[1], (mean_err, var_err, worst)


def test_without_a_process_group_it_is_solve(one_process):
    from invdiff.distributed.particles import solve_particles

    assert _mismatches(one_process["systematic"], _run(solve_particles, *SCENARIOS["systematic"])) == []
    prior, pb = _problem()
    with pytest.raises(TypeError, match="DDIM has none"):
        solve_particles(pb, prior, DDIM(), steps=2)


def test_the_communicator_is_checked_and_not_a_hyperparameter():
    class TwoProcesses(LocalParticles):
        size = 2

    assert SMC(particles=4, comm=TwoProcesses()) == SMC(particles=4)
    assert "comm" not in SMC(particles=4, comm=TwoProcesses()).params()
    with pytest.raises(ValueError, match="K=3 particles cannot be split over N=2"):
        SMC(particles=3, comm=TwoProcesses())
    with pytest.raises(TypeError, match="has no rank, size, logsumexp, all_gather, broadcast, take"):
        SMC(comm=object())


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
