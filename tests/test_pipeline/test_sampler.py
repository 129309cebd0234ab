"""The training sampler and per-sample seeding: orders from (seed, epoch), ranks splitting one order, a start that
skips without loading, augmentation as a pure function of the key, random states that survive a weights-only file."""
from __future__ import annotations

import io
import os
import random

import numpy as np
import pytest
import torch

from asid_arch.pipeline.datasets import CheckedDataset
from asid_arch.pipeline.launch import build_checked_dataset
from asid_arch.pipeline.options_files import RESUME_KEYS, training_state_problem
from asid_arch.pipeline.sampler import SeededSampler, names_digest
from asid_arch.pipeline.training_loop import _resume_point, epoch_definition
from asid_arch.utils.asid_random import (capture_random_states, preserved_random_states, random_states_problem,
                                         restore_random_states, sample_seed)

from helpers import make_tiny_data, tiny_train_options


class Recorder(torch.utils.data.Dataset):
    """Returns what it was asked for and what the generators draw; counts the loads."""

    def __init__(self, size: int) -> None:
        self.size, self.loads = size, 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        self.loads += 1
        return index, random.random(), float(np.random.rand()), torch.rand(1).item()


def keys(sampler: SeededSampler, epoch: int, start: int = 0) -> list:
    sampler.set_epoch(epoch, start)
    return list(sampler)


def test_order_depends_on_seed_and_epoch_and_is_repeatable():
    sampler = SeededSampler(Recorder(10), num_replicas=1, rank=0, ratio=3)
    sampler.set_seed(5)
    first = keys(sampler, 0)
    assert len(first) == len(sampler) == 30
    assert sorted(i for i, _ in first) == sorted(list(range(10)) * 3)  # enlarged: every sample 3 times
    assert len({s for _, s in first}) == 30  # repeats of a sample are augmented afresh
    assert keys(sampler, 0) == first and list(sampler) == first  # iterating changes nothing
    assert keys(sampler, 1) != first
    sampler.set_seed(6)
    assert [i for i, _ in keys(sampler, 0)] != [i for i, _ in first]


def test_ranks_split_one_order_and_start_skips_exactly():
    dataset = Recorder(11)
    whole = SeededSampler(dataset, num_replicas=1, rank=0)
    ranks = [SeededSampler(dataset, num_replicas=3, rank=r) for r in range(3)]
    for s in [whole, *ranks]:
        s.set_seed(2)
    per_rank = [keys(s, 4) for s in ranks]
    assert all(len(k) == 4 for k in per_rank)  # ceil(11 / 3), padded like EnlargedSampler
    merged = [k for group in zip(*per_rank) for k in group]
    assert {i for i, _ in merged} == set(range(11))
    full_order = ranks[0].order(), ranks[1].order(), ranks[2].order()
    assert sorted(p for order in full_order for p in order) == list(range(12))
    assert keys(whole, 4, start=0)[5:] == keys(whole, 4, start=5)
    assert len(whole) == 6 and keys(whole, 4, start=11) == [] and len(whole) == 0
    assert dataset.loads == 0  # a sampler never loads
    with pytest.raises(ValueError):
        whole.set_epoch(0, start=-1)


def test_a_seeded_key_loads_the_same_sample_whatever_the_global_state_and_leaves_it_unchanged():
    dataset = CheckedDataset(Recorder(4), 'train')
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    before = capture_random_states()
    first = dataset[(2, sample_seed(3, 0, 7))]
    after = capture_random_states()
    assert after['python'] == before['python'] and torch.equal(after['torch'], before['torch'])
    assert after['numpy'] == before['numpy']
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    assert dataset[(2, sample_seed(3, 0, 7))] == first
    assert dataset[(2, sample_seed(3, 1, 7))] != first  # another epoch
    assert dataset[2][0] == 2  # plain indices (validation) as before


