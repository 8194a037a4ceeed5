"""``images(folder)``: one sub-folder of images per class, declared from the files' headers.

``dsl check`` reads only each file's header (PNG, JPEG, BMP, GIF; pure Python,
a few bytes each) to learn its size and whether it is grayscale, so the
declared fields are exact without decoding a pixel:

* ``x: [B, C, H, W] float`` in [0, 1]: C = 1 when every image is grayscale,
  else 3 (RGB; an alpha channel is dropped), H and W the images' size, which
  every image must share;
* ``y: [B] long``: the class, the index of its sub-folder in sorted order;
  ``N_y`` is the number of classes.

A folder whose sub-folders are ``train`` (and ``val``, ``test``), each with one
sub-folder per class, gives its own splits; otherwise the images are split
60/20/20, stratified and seeded. An image of another size, a file that is not
an image, an empty class and a folder without classes are diagnostics (E0703)
naming the file. Decoding (Pillow) is :mod:`dsl.data.image_load`.
"""

from __future__ import annotations

import functools
import os
import struct
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from dsl.data.checks import check_rows
from dsl.data.files import DataError, resolve_path
from dsl.data.params import SplitParams
from dsl.data.registry import Source, register_source
from dsl.language.shapes import Sym, TensorType

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
MAX_IMAGES = 1_000_000
MAX_HEADER_BYTES = 1 << 20  # a JPEG's frame header sits after its metadata segments
SPLIT_FOLDERS = ("train", "val", "test")


class ImagesParams(SplitParams):
    folder: str = Field(description="a folder with one sub-folder of images per class (or train/val/test of those)")

    @property
    def path(self) -> str:
        return self.folder


@dataclass(frozen=True)
class ImageSet:
    """The images of a folder by split, with their shared size."""

    classes: tuple[str, ...]
    files: dict[str, tuple[tuple[str, int], ...]]  # split ("all" without split folders) -> (path, class)
    channels: int
    height: int
    width: int

    def fields(self) -> dict[str, TensorType]:
        b = Sym("B")
        return {"x": TensorType((b, self.channels, self.height, self.width), "float"), "y": TensorType((b,), "long")}


def describe(p: ImagesParams) -> ImageSet:
    folder = resolve_path(p)
    if not os.path.isdir(folder):
        raise FileNotFoundError(folder)
    return _describe(os.path.abspath(folder), _stamp(folder))


def _stamp(folder: str) -> tuple[int, ...]:
    """What changes when files are added to or removed from the folder's sub-folders."""
    return tuple(os.stat(os.path.join(folder, e)).st_mtime_ns for e in sorted(os.listdir(folder))) + (
        os.stat(folder).st_mtime_ns,)


@functools.lru_cache(maxsize=8)
def _describe(folder: str, stamp: tuple[int, ...]) -> ImageSet:
    del stamp  # part of the cache key only
    subs = _subfolders(folder)
    if subs and set(subs) <= set(SPLIT_FOLDERS) and "train" in subs:
        classes = _subfolders(os.path.join(folder, "train"))
        groups = {s: os.path.join(folder, s) for s in subs}
    else:
        classes = subs
        groups = {"all": folder}
    if len(classes) < 2:
        raise DataError(f"{folder} needs one sub-folder of images per class, at least two (found "
                        f"{len(classes)})", folder)
    files = {split: tuple(_class_files(root, classes)) for split, root in groups.items()}
    return _sized(classes, files, folder)


def _subfolders(folder: str) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    except OSError as exc:
        raise DataError(f"cannot read {folder}: {exc.strerror}", folder) from None


