"""Data: safe image IO, image/mask pairing, splits, transforms and the dataset."""
from .io import ImageLoadError, load_image, load_mask
from .pairing import DataError, Pair, collect_pairs, pair_files, resolve_data_dir

__all__ = ["DataError", "ImageLoadError", "Pair", "collect_pairs", "load_image", "load_mask", "pair_files",
           "resolve_data_dir"]
