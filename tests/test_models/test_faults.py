"""Faults injected at known points, never raced: a checkpoint write that fails or is killed half-way,
a loss that becomes NaN or infinite.

The training runs are real (BasicSR's pipeline in a subprocess); the fault comes from a driver that
wraps ``torch.save`` and acts when the file being written is the one named, so every run fails at the
same place on any machine, however loaded.
"""
from __future__ import annotations

import os
import textwrap

import pytest
import torch

from asid_arch.utils import asid_errors, asid_files, asid_weights_loading

from helpers import run_python, tiny_train_options, write_yaml

# the driver: ``torch.save`` writes a few bytes, then fails (``fail``) or kills the process (``kill``) when
# the temporary file it writes to is the one of ``target``; then BasicSR's training runs as asid-train.
DRIVER = textwrap.dedent('''
    import errno, os, signal, sys
    import torch
    from asid_arch.models import asid_model

    mode, target = sys.argv[1], sys.argv[2]
    real_save = torch.save

    def faulty_save(obj, f, *args, **kwargs):
        name = os.path.basename(os.readlink(f'/proc/self/fd/{f.fileno()}'))
        if name.startswith(f'.{target}.'):
            f.write(b'half a checkpoint')
            f.flush()
            if mode == 'kill':
                os.kill(os.getpid(), signal.SIGKILL)
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real_save(obj, f, *args, **kwargs)

    torch.save = faulty_save
    from asid_arch.cli.train import main
    main(sys.argv[3:])
''')


def checkpoint_options(name, data, iters):
    return tiny_train_options(name, data / 'train', data / 'valsrc', iters=iters,
                              **{'logger.save_checkpoint_freq': 3, 'val.val_freq': 1000})


@pytest.mark.slow
def test_checkpoint_that_cannot_be_written_stops_the_run(data, tmp_path):
    """The disk fills at the second checkpoint: exit 1 with a message, the first checkpoint intact, no
    temporary left (plain BasicSR logs "Just ignore it." and trains on without checkpoints)."""
    yml = write_yaml(tmp_path / 'n.yml', checkpoint_options('nosave', data, 9))
    result = run_python(DRIVER, ['fail', 'net_g_6.pth', '-opt', str(yml)], tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    assert 'cannot write the checkpoint' in result.stderr and 'net_g_6.pth' in result.stderr
    assert 'No space left on device; tried 3 times' in result.stderr and 'Training stopped' in result.stderr
    assert 'Traceback' not in result.stderr.split('asid-train:')[-1]
    models = tmp_path / 'experiments' / 'nosave' / 'models'
    assert sorted(p.name for p in models.iterdir()) == ['net_g_3.pth']  # nothing half-written beside it
    assert set(torch.load(models / 'net_g_3.pth', weights_only=True)['params']) == set(
        asid_weights_loading.read_weights(models / 'net_g_3.pth')[0])


@pytest.mark.slow
def test_kill_during_a_checkpoint_write_then_auto_resume(data, tmp_path):
    """``kill -9`` while the state of iteration 6 is being written: the run resumes from iteration 3,
    removes the half-written temporary, and finishes."""
    yml = write_yaml(tmp_path / 'k.yml', checkpoint_options('killed', data, 9))
    killed = run_python(DRIVER, ['kill', '6.state', '-opt', str(yml)], tmp_path)
    assert killed.returncode == -9, killed.stderr[-2000:]
    states = tmp_path / 'experiments' / 'killed' / 'training_states'
    assert sorted(p.name for p in states.iterdir() if not p.name.startswith('.')) == ['3.state']
    assert len(list(states.glob('.6.state.*.tmp'))) == 1  # what the kill left

    resumed = run_python(DRIVER, ['fail', 'never-this-file', '-opt', str(yml), '--auto_resume'], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'iter: 3.' in resumed.stderr  # "Resuming training from epoch: E, iter: 3."
    assert sorted(p.name for p in states.iterdir()) == ['3.state', '6.state', '9.state']
    models = tmp_path / 'experiments' / 'killed' / 'models'
    assert (models / 'net_g_latest.pth').is_file() and not list(models.glob('.*'))


def test_atomic_write_syncs_and_renames_and_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / 'net_g_5.pth'
    target.write_bytes(b'old checkpoint')
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, 'fsync', lambda fd: (calls.append(('fsync', os.readlink(f'/proc/self/fd/{fd}'))),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, 'replace', lambda src, dst: (calls.append(('replace', str(src), str(dst))),
                                                         real_replace(src, dst))[1])

    def half_then_fail(f):
        f.write(b'new che')
        raise OSError(28, 'No space left on device')

    with pytest.raises(OSError, match='No space'):
        asid_files.atomic_write(target, half_then_fail)
    assert target.read_bytes() == b'old checkpoint' and sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    assert calls == []  # nothing synced or renamed for a failed write

    asid_files.atomic_write(target, lambda f: f.write(b'new checkpoint'))
    assert target.read_bytes() == b'new checkpoint' and sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    (_, synced), (_, src, dst) = calls
    assert synced == src and os.path.dirname(src) == str(tmp_path) and os.path.basename(src).startswith('.net_g_5.pth.')
    assert dst == str(target)


def build_tiny_model(data, tmp_path):
    from basicsr.models import build_model

    opt = tiny_train_options('nan', data / 'train', data / 'valsrc')
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    opt['path'].update(models=str(tmp_path / 'models'), training_states=str(tmp_path / 'states'))
    return build_model(opt)


@pytest.mark.parametrize('bad', [float('nan'), float('inf'), -float('inf')])
def test_non_finite_loss_stops_before_the_step(data, tmp_path, bad):
    """NaN and infinite losses both stop the run before the optimizer step; weights and checkpoint intact."""
    model = build_tiny_model(data, tmp_path)
    (tmp_path / 'models').mkdir()
    model.save_network(model.net_g, 'net_g', 1)
    saved = (tmp_path / 'models' / 'net_g_1.pth').read_bytes()
    before = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    gt = torch.rand(1, 3, 32, 32)
    gt[0, 0, 3, 3] = bad  # the L1 loss becomes NaN or +inf
    model.feed_data({'lq': torch.rand(1, 3, 16, 16), 'gt': gt})
    with pytest.raises(asid_errors.TrainingDiverged, match=f'cri_pix became {float(abs(bad))}'):
        model.optimize_parameters(7)
    after = model.net_g.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no optimizer step happened
    assert (tmp_path / 'models' / 'net_g_1.pth').read_bytes() == saved  # last checkpoint intact
