"""Denoising score matching for invdiff's small UNet priors (EDM recipe).

Karras et al. (NeurIPS 2022), Sec. 5: draw ``ln sigma ~ N(P_mean, P_std^2)``, corrupt
``x = x0 + sigma * eps``, minimise ``lambda(sigma) * ||D(x, sigma) - x0||^2`` with
``lambda(sigma) = (sigma^2 + sigma_d^2) / (sigma * sigma_d)^2``. Weights are tracked with an
exponential moving average (EMA) and the EMA weights are what gets exported.

Everything is seeded by ``--seed``; a run writes ``OUT.ckpt.pt`` (model, EMA, optimiser,
generator state, step, accumulated wall time) every ``--ckpt-minutes`` and resumes from it
with ``--resume``. The checkpoint holds tensors and plain numbers only and is read back with
``torch.load(weights_only=True)``. The exported ``OUT.safetensors`` holds the EMA weights and
the metadata :func:`invdiff.priors.zoo.load_checkpoint` needs.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .priors.unet import EDMPrior, UNet, UNetConfig

__all__ = ["TrainConfig", "train", "make_sampler", "export_safetensors"]

# Photographs scikit-image ships that are used for training photo64; the rest are held out.
# Stage 1 of photo64 (see its model card) used PHOTO_TRAIN_STAGE1.
PHOTO_TRAIN = ("astronaut", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel",
               "camera", "moon", "brick", "grass", "gravel", "coins", "clock", "cell", "page", "text")
PHOTO_HELD_OUT = ("chelsea", "rocket")
PHOTO_TRAIN_STAGE1 = ("astronaut", "coffee", "hubble_deep_field", "immunohistochemistry", "retina",
                      "moon", "brick", "grass", "gravel", "coins", "clock", "cell", "page", "text")


@dataclass
class TrainConfig:
    data: str = "phantoms"          # phantoms | photos | folder:PATH
    size: int = 64
    channels: int = 1
    steps: int = 10000
    batch: int = 16
    lr: float = 1e-3
    warmup: int = 200
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    p_mean: float = -1.2 + math.log(0.5)   # EDM's -1.2, 1.2 in [-1, 1] units, halved sigma
    p_std: float = 1.2
    sigma_data: float = 0.25
    sigma_min: float = 2e-3
    sigma_max: float = 40.0
    seed: int = 0
    n_phantoms: int = 8000
    base: int = 16
    mults: tuple = (1, 2, 4, 4)
    blocks: int = 1
    attention_levels: tuple = (3,)
    threads: int = 0
    device: str = "cpu"             # torch device of the network; data and noise are drawn on the CPU
    ckpt_minutes: float = 5.0
    max_minutes: float = 0.0        # 0: no limit; otherwise stop (and save) after this long
    out: str = "prior.safetensors"
    init: str = ""                  # optional: start from the weights of an earlier checkpoint
    color_aug: bool = True          # random channel permutation of RGB crops
    stop_after: int = 0             # 0: run to `steps`; otherwise stop (and save) at this step
    command: str = ""
    extra: dict = field(default_factory=dict)

    def unet_config(self) -> UNetConfig:
        return UNetConfig(channels=self.channels, base=self.base, mults=tuple(self.mults),
                          blocks=self.blocks, attention_levels=tuple(self.attention_levels))


# --------------------------------------------------------------------------- data samplers

def _phantom_sampler(cfg: TrainConfig, generator: torch.Generator):
    from .data.phantoms import body_phantoms

    if cfg.channels != 1:
        raise ValueError(f"--data phantoms needs --channels 1, got {cfg.channels}")
    pool_gen = torch.Generator().manual_seed(10_000 + cfg.seed)
    # A run never sees more than steps × batch distinct images: do not generate more.
    pool = body_phantoms(min(cfg.n_phantoms, cfg.steps * cfg.batch), cfg.size, "mixed", generator=pool_gen)

    def sample(batch):
        idx = torch.randint(len(pool), (batch,), generator=generator)
        x = pool[idx]
        flip = torch.rand(batch, generator=generator) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(-1), x)

    return sample


def _pyramid_sampler(images, cfg: TrainConfig, generator: torch.Generator, scales):
    """Random crops of ``cfg.size`` from each image resized by each of ``scales``."""
    import torch.nn.functional as F

    levels = []
    for img in images:  # (C, H, W)
        for s in scales:
            h, w = int(img.shape[-2] * s), int(img.shape[-1] * s)
            if min(h, w) < cfg.size:
                continue
            levels.append(F.interpolate(img[None], size=(h, w), mode="area")[0])
    if not levels:
        raise ValueError(f"no training image is at least {cfg.size} px at any scale")

    def sample(batch):
        out = []
        for _ in range(batch):
            lv = levels[int(torch.randint(len(levels), (1,), generator=generator))]
            i = int(torch.randint(lv.shape[-2] - cfg.size + 1, (1,), generator=generator))
            j = int(torch.randint(lv.shape[-1] - cfg.size + 1, (1,), generator=generator))
            crop = lv[:, i:i + cfg.size, j:j + cfg.size]
            if torch.rand(1, generator=generator) < 0.5:
                crop = crop.flip(-1)
            if cfg.color_aug and crop.shape[0] == 3 and torch.rand(1, generator=generator) < 0.5:
                crop = crop[torch.randperm(3, generator=generator)]  # colour augmentation
            out.append(crop)
        return torch.stack(out)

    return sample


def make_sampler(cfg: TrainConfig, generator: torch.Generator):
    """Return ``sample(batch) -> (batch, C, size, size)`` for ``cfg.data``."""
    from .data import io

    if cfg.data == "phantoms":
        return _phantom_sampler(cfg, generator)
    if cfg.data == "photos" or cfg.data.startswith("photos:"):
        names = PHOTO_TRAIN if cfg.data == "photos" else tuple(cfg.data[len("photos:"):].split(","))
        images = [io.sample_photo(name, channels=cfg.channels) for name in names]
        return _pyramid_sampler(images, cfg, generator, scales=(0.125, 0.18, 0.25, 0.35, 0.5))
    if cfg.data.startswith("folder:"):
        images = io.load_folder(cfg.data[len("folder:"):], channels=cfg.channels)
        return _pyramid_sampler(images, cfg, generator, scales=(0.25, 0.5, 0.75, 1.0))
    raise ValueError(f"--data must be 'phantoms', 'photos', 'photos:NAME,...' or 'folder:PATH', got {cfg.data!r}")


# --------------------------------------------------------------------------- checkpoints

def _metadata(cfg: TrainConfig, step: int, seconds: float) -> dict:
    return {
        "format": "invdiff-edm-unet-v1",
        "unet_config": cfg.unet_config().to_json(),
        "sigma_data": str(cfg.sigma_data),
        "sigma_min": str(cfg.sigma_min),
        "sigma_max": str(cfg.sigma_max),
        "img_size": json.dumps([cfg.size, cfg.size]),
        "channels": str(cfg.channels),
        "data": cfg.data,
        "data_range": "[0, 1]",
        "steps": str(step),
        "train_seconds": f"{seconds:.0f}",
        "hardware": _hardware(cfg.device),
        "command": cfg.command,
        "init": cfg.init,
        "init_sha256": _sha256(cfg.init) if cfg.init else "",
    }


def _hardware(device: str) -> str:
    cpu = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU thread(s)"
    if torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name(torch.device(device))} GPU; data on {cpu}"
    return cpu


def _sha256(path) -> str:
    from .priors.zoo import sha256_file

    return sha256_file(path)


def export_safetensors(prior: EDMPrior, path, metadata: dict) -> None:
    """Write ``prior.net`` weights and ``metadata`` (str -> str) to a safetensors file."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in prior.net.state_dict().items()}
    tmp = str(path) + ".tmp"
    save_file(tensors, tmp, metadata=metadata)
    os.replace(tmp, path)


