"""Data: seeded phantoms, bundled sample images and loaders (nothing is downloaded)."""

from .io import (DICOM_SAMPLES, atomic_write, dicom_sample, load_dicom, load_file, load_folder, load_image, load_npy,
                 photo_crops, resize, sample_photo, sample_photo_names)
from .phantoms import body_phantom, body_phantoms, body_volume, ellipsoid_volume, shepp_logan

__all__ = ["body_phantom", "body_phantoms", "body_volume", "shepp_logan", "ellipsoid_volume", "load_image", "load_dicom",
           "load_npy", "load_file", "load_folder", "sample_photo", "sample_photo_names", "dicom_sample",
           "DICOM_SAMPLES", "resize", "photo_crops", "atomic_write"]
