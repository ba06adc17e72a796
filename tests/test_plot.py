"""Figures: PSNR/SSIM in the titles, an error map under each reconstruction, colour bars, three planes."""

import torch

from invdiff.plot import _figure, save_image_row, save_volume_planes


def test_reconstruction_panels_carry_scores_error_maps_and_colour_bars(tmp_path):
    truth = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(0))
    recon = (truth + 0.1).clamp(0, 1)
    fig = _figure({"truth": truth, "recon": recon, "std": torch.rand(16, 16)}, truth=truth,
                  cmaps={"std": "magma"})
    titles = [ax.get_title() for ax in fig.axes]
    (scored,) = [t for t in titles if t.startswith("recon\n")]
    assert "dB" in scored and "SSIM" in scored
    assert "|error| of recon" in titles and not any(t.startswith("std\n") for t in titles)  # maps are not scored
    images = [ax for ax in fig.axes if ax.images]
    colorbars = [ax for ax in fig.axes if not ax.images and ax.get_label() == "<colorbar>"]
    assert len(colorbars) == 4 and len(images) >= 4  # truth, recon, std, error map: each with its colour bar
    assert save_image_row({"truth": truth, "recon": recon}, str(tmp_path / "a.png"), truth=truth).endswith("a.png")


def test_volume_figure_shows_three_planes(tmp_path):
    vol = torch.rand(8, 1, 16, 16)
    path = save_volume_planes({"truth": vol, "recon": vol * 0.9}, str(tmp_path / "v.png"), truth=vol)
    from skimage.io import imread

    img = imread(path)
    assert img.shape[0] > 2 * img.shape[1] * 0.6  # three plane rows stacked, each at readable size


def test_figures_create_their_folder(tmp_path):
    truth = torch.rand(1, 8, 8)
    path = save_image_row({"truth": truth}, str(tmp_path / "new" / "deeper" / "a.png"))
    assert (tmp_path / "new" / "deeper" / "a.png").is_file() and path.endswith("a.png")