def _save_ckpt(path, net, ema, opt, generator, step, seconds):
    state = {"net": net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
             "generator": generator.get_state(), "step": step, "seconds": seconds}
    tmp = str(path) + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- training loop

def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> Path:
    """Train an EDM-preconditioned UNet prior; returns the path of the exported safetensors."""
    if cfg.steps < 1 or cfg.batch < 1:
        raise ValueError(f"steps and batch must be >= 1, got steps={cfg.steps}, batch={cfg.batch}")
    if cfg.size % 2 ** (len(cfg.mults) - 1):
        raise ValueError(f"--size must be divisible by {2 ** (len(cfg.mults) - 1)}, got {cfg.size}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt_path = Path(str(out) + ".ckpt.pt")

    torch.manual_seed(cfg.seed)  # parameter initialisation only; data uses `generator`
    generator = torch.Generator().manual_seed(cfg.seed)
    try:
        device = torch.device(cfg.device)
    except RuntimeError as e:
        raise ValueError(f"--device {cfg.device!r} is not a torch device ({e})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {cfg.device!r}: CUDA is not available on this machine; use --device cpu")
    net = UNet(cfg.unet_config())
    ema = UNet(cfg.unet_config())
    if cfg.init:
        from .priors.zoo import load_checkpoint

        start = load_checkpoint(cfg.init)
        if start.net.config != cfg.unet_config():
            raise ValueError(f"--init {cfg.init!r} has architecture {start.net.config}, not {cfg.unet_config()}")
        net.load_state_dict(start.net.state_dict())
    ema.load_state_dict(net.state_dict())
    ema.requires_grad_(False)
    net.to(device)
    ema.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, seconds = 0, 0.0
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=True, map_location="cpu")
        net.load_state_dict(state["net"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        generator.set_state(state["generator"])
        step, seconds = int(state["step"]), float(state["seconds"])
    sample = make_sampler(cfg, generator)
    prior = EDMPrior(net, sigma_data=cfg.sigma_data, sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max)
    ema_prior = EDMPrior(ema, sigma_data=cfg.sigma_data, sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max)

    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc=f"train {out.name}")
    t_start = time.perf_counter()
    seconds0 = seconds
    last_ckpt = t_start
    while step < cfg.steps:
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup)
        lr *= 0.55 + 0.45 * math.cos(math.pi * step / cfg.steps)  # cosine to 10 % of lr
        for group in opt.param_groups:
            group["lr"] = lr
        x0 = sample(cfg.batch)
        sigma = torch.exp(cfg.p_mean + cfg.p_std * torch.randn(cfg.batch, generator=generator))
        sigma = sigma.clamp(cfg.sigma_min, cfg.sigma_max)
        noise = torch.randn(x0.shape, generator=generator)
        x0, sigma, noise = x0.to(device), sigma.to(device), noise.to(device)
        s4 = sigma[:, None, None, None]
        denoised = prior.denoise(x0 + s4 * noise, sigma)
        loss = (prior.loss_weight(s4) * (denoised - x0) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            for pe, pn in zip(ema.parameters(), net.parameters()):
                pe.lerp_(pn, 1 - cfg.ema_decay)
            for be, bn in zip(ema.buffers(), net.buffers()):
                be.copy_(bn)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.1e}")
        now = time.perf_counter()
        seconds = seconds0 + (now - t_start)
        out_of_time = (cfg.max_minutes and (now - t_start) > 60 * cfg.max_minutes) or step == cfg.stop_after
        if now - last_ckpt > 60 * cfg.ckpt_minutes or step == cfg.steps or out_of_time:
            _save_ckpt(ckpt_path, net, ema, opt, generator, step, seconds)
            export_safetensors(ema_prior, out, _metadata(cfg, step, seconds))
            last_ckpt = now
        if out_of_time:
            break
    bar.close()
    return out
