"""The training sampler of asid-train: BasicSR's ``EnlargedSampler`` with a seeded order, per-sample seeds and a start.

BasicSR's ``EnlargedSampler`` shuffles each epoch with ``torch.Generator().manual_seed(epoch)`` (the same order
for every ``manual_seed``) and leaves the augmentation to whatever random state the loading process has
(each data-loader worker's, re-seeded identically every epoch; the main process's with 0 workers).
:class:`SeededSampler` keeps its enlarging and its split among ranks, and

* shuffles epoch ``e`` from a seed derived from (``manual_seed``, ``e``);
* yields ``(index, seed)``, where ``seed`` derives from (``manual_seed``, ``e``, position in the epoch's order
  before the split among ranks): :class:`asid_arch.pipeline.datasets.CheckedDataset` loads the sample with its
  generators seeded from it, so the batches do not depend on the number of workers, the prefetch mode or
  restarts, and a sample repeated by ``dataset_enlarge_ratio`` or in a later epoch is augmented afresh;
* starts an epoch at a given sample (:meth:`set_epoch`), so a resumed run skips the batches the interrupted
  run consumed without loading them.

Iterating changes nothing in the sampler: a prefetcher that opens an extra iterator does not shift anything.
"""
from __future__ import annotations

from typing import Iterator, Tuple

import torch

from ..utils import asid_compat  # noqa: F401  isort: skip  (first: the torchvision alias BasicSR 1.4.2 needs)

from basicsr.data.data_sampler import EnlargedSampler  # after the alias

from ..utils.asid_random import TORCH_SEED_MODULUS, derived_seed, sample_seed

SHUFFLE_STREAM = 0  # the derived seed of an epoch's order: (manual_seed, SHUFFLE_STREAM, epoch)


class SeededSampler(EnlargedSampler):
    """``EnlargedSampler`` (same arguments) whose order and per-sample seeds derive from ``seed``
    (:meth:`set_seed`: the run's ``manual_seed``), yielding ``(index, sample seed)`` from :meth:`set_epoch`'s start."""

    def __init__(self, dataset, num_replicas: int, rank: int, ratio: int = 1) -> None:
        super().__init__(dataset, num_replicas, rank, ratio)
        self.seed = 0
        self.start = 0

    def set_seed(self, seed: int) -> None:
        """The run's ``manual_seed``: the same on every rank, so that the ranks split one order."""
        self.seed = int(seed)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate ``epoch`` from this rank's ``start``-th sample on (0: the whole epoch)."""
        if start < 0:
            raise ValueError(f'start must be >= 0, not {start}')
        self.epoch = epoch
        self.start = start

    def order(self) -> list:
        """Positions in the enlarged dataset (``0 .. total_size - 1``) that this rank draws in this epoch, in order."""
        generator = torch.Generator()
        generator.manual_seed(derived_seed(self.seed, SHUFFLE_STREAM, self.epoch) % TORCH_SEED_MODULUS)
        positions = torch.randperm(self.total_size, generator=generator).tolist()
        return positions[self.rank:self.total_size:self.num_replicas]

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        size = len(self.dataset)
        seed, epoch = self.seed, self.epoch
        return ((position % size, sample_seed(seed, epoch, position)) for position in self.order()[self.start:])

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)
