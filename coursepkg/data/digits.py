"""The "digits" detection dataset: handwritten digits scattered over a cluttered canvas.

The digits are scikit-learn's bundled 8 x 8 handwritten digits (``sklearn.datasets.load_digits``,
1,797 images of 10 classes, shipped inside scikit-learn: nothing is downloaded). Each object is one
such digit, upscaled bicubically to its size, sharpened into an ink mask and painted in a colour that
contrasts with the background. The 1,797 images are split once, by a fixed permutation, into
1,437 for ``split="train"`` and 360 for ``split="test"``, so a detector is tested on handwriting
it never saw.

Chapter: book/data_and_conventions
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from coursepkg.data.synthetic import SyntheticDetection

DIGIT_CLASSES = tuple(str(d) for d in range(10))
DIGIT_SPLITS = ("train", "test")
NUM_TRAIN_DIGITS = 1437  # the first 80 % of a fixed permutation of the 1,797 images
_SPLIT_SEED = 20240501  # fixes that permutation; changing it would mix the splits of old runs
_ASPECT_RANGE = (0.8, 1.0)  # width / height of a placed digit


@functools.lru_cache(maxsize=1)
def _digit_images() -> tuple[Tensor, Tensor]:
    """All 1,797 digits as ``[1797, 8, 8]`` float32 in ``[0, 1]`` and their ``[1797]`` labels."""
    from sklearn.datasets import load_digits  # imported lazily: importing sklearn takes a second

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32) / 16.0
    return images, torch.as_tensor(digits.target, dtype=torch.int64)


def digit_split_indices(split: str) -> Tensor:
    """Indices into ``load_digits()`` of the images in ``split`` (disjoint between splits).

    Args:
        split: ``"train"`` (1,437 images) or ``"test"`` (360 images).

    Returns:
        ``[M]`` int64, sorted.

    Raises:
        ValueError: if ``split`` is not ``"train"`` or ``"test"``.

    Chapter: book/data_and_conventions
    """
    if split not in DIGIT_SPLITS:
        raise ValueError(f"split must be one of {DIGIT_SPLITS}, got {split!r}")
    total = _digit_images()[0].shape[0]
    order = torch.randperm(total, generator=torch.Generator().manual_seed(_SPLIT_SEED))
    chosen = order[:NUM_TRAIN_DIGITS] if split == "train" else order[NUM_TRAIN_DIGITS:]
    return chosen.sort().values


class DigitsDetectionDataset(SyntheticDetection):
    """Handwritten digits (10 classes, ``"0"``..``"9"``) on cluttered backgrounds.

    An object's *size* is the height of its upscaled 8 x 8 digit image, drawn log-uniformly in
    ``[min_size, max_size]`` (the width is 0.8-1 times the height); its box is the tight box of
    the visible ink (upscaled intensity sharpened, ``alpha >= 0.5``), which is usually smaller than
    the digit's square because the 8 x 8 images have empty margins. Item ``i`` depends on
    ``(seed, i)`` only; the digits come only from ``split``'s images.

    Args:
        num_images: number of items (>= 0).
        image_size: ``(height, width)`` of every image.
        split: ``"train"`` or ``"test"``: which of the two disjoint sets of digit images to use.
        min_objects: fewest digits drawn per image (0 allows empty images).
        max_objects: most digits per image.
        min_size: smallest digit height in pixels (the source digits are 8 px).
        max_size: largest digit height, at most ``min(image_size)``; default half the shorter side.
        max_occlusion: the largest fraction of a digit's ink later digits may cover, in ``[0, 1)``.
        clutter: draw gradients, texture, blobs, lines and noise (True) or a flat background.
        seed: base seed; item ``i`` uses its own generator seeded from ``(seed, i)``.
        max_tries: positions tried per digit before it is left out.

    Raises:
        ValueError: for a bad parameter, named in the message (see :class:`ShapesDataset`), or a
            ``split`` other than ``"train"``/``"test"``.
        TypeError: for a parameter of the wrong type.

    Chapter: book/data_and_conventions
    """

    classes = DIGIT_CLASSES

    def __init__(
        self,
        num_images: int,
        image_size: Sequence[int] = (128, 128),
        *,
        split: str = "train",
        min_objects: int = 1,
        max_objects: int = 6,
        min_size: float = 12.0,
        max_size: float | None = None,
        max_occlusion: float = 0.3,
        clutter: bool = True,
        seed: int = 0,
        max_tries: int = 20,
    ) -> None:
        super().__init__(
            num_images,
            image_size,
            min_objects=min_objects,
            max_objects=max_objects,
            min_size=min_size,
            max_size=max_size,
            max_occlusion=max_occlusion,
            clutter=clutter,
            seed=seed,
            max_tries=max_tries,
        )
        self.split = split
        indices = digit_split_indices(split)
        images, labels = _digit_images()
        self.digit_indices = indices  # [M] positions in load_digits() used by this split
        # For each class, the split's digit images of that class: a list of [M_k, 8, 8].
        self._by_class = [images[indices[labels[indices] == k]] for k in range(10)]

    def _draw(self, label: int, size: float, generator: torch.Generator) -> Tensor:
        """Soft alpha ``[h, w]`` of one random digit of class ``label``, ``h = round(size)``."""
        pool = self._by_class[label]  # [M_k, 8, 8]
        pick, aspect_u = torch.rand(2, generator=generator).tolist()
        digit = pool[int(pick * pool.shape[0])]  # [8, 8]
        aspect = _ASPECT_RANGE[0] + aspect_u * (_ASPECT_RANGE[1] - _ASPECT_RANGE[0])
        height = max(round(size), 1)
        width = max(round(size * aspect), 1)
        up = F.interpolate(digit[None, None], size=(height, width), mode="bicubic")[0, 0]
        # Sharpen the blurry upscaled strokes into ink: 0 below 0.4, 1 above 0.65.
        return ((up - 0.4) / 0.25).clamp(0.0, 1.0)
