"""Shipped checkpoints: ``load_prior(name)`` verifies sha256 and loads safetensors only.

The catalog (``invdiff/priors/catalog.toml``) records for each checkpoint its file, sha256,
resolution, channels, sigma range, data range, training data and command, steps, wall time,
hardware and ``validated_size`` (the side of the largest images it was benchmarked on; more
than twice that, the prior warns once). Model cards live in ``docs/model_cards/NAME.md``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .unet import EDMPrior, UNet, UNetConfig

import tomllib

__all__ = ["load_prior", "load_checkpoint", "catalog", "available_priors", "sha256_file", "CATALOG_PATH",
           "WEIGHTS_DIR", "read_safetensors"]

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


def read_safetensors(path: Path):
    """``(tensors, metadata)`` of a safetensors file (never pickle); ``ValueError`` naming an unreadable file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # noqa: BLE001 - truncated or not a safetensors file
        raise ValueError(f"cannot read checkpoint {str(path)!r} as safetensors: {err}") from err
    return tensors, meta


def _read_metadata(p: Path, meta: dict):
    """``(config, img_size, sigma_min, sigma_max, sigma_data)`` from a checkpoint's metadata, checked."""
    required = ("unet_config", "img_size", "sigma_min", "sigma_max", "sigma_data")
    missing = [k for k in required if k not in meta]
    if missing:
        raise ValueError(f"checkpoint {str(p)!r} has incomplete metadata: missing {', '.join(missing)}")
    try:
        config = UNetConfig.from_json(meta["unet_config"])
        img_size = tuple(json.loads(meta["img_size"]))
        sigma_min, sigma_max = float(meta["sigma_min"]), float(meta["sigma_max"])
        sigma_data = float(meta["sigma_data"])
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise ValueError(f"checkpoint {str(p)!r} has unreadable metadata: {err}") from None
    if (len(img_size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in img_size)):
        raise ValueError(f"checkpoint {str(p)!r} has inconsistent metadata: img_size {meta['img_size']} is not "
                         f"two positive integers")
    if not (0 < sigma_min < sigma_max < float("inf")) or not (0 < sigma_data < float("inf")):
        raise ValueError(f"checkpoint {str(p)!r} has inconsistent metadata: sigma_min={meta['sigma_min']}, "
                         f"sigma_max={meta['sigma_max']}, sigma_data={meta['sigma_data']} (need "
                         f"0 < sigma_min < sigma_max and sigma_data > 0, all finite)")
    if "channels" in meta and meta["channels"] != str(config.channels):
        raise ValueError(f"checkpoint {str(p)!r} has inconsistent metadata: channels={meta['channels']} but its "
                         f"unet_config has channels={config.channels}")
    return config, img_size, sigma_min, sigma_max, sigma_data


def _check_weights(p: Path, tensors: dict, net: UNet) -> None:
    """Every weight finite, and the keys and shapes exactly those of ``net`` (built from the metadata)."""
    expected = net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = sorted(k for k in expected if k in tensors and tuple(tensors[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                 f"{len(shapes)} of another shape (e.g. {shapes[0]}: file {tuple(tensors[shapes[0]].shape)}, "
                 f"network {tuple(expected[shapes[0]].shape)})" if shapes else ""]
        raise ValueError(f"weights in {str(p)!r} do not fit the UNet described in its metadata "
                         f"({net.config.to_json()}): " + ", ".join(x for x in parts if x))
    bad = sorted(k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all())
    if bad:
        raise ValueError(f"checkpoint {str(p)!r} is corrupt: {len(bad)} weight tensor(s) hold NaN or Inf "
                         f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})")
    wrong = sorted(k for k, t in tensors.items() if expected[k].is_floating_point() and not t.is_floating_point())
    if wrong:
        raise ValueError(f"checkpoint {str(p)!r} is corrupt: weight {wrong[0]} has dtype {tensors[wrong[0]].dtype}, "
                         f"not a floating dtype")


def load_checkpoint(path, *, sha256: str | None = None, entry: dict | None = None) -> EDMPrior:
    """Load an invdiff EDM-UNet checkpoint (``invdiff train`` output) as an :class:`EDMPrior`.

    Parameters
    ----------
    path : str or Path
        The ``.safetensors`` file.
    sha256 : str, optional
        Expected hash of the file.
    entry : dict, optional
        A catalog entry that must agree with the file's metadata on channels, resolution and
        sigma range.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist or is not a file.
    ValueError
        Naming the file: the hash differs from ``sha256``; the file is not safetensors (or is
        truncated); it is not an invdiff EDM-UNet checkpoint; its metadata is incomplete or
        inconsistent (the architecture it describes does not have exactly the file's weight
        names and shapes); a weight holds NaN or Inf (checked even without ``sha256``); it does
        not match ``entry``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint file {str(p)!r} is missing" if not p.exists()
                                else f"checkpoint {str(p)!r} is not a file")
    if sha256 is not None:
        actual = sha256_file(p)
        if actual != sha256:
            raise ValueError(f"checkpoint {str(p)!r} is corrupt or modified: sha256 {actual} "
                             f"does not match the expected {sha256}")
    tensors, meta = read_safetensors(p)
    if meta.get("format") != "invdiff-edm-unet-v1":
        raise ValueError(f"{str(p)!r} is not an invdiff EDM-UNet checkpoint (format {meta.get('format')!r})")
    config, img_size, sigma_min, sigma_max, sigma_data = _read_metadata(p, meta)
    if entry is not None:
        expected = {"channels": int(entry["channels"]), "resolution": tuple(entry["resolution"]),
                    "sigma_min": float(entry["sigma_min"]), "sigma_max": float(entry["sigma_max"])}
        found = {"channels": config.channels, "resolution": img_size, "sigma_min": sigma_min,
                 "sigma_max": sigma_max}
        bad = {k: (expected[k], found[k]) for k in expected if expected[k] != found[k]}
        if bad:
            raise ValueError(f"catalog entry does not match the weights in {str(p)!r}: "
                             + ", ".join(f"{k} catalog={a!r} file={b!r}" for k, (a, b) in bad.items()))
    try:
        net = UNet(config)
    except (ValueError, TypeError, RuntimeError) as err:
        raise ValueError(f"checkpoint {str(p)!r} has inconsistent metadata: its unet_config "
                         f"{meta['unet_config']} does not describe a buildable UNet ({err})") from None
    _check_weights(p, tensors, net)
    try:
        net.load_state_dict(tensors)
    except RuntimeError as err:
        raise ValueError(f"weights in {str(p)!r} do not fit the UNet described in its metadata: {err}") from err
    if config.cond_channels and "patch" not in meta:
        raise ValueError(f"checkpoint {str(p)!r} has inconsistent metadata: its network takes {config.cond_channels} "
                         f"conditioning channels but the file has no patch metadata (patch, frame)")
    if "patch" in meta:  # a position-aware patch prior (invdiff train --patch-sizes)
        from .patch import PatchPrior

        try:
            patch, frame = int(meta["patch"]), int(meta["frame"])
        except (KeyError, ValueError) as err:
            raise ValueError(f"checkpoint {str(p)!r} has unreadable patch metadata: {err}") from None
        prior = PatchPrior(net, patch=patch, frame=frame, sigma_data=sigma_data, sigma_min=sigma_min,
                           sigma_max=sigma_max)
    else:
        prior = EDMPrior(net, sigma_data=sigma_data, sigma_min=sigma_min, sigma_max=sigma_max,
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
    if "validated_size" in entry:  # the largest images it was benchmarked on (the size warning's bar)
        prior.validated_size = int(entry["validated_size"])
    return prior.to(device)
