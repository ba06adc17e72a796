"""The small UNet of the shipped checkpoints, wrapped with EDM preconditioning.

Karras, Aittala, Aila, Laine, "Elucidating the Design Space of Diffusion-Based Generative
Models" (NeurIPS 2022), Table 1: the denoiser is

.. math:: D(x, \\sigma) = c_\\text{skip}(\\sigma)\\,x + c_\\text{out}(\\sigma)\\,
          F\\big(c_\\text{in}(\\sigma)\\,x,\\; c_\\text{noise}(\\sigma)\\big)

with :math:`c_\\text{skip} = \\sigma_d^2/(\\sigma^2+\\sigma_d^2)`,
:math:`c_\\text{out} = \\sigma\\sigma_d/\\sqrt{\\sigma^2+\\sigma_d^2}`,
:math:`c_\\text{in} = 1/\\sqrt{\\sigma^2+\\sigma_d^2}`, :math:`c_\\text{noise} = \\ln(\\sigma)/4`.

invdiff images live in [0, 1]; the preconditioning is applied to ``x - 0.5`` (so the network
sees zero-centred data) with :math:`\\sigma_d = 0.25`, the EDM value 0.5 halved for the
halved intensity range.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass

import torch
from torch import nn
import torch.nn.functional as F

from .prior import Prior

__all__ = ["UNetConfig", "UNet", "EDMPrior", "count_parameters", "unet_config_problem"]


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of :class:`UNet` (stored in every checkpoint's metadata)."""

    channels: int = 1
    base: int = 32
    mults: tuple = (1, 2, 2)
    blocks: int = 2
    attention_levels: tuple = (2,)
    emb_dim: int = 128
    dropout: float = 0.0
    #: extra input channels that condition the network and are not denoised (2 for the pixel
    #: positions of :class:`~invdiff.priors.patch.PatchPrior`); the output has ``channels``
    cond_channels: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "UNetConfig":
        d = json.loads(text)
        d["mults"] = tuple(d["mults"])
        d["attention_levels"] = tuple(d["attention_levels"])
        return cls(**d)  # files written before cond_channels existed take its default, 0


def _groups(ch: int) -> int:
    return min(8, ch)


class _ResBlock(nn.Module):
    def __init__(self, cin, cout, emb_dim, dropout):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class _Attention(nn.Module):
    def __init__(self, ch, heads=4):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.heads = heads

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """A compact UNet ``F(x, c_noise)`` (residual blocks, FiLM noise embedding, attention)."""

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        c = config
        self.freqs = nn.Parameter(torch.randn(c.emb_dim // 2) * 4.0, requires_grad=False)
        self.emb_mlp = nn.Sequential(nn.Linear(c.emb_dim, c.emb_dim), nn.SiLU(),
                                     nn.Linear(c.emb_dim, c.emb_dim))
        self.inp = nn.Conv2d(c.channels + c.cond_channels, c.base, 3, padding=1)
        self.down = nn.ModuleList()
        chans = [c.base]
        ch = c.base
        for level, mult in enumerate(c.mults):
            for _ in range(c.blocks):
                block = nn.ModuleList([_ResBlock(ch, c.base * mult, c.emb_dim, c.dropout)])
                ch = c.base * mult
                if level in c.attention_levels:
                    block.append(_Attention(ch))
                self.down.append(block)
                chans.append(ch)
            if level < len(c.mults) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                chans.append(ch)
        self.mid = nn.ModuleList([_ResBlock(ch, ch, c.emb_dim, c.dropout), _Attention(ch),
                                  _ResBlock(ch, ch, c.emb_dim, c.dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(c.mults))):
            for _ in range(c.blocks + 1):
                block = nn.ModuleList([_ResBlock(ch + chans.pop(), c.base * mult, c.emb_dim, c.dropout)])
                ch = c.base * mult
                if level in c.attention_levels:
                    block.append(_Attention(ch))
                self.up.append(block)
            if level > 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"),
                                              nn.Conv2d(ch, ch, 3, padding=1)]))
        self.out_norm = nn.GroupNorm(_groups(ch), ch)
        self.out = nn.Conv2d(ch, c.channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x, c_noise):
        f = c_noise.reshape(-1, 1) * self.freqs[None]
        emb = self.emb_mlp(torch.cat([f.cos(), f.sin()], dim=1))
        h = self.inp(x)
        skips = [h]
        for block in self.down:
            if isinstance(block[0], _ResBlock):
                h = block[0](h, emb)
                for extra in block[1:]:
                    h = extra(h)
            else:
                h = block[0](h)
            skips.append(h)
        h = self.mid[0](h, emb)
        h = self.mid[1](h)
        h = self.mid[2](h, emb)
        for block in self.up:
            if isinstance(block[0], _ResBlock):
                h = block[0](torch.cat([h, skips.pop()], dim=1), emb)
                for extra in block[1:]:
                    h = extra(h)
            else:
                h = block[1](block[0](h))
        return self.out(F.silu(self.out_norm(h)))


