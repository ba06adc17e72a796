"""Shipped checkpoints: ``load_prior(name)`` verifies sha256 and loads safetensors only.

The catalog (``invdiff/priors/catalog.toml``) records for each checkpoint its file, sha256,
resolution, channels, sigma range, data range, training data and command, steps, wall time and
hardware. Model cards live in ``docs/model_cards/NAME.md``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from .unet import EDMPrior, UNet, UNetConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["load_prior", "load_checkpoint", "catalog", "available_priors", "sha256_file", "CATALOG_PATH",
           "WEIGHTS_DIR"]

CATALOG_PATH = Path(__file__).with_name("catalog.toml")
WEIGHTS_DIR = Path(__file__).with_name("weights")


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def catalog(path=CATALOG_PATH) -> dict:
    """The parsed catalog: ``{name: entry}``."""
    with open(path, "rb") as f:
        return tomllib.load(f)


def available_priors() -> list[str]:
    return sorted(catalog())


def _read_safetensors(path: Path):
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # noqa: BLE001 - truncated or not a safetensors file
        raise ValueError(f"cannot read checkpoint {str(path)!r} as safetensors: {err}") from err
    return tensors, meta


def load_checkpoint(path, *, sha256: str | None = None, entry: dict | None = None) -> EDMPrior:
    """Load an invdiff EDM-UNet checkpoint (``invdiff train`` output) as an :class:`EDMPrior`.

    ``sha256`` (optional) must match the file's hash. ``entry`` (a catalog entry) must agree with
    the file's metadata on channels, resolution and sigma range.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint file {str(p)!r} is missing")
    if sha256 is not None:
        actual = sha256_file(p)
        if actual != sha256:
            raise ValueError(f"checkpoint {str(p)!r} is corrupt or modified: sha256 {actual} "
                             f"does not match the expected {sha256}")
    tensors, meta = _read_safetensors(p)
    if meta.get("format") != "invdiff-edm-unet-v1":
        raise ValueError(f"{str(p)!r} is not an invdiff EDM-UNet checkpoint (format {meta.get('format')!r})")
    config = UNetConfig.from_json(meta["unet_config"])
    img_size = tuple(json.loads(meta["img_size"]))
    sigma_min, sigma_max = float(meta["sigma_min"]), float(meta["sigma_max"])
    if entry is not None:
        expected = {"channels": int(entry["channels"]), "resolution": tuple(entry["resolution"]),
                    "sigma_min": float(entry["sigma_min"]), "sigma_max": float(entry["sigma_max"])}
        found = {"channels": config.channels, "resolution": img_size, "sigma_min": sigma_min,
                 "sigma_max": sigma_max}
        bad = {k: (expected[k], found[k]) for k in expected if expected[k] != found[k]}
        if bad:
            raise ValueError(f"catalog entry does not match the weights in {str(p)!r}: "
                             + ", ".join(f"{k} catalog={a!r} file={b!r}" for k, (a, b) in bad.items()))
    net = UNet(config)
    try:
        net.load_state_dict(tensors)
    except RuntimeError as err:
        raise ValueError(f"weights in {str(p)!r} do not fit the UNet described in its metadata: {err}") from err
    prior = EDMPrior(net, sigma_data=float(meta["sigma_data"]), sigma_min=sigma_min, sigma_max=sigma_max,
                     img_size=img_size)
    prior.metadata = dict(meta)
    prior.eval().requires_grad_(False)
    return prior


def load_prior(name: str, *, device: str | torch.device = "cpu") -> EDMPrior:
    """A shipped prior by name (see :func:`available_priors`), sha256-verified, in eval mode."""
    cat = catalog()
    if name not in cat:
        raise ValueError(f"unknown prior {name!r}; available: {', '.join(sorted(cat))}")
    entry = cat[name]
    prior = load_checkpoint(WEIGHTS_DIR / entry["file"], sha256=entry["sha256"], entry=entry)
    prior.name = name
    return prior.to(device)
