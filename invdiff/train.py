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

from .devices import resolve_device
from .data.splits import PHANTOM_TRAIN_SEED, PHOTO_HELD_OUT, PHOTO_TRAIN, PHOTO_TRAIN_STAGE1  # noqa: F401
from .priors.patch import PatchPrior
from .priors.unet import EDMPrior, UNet, UNetConfig, unet_config_problem

__all__ = ["TrainConfig", "train", "make_sampler", "export_safetensors"]

# The photographs that train photo64 and those held out live with the other splits in invdiff.data.splits.


@dataclass
class TrainConfig:
    """Settings of one training run (the ``invdiff train`` options), validated on construction.

    Every field is checked by :meth:`validate` when the config is built and again when
    :func:`train` starts, so a bad value raises ``ValueError`` (or ``TypeError`` for a value of
    the wrong type, e.g. ``size=64.0``) naming its ``--option`` before any work is done.

    Notes
    -----
    ``threads=0`` uses the idle cores (:func:`invdiff.threads.auto_threads`: the CPUs this process
    may use minus the load average); a positive value sets it with :func:`torch.set_num_threads`. ``max_minutes=0`` and ``stop_after=0`` mean no limit.
    ``base`` must give channel counts the UNet's GroupNorm layers (8 groups, or one per channel
    below 8) and attention heads (4) can split: any multiple of 8, plus a few tiny values that
    depend on ``mults`` (the error message lists them).
    """

    data: str = "phantoms"          # phantoms | photos | folder:PATH | corpus:NAME
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
    patch_sizes: tuple = ()         # non-empty: position-aware patch training (PatchPrior); `size` is the frame
    intensity_aug: float = 0.0      # scale each training image by a factor in [1 - a, 1 + a] (clipped to [0, 1])
    dihedral: bool = False          # random 90° rotation and flip of each example (the 8 symmetries of the square)
    scales: tuple = (1.0,)          # corpus data: pixel scales the training images are resized to (1: their own)
    command: str = ""
    extra: dict = field(default_factory=dict)

    def unet_config(self) -> UNetConfig:
        return UNetConfig(channels=self.channels, base=self.base, mults=tuple(self.mults),
                          blocks=self.blocks, attention_levels=tuple(self.attention_levels),
                          cond_channels=2 if self.patch_sizes else 0)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError``/``TypeError`` naming the first invalid setting (see the class docstring)."""
        from .validation import positive_int, real_number

        if not isinstance(self.data, str) or not (
                self.data in ("phantoms", "photos") or (self.data.startswith("photos:") and self.data[7:])
                or (self.data.startswith("folder:") and self.data[7:]) or self.data.startswith("corpus:")):
            raise ValueError(f"--data must be 'phantoms', 'photos', 'photos:NAME,...', 'folder:PATH' or "
                             f"'corpus:NAME', got {self.data!r}")
        if self.data.startswith("corpus:"):
            from .data.corpora import CORPORA

            if self.data[7:] not in CORPORA:
                raise ValueError(f"--data {self.data!r}: unknown corpus; known corpora: {', '.join(CORPORA)}")
            if (self.data[7:] == "photo") != (self.channels == 3):
                raise ValueError(f"--data {self.data} needs --channels {3 if self.data[7:] == 'photo' else 1}, "
                                 f"got {self.channels}")
        if positive_int(self.channels, "--channels") not in (1, 3):
            raise ValueError(f"--channels must be 1 (grey) or 3 (RGB), got {self.channels}")
        if self.data == "phantoms" and self.channels != 1:
            raise ValueError(f"--data phantoms needs --channels 1, got {self.channels}")
        positive_int(self.steps, "--steps")
        positive_int(self.batch, "--batch")
        positive_int(self.base, "--base")
        if not isinstance(self.mults, (tuple, list)) or not self.mults:
            raise ValueError(f"mults must be a non-empty tuple of integers >= 1, got {self.mults!r}")
        for m in self.mults:
            positive_int(m, "mults entries")
        positive_int(self.blocks, "blocks")
        if not isinstance(self.attention_levels, (tuple, list)):
            raise TypeError(f"attention_levels must be a tuple of levels, got {self.attention_levels!r}")
        for a in self.attention_levels:
            if positive_int(a, "attention_levels entries", minimum=0) >= len(self.mults):
                raise ValueError(f"attention_levels entries must be < len(mults) = {len(self.mults)}, "
                                 f"got {self.attention_levels!r}")
        k = 2 ** (len(self.mults) - 1)
        if not isinstance(self.patch_sizes, (tuple, list)):
            raise TypeError(f"patch_sizes must be a tuple of integers, got {self.patch_sizes!r}")
        for ps in self.patch_sizes:
            if positive_int(ps, "--patch-sizes entries") % k or ps > self.size:
                raise ValueError(f"--patch-sizes entries must be multiples of {k} and <= --size ({self.size}, the "
                                 f"frame), got {tuple(self.patch_sizes)}")
        real_number(self.intensity_aug, "--intensity-aug", low=0.0, high=0.9)
        if not isinstance(self.scales, (tuple, list)) or not self.scales:
            raise ValueError(f"--scales must be a non-empty list of numbers in [0.001, 4], got {self.scales!r}")
        for sc in self.scales:
            real_number(sc, "--scales entries", low=1e-3, high=4.0)
        if tuple(self.scales) != (1.0,) and (self.patch_sizes or not self.data.startswith("corpus:")):
            raise ValueError(f"--scales applies to --data corpus:NAME without --patch-sizes only, got --data "
                             f"{self.data!r}" + (f" with --patch-sizes {tuple(self.patch_sizes)}" if self.patch_sizes else ""))
        if positive_int(self.size, "--size") % k:
            raise ValueError(f"--size must be a multiple of {k} (the UNet halves the image {len(self.mults) - 1} "
                             f"times), got {self.size}")
        problem = unet_config_problem(self.unet_config())
        if problem:
            small = [b for b in range(1, 8) if not unet_config_problem(
                UNetConfig(channels=self.channels, base=b, mults=tuple(self.mults), blocks=self.blocks,
                           attention_levels=tuple(self.attention_levels)))]
            extra = f" or {', '.join(map(str, small))}" if small else ""
            raise ValueError(f"--base {self.base} does not fit the UNet: {problem}; with mults={tuple(self.mults)}, "
                             f"--base must be a multiple of 8 (8, 16, 24, 32, ...){extra}")
        try:  # shapes only: the meta device allocates nothing and draws no random numbers
            side = min(self.patch_sizes) if self.patch_sizes else self.size
            cin = self.channels + self.unet_config().cond_channels
            with torch.device("meta"):
                UNet(self.unet_config())(torch.zeros(self.batch, cin, side, side), torch.zeros(self.batch))
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"--size {self.size} is too small for the UNet with --base {self.base} and "
                             f"mults={tuple(self.mults)}: {err}") from None
        real_number(self.lr, "--lr", low=0.0)  # 0 freezes the weights (re-export, provenance tests)
        positive_int(self.warmup, "warmup")
        real_number(self.ema_decay, "ema_decay", low=0.0, high=1.0)
        real_number(self.grad_clip, "grad_clip", low=0.0, low_open=True)
        real_number(self.weight_decay, "weight_decay", low=0.0)
        real_number(self.p_mean, "p_mean")
        real_number(self.p_std, "p_std", low=0.0, low_open=True)
        real_number(self.sigma_data, "sigma_data", low=0.0, low_open=True)
        real_number(self.sigma_min, "sigma_min", low=0.0, low_open=True)
        if real_number(self.sigma_max, "sigma_max") <= self.sigma_min:
            raise ValueError(f"sigma_max must be > sigma_min = {self.sigma_min:g}, got {self.sigma_max!r}")
        if not 0 <= positive_int(self.seed, "--seed", minimum=0) < 2**63:
            raise ValueError(f"--seed must be an integer in [0, 2**63), got {self.seed}")
        positive_int(self.n_phantoms, "n_phantoms")
        positive_int(self.threads, "--threads (0: the idle cores)", minimum=0)
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"--device must be a torch device name such as 'cpu' or 'cuda', got {self.device!r}")
        real_number(self.ckpt_minutes, "--ckpt-minutes", low=0.0)
        real_number(self.max_minutes, "--max-minutes (0: no limit)", low=0.0)
        if not isinstance(self.out, (str, os.PathLike)) or not str(self.out):
            raise ValueError(f"--out must be a file path, got {self.out!r}")
        if not isinstance(self.init, (str, os.PathLike)):
            raise TypeError(f"--init must be a file path or '', got {type(self.init).__name__}")
        if not isinstance(self.color_aug, bool):
            raise TypeError(f"color_aug must be True or False, got {self.color_aug!r}")
        if positive_int(self.stop_after, "--stop-after (0: run to --steps)", minimum=0) > self.steps:
            raise ValueError(f"--stop-after must be <= --steps ({self.steps}), got {self.stop_after}")


# --------------------------------------------------------------------------- data samplers

def _phantom_sampler(cfg: TrainConfig, generator: torch.Generator):
    from .data.phantoms import body_phantoms

    if cfg.channels != 1:
        raise ValueError(f"--data phantoms needs --channels 1, got {cfg.channels}")
    pool_gen = torch.Generator().manual_seed(PHANTOM_TRAIN_SEED + cfg.seed)
    # A run never sees more than steps × batch distinct images: do not generate more.
    pool = body_phantoms(min(cfg.n_phantoms, cfg.steps * cfg.batch), cfg.size, "mixed", generator=pool_gen)

    def sample(batch):
        idx = torch.randint(len(pool), (batch,), generator=generator)
        x = pool[idx]
        flip = torch.rand(batch, generator=generator) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(-1), x)

    return sample


def dihedral_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each square image of ``x`` ``(N, C, S, S)`` under a random one of the 8 symmetries of the
    square (a rotation by k·90°, k uniform in 0..3, then a left-right flip half the time); a new tensor."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"dihedral augmentation needs square images, got {tuple(x.shape[-2:])}")
    k = torch.randint(4, (x.shape[0],), generator=generator)
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    out = [xi.rot90(int(ki), dims=(-2, -1)) for xi, ki in zip(x, k)]
    return torch.stack([o.flip(-1) if f else o for o, f in zip(out, flip)])


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


def _patch_sampler(images, cfg: TrainConfig, generator: torch.Generator):
    """Position-tagged patches for :class:`~invdiff.priors.patch.PatchPrior` training.

    Each example is a ``cfg.size`` frame of a random training image (a random window when the
    image is larger, centred in zero padding when smaller, flipped left-right half the time),
    from which :func:`~invdiff.priors.patch.patch_training_batch` cuts one patch. One patch size
    per batch, drawn from ``cfg.patch_sizes``; smaller patches come in proportionally larger
    batches so that every step sees about as many pixels.
    """
    import torch.nn.functional as F

    from .priors.patch import patch_training_batch

    side = cfg.size
    largest = max(cfg.patch_sizes)

    def frame(img):
        c, h, w = img.shape
        ph, pw = max(0, side - h), max(0, side - w)
        img = F.pad(img, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        i = int(torch.randint(img.shape[-2] - side + 1, (1,), generator=generator))
        j = int(torch.randint(img.shape[-1] - side + 1, (1,), generator=generator))
        out = img[:, i:i + side, j:j + side]
        return out.flip(-1) if torch.rand(1, generator=generator) < 0.5 else out

    def sample(batch):
        ps = cfg.patch_sizes[int(torch.randint(len(cfg.patch_sizes), (1,), generator=generator))]
        n = max(1, round(batch * (largest / ps) ** 2))
        idx = torch.randint(len(images), (n,), generator=generator)
        frames = torch.stack([frame(images[int(k)]) for k in idx])
        if cfg.dihedral:  # before cutting: positions stay those of the transformed frame
            frames = dihedral_augment(frames, generator)
        return patch_training_batch(frames, ps, generator)

    return sample


def _corpus_images(cfg: TrainConfig) -> list[torch.Tensor]:
    from .data.corpora import training_images

    out = []
    for img in training_images(cfg.data[len("corpus:"):], frame=cfg.size):
        t = torch.as_tensor(img, dtype=torch.float32)
        out.append(t[None] if t.ndim == 2 else t.permute(2, 0, 1).contiguous())
    return out


def make_sampler(cfg: TrainConfig, generator: torch.Generator):
    """Return ``sample(batch)`` for ``cfg.data``: images ``(batch, C, size, size)``, or with
    ``cfg.patch_sizes`` a pair ``(patches, positions)`` (:func:`_patch_sampler`)."""
    from .data import io

    if cfg.patch_sizes:
        if cfg.data == "phantoms":
            from .data.phantoms import body_phantoms

            pool_gen = torch.Generator().manual_seed(PHANTOM_TRAIN_SEED + cfg.seed)
            images = list(body_phantoms(min(cfg.n_phantoms, cfg.steps * cfg.batch), cfg.size, "mixed",
                                        generator=pool_gen))
        elif cfg.data.startswith("corpus:"):
            images = _corpus_images(cfg)
        elif cfg.data.startswith("folder:"):
            images = io.load_folder(cfg.data[len("folder:"):], channels=cfg.channels)
        else:
            names = PHOTO_TRAIN if cfg.data == "photos" else tuple(cfg.data[len("photos:"):].split(","))
            images = [io.sample_photo(name, channels=cfg.channels) for name in names]
        return _patch_sampler(images, cfg, generator)
    if cfg.data.startswith("corpus:"):  # random crops at the images' own pixel scale (fully convolutional prior)
        return _pyramid_sampler(_corpus_images(cfg), cfg, generator, scales=tuple(cfg.scales))
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
        **({"patch": str(max(cfg.patch_sizes)), "frame": str(cfg.size),
            "patch_sizes": json.dumps(list(cfg.patch_sizes))} if cfg.patch_sizes else {}),
        "intensity_aug": str(cfg.intensity_aug),
        "dihedral": str(cfg.dihedral),
        "scales": json.dumps(list(cfg.scales)),
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


def _data_setup(cfg: TrainConfig) -> str:
    """What a resumed run must share with the checkpoint besides the architecture (a JSON str)."""
    return json.dumps({"data": cfg.data, "size": cfg.size, "patch_sizes": list(cfg.patch_sizes),
                       "intensity_aug": cfg.intensity_aug, "dihedral": cfg.dihedral,
                       "scales": [float(s) for s in cfg.scales]})


def _save_ckpt(path, net, ema, opt, generator, step, seconds, setup: str = ""):
    state = {"net": net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
             "generator": generator.get_state(), "step": step, "seconds": seconds,
             "unet_config": net.config.to_json(),  # strs: still readable with weights_only=True
             "setup": setup}
    tmp = str(path) + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


_CKPT_KEYS = ("net", "ema", "opt", "generator", "step", "seconds")


def _arch(config: UNetConfig) -> str:
    return (f"base={config.base}, channels={config.channels}, mults={tuple(config.mults)}, "
            f"blocks={config.blocks}, attention_levels={tuple(config.attention_levels)}, "
            f"cond_channels={config.cond_channels} ({'patch prior' if config.cond_channels else 'whole images'})")


def _load_resume(path: Path, cfg: TrainConfig, net, ema, opt, generator) -> tuple[int, float]:
    """Restore ``net``, ``ema``, ``opt`` and ``generator`` from the ``--resume`` checkpoint ``path``.

    The file is read with ``torch.load(weights_only=True)`` (tensors and plain values, never
    pickled code) and checked before anything is restored: a truncated or corrupt file, a file
    of another kind, another architecture (``--base``, ``--channels``), non-finite weights or a
    malformed step raise ``ValueError`` naming the file. Returns ``(step, seconds)``.
    """
    name = str(path)
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except OSError:
        raise
    except Exception as err:  # noqa: BLE001 - zip, unpickling and EOF errors all mean "unreadable"
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"--resume checkpoint {name} cannot be read (truncated or corrupt: {detail[:200]}); "
                         f"delete it to start over") from None
    if not isinstance(state, dict) or any(k not in state for k in _CKPT_KEYS):
        raise ValueError(f"--resume checkpoint {name} is not an invdiff training checkpoint (expected the keys "
                         f"{', '.join(_CKPT_KEYS)})")
    want = cfg.unet_config()
    if "unet_config" in state:
        try:
            have = UNetConfig.from_json(state["unet_config"])
        except (TypeError, ValueError, KeyError):
            raise ValueError(f"--resume checkpoint {name} has an unreadable architecture record") from None
        if have != want:
            raise ValueError(f"--resume checkpoint {name} was written for {_arch(have)} but this run asks "
                             f"{_arch(want)}; resume with the same --base, --channels and --patch-sizes (or none), or use another --out")
    if state.get("setup"):  # checkpoints written before the setup was recorded are not checked
        try:
            had, want_setup = json.loads(state["setup"]), json.loads(_data_setup(cfg))
            had = {"dihedral": False, "scales": [1.0], **had}  # recorded before these options existed
        except (TypeError, ValueError):
            raise ValueError(f"--resume checkpoint {name} has an unreadable data setup record") from None
        differ = {k: (had.get(k), v) for k, v in want_setup.items() if had.get(k) != v}
        if differ:
            raise ValueError(f"--resume checkpoint {name} was trained with other data settings: "
                             + ", ".join(f"{k} {a!r} there, {b!r} here" for k, (a, b) in differ.items())
                             + "; resume with the same --data, --size, --patch-sizes, --intensity-aug, --dihedral and --scales")
    expected = net.state_dict()
    for part in ("net", "ema"):
        sd = state[part]
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise ValueError(f"--resume checkpoint {name}: its '{part}' entry is not a state dict of tensors")
        wrong = (set(expected) ^ set(sd)) | {k for k in expected if k in sd and sd[k].shape != expected[k].shape}
        if wrong:
            inp = sd.get("inp.weight")
            written = (f"base={inp.shape[0]}, channels={inp.shape[1]}" if isinstance(inp, torch.Tensor)
                       and inp.ndim == 4 else "another network")
            raise ValueError(f"--resume checkpoint {name} was written for {written} but this run asks {_arch(want)} "
                             f"({len(wrong)} weight(s) differ, e.g. {sorted(wrong)[0]}); resume with the same "
                             f"--base and --channels, or use another --out")
        bad = sorted(k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all())
        if bad:
            raise ValueError(f"--resume checkpoint {name} is corrupt: its '{part}' weights hold NaN or Inf "
                             f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})")
    gen, step, seconds = state["generator"], state["step"], state["seconds"]
    if not isinstance(gen, torch.Tensor) or gen.dtype != torch.uint8:
        raise ValueError(f"--resume checkpoint {name} is corrupt: its generator state is not a byte tensor")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"--resume checkpoint {name} is corrupt: step {step!r} is not an integer >= 0")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"--resume checkpoint {name} is corrupt: seconds {seconds!r} is not a finite number >= 0")
    if cfg.stop_after and step >= cfg.stop_after:
        raise ValueError(f"--stop-after {cfg.stop_after} is not after the step of --resume checkpoint {name} ({step}); "
                         f"use a larger --stop-after or 0 to run to --steps")
    try:
        net.load_state_dict(state["net"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        generator.set_state(gen)
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"--resume checkpoint {name} cannot be restored into this run: {err}") from None
    return int(step), float(seconds)


# --------------------------------------------------------------------------- training loop

def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> Path:
    """Train an EDM-preconditioned UNet prior; returns the path of the exported safetensors.

    ``cfg`` is validated again here (it may have been changed after construction); with
    ``resume=True`` an existing ``OUT.ckpt.pt`` is checked and restored (see :func:`_load_resume`).
    """
    cfg.validate()
    from .threads import set_threads

    threads_before = torch.get_num_threads()
    set_threads(cfg.threads)
    try:
        return _train(cfg, resume=resume, progress=progress)
    finally:  # a caller in the same process keeps its own thread count
        torch.set_num_threads(threads_before)


def _train(cfg: TrainConfig, *, resume: bool, progress: bool) -> Path:
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt_path = Path(str(out) + ".ckpt.pt")

    torch.manual_seed(cfg.seed)  # parameter initialisation only; data uses `generator`
    generator = torch.Generator().manual_seed(cfg.seed)
    device = resolve_device(cfg.device, name="--device")
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
        step, seconds = _load_resume(ckpt_path, cfg, net, ema, opt, generator)
    sample = make_sampler(cfg, generator)
    if cfg.patch_sizes:
        kw = dict(patch=max(cfg.patch_sizes), frame=cfg.size, sigma_data=cfg.sigma_data, sigma_min=cfg.sigma_min,
                  sigma_max=cfg.sigma_max)
        prior, ema_prior = PatchPrior(net, **kw), PatchPrior(ema, **kw)
    else:
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
        x0, pos = x0 if isinstance(x0, tuple) else (x0, None)
        n = x0.shape[0]
        if cfg.dihedral and pos is None:
            x0 = dihedral_augment(x0, generator)
        if cfg.intensity_aug:
            scale = 1 + cfg.intensity_aug * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)
            x0 = (x0 * scale).clamp(0, 1)
        sigma = torch.exp(cfg.p_mean + cfg.p_std * torch.randn(n, generator=generator))
        sigma = sigma.clamp(cfg.sigma_min, cfg.sigma_max)
        noise = torch.randn(x0.shape, generator=generator)
        x0, sigma, noise = x0.to(device), sigma.to(device), noise.to(device)
        s4 = sigma[:, None, None, None]
        if pos is None:
            denoised = prior.denoise(x0 + s4 * noise, sigma)
        else:  # patches: pixels outside the frame are read as 0 and returned as 0 (PatchPrior.patch_denoise)
            denoised = prior.patch_denoise(x0 + s4 * noise, s4, pos.to(device))
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
            _save_ckpt(ckpt_path, net, ema, opt, generator, step, seconds, _data_setup(cfg))
            export_safetensors(ema_prior, out, _metadata(cfg, step, seconds))
            last_ckpt = now
        if out_of_time:
            break
    bar.close()
    return out