class EDMPrior(Prior):
    """A :class:`Prior` from a :class:`UNet` with EDM preconditioning on ``x - 0.5``.

    Parameters
    ----------
    net : UNet
        The raw network ``F``; its weights are put in ``memory_format`` (a layout
        change only: the values, ``state_dict`` keys and saved files are unchanged).
    sigma_data : float
        Data standard deviation used by the preconditioning (0.25 in [0, 1] units).
    sigma_min, sigma_max : float
        Noise range the network was trained for.
    memory_format : torch.memory_format
        Layout of the weights and of the network's input: ``torch.channels_last`` (default, the
        fastest measured) or ``torch.contiguous_format``.
    img_size : (int, int) or None
        Training resolution; the network is fully convolutional, so other sizes divisible by
        ``2 ** (len(mults) - 1)`` run too (out of distribution, see the model cards).
    validated_size : int or None
        Side of the largest images the prior was evaluated on (a shipped prior's catalog
        records it; default: the training resolution). An image with a side more than twice
        this gets a one-line warning with the sizes, once per prior.
    """

    def __init__(self, net: UNet, *, sigma_data: float = 0.25, sigma_min: float = 2e-3,
                 sigma_max: float = 40.0, img_size=None, memory_format=torch.channels_last,
                 validated_size=None):
        super().__init__()
        # Channels-last memory layout (values unchanged): the convolutions run 1.2× (64 px) to
        # 3.2× (512 px) faster on CPU with identical results (benchmarks/network.md).
        self.memory_format = memory_format
        self.net = net.to(memory_format=memory_format)
        self.sigma_data = float(sigma_data)
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.channels = net.config.channels
        self.img_size = tuple(img_size) if img_size is not None else None
        if validated_size is None and self.img_size is not None:
            validated_size = max(self.img_size)
        self.validated_size = int(validated_size) if validated_size is not None else None
        self._warned_size = False

    def check_input(self, x):
        super().check_input(x)
        k = 2 ** (len(self.net.config.mults) - 1)
        if x.shape[-1] % k or x.shape[-2] % k:
            raise ValueError(f"{type(self).__name__}: H and W must be divisible by {k}, "
                             f"got {tuple(x.shape)}")
        self._warn_if_far_larger(*x.shape[-2:])

    def _warn_if_far_larger(self, h: int, w: int) -> None:
        """Warn once when an image side exceeds twice :attr:`validated_size`."""
        if self.validated_size is None or self._warned_size or max(h, w) <= 2 * self.validated_size:
            return
        self._warned_size = True
        name = getattr(self, "name", None)
        train = f"; trained on {self.img_size[0]}×{self.img_size[1]} px" if self.img_size else ""
        warnings.warn(f"{type(self).__name__}{f' {name!r}' if name else ''}: a {h}×{w} image is more than twice "
                      f"the largest size it was validated on ({self.validated_size} px{train}); "
                      f"{self._size_warning_reason}", stacklevel=4)

    #: The last clause of the size warning (a subclass may say why large images are out of distribution).
    _size_warning_reason = "expect results out of distribution"

    def _denoise(self, x, sigma):
        return self.network_denoise(x, sigma)

    def network_denoise(self, x, sigma, cond=None):
        """The preconditioned network ``D(x, sigma)`` on validated input; ``cond`` (optional,
        ``(B, cond_channels, H, W)``) is appended to the network's input channels unscaled."""
        sd = self.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / torch.sqrt(sigma**2 + sd**2)
        c_in = 1 / torch.sqrt(sigma**2 + sd**2)
        c_noise = torch.log(sigma.reshape(-1)) / 4
        xc = x - 0.5
        # The network runs in its own floating dtype (float64 or float16 input into a float32
        # network is cast at this boundary); the result is in x's dtype.
        net_dtype = next((p.dtype for p in self.net.parameters() if p.is_floating_point()), x.dtype)
        inp = (c_in * xc).to(net_dtype)
        if cond is not None:
            inp = torch.cat([inp, cond.to(device=inp.device, dtype=net_dtype)], dim=1)
        inp = inp.contiguous(memory_format=self.memory_format)
        out = self.net(inp, c_noise.to(net_dtype)).to(x.dtype).contiguous()
        return 0.5 + c_skip * xc + c_out * out

    def loss_weight(self, sigma):
        """EDM loss weight ``(sigma^2 + sigma_d^2) / (sigma * sigma_d)^2``."""
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (the fixed Fourier frequencies of the embedding excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def unet_config_problem(config: UNetConfig) -> str:
    """Why the UNet of ``config`` cannot be built or run ('' if it can).

    The network is built on the ``meta`` device (shapes only, no memory, no random numbers
    drawn), so the check follows the UNet's code: every GroupNorm needs its channel count
    divisible by its groups (``min(8, channels)``), every attention layer by its 4 heads.
    """
    import re

    try:
        with torch.device("meta"):
            net = UNet(config)
    except ValueError as err:
        found = re.search(r"num_channels \((\d+)\) must be divisible by num_groups \((\d+)\)", str(err))
        if found:
            return f"a layer would have {found[1]} channels, which its GroupNorm cannot split into {found[2]} groups"
        return str(err)
    for m in net.modules():
        if isinstance(m, _Attention) and m.norm.num_channels % m.heads:
            return f"an attention layer would have {m.norm.num_channels} channels, not divisible by its {m.heads} heads"
    return ""
