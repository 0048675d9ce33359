"""A folder of images as a data source."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from quantkit.data._common import no_samples, single_input
from quantkit.data.base import Batch, DataSource, InputSpec, check_batch_args, validate_batch
from quantkit.data.preprocess import PreprocessSpec
from quantkit.data.rows import iter_chunks, select_indices
from quantkit.errors import InputError

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)

#: file extensions (lower case) read as images
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


#: most image files a folder source may hold (a clear error instead of an endless scan)
MAX_IMAGE_FILES = 2_000_000


def find_images(root: Path, limit: int = MAX_IMAGE_FILES) -> list[Path]:
    """Image files under ``root``, recursively, sorted by relative path.

    Hidden files and folders (names starting with ``.``, e.g. macOS ``._x.jpg`` resource
    forks) are skipped. The order is deterministic across platforms: paths are compared as
    tuples of their components.

    The scan never loops or blocks: symlinked folders are followed once each (a folder reached
    again, e.g. through a symlink loop, is skipped), only regular files (or links to them) are
    taken, so a FIFO, device or socket with an image name is skipped with a warning instead of
    hanging the read, and more than ``limit`` image files is refused.

    Raises:
        InputError: more than ``limit`` image files, or the folder cannot be listed.
    """
    import stat

    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    skipped: dict[str, int] = {}
    try:
        top = os.stat(root)
    except OSError as err:
        raise InputError(f"data {root}: cannot read the folder: {err.strerror}.") from err
    seen.add((top.st_dev, top.st_ino))
    stack = [Path(root)]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            skipped["unreadable folder"] = skipped.get("unreadable folder", 0) + 1
            logger.debug("%s: cannot list (%s)", folder, err)
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                st = entry.stat()  # follows symlinks; a loop or dangling link raises
            except OSError:
                if os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS \
                        or entry.is_symlink():
                    skipped["broken or looping symlink"] = \
                        skipped.get("broken or looping symlink", 0) + 1
                continue
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in seen:  # reached again through a symlink: a loop or a duplicate
                    skipped["folder reached twice (symlink loop)"] = \
                        skipped.get("folder reached twice (symlink loop)", 0) + 1
                    continue
                seen.add(key)
                stack.append(Path(entry.path))
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                if not stat.S_ISREG(st.st_mode):
                    skipped["not a regular file (FIFO, device, socket)"] = \
                        skipped.get("not a regular file (FIFO, device, socket)", 0) + 1
                    continue
                found.append(Path(entry.path))
                if len(found) > limit:
                    raise InputError(
                        f"data {root}: more than {limit:,} image files; quantkit reads at most "
                        f"{limit:,} from one folder. Point data= at a smaller folder (a "
                        "calibration set needs hundreds to a few thousand images).")
    if skipped:
        logger.warning("data %s: skipped %s", root,
                       ", ".join(f"{n} {what}" for what, n in sorted(skipped.items())))
    return sorted(found, key=lambda p: p.relative_to(root).parts)


def load_image(path: Path, source: str) -> Image.Image:
    """Decode an image file fully.

    Raises:
        InputError: the file is not a decodable image; the message names it.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as err:
        raise InputError(
            f"data {source}: cannot decode image {path} ({err}). Remove or replace the file."
        ) from err


def stack_samples(samples: Sequence[np.ndarray], items: Sequence[object], source: str,
                  what: str) -> np.ndarray:
    """Stack preprocessed samples into a batch, explaining mismatched sizes."""
    first = samples[0].shape
    for sample, item in zip(samples, items, strict=True):
        if sample.shape != first:
            raise InputError(
                f"data {source}: {what} {item} gives a sample of shape {sample.shape} but "
                f"the first one in the batch has shape {first}. Set preprocess.resize (and "
                "center_crop) so that every image has the same size."
            )
    return np.stack(samples)


