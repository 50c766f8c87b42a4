"""PyTorch datasets over the toy world, for ``torch.utils.data.DataLoader``.

Clips are rendered on demand; ``__getitems__`` renders a whole batch at once (the
DataLoader calls it when present), which is much faster than clip by clip.
For the simplest training loops :meth:`vdlearn.data.ToyWorld.loader` is enough.
Taught in notebook 01_toy_video_world.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from vdlearn.data.world import ToyWorld


class ToyVideoDataset(Dataset):
    """``length`` clips of one split and regime; items are dicts (video, caption, fps)."""

    def __init__(self, world: ToyWorld, length: int = 100_000, split: str = "train", regime: str = "clean"):
        world._check(split, regime)
        self.world, self.length, self.split, self.regime = world, int(length), split, regime

    def __len__(self) -> int:
        return self.length

    def _range_check(self, i: int) -> None:
        if not 0 <= i < self.length:
            raise IndexError(f"Index {i} out of range for a dataset of {self.length} clips.")

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        for i in indices:
            self._range_check(int(i))
        b = self.world.batch(indices, self.split, self.regime)
        return [{"video": b["video"][k], "caption": b["caption"][k], "fps": b["fps"][k]} for k in range(len(indices))]


class ToyImageDataset(ToyVideoDataset):
    """``length`` high-quality still images; items are dicts (image, caption)."""

    def __init__(self, world: ToyWorld, length: int = 100_000, split: str = "train"):
        super().__init__(world, length, split, "clean")

    def __getitems__(self, indices: list[int]) -> list[dict]:
        for i in indices:
            self._range_check(int(i))
        b = self.world.images(indices, self.split)
        return [{"image": b["image"][k], "caption": b["caption"][k]} for k in range(len(indices))]
