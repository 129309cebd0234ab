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
  run consumed without loading them;
* describes its epoch (:meth:`definition`: the data's size and names, the enlarged epoch's size), which a training
  state records, so that a resumed run knows whether the saved position still points into the same order.

Iterating changes nothing in the sampler: a prefetcher that opens an extra iterator does not shift anything.
"""
from __future__ import annotations

import hashlib
import os
from typing import Dict, Iterator, Mapping, Tuple, Union

import torch

from ..utils import asid_compat  # noqa: F401  isort: skip  (first: the torchvision alias BasicSR 1.4.2 needs)

from basicsr.data.data_sampler import EnlargedSampler  # after the alias

from ..utils.asid_random import TORCH_SEED_MODULUS, derived_seed, sample_seed

SHUFFLE_STREAM = 0  # the derived seed of an epoch's order: (manual_seed, SHUFFLE_STREAM, epoch)
NAMES_DIGEST_BYTES = 16  # the digest of the data's sample names kept in a training state (hex: twice as long)


def names_digest(dataset) -> str:
    """A digest of the names of ``dataset``'s samples in index order ('' when the dataset lists no ``paths``).

    A BasicSR paired dataset lists one ``{role_path: path or LMDB key}`` per sample; a path is taken relative to its
    ``dataroot_<role>`` (so moving the data elsewhere keeps the digest), a key as it is. Files added, removed,
    renamed or listed in another order change it: index ``i`` of the epoch's order is then another sample."""
    paths = getattr(dataset, 'paths', None)
    if not isinstance(paths, (list, tuple)):
        return ''
    opt = getattr(dataset, 'opt', None) or {}
    digest = hashlib.blake2b(digest_size=NAMES_DIGEST_BYTES)
    for entry in paths:
        items = sorted(entry.items()) if isinstance(entry, Mapping) else [('', entry)]
        for key, value in items:
            role = key[:-len('_path')] if key.endswith('_path') else key
            name = _relative(str(value), opt.get(f'dataroot_{role}'))
            digest.update(f'{key}={name}\n'.encode('utf-8', 'surrogateescape'))
    return digest.hexdigest()


def _relative(path: str, root: object) -> str:
    """``path`` relative to ``root`` when it lies inside it, else as it is (an LMDB key, say)."""
    if isinstance(root, (str, os.PathLike)):
        root = os.path.join(os.fspath(root), '')
        if path.startswith(root):
            return path[len(root):]
    return path


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

    def definition(self) -> Dict[str, Union[int, str]]:
        """What the epoch's order is made of, besides the seed and the split among ranks: the number of samples of
        the data (``dataset_size``), of the enlarged epoch over all ranks (``epoch_size``: ``dataset_enlarge_ratio``
        times that, rounded up to a multiple of the ranks) and the digest of the samples' names
        (:func:`names_digest`). A position saved in an epoch points to the same samples only if these are equal."""
        return {'dataset_size': len(self.dataset), 'epoch_size': self.total_size,
                'data_names': names_digest(self.dataset)}
