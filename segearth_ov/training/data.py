"""Unlabeled training images: any nested folder of jpg / png / tif, read lazily; unreadable
files are skipped and counted, not fatal. Crops are a pure function of (seed, epoch,
index), so runs are reproducible and resumable whatever the number of loader workers."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, Sampler

from ..fileio import IMAGE_SUFFIXES
from ..models.data_preprocessor import CLIP_MEAN, CLIP_STD


def list_images(root) -> Tuple[List[Path], int]:
    """``(image files, number of other files)`` under ``root``, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f'images folder {root} does not exist')
    files = sorted(p for p in root.rglob('*') if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise FileNotFoundError(f'no images ({", ".join(IMAGE_SUFFIXES)}) under {root}')
    return images, len(files) - len(images)


class UnlabeledImages(Dataset):
    """Items are ``(image [3, crop, crop] CLIP-normalised or None, path)``; the index
    passed in is ``(index, epoch)`` (see :class:`ShardedShuffle`).

    A random ``crop`` window, reflect-padded when the image is smaller (replicate-padded
    where reflection is impossible), as RandomCrop(224, pad_if_needed, reflect) does.
    """

    def __init__(self, files: List[Path], crop: int = 224, seed: int = 0):
        self.files, self.crop, self.seed = files, crop, seed
        self.mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
        self.std = torch.tensor(CLIP_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: Tuple[int, int]):
        index, epoch = item
        path = self.files[index]
        try:
            with Image.open(path) as image:
                rgb = np.asarray(image.convert('RGB'))
        except (OSError, ValueError, SyntaxError):  # PIL's errors for damaged files
            return None, str(path)
        x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float()
        x = self._pad(x)
        rng = np.random.default_rng([self.seed, epoch, index])
        top = int(rng.integers(0, x.shape[1] - self.crop + 1))
        left = int(rng.integers(0, x.shape[2] - self.crop + 1))
        x = x[:, top:top + self.crop, left:left + self.crop]
        return (x - self.mean) / self.std, str(path)

    def _pad(self, x):
        pad_h, pad_w = max(0, self.crop - x.shape[1]), max(0, self.crop - x.shape[2])
        if not pad_h and not pad_w:
            return x
        pad = [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2]
        mode = 'reflect' if max(pad[:2]) < x.shape[2] and max(pad[2:]) < x.shape[1] \
            else 'replicate'
        return F.pad(x[None], pad, mode=mode)[0]


def collate(batch) -> Tuple[Optional[torch.Tensor], List[str]]:
    """``(images [B, 3, crop, crop] or None, paths that could not be read)``."""
    images = [x for x, _ in batch if x is not None]
    skipped = [path for x, path in batch if x is None]
    return (torch.stack(images) if images else None), skipped


class ShardedShuffle(Sampler):
    """A per-epoch permutation (seeded by ``seed + epoch``), split across ranks (padded to
    equal length), yielding ``(index, epoch)``; ``start`` skips items already trained on."""

    def __init__(self, size: int, rank: int = 0, world: int = 1, seed: int = 0):
        self.size, self.rank, self.world, self.seed = size, rank, world, seed
        self.per_rank = math.ceil(size / world)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.per_rank - self.start

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        order += order[:self.per_rank * self.world - self.size]
        mine = order[self.rank::self.world]
        return ((index, self.epoch) for index in mine[self.start:])