def test_two_epochs_draw_different_crops_of_the_same_image(tmp_path):
    data = make_tiny_data(tmp_path, train_images=1, val_images=1)
    opt = tiny_train_options('crops', data / 'train', data / 'valsrc')['datasets']['train']
    opt.update(phase='train', scale=2)
    dataset = build_checked_dataset(opt)
    sampler = SeededSampler(dataset, num_replicas=1, rank=0)
    sampler.set_seed(0)
    crops = []
    for epoch in (0, 1):
        key = next(k for k in keys(sampler, epoch) if k[0] == 0)  # sample 0 in this epoch
        crops.append(dataset[key]['gt'])
        assert torch.equal(dataset[key]['gt'], crops[-1])  # the same key: the same crop
    assert crops[0].shape == crops[1].shape and not torch.equal(crops[0], crops[1])


def test_random_states_survive_a_weights_only_file_and_restore_the_sequence():
    states = capture_random_states()
    expected = random.random(), float(np.random.rand()), torch.rand(3)
    buffer = io.BytesIO()
    torch.save({'random_states': [states]}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)['random_states'][0]
    assert random_states_problem(loaded) is None
    restore_random_states(loaded)
    again = random.random(), float(np.random.rand()), torch.rand(3)
    assert again[:2] == expected[:2] and torch.equal(again[2], expected[2])
    with preserved_random_states():
        random.random(), np.random.rand(), torch.rand(5)
    after = random.random(), float(np.random.rand()), torch.rand(3)
    restore_random_states(loaded)
    random.random(), np.random.rand(), torch.rand(3)
    assert after[:2] == (random.random(), float(np.random.rand()))


@pytest.mark.parametrize('damage', [lambda s: s.update(python=[1, 2]), lambda s: s['numpy'].update(pos=10**6),
                                    lambda s: s.update(torch=torch.zeros(3)), lambda s: s.pop('numpy'),
                                    lambda s: s['python']['state'].__setitem__(0, 'x')])
def test_damaged_random_states_are_named_not_restored(damage):
    states = capture_random_states()
    damage(states)
    assert random_states_problem(states) is not None


def test_a_training_state_with_a_bad_position_is_refused():
    state = {'epoch': 0, 'iter': 4, 'optimizers': [], 'schedulers': []}
    assert training_state_problem(dict(state, epoch_position=3), {}, compare_network=False) is None
    assert training_state_problem(dict(state, data_names='0f' * 16, epoch_size=12), {}, compare_network=False) is None
    for key, value in (('epoch_position', -1), ('epoch_position', '3'), ('batch_size', 0), ('random_states', {}),
                       ('epoch_size', 0), ('dataset_size', -2), ('dataset_size', 1.5), ('data_names', 7),
                       ('data_names', 'x' * 32), ('data_names', 'a' * 10**6)):
        assert key in training_state_problem(dict(state, **{key: value}), {}, compare_network=False)
    epoch = {'epoch_size': 12, 'world_size': 1, 'batch_size': 4}  # 3 batches
    assert training_state_problem(dict(state, epoch_position=3, **epoch), {}, compare_network=False) is None
    assert 'past the 3 batches' in training_state_problem(dict(state, epoch_position=4, **epoch), {},
                                                          compare_network=False)
    best = {'val5': {'psnr': {'better': 'higher', 'val': 30.5, 'iter': 10}}}
    assert training_state_problem(dict(state, best_metric_results=best), {}, compare_network=False) is None
    for damaged in ([], {'val5': []}, {'val5': {'psnr': {'better': 'higher', 'val': 1.0}}}, {3: {}},
                    {'val5': {'psnr': {'better': 'up', 'val': 1.0, 'iter': 1}}},
                    {'val5': {'psnr': {'better': 'lower', 'val': '1', 'iter': 1}}},
                    {'val5': {'psnr': {'better': 'lower', 'val': 1.0, 'iter': -5}}},
                    {'val5': {'psnr': {'better': 'lower', 'val': True, 'iter': 1}}}):
        problem = training_state_problem(dict(state, best_metric_results=damaged), {}, compare_network=False)
        assert problem and 'best_metric_results' in problem and '\n' not in problem, damaged


