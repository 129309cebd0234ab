"""asid-prepare: HR -> LR -> sub-images -> LMDB readable by BasicSR; resumable; bad images reported."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from asid_arch.cli import prepare as prepare_command
from asid_arch.data import prepare
from asid_arch.data.prepare import crop_positions, prepare_bench, prepare_train

from helpers import shared_path, write_images

CROP, STEP = 48, 24


@pytest.fixture()
def hr_folder(tmp_path):
    folder = tmp_path / 'hr'
    write_images(folder, 3, size=(100, 130))  # not multiples of 12: mod-cropped to 96 x 120
    (folder / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
    return folder


def test_crop_positions_follow_basicsr():
    assert crop_positions(480, 480, 240, 0) == [0]
    assert crop_positions(1020, 480, 240, 0) == [0, 240, 480, 540]
    assert crop_positions(960, 480, 240, 0) == [0, 240, 480]
    assert crop_positions(100, 480, 240, 0) == []


def test_train_set_to_lmdb_read_by_basicsr(hr_folder, tmp_path, capsys):
    from basicsr.data.paired_image_dataset import PairedImageDataset

    out = tmp_path / 'out'
    code = prepare_command.main(['train', '--hr', str(hr_folder), '--out', str(out), '--name', 'tiny', '--scales',
                                 '2', '3', '4', '--crop-size', str(CROP), '--step', str(STEP)])
    assert code == 1  # the broken image failed ...
    assert 'broken.png' in capsys.readouterr().err  # ... and was named
    hr = cv2.imread(str(out / 'tiny_HR' / 'img00.png'))
    assert hr.shape == (96, 120, 3)
    for s in (2, 3, 4):
        lr = cv2.imread(str(out / 'tiny_LR_bicubic' / f'X{s}' / 'img00.png'))
        assert lr.shape == (96 // s, 120 // s, 3)
        assert np.array_equal(lr, prepare.bicubic_resize(hr, 1 / s))
        ds = PairedImageDataset({'dataroot_gt': str(out / 'tiny_HR_sub.lmdb'), 'phase': 'val', 'scale': s,
                                 'dataroot_lq': str(out / f'tiny_LR_bicubic_X{s}_sub.lmdb'),
                                 'io_backend': {'type': 'lmdb'}, 'filename_tmpl': '{}'})
        assert len(ds) == 3 * 12  # rows 0, 24, 48 x cols 0, 24, 48, 72
        item = ds[0]
        assert tuple(item['gt'].shape) == (3, CROP, CROP) and tuple(item['lq'].shape) == (3, CROP // s, CROP // s)
    # a sub-image in the LMDB equals the same crop of the HR image
    sub = cv2.imread(str(out / 'tiny_HR_sub' / 'img00_s002.png'))
    assert np.array_equal(sub, hr[0:CROP, STEP:STEP + CROP])


def test_rerun_does_nothing_and_interrupted_run_completes(hr_folder, tmp_path):
    out = tmp_path / 'out'
    (hr_folder / 'broken.png').unlink()
    args = dict(crop=CROP, step=STEP)
    first = prepare_train(hr_folder, out, 'tiny', [2], **args)
    assert first.written > 0 and not first.failed
    lmdb_mtime = (out / 'tiny_HR_sub.lmdb' / 'data.mdb').stat().st_mtime_ns
    again = prepare_train(hr_folder, out, 'tiny', [2], **args)
    assert again.written == 0
    assert (out / 'tiny_HR_sub.lmdb' / 'data.mdb').stat().st_mtime_ns == lmdb_mtime

    # simulate a kill: an image's LR and HR not written yet, an image's crops written only up to
    # s009 (they are written in order), a half-built LMDB left behind
    (out / 'tiny_LR_bicubic' / 'X2' / 'img01.png').unlink()
    (out / 'tiny_HR' / 'img01.png').unlink()
    for p in sorted((out / 'tiny_HR_sub').glob('img02_s0[12]*.png')):
        p.unlink()
    shutil.rmtree(out / 'tiny_HR_sub.lmdb')
    (out / '.partial-tiny_HR_sub.lmdb').mkdir()
    (out / '.partial-tiny_HR_sub.lmdb' / 'data.mdb').write_bytes(b'garbage')
    resumed = prepare_train(hr_folder, out, 'tiny', [2], **args)
    assert resumed.written == 2  # img01 HR/LR, img02's HR sub-images
    assert not (out / '.partial-tiny_HR_sub.lmdb').exists()
    meta = (out / 'tiny_HR_sub.lmdb' / 'meta_info.txt').read_text().split('\n')
    assert len([m for m in meta if m]) == 3 * 20  # 100 x 130 at x2: rows 0, 24, 48, 52 x 5 columns
    assert sorted((out / 'tiny_HR_sub').glob('img02_*.png'))[-1].name == 'img02_s020.png'


def test_bench_sets(tmp_path):
    hr = tmp_path / 'MySet' / 'HR'
    write_images(hr, 2, size=(37, 50))
    report = prepare_bench([hr], tmp_path / 'datasets', [2, 3, 4])
    assert report.written == 6 and not report.failed
    for s in (2, 3, 4):
        gt = cv2.imread(str(tmp_path / 'datasets' / 'MySet' / f'GTmod{s}' / 'img00.png'))
        lr = cv2.imread(str(tmp_path / 'datasets' / 'MySet' / f'LRbicx{s}' / 'img00.png'))
        assert gt.shape[:2] == (37 - 37 % s, 50 - 50 % s) and lr.shape[:2] == (gt.shape[0] // s, gt.shape[1] // s)


@pytest.mark.parametrize('scale,expected', [(2, 33.66), (3, 30.39), (4, 28.42)])
def test_bicubic_baseline_set5(tmp_path, scale, expected):
    """Our LR generation + bicubic up-sampling reproduces the published Set5 bicubic PSNR (0.02 dB).

    The published figures use MATLAB's convention (Y rounded to uint8): ``calculate_psnr_matlab``.
    """
    from asid_arch.metrics.asid_metric import calculate_psnr_matlab

    hr = shared_path('datasets', 'benchmark', 'Set5', 'HR')
    prepare_bench([hr], tmp_path, [scale])
    psnr = []
    for gt_path in sorted((tmp_path / 'Set5' / f'GTmod{scale}').glob('*.png')):
        lr = cv2.imread(str(tmp_path / 'Set5' / f'LRbicx{scale}' / gt_path.name))
        up = prepare.bicubic_resize(lr, scale)
        psnr.append(calculate_psnr_matlab(up, cv2.imread(str(gt_path)), crop_border=scale))
    assert len(psnr) == 5
    assert abs(np.mean(psnr) - expected) <= 0.02


@pytest.mark.parametrize('command', ['train', 'bench'])
def test_hr_folder_without_images_is_a_clear_error(tmp_path, capsys, command):
    """A data set root whose images sit in HR/: exit 2 naming the subfolder, before any output."""
    write_images(tmp_path / 'Set' / 'HR', 1, size=(24, 24))
    args = [command, '--hr', str(tmp_path / 'Set'), '--out', str(tmp_path / 'out'), '--scales', '2']
    with pytest.raises(SystemExit) as exit_info:
        prepare_command.main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert 'holds no images' in err and f'did you mean {tmp_path / "Set" / "HR"}?' in err
    with pytest.raises(SystemExit) as exit_info:
        prepare_command.main([command, '--hr', str(tmp_path / 'missing'), '--out', str(tmp_path / 'out')])
    assert exit_info.value.code == 2 and 'is not a folder' in capsys.readouterr().err
