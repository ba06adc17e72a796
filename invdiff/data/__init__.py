"""Data: seeded phantoms, bundled sample images and loaders (nothing is downloaded)."""

from .io import (DICOM_SAMPLES, atomic_write, dicom_sample, load_dicom, load_file, load_folder, load_image, load_npy,
                 photo_crops, resize, sample_photo, sample_photo_names)
from .io import CT_HU_WINDOW, atomic_write_dir, hu_to_unit, unit_to_hu
from .volumes import (DicomSeriesInfo, NiftiInfo, load_dicom_series, load_nifti, resize_volume, save_dicom_series,
                      save_nifti, volume_planes)
from .phantoms import body_phantom, body_phantoms, body_volume, ellipsoid_volume, shepp_logan

__all__ = ["body_phantom", "body_phantoms", "body_volume", "shepp_logan", "ellipsoid_volume", "load_image", "load_dicom",
           "load_npy", "load_file", "load_folder", "sample_photo", "sample_photo_names", "dicom_sample",
           "DICOM_SAMPLES", "resize", "photo_crops", "atomic_write", "atomic_write_dir", "CT_HU_WINDOW", "hu_to_unit",
           "unit_to_hu", "load_nifti", "save_nifti", "load_dicom_series", "save_dicom_series", "resize_volume",
           "volume_planes", "NiftiInfo", "DicomSeriesInfo"]