class ImageFolderSource(DataSource):
    """A folder of images (searched recursively) for a single-input image model.

    Files with the extensions in :data:`IMAGE_EXTENSIONS` are read in sorted path order,
    decoded with Pillow and preprocessed with a :class:`PreprocessSpec` (by default
    :meth:`PreprocessSpec.default_for` the model input). Only one batch of decoded images is
    in memory at a time.

    Args:
        path: the folder.
        inputs: the model's inputs (exactly one).
        preprocess: how to turn images into tensors; default derived from the input shape.
        seed: if given and ``max_samples`` is smaller than the number of images, read a
            seeded random subset of images (in sorted order) instead of the first ones.

    Raises:
        InputError: the folder is missing or holds no images, the model has several inputs,
            or the default preprocessing cannot be derived.
    """

    def __init__(self, path: str | os.PathLike[str], inputs: Sequence[InputSpec], *,
                 preprocess: PreprocessSpec | None = None, seed: int | None = None) -> None:
        self.path = Path(path)
        self.description = f"{self.path}{os.sep}"
        if not self.path.is_dir():
            raise InputError(f"data {self.path}: no such folder. Check the path given as data=.")
        self._inputs = tuple(inputs)
        self._seed = seed
        spec = single_input(self._inputs, self.description, "image-folder")
        self.preprocess = preprocess or PreprocessSpec.default_for(spec)
        self.files = find_images(self.path)
        if not self.files:
            raise no_samples(
                self.description,
                f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found, searched recursively",
            )
        self._name = spec.name
        logger.debug("%s: %d images", self.description, len(self.files))

    @property
    def num_samples(self) -> int:
        """Number of image files found."""
        return len(self.files)

    def batches(self, batch_size: int, max_samples: int | None = None) -> Iterator[Batch]:
        """Yield batches of at most ``batch_size`` preprocessed images, ``max_samples`` in all.

        Raises:
            InputError: an image cannot be decoded (naming the file), or the preprocessed
                images do not fit the model input.
        """
        check_batch_args(batch_size, max_samples)
        return self._generate(batch_size, max_samples)

    def _generate(self, batch_size: int, max_samples: int | None) -> Iterator[Batch]:
        selection = select_indices(len(self.files), max_samples, self._seed)
        seen = _Seen()
        try:
            for chunk in iter_chunks(selection, batch_size):
                paths = [self.files[int(i)] for i in chunk]
                samples = []
                for p in paths:
                    image = load_image(p, self.description)
                    seen.add(image)
                    samples.append(self.preprocess.apply(image))
                array = stack_samples(samples, paths, self.description, "image")
                seen.out_shape = tuple(array.shape[1:])
                yield validate_batch({self._name: array}, self._inputs, self.description)
        finally:
            if seen.count:
                seen.log(self.description, self.preprocess, self.skipped)

    @property
    def skipped(self) -> int:
        """Files in the folder that are not read (other extensions, hidden files)."""
        total = sum(len(files) for _, _, files in os.walk(self.path, followlinks=True))
        return max(total - len(self.files), 0)


class _Seen:
    """What the decoded images of one pass were like, for the one-line summary."""

    def __init__(self) -> None:
        self.count = 0
        self.modes: dict[str, int] = {}
        self.sizes: set[tuple[int, int]] = set()
        self.out_shape: tuple[int, ...] = ()

    def add(self, image: Image.Image) -> None:
        self.count += 1
        self.modes[image.mode] = self.modes.get(image.mode, 0) + 1
        if len(self.sizes) < 1000:
            self.sizes.add(image.size)

    def log(self, source: str, spec: PreprocessSpec, skipped: int) -> None:
        """Log what the preprocessing did: a warning when the folder was not uniform."""
        from quantkit.data.preprocess import WIDE_MODES

        target = "L" if spec.color == "L" else "RGB"
        converted = {m: n for m, n in self.modes.items() if m != target}
        wide = sum(n for m, n in converted.items() if m in WIDE_MODES)
        parts = [f"{self.count} image(s) read"]
        if converted:
            parts.append(f"{sum(converted.values())} converted to {spec.color} (from "
                         + ", ".join(f"{m}: {n}" for m, n in sorted(converted.items())) + ")"
                         + (f", {wide} of them 16-bit/float, rescaled from their real range"
                            if wide else ""))
        if len(self.sizes) > 1:
            w = sorted(s[0] for s in self.sizes)
            h = sorted(s[1] for s in self.sizes)
            parts.append(f"{len(self.sizes)} different sizes (width {w[0]}..{w[-1]}, height "
                         f"{h[0]}..{h[-1]}) resized to one")
        if spec.resize is not None or spec.center_crop is not None:
            parts.append(f"resize {spec.resize}, center crop {spec.center_crop}")
        if skipped:
            parts.append(f"{skipped} other file(s) skipped")
        norm = (f"pixels x {spec.effective_scale:.6g}"
                + (f", mean {spec.mean}" if spec.mean is not None else "")
                + (f", std {spec.std}" if spec.std is not None else "")
                if spec.dtype != "uint8" else "raw uint8 pixels")
        parts.append(f"{norm}, {spec.dtype} {spec.layout} samples of shape {self.out_shape}")
        level = logging.WARNING if converted or len(self.sizes) > 1 else logging.INFO
        logger.log(level, "data %s: %s.", source, "; ".join(parts))
