import os

import pytest
import torch

# Small tensors dominate the suite; one intra-op thread avoids oversubscription (set
# INVDIFF_TEST_THREADS to change it).
torch.set_num_threads(int(os.environ.get("INVDIFF_TEST_THREADS", "1")))

#: why a test marked ``gpu`` is skipped on a machine without CUDA
GPU_SKIP_REASON = "needs a CUDA device (torch.cuda.is_available() is False)"


def pytest_collection_modifyitems(config, items):
    """Skip the tests marked ``gpu`` where there is no CUDA device: they are collected (and listed as
    skipped, with the reason), not deselected, so a CPU run shows what it did not check."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=GPU_SKIP_REASON)
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture
def gen():
    """A fresh seeded generator per test."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def smooth_prior():
    """Gaussian prior on 8×8 images: mean 0.5, separable squared-exponential covariance (length 2 px)."""
    from invdiff.priors import GaussianPrior

    idx = torch.arange(8, dtype=torch.float64)
    k = torch.exp(-(idx[:, None] - idx[None, :]) ** 2 / (2 * 2.0**2))
    cov = 0.04 * torch.kron(k, k) + 1e-4 * torch.eye(64, dtype=torch.float64)
    return GaussianPrior(torch.full((1, 8, 8), 0.5, dtype=torch.float64), cov)


@pytest.fixture(scope="session")
def inpainting_problem(smooth_prior):
    """``make(missing_fraction) -> (problem, exact posterior)``: 8×8 random inpainting, sigma_y = 0.02."""
    from invdiff import Problem
    from invdiff.operators import random_inpainting

    def make(missing_fraction):
        g = torch.Generator().manual_seed(0)
        x = smooth_prior.sample(1, generator=g)
        op = random_inpainting((1, 8, 8), missing_fraction, generator=g).double()
        pb = Problem.simulate(x, op, 0.02, generator=g)
        return pb, smooth_prior.posterior(op, pb.y, 0.02)

    return make


@pytest.fixture(scope="session")
def blur_problem():
    """``(prior, op, problem)``: 8×8 diagonal Gaussian prior, circular Gaussian blur (FFT SVD), sigma_y = 0.01."""
    from invdiff import Problem
    from invdiff.operators import gaussian_blur
    from invdiff.priors import GaussianPrior

    prior = GaussianPrior(torch.full((1, 8, 8), 0.5, dtype=torch.float64), torch.full((1, 8, 8), 0.05, dtype=torch.float64))
    x = prior.sample(1, generator=torch.Generator().manual_seed(0))
    op = gaussian_blur((1, 8, 8), 1.0, kernel_size=5).double()
    return prior, op, Problem.simulate(x, op, 0.01, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="session")
def blur_subsample():
    """``make(sigma_y) -> (M, prior, problem, posterior)``: the smooth 8×8 Gaussian prior (as
    :func:`smooth_prior`, from :func:`invdiff.reference.gaussian_image`) measured by ``M``, a
    ``(16, 64)`` matrix — circular blur by a non-symmetric 3×3 kernel of gain 0.85 (A 1 ≠ 1), then
    every other pixel in each direction: not self-adjoint, m ≠ d, singular values 0.34–0.48. The
    operator where inpainting's A = Aᵀ, m = d and A 1 = 1 hide no slip."""
    from invdiff.operators import dense_operator
    from invdiff.reference import gaussian_image

    n = 8
    k = torch.tensor([[0.30, 0.20, 0.05], [0.15, 0.10, 0.0], [0.05, 0.0, 0.0]], dtype=torch.float64)
    basis = torch.eye(n * n, dtype=torch.float64).reshape(n * n, n, n)
    blurred = sum(k[a, b] * torch.roll(basis, (a, b), dims=(1, 2)) for a in range(3) for b in range(3))
    M = blurred[:, ::2, ::2].reshape(n * n, -1).T

    def make(sigma_y):
        return (M,) + gaussian_image(dense_operator((1, n, n), M), sigma_y=sigma_y, seed=3)

    return make


@pytest.fixture(scope="session")
def free_port():
    """``() -> int``: a TCP port free on this machine now (for the process groups tests launch)."""
    import socket

    def pick() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    return pick
