import math

import pytest
import torch

from invdiff import schedules
from invdiff.priors import (DenoiserPrior, GaussianPrior, PriorDenoiser, VPPrior, from_diffusers,
                            load_state_dict_file)

D64 = torch.float64


def test_schedules_descending_ending_in_zero():
    for name, f in schedules.SCHEDULES.items():
        s = f(20)
        assert s.shape == (21,) and s[-1] == 0 and (s[:-1] > 0).all(), name
        assert (s[1:] < s[:-1]).all(), name
    k = schedules.karras(10, 0.002, 40.0)
    assert abs(float(k[0]) - 40.0) < 1e-9 and abs(float(k[-2]) - 0.002) < 1e-12
    g = schedules.geometric(5, 0.01, 10.0)
    ratios = g[1:-1] / g[:-2]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios))
    # DDPM linear schedule: at t = T the VE sigma of [-1, 1] data is sqrt((1 - ᾱ_T)/ᾱ_T) ≈ 156.6
    assert abs(float(schedules.vp_linear(10, scale=1.0)[0]) - 156.6) < 1.0
    with pytest.raises(ValueError, match="steps"):
        schedules.karras(0)


# --- a Gaussian data distribution in [-1, 1] units, written as VP networks -----------------

MEAN = torch.tensor([0.2, 0.7, 0.5], dtype=D64).reshape(1, 3, 1, 1).expand(1, 3, 2, 2)
VAR = torch.tensor([0.01, 0.04, 0.02], dtype=D64).reshape(1, 3, 1, 1).expand(1, 3, 2, 2)
BETAS = torch.linspace(1e-4, 0.02, 1000, dtype=D64)
ABAR = torch.cumprod(1 - BETAS, 0)


def _abar_at(t):
    """ᾱ at fractional t, by linear interpolation of log s_t (what the adapter assumes)."""
    log_s = 0.5 * torch.log((1 - ABAR) / ABAR)
    i = t.floor().long().clamp(0, 998)
    ls = log_s[i] + (t - i) * (log_s[i + 1] - log_s[i])
    s2 = torch.exp(2 * ls)
    return 1 / (1 + s2)


def _exact_parts(x_t, t):
    """E[z0 | x_t] and E[ε | x_t] for z0 ~ N(2m − 1, 4v) (data in [-1, 1])."""
    a = _abar_at(t).reshape(-1, 1, 1, 1)
    u = x_t / a.sqrt()
    s2 = (1 - a) / a
    mz, vz = 2 * MEAN - 1, 4 * VAR
    z0 = mz + vz / (vz + s2) * (u - mz)
    eps = (x_t - a.sqrt() * z0) / (1 - a).sqrt()
    return z0, eps, a


def eps_net(x_t, t):
    return _exact_parts(x_t.double(), t.double())[1]


def v_net(x_t, t):
    z0, eps, a = _exact_parts(x_t.double(), t.double())
    return a.sqrt() * eps - (1 - a).sqrt() * z0


def x0_net(x_t, t):
    return _exact_parts(x_t.double(), t.double())[0]


@pytest.mark.parametrize("net,prediction", [(eps_net, "eps"), (v_net, "v"), (x0_net, "x0")])
@pytest.mark.parametrize("timestep", ["continuous", "nearest"])
def test_vp_adapters_give_exact_gaussian_denoiser(net, prediction, timestep):
    exact = GaussianPrior(MEAN[0], VAR[0])
    prior = VPPrior(net, ABAR, prediction=prediction, timestep=timestep)
    g = torch.Generator().manual_seed(0)
    if timestep == "nearest":  # sigmas exactly on the training grid ([0, 1] units: half of s_t)
        sig = 0.5 * torch.sqrt((1 - ABAR[[50, 400, 900]]) / ABAR[[50, 400, 900]])
    else:
        sig = torch.tensor([0.013, 0.37, 4.2], dtype=D64)
    x = MEAN + sig.reshape(-1, 1, 1, 1) * torch.randn((3, 3, 2, 2), generator=g, dtype=D64)
    assert torch.allclose(prior.denoise(x, sig), exact.denoise(x, sig), atol=1e-9)


def test_vp_learned_variance_channels_are_dropped():
    def net(x_t, t):
        return torch.cat([eps_net(x_t, t), torch.full_like(x_t, 99.0)], 1)

    prior = VPPrior(net, ABAR, channels=3)
    x = MEAN.clone()
    assert torch.allclose(prior.denoise(x, 0.3), GaussianPrior(MEAN[0], VAR[0]).denoise(x, 0.3), atol=1e-9)


def test_vp_sigma_range():
    prior = VPPrior(eps_net, ABAR)
    assert abs(prior.sigma_max - 0.5 * math.sqrt((1 - ABAR[-1]) / ABAR[-1])) < 1e-9
    assert prior.sigma_min < 0.01