def _class_files(root: str, classes: list[str]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        where = os.path.join(root, name)
        if not os.path.isdir(where):
            raise DataError(f"{root} has no folder `{name}` (the classes are those of train/)", root)
        found = sorted(e.path for e in os.scandir(where) if not e.name.startswith("."))
        if not found:
            raise DataError(f"class folder {where} holds no images", where)
        out.extend((f, label) for f in found)
        if len(out) > MAX_IMAGES:
            raise DataError(f"{root} holds over {MAX_IMAGES:,} images, the limit", root)
    return out


def _sized(classes: list[str], files: dict[str, tuple[tuple[str, int], ...]], folder: str) -> ImageSet:
    """Every image's header read: one size for all, 1 channel if all are grayscale."""
    size: tuple[int, int] | None = None
    first = ""
    gray = True
    for entries in files.values():
        for path, _ in entries:
            width, height, is_gray = image_header(path)
            if size is None:
                size, first = (width, height), path
            elif (width, height) != size:
                raise DataError(f"{path} is {width}x{height} pixels, but {first} is {size[0]}x{size[1]}: every "
                                "image must have the same size", path)
            gray = gray and is_gray
    assert size is not None
    return ImageSet(tuple(classes), files, 1 if gray else 3, size[1], size[0])


# --------------------------------------------------------------------------- headers


def image_header(path: str) -> tuple[int, int, bool]:
    """(width, height, grayscale) from the file's first bytes; DataError when it is no image."""
    if not path.lower().endswith(EXTENSIONS):
        raise DataError(f"{path} is not an image (expected {', '.join(EXTENSIONS)})", path)
    from dsl.data.checks import open_data  # a regular file of bounded size, never a FIFO waited on

    try:
        with open_data(path) as fh:
            head = fh.read(64)
            found = _png(head) or _gif(head) or _bmp(head) or (_jpeg(fh) if head[:2] == b"\xff\xd8" else None)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}", path) from None
    except struct.error:
        found = None
    if found is None or found[0] <= 0 or found[1] <= 0:
        raise DataError(f"{path} is not a readable PNG, JPEG, BMP or GIF image", path)
    return found


def _png(head: bytes) -> tuple[int, int, bool] | None:
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return width, height, head[25] in (0, 4)  # colour types 0 (gray) and 4 (gray + alpha)


def _gif(head: bytes) -> tuple[int, int, bool] | None:
    if head[:6] not in (b"GIF87a", b"GIF89a"):
        return None
    width, height = struct.unpack("<HH", head[6:10])
    return width, height, False


def _bmp(head: bytes) -> tuple[int, int, bool] | None:
    if head[:2] != b"BM":
        return None
    width, height = struct.unpack("<ii", head[18:26])
    return width, abs(height), False


def _jpeg(fh: Any) -> tuple[int, int, bool] | None:
    """The first start-of-frame segment: height, width and the number of components."""
    fh.seek(2)
    read = 2
    while read < MAX_HEADER_BYTES:
        marker = fh.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        kind = marker[1]
        if kind in (0xD8, 0x01) or 0xD0 <= kind <= 0xD7:  # markers without a length
            read += 2
            continue
        length = struct.unpack(">H", fh.read(2))[0]
        if 0xC0 <= kind <= 0xCF and kind not in (0xC4, 0xC8, 0xCC):
            _, height, width, components = struct.unpack(">BHHB", fh.read(6))
            return width, height, components == 1
        fh.seek(length - 2, os.SEEK_CUR)
        read += 2 + length
    return None


# --------------------------------------------------------------------------- the source


def _fields(p: ImagesParams) -> dict[str, TensorType]:
    found = describe(p)
    if "all" in found.files:  # one folder, split by the seed: each split needs an image
        check_rows(len(found.files["all"]), p.val, p.test, resolve_path(p), "images")
    return found.fields()


def _sizes(p: ImagesParams) -> dict[str, int]:
    return {"N_y": len(describe(p).classes)}


def _load(p: ImagesParams, seed: int) -> Any:
    from dsl.data.image_load import load_images

    return load_images(p, seed)


register_source(
    Source(
        "images",
        "images",
        ImagesParams,
        _fields,
        _load,
        doc="a folder of images (PNG, JPEG, BMP, GIF; decoded with Pillow), one sub-folder per class: "
        "x [B, C, H, W] float in [0, 1] (C, H, W from the files), y [B] long, N_y classes; sub-folders "
        "train/val/test give their own splits, otherwise 60/20/20, stratified",
        positional=("folder",),
        sizes=_sizes,
        ranges=lambda p: {"y": len(describe(p).classes)},
    )
)
