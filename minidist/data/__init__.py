"""Datasets (synthetic, IDX/MNIST files, scikit-learn digits) and the `DataLoader`."""
from .digits import load_digits
from .idx import read_idx, write_idx
from .loader import (DataLoader, RandomSampler, SequentialSampler, batch_slices,
                     epoch_permutation)
from .synthetic import IMAGE_CLASSES, blobs, spirals, synthetic_images

__all__ = ["spirals", "blobs", "synthetic_images", "IMAGE_CLASSES", "load_digits", "read_idx",
           "write_idx", "DataLoader", "SequentialSampler", "RandomSampler", "batch_slices",
           "epoch_permutation"]