def test_denoiser_prior_units():
    exact = GaussianPrior(MEAN[0], VAR[0])

    def pm1_denoiser(z, s):  # a denoiser working on [-1, 1] data
        return 2 * exact.denoise((z + 1) / 2, s / 2) - 1

    prior = DenoiserPrior(pm1_denoiser, data_range=(-1, 1))
    x = torch.rand(2, 3, 2, 2, dtype=D64)
    assert torch.allclose(prior.denoise(x, 0.2), exact.denoise(x, 0.2), atol=1e-12)


def test_from_diffusers_duck_typed():
    class Out:
        def __init__(self, sample):
            self.sample = sample

    class FakeUNet:
        class config:
            in_channels, sample_size = 3, 2

        def __call__(self, x, t):
            return Out(v_net(x, t))

    class FakeScheduler:
        alphas_cumprod = ABAR.float()

        class config:
            prediction_type = "v_prediction"

    prior = from_diffusers(FakeUNet(), FakeScheduler())
    assert prior.img_shape == (3, 2, 2) and prior.prediction == "v"
    x = MEAN + 0.1
    assert torch.allclose(prior.denoise(x, 0.25), GaussianPrior(MEAN[0], VAR[0]).denoise(x, 0.25), atol=1e-5)


def test_prior_to_deepinv_denoiser_and_back():
    exact = GaussianPrior(MEAN[0], VAR[0])
    den = PriorDenoiser(exact)
    x = torch.rand(2, 3, 2, 2, dtype=D64)
    assert torch.allclose(den(x, 0.1), exact.denoise(x, 0.1))
    assert torch.allclose(DenoiserPrior(den).denoise(x, 0.1), exact.denoise(x, 0.1))


def test_deepinv_samplers_run_on_our_prior():
    """deepinv's DPS, DDRM and DiffPIR accept our prior through the adapter and improve on A†y."""
    import deepinv

    from invdiff.operators import random_inpainting

    g = torch.Generator().manual_seed(0)
    mean = torch.full((1, 8, 8), 0.5, dtype=D64)
    prior = GaussianPrior(mean, torch.full((1, 8, 8), 0.04, dtype=D64))
    x = prior.sample(2, generator=g).float().clamp(0, 1)
    op = random_inpainting((1, 8, 8), 0.5, generator=g)
    y = op.A(x)
    den = PriorDenoiser(prior)
    zero_fill = (op.A_dagger(y) - x).norm()
    for sampler in (deepinv.sampling.DDRM(den, sigmas=torch.linspace(1, 0, 20).numpy()),
                    deepinv.sampling.DiffPIR(den, deepinv.optim.data_fidelity.L2(), max_iter=20, sigma=0.01)):
        out = sampler(y.double(), op.double())
        op.float()
        assert torch.isfinite(out).all() and (out.float() - x).norm() < zero_fill
    dps = deepinv.sampling.DPS(den, num_steps=50, rng=torch.Generator().manual_seed(0))
    out = dps(y.double(), op.double(), x_init=(2, 1, 8, 8))  # a shape: deepinv draws the start itself
    op.float()
    assert torch.isfinite(out).all() and (out.float() - x).norm() < zero_fill


def test_load_state_dict_file_safe(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "a.pt")
    assert torch.equal(load_state_dict_file(tmp_path / "a.pt")["w"], torch.ones(2))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"w": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_state_dict_file(tmp_path / "evil.pt")
    with pytest.raises(FileNotFoundError):
        load_state_dict_file(tmp_path / "missing.pt")


def _diffunet():
    import deepinv

    torch.manual_seed(0)
    return deepinv.models.DiffUNet(in_channels=3, out_channels=3, pretrained=None).eval()


def test_deepinv_diffunet_adapter_agrees_with_deepinv_denoiser():
    """Our VP adapter around DiffUNet's eps output equals deepinv's own forward_denoise at
    noise levels on the training grid (where both pick the same timestep)."""
    from invdiff.priors import from_deepinv_diffunet

    net = _diffunet()
    prior = from_deepinv_diffunet(net=net, timestep="nearest")
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=D64), 0)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for t in (100, 600):
        sigma = float(0.5 * ((1 - abar[t]) / abar[t]).sqrt())
        with torch.no_grad():
            ours = prior.denoise(x, sigma)
            theirs = net(x, torch.full((2,), sigma), type_t="noise_level")
        # deepinv's forward_denoise returns [0, 1] images clamped to the data range; ours does not clamp
        assert torch.allclose(ours.clamp(0, 1), theirs, atol=1e-4)


@pytest.mark.slow
def test_deepinv_diffunet_from_local_safetensors(tmp_path):
    from safetensors.torch import save_file

    from invdiff.priors import from_deepinv_diffunet

    net = _diffunet()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "diffunet.safetensors")
    prior = from_deepinv_diffunet(tmp_path / "diffunet.safetensors")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(prior.denoise(x, 0.1), from_deepinv_diffunet(net=net).denoise(x, 0.1))
    with pytest.raises(ValueError, match="DiffUNet weights"):
        from_deepinv_diffunet(tmp_path / "diffunet.safetensors", large_model=True)
