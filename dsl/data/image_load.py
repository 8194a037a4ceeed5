"""Decoding ``images()`` folders with Pillow into a :class:`LoaderDataset`.

Every image is decoded once, converted to grayscale (``L``) or ``RGB`` as
declared, and kept as uint8 ``[N, C, H, W]``; a batch is scaled to [0, 1]
floats when it is fetched. Pillow's decompression-bomb limit is an error here,
not a warning.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from dsl.data.files import DataError
from dsl.data.images import ImageSet, ImagesParams, describe
from dsl.data.loaders import _split_indices
from dsl.data.loading import LoaderDataset, TensorRows, tensor_splits, whole

MAX_PIXEL_BYTES = 8 << 30  # decoded pixels held in memory at most
FORMATS = ("PNG", "JPEG", "BMP", "GIF")


def decode(path: str, mode: str, size: tuple[int, int]) -> np.ndarray:
    """One image as uint8 [C, H, W]; DataError when it is not the declared kind of image."""
    from PIL import Image

    from dsl.data.checks import open_data

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open_data(path) as fh, Image.open(fh, formats=FORMATS) as img:
                if img.size != size:
                    raise DataError(f"{path} is {img.size[0]}x{img.size[1]} pixels, the other images "
                                    f"{size[0]}x{size[1]}: every image must have the same size", path)
                pixels = np.asarray(img.convert(mode), dtype=np.uint8)
    except DataError:
        raise
    except (OSError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise DataError(f"{path} cannot be decoded as an image ({type(exc).__name__}: {exc})", path) from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _scale(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"x": batch["x"].float().div_(255.0), "y": batch["y"]}


def read_all(info: ImageSet, entries: tuple[tuple[str, int], ...]) -> dict[str, torch.Tensor]:
    need = len(entries) * info.channels * info.height * info.width
    if need > MAX_PIXEL_BYTES:
        raise DataError(f"{len(entries):,} images of {info.width}x{info.height} need {need / 2**30:.1f} GiB, over "
                        f"the {MAX_PIXEL_BYTES / 2**30:.0f} GiB kept in memory", entries[0][0])
    mode = "L" if info.channels == 1 else "RGB"
    x = np.empty((len(entries), info.channels, info.height, info.width), dtype=np.uint8)
    for i, (path, _) in enumerate(entries):
        x[i] = decode(path, mode, (info.width, info.height))
    y = np.array([label for _, label in entries], dtype=np.int64)
    return {"x": torch.from_numpy(x), "y": torch.from_numpy(y)}


def load_images(p: ImagesParams, seed: int) -> LoaderDataset:
    info = describe(p)
    s = seed if p.seed is None else p.seed
    if "all" in info.files:
        tensors = read_all(info, info.files["all"])
        idx = _split_indices(len(info.files["all"]), tensors["y"].numpy(), p.val, p.test, s)
        splits: dict[str, Any] = tensor_splits(tensors, idx, _scale)
    else:
        splits = {name: TensorRows(read_all(info, entries), _scale) for name, entries in info.files.items()}
    dataset = LoaderDataset(splits, p.batch, s, kind="images", collate=whole)
    dataset.vocabularies = {"y": list(info.classes)}
    return dataset
