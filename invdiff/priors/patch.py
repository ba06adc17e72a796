"""Position-aware patch prior: a whole-image denoiser assembled from patch denoisers (PaDIS).

Hu, Song, Xu, Wu, Lu, Wang, Jiang, Xia, Fessler, "Learning image priors through patch-based
diffusion models for solving inverse problems", NeurIPS 2024 (PaDIS); the position channels
follow Wang et al., "Patch Diffusion: faster and more data-efficient training of diffusion
models", NeurIPS 2023.

Model
-----
The network ``D_θ(z, σ, p)`` denoises a ``P × P`` patch ``z`` given the normalised position
``p`` of each of its pixels in the whole image. For an image ``x`` of ``H × W`` pixels and a
grid shift ``s = (s_y, s_x) ∈ [0, P)²`` the image is zero-padded into an ``n_y P × n_x P``
canvas starting ``s`` pixels above and left of the image, cut into the ``n_y n_x`` patches of
that grid, and

.. math:: D(x, \\sigma) = \\operatorname{crop}_s\\Big(\\sum_k E_k^\\top
          D_\\theta\\big(E_k \\operatorname{pad}_s(x),\\; \\sigma,\\; E_k p\\big)\\Big),

with ``E_k`` the extraction of patch ``k`` (the patches tile the canvas, so each image pixel
is denoised exactly once). One batched network call per denoiser call covers the image.

==========================  ==========================================================
symbol                      meaning
==========================  ==========================================================
``P``                       patch size (pixels); the network's training patch sizes
``s = (s_y, s_x)``          grid shift, a hash of ``σ``: a new grid every solver step
``p = (p_y, p_x)``          pixel centre in the image, ``(2 i + 1) / H - 1`` (in (-1, 1)
                            inside, beyond ±1 on the zero padding)
``n_y, n_x``                patches per column / row: ``ceil((H + s_y) / P)``, ...
==========================  ==========================================================

Padding pixels enter the network as exact zeros (no noise) and its output there is dropped;
training does the same (:func:`patch_training_batch`), so the network knows the border.

PaDIS draws the shift at random each step. Here it is a hash of the noise level, so
consecutive steps (different ``σ``) see different grids — seams never sit still — while
:meth:`Prior.denoise` stays a function of ``(x, σ)``: a solver's run is reproducible from its
generator alone and autograd (DPS) sees the same graph it would for any prior.
"""

from __future__ import annotations

import hashlib
import math
import struct

import torch
import torch.nn.functional as F

from .unet import EDMPrior, UNet

__all__ = ["PatchPrior", "positions", "grid_shift", "patch_training_batch"]


