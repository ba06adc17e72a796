import pytest
import torch

from invdiff.operators import (box_inpainting, check_adjoint, gaussian_blur, gaussian_kernel, kernel_blur,
                               line_kernel, mask_inpainting, motion_blur, random_inpainting, super_resolution)


def test_gaussian_kernel_normalised_and_symmetric():
    k = gaussian_kernel(2.0)
    assert k.shape == (13, 13) and abs(float(k.sum()) - 1) < 1e-6
    assert torch.allclose(k, k.flip(0)) and torch.allclose(k, k.T)


def test_line_kernel_length_and_angle():
    k = line_kernel(9, 0.0)
    rows = k.sum(1)
    assert rows.argmax() == k.shape[0] // 2 and rows.max() > 0.99  # horizontal line
    assert (k.sum(0) > 0).sum() >= 9
    kv = line_kernel(9, 90.0)
    assert torch.allclose(kv, k.T, atol=1e-6)


def test_blur_preserves_mean_and_constants():
    op = gaussian_blur((3, 32, 32), 1.5)
    c = torch.full((1, 3, 32, 32), 0.3)
    assert torch.allclose(op.A(c), c, atol=1e-6)


def test_motion_blur_angle_from_generator():
    a = motion_blur(32, 7, generator=torch.Generator().manual_seed(0))
    b = motion_blur(32, 7, generator=torch.Generator().manual_seed(0))
    c = motion_blur(32, 7, generator=torch.Generator().manual_seed(1))
    x = torch.rand(1, 1, 32, 32)
    assert torch.equal(a.A(x), b.A(x)) and not torch.allclose(a.A(x), c.A(x))


def test_reflect_boundary_is_adjoint_and_keeps_size():
    op = gaussian_blur((1, 24, 24), 1.0, boundary="reflect")
    assert op.A(torch.rand(1, 1, 24, 24)).shape == (1, 1, 24, 24)
    assert check_adjoint(op.to(torch.float64), (2, 1, 24, 24), generator=torch.Generator().manual_seed(0)) < 1e-10


def test_kernel_blur_is_the_given_convolution():
    """A convolution (as documented), not a correlation: a kernel with its one tap right of the
    centre moves the image one pixel to the right, y[i, j] = x[i, j − 1]."""
    k = torch.zeros(3, 3)
    k[1, 2] = 1.0
    x = torch.rand(1, 1, 8, 8)
    y = kernel_blur(8, k).A(x)
    assert torch.allclose(y, torch.roll(x, shifts=1, dims=-1), atol=1e-6)
    assert not torch.allclose(y, torch.roll(x, shifts=-1, dims=-1), atol=0.1)  # what correlation gives


def _convolve(x, k, boundary):
    """y[i, j] = Σ_ab k[a, b] x[i − (a − h//2), j − (b − w//2)], x extended periodically or by
    reflection about the edge pixels (… x2 x1 | x0 x1 x2 …), written as plain sums."""
    H, W = x.shape[-2:]
    h, w = k.shape

    def index(i, n):
        if boundary == "circular":
            return i % n
        return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)

    y = torch.zeros_like(x)
    for i in range(H):
        for j in range(W):
            for a in range(h):
                for b in range(w):
                    y[..., i, j] += k[a, b] * x[..., index(i - (a - h // 2), H), index(j - (b - w // 2), W)]
    return y


@pytest.mark.parametrize("boundary", ["circular", "reflect"])
@pytest.mark.parametrize("shape", [(3, 5), (5, 3)])
def test_kernel_blur_matches_direct_convolution(boundary, shape):
    """Non-symmetric, non-square kernels (correlation, a transposed or flipped kernel all differ by
    O(1)), with entries that are exact in float32 so that the float64 result is exact to rounding."""
    g = torch.Generator().manual_seed(0)
    k = torch.randint(0, 8, shape, generator=g).double() / 8
    x = torch.rand(2, 1, 12, 10, generator=g, dtype=torch.float64)
    y = kernel_blur((1, 12, 10), k, boundary=boundary).double().A(x)
    assert torch.allclose(y, _convolve(x, k, boundary), atol=1e-12)
    assert (y - _convolve(x, k.flip(0, 1), boundary)).abs().max() > 0.1  # correlation is told apart


def test_box_and_random_masks(gen):
    op = box_inpainting((3, 16, 16), (2, 3, 4, 5))
    m = op.mask.reshape(3, 16, 16)
    assert int((m[0] == 0).sum()) == 20 and torch.equal(m[0], m[2])
    op = random_inpainting(64, 0.7, generator=gen)
    frac = 1 - float(op.mask.mean())
    assert abs(frac - 0.7) < 0.03


def test_mask_tensor_inpainting():
    m = torch.ones(8, 8)
    m[2:4] = 0
    op = mask_inpainting(8, m)
    x = torch.rand(1, 1, 8, 8)
    assert torch.equal(op.A(x)[0, 0, 2:4], torch.zeros(2, 8))


@pytest.mark.parametrize("factor", [2, 4, 8])
@pytest.mark.parametrize("filt", ["bicubic", "box", "gaussian"])
def test_super_resolution_shapes_and_constants(factor, filt):
    op = super_resolution((3, 64, 64), factor, filter=filt)
    c = torch.full((2, 3, 64, 64), 0.4)
    y = op.A(c)
    assert y.shape == (2, 3, 64 // factor, 64 // factor)
    assert torch.allclose(y, torch.full_like(y, 0.4), atol=1e-5)


def test_box_filter_is_block_mean():
    x = torch.rand(1, 1, 16, 16)
    y = super_resolution(16, 4, filter="box").A(x)
    ref = torch.nn.functional.avg_pool2d(x, 4)
    assert torch.allclose(y, ref, atol=1e-6)
