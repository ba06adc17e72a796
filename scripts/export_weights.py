"""Export the raw (non-EMA) network of an ``invdiff train`` checkpoint as safetensors.

Usage::

    .venv/bin/python scripts/export_weights.py runs/mri_fc.safetensors runs/mri_fc_raw.safetensors

``invdiff train`` exports the exponential moving average (EMA) of the weights. In a short run
the EMA still carries much of the early weights (a decay of 0.999 keeps ``0.999**n`` of the
initial network after ``n`` steps: 26 % after 1,350 steps), so the raw network of the last
checkpoint (``OUT.ckpt.pt``, read with ``weights_only=True``) can be the better prior; which one
is shipped is decided on the validation split. The metadata is the EMA file's, with
``weights = "raw network at step N"`` added so the choice stays visible.
"""

from __future__ import annotations

import argparse

import torch

from invdiff.priors.zoo import read_safetensors
from invdiff.train import export_safetensors


class _Weights:
    """What :func:`~invdiff.train.export_safetensors` reads: ``.net.state_dict()``."""

    def __init__(self, state_dict: dict):
        self.net = self
        self._sd = state_dict

    def state_dict(self):
        return self._sd


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("exported", help="the EMA .safetensors written by invdiff train (its .ckpt.pt must exist)")
    p.add_argument("out", help="where to write the raw network's .safetensors")
    args = p.parse_args(argv)
    state = torch.load(args.exported + ".ckpt.pt", weights_only=True, map_location="cpu")
    tensors, meta = read_safetensors(args.exported)
    if set(tensors) != set(state["net"]):
        raise ValueError(f"{args.exported} and its checkpoint describe different networks")
    meta = dict(meta, weights=f"raw network at step {state['step']}", steps=str(state["step"]),
                train_seconds=f"{state['seconds']:.0f}")
    export_safetensors(_Weights(state["net"]), args.out, meta)
    print(f"wrote {args.out} (raw network, step {state['step']})")


if __name__ == "__main__":
    main()
