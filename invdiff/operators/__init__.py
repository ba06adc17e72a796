"""Forward operators: factories returning configured ``deepinv.physics.LinearPhysics`` objects.

``OPERATORS`` maps a name to a factory. Every factory takes the image size ``(C, H, W)`` as its
first argument and has defaults for everything else, so ``OPERATORS[name](img_size)`` builds a
working operator; the contract tests iterate this registry.
"""

from functools import partial

from .blur import gaussian_blur, gaussian_kernel, kernel_blur, line_kernel, motion_blur
from .checks import check_adjoint, check_batch, check_linear
from .chunked import Chunked, chunked
from .ct import CT, ct_limited_angle, ct_parallel, ct_sparse_view, ramp_filter
from .dense import DenseOperator, dense_operator
from .difference import FiniteDifference, finite_difference
from .downsample import super_resolution
from .inpainting import box_inpainting, mask_inpainting, random_inpainting
from .mri import cartesian_mask, coil_sensitivities, mri_cartesian
from .spectral import has_svd, real_part, require_svd, singular_values, truncated_pinv
from .volume import check_volume, volume_ct, volume_mri

OPERATORS = {
    "gaussian_blur": gaussian_blur,
    "motion_blur": motion_blur,
    "box_inpainting": box_inpainting,
    "random_inpainting": random_inpainting,
    "super_resolution": super_resolution,
    "ct_sparse_view": ct_sparse_view,
    "ct_limited_angle": ct_limited_angle,
    "ct_fan_beam": partial(ct_sparse_view, geometry="fan"),
    "mri_cartesian": mri_cartesian,
    "mri_multicoil": partial(mri_cartesian, coils=4),
    "finite_difference": finite_difference,
    "dense": dense_operator,
}


def make_operator(name: str, img_size, **kwargs):
    """Build the registered operator ``name``; unknown names raise ``ValueError`` listing the known ones."""
    if name not in OPERATORS:
        raise ValueError(f"unknown operator {name!r}; known operators: {', '.join(sorted(OPERATORS))}")
    return OPERATORS[name](img_size, **kwargs)


__all__ = ["OPERATORS", "make_operator", "check_adjoint", "check_linear", "check_batch",
           "gaussian_blur", "motion_blur", "kernel_blur", "gaussian_kernel", "line_kernel",
           "mask_inpainting", "box_inpainting", "random_inpainting", "super_resolution",
           "CT", "ct_sparse_view", "ct_limited_angle", "ct_parallel", "ramp_filter",
           "mri_cartesian", "cartesian_mask", "coil_sensitivities", "FiniteDifference",
           "finite_difference", "DenseOperator", "dense_operator", "volume_ct", "volume_mri", "check_volume",
           "Chunked", "chunked", "has_svd", "require_svd", "singular_values", "truncated_pinv", "real_part"]