def positions(rows: torch.Tensor, cols: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Position channels ``(2, len(rows), len(cols))`` of the pixels ``rows × cols`` of an
    ``height × width`` image: ``(2 i + 1) / H - 1`` down, ``(2 j + 1) / W - 1`` across."""
    py = (2 * rows.to(torch.float32) + 1) / height - 1
    px = (2 * cols.to(torch.float32) + 1) / width - 1
    return torch.stack([py[:, None].expand(len(rows), len(cols)), px[None, :].expand(len(rows), len(cols))])


def grid_shift(sigma: float, patch: int) -> tuple[int, int]:
    """The grid shift ``(s_y, s_x)`` in ``[0, patch)²`` used at noise level ``sigma`` (a hash of its bits)."""
    # hashed as float32, so a float64 and a float32 sigma of the same value pick the same grid
    digest = hashlib.blake2b(struct.pack("<f", min(float(sigma), 3.0e38)), digest_size=8).digest()
    return int.from_bytes(digest[:4], "little") % patch, int.from_bytes(digest[4:], "little") % patch


def _inside(pos: torch.Tensor) -> torch.Tensor:
    """``(B, 1, P, P)`` mask of the pixels of patches with positions ``pos`` that lie in the image."""
    return (pos.abs() < 1).all(dim=1, keepdim=True)


class PatchPrior(EDMPrior):
    """A :class:`~invdiff.priors.Prior` for images of any size ``H, W >= patch``, from a network
    trained on position-tagged patches (see the module docstring for the model).

    Parameters
    ----------
    net : UNet
        A UNet with ``cond_channels = 2`` (the position channels).
    patch : int
        Patch size of the assembly; a multiple of ``2 ** (len(mults) - 1)`` (the largest
        training patch size is the natural choice).
    frame : int
        Side of the images the network was trained on (positions are relative to the image,
        so images far larger than this are out of distribution: a one-time warning).
    sigma_data, sigma_min, sigma_max : float
        As for :class:`~invdiff.priors.unet.EDMPrior`.

    Attributes
    ----------
    batch_map : callable or None
        How the batch of patches reaches the network: ``None`` calls :meth:`patch_denoise` on all
        of them; ``batch_map(patch_denoise, z, sigma, pos)`` may split them, e.g. over the ranks
        of a process group (:func:`invdiff.distributed.tiles.distribute_prior`).
    """

    batch_map = None
    _size_warning_reason = "positions are relative to the frame, so its pixel scale is out of distribution"

    def __init__(self, net: UNet, *, patch: int, frame: int, sigma_data: float = 0.25, sigma_min: float = 2e-3,
                 sigma_max: float = 40.0):
        if net.config.cond_channels != 2:
            raise ValueError(f"PatchPrior needs a UNet with 2 position channels (cond_channels=2), "
                             f"got cond_channels={net.config.cond_channels}")
        k = 2 ** (len(net.config.mults) - 1)
        if isinstance(patch, bool) or not isinstance(patch, int) or patch < k or patch % k:
            raise ValueError(f"PatchPrior: patch must be a positive multiple of {k}, got {patch!r}")
        if isinstance(frame, bool) or not isinstance(frame, int) or frame < patch:
            raise ValueError(f"PatchPrior: frame must be an integer >= patch ({patch}), got {frame!r}")
        super().__init__(net, sigma_data=sigma_data, sigma_min=sigma_min, sigma_max=sigma_max,
                         img_size=(frame, frame))  # the training frames; any size runs
        self.patch = patch
        self.frame = frame

    def check_input(self, x):
        super(EDMPrior, self).check_input(x)  # channels; any size divisible or not
        h, w = x.shape[-2:]
        if h < self.patch or w < self.patch:
            raise ValueError(f"{type(self).__name__}: the image ({h}×{w} px) is smaller than the patch size "
                             f"{self.patch}; use a prior trained at that size or enlarge the image")
        self._warn_if_far_larger(h, w)

    def patch_denoise(self, z: torch.Tensor, sigma: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Denoise patches ``z`` ``(N, C, P, P)`` at ``sigma`` ``(N, 1, 1, 1)`` with positions ``pos``
        ``(N, 2, P, P)``; pixels outside the image are read as 0 and returned as 0."""
        inside = _inside(pos)
        out = self.network_denoise(torch.where(inside, z, torch.zeros((), dtype=z.dtype, device=z.device)),
                                   sigma, cond=pos)
        return torch.where(inside, out, torch.zeros((), dtype=out.dtype, device=out.device))

    def _denoise(self, x, sigma):
        flat = sigma.reshape(-1)
        if not bool((flat == flat[0]).all()):  # one grid per noise level: each image's output is its own
            out = torch.empty_like(x)
            for level in torch.unique(flat):
                rows = (flat == level).nonzero()[:, 0]
                out[rows] = self._denoise(x[rows], sigma[rows])
            return out
        b, c, h, w = x.shape
        p = self.patch
        sy, sx = grid_shift(float(flat[0]), p)
        ny, nx = math.ceil((h + sy) / p), math.ceil((w + sx) / p)
        canvas = F.pad(x, (sx, nx * p - w - sx, sy, ny * p - h - sy))
        pos = positions(torch.arange(-sy, ny * p - sy, device=x.device), torch.arange(-sx, nx * p - sx, device=x.device),
                        h, w)
        n = ny * nx
        z = canvas.reshape(b, c, ny, p, nx, p).permute(0, 2, 4, 1, 3, 5).reshape(b * n, c, p, p)
        zp = pos.reshape(2, ny, p, nx, p).permute(1, 3, 0, 2, 4).reshape(n, 2, p, p).repeat(b, 1, 1, 1)
        s = sigma.reshape(b, 1, 1, 1).repeat_interleave(n, dim=0)
        out = self.patch_denoise(z, s, zp) if self.batch_map is None else self.batch_map(self.patch_denoise, z, s, zp)
        out = out.reshape(b, ny, nx, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, ny * p, nx * p)
        return out[..., sy:sy + h, sx:sx + w]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, patch={self.patch}, frame={self.frame}"


def patch_training_batch(frames: torch.Tensor, patch: int, generator: torch.Generator):
    """Random ``patch``-px patches of ``frames`` ``(B, C, F, F)`` and their positions, as training sees them.

    Each patch's top-left corner is uniform over ``[-(patch - 1), F - 1]²`` (the corners a shifted
    grid produces at solve time), so patches reach into the zero padding as they do in
    :meth:`PatchPrior._denoise`. Returns ``(z0, pos)``: clean patches ``(B, C, P, P)`` (zero
    outside the frame) and positions ``(B, 2, P, P)``.
    """
    b, c, fh, fw = frames.shape
    canvas = F.pad(frames, (patch - 1, patch - 1, patch - 1, patch - 1))
    top = torch.randint(-(patch - 1), fh, (b,), generator=generator)
    left = torch.randint(-(patch - 1), fw, (b,), generator=generator)
    z, pos = [], []
    ar = torch.arange(patch)
    for k in range(b):
        i, j = int(top[k]), int(left[k])
        z.append(canvas[k, :, i + patch - 1:i + 2 * patch - 1, j + patch - 1:j + 2 * patch - 1])
        pos.append(positions(ar + i, ar + j, fh, fw))
    return torch.stack(z), torch.stack(pos)
