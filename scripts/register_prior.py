"""Copy a trained checkpoint into the package and (re)write its catalog entry from its metadata.

Usage::

    .venv/bin/python scripts/register_prior.py phantom64 runs/phantom64.safetensors \\
        --training-data "..." --hardware "..."

The entry's sha256, resolution, channels, sigma range, steps, wall time and command come from
the file itself, so the catalog cannot drift from the weights.
"""

from __future__ import annotations

import argparse
import json
import shutil

from invdiff.priors.unet import UNet, UNetConfig, count_parameters
from invdiff.priors.zoo import CATALOG_PATH, WEIGHTS_DIR, read_safetensors, catalog, sha256_file


def _toml_value(v):
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def write_catalog(entries: dict) -> None:
    lines = ["# Shipped invdiff priors. Every field is checked against the weights' own metadata on load.",
             "# Written by scripts/register_prior.py.", ""]
    for name in sorted(entries):
        lines.append(f"[{name}]")
        for k, v in entries[name].items():
            lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    CATALOG_PATH.write_text("\n".join(lines))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name")
    p.add_argument("file")
    p.add_argument("--training-data", required=True)
    p.add_argument("--hardware", required=True)
    p.add_argument("--card", default=None)
    p.add_argument("--validated-size", type=int, default=None,
                   help="side of the largest images the prior was evaluated on (default: its training size); "
                        "larger than twice this, loading it warns once")
    args = p.parse_args(argv)
    _, meta = read_safetensors(args.file)
    dest = WEIGHTS_DIR / f"{args.name}.safetensors"
    WEIGHTS_DIR.mkdir(exist_ok=True)
    shutil.copyfile(args.file, dest)
    config = UNetConfig.from_json(meta["unet_config"])
    n_params = count_parameters(UNet(config))
    entry = {
        "file": dest.name,
        "sha256": sha256_file(dest),
        "resolution": json.loads(meta["img_size"]),
        "channels": config.channels,
        "data_range": [0.0, 1.0],
        "sigma_min": float(meta["sigma_min"]),
        "sigma_max": float(meta["sigma_max"]),
        "parameters": n_params,
        "training_data": args.training_data,
        "command": meta["command"],
        "steps": int(meta["steps"]),
        "wall_time_s": int(float(meta["train_seconds"])),
        "hardware": args.hardware,
        "card": args.card or f"docs/model_cards/{args.name}.md",
        "validated_size": args.validated_size or max(json.loads(meta["img_size"])),
    }
    entries = catalog() if CATALOG_PATH.exists() else {}
    entries[args.name] = entry
    write_catalog(entries)
    print(f"registered {args.name}: {dest} sha256={entry['sha256']}")


if __name__ == "__main__":
    main()