class Listed(Recorder):
    """A dataset that lists its samples' files as BasicSR's paired datasets do."""

    def __init__(self, names: list, root: str = '/data') -> None:
        super().__init__(len(names))
        self.opt = {'dataroot_gt': f'{root}/gt', 'dataroot_lq': f'{root}/lq'}
        self.paths = [{'lq_path': f'{root}/lq/{n}', 'gt_path': f'{root}/gt/{n}'} for n in names]


class Log:
    """Records what a logger is given."""

    def __init__(self) -> None:
        self.warnings = []

    def info(self, text: str) -> None:
        pass

    def warning(self, text: str) -> None:
        self.warnings.append(text)


def saved_state(definition: dict, position: int = 2) -> dict:
    return {'epoch': 1, 'iter': 5, 'epoch_position': position, 'manual_seed': 3, **definition}


def test_a_changed_epoch_definition_restarts_the_epoch_with_a_warning_naming_it():
    """A position saved in an epoch is reused only in the same order: another dataset_enlarge_ratio, number or names
    of samples, batch size or number of processes starts the interrupted epoch from its first batch, named."""
    names = [f'{k:03d}.png' for k in range(12)]

    def definition(names=names, ratio=1, batch=4, world=1, root='/data') -> dict:
        return epoch_definition(SeededSampler(Listed(names, root), world, 0, ratio), batch, world)

    saved = definition()
    assert ('epoch_position', 'manual_seed', *saved) == RESUME_KEYS  # what the loop writes is what is checked
    opt = {'manual_seed': 3, 'world_size': 1}
    log = Log()
    assert _resume_point(saved_state(saved), dict(opt), definition(root='/elsewhere'), log) == (1, 5, 2)
    assert log.warnings == []  # the same data, moved: the same epoch
    changes = {'datasets: train: dataset_enlarge_ratio': definition(ratio=2),
               'number of training samples: 12 then, 13 now': definition(names=names + ['x.png']),
               "training samples' names": definition(names=names[:-1] + ['renamed.png']),
               'batch_size_per_gpu: 4 then, 2 now': definition(batch=2),
               'number of processes: 1 then, 2 now': definition(world=2)}
    for named, now in changes.items():
        log = Log()
        assert _resume_point(saved_state(saved), dict(opt), now, log) == (1, 5, 0), named
        assert len(log.warnings) == 1 and named in log.warnings[0], (named, log.warnings)
        assert 'starts again from its first batch' in log.warnings[0]
    older = {k: v for k, v in saved_state(saved).items() if k not in ('dataset_size', 'epoch_size', 'data_names')}
    log = Log()
    assert _resume_point(older, dict(opt), saved, log) == (1, 5, 0) and 'older asid-train' in log.warnings[0]


def test_the_names_digest_follows_the_names_not_the_folder():
    assert names_digest(Listed(['a.png', 'b.png'], '/x')) == names_digest(Listed(['a.png', 'b.png'], '/y/z'))
    assert names_digest(Listed(['a.png', 'b.png'])) != names_digest(Listed(['b.png', 'a.png']))
    assert names_digest(Recorder(3)) == ''  # a dataset that lists no names


def test_deterministic_option_selects_deterministic_kernels(monkeypatch, tmp_path):
    from asid_arch.pipeline.options_values import check_structure
    from asid_arch.pipeline.training_loop import configure_determinism

    monkeypatch.delenv('CUBLAS_WORKSPACE_CONFIG', raising=False)
    cudnn = torch.backends.cudnn
    saved = cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled()
    try:
        configure_determinism({'deterministic': True})
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        assert torch.are_deterministic_algorithms_enabled() and os.environ['CUBLAS_WORKSPACE_CONFIG']
        configure_determinism({})
        assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic  # BasicSR's
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[:2]
        torch.use_deterministic_algorithms(saved[2])
    opt = tiny_train_options('det', tmp_path, tmp_path, **{'train.deterministic': 'yes'})
    assert any('train: deterministic' in p for p in check_structure(opt, True))
    opt['train']['deterministic'] = True
    assert not any('deterministic' in p for p in check_structure(opt, True))
