"""asid-prepare and asid-kit against hostile input: changed sources, edited outputs and records, odd names,
signals, bad arguments, and kit destinations the user changed (issue 17, cases 4, 6, 9, 11, 15)."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import lmdb
import numpy as np
import pytest

from asid_arch.cli import prepare as prepare_command
from asid_arch.cli.kit import main as asid_kit
from asid_arch.data import prepare
from asid_arch.data.record import RECORD_NAME

from helpers import REPO, run_module, synthetic_image, write_images

CROP, STEP = 48, 24
TRAIN = ['--name', 't', '--crop-size', str(CROP), '--step', str(STEP)]


def run(args, capsys):
    """``asid-prepare args`` in this process: (exit status, stdout, stderr); usage errors exit through SystemExit."""
    try:
        code = prepare_command.main([str(a) for a in args])
    except SystemExit as exit_info:
        code = exit_info.code
    except KeyboardInterrupt:  # must not escape main (it would also stop pytest)
        code = 'KeyboardInterrupt escaped'
    out, err = capsys.readouterr()
    return code, out, err


def train(hr: Path, out: Path, capsys, *extra, scales=('2', )):
    return run(['train', '--hr', hr, '--out', out, '--scales', *scales, *TRAIN, *extra], capsys)


def lmdb_items(path: Path) -> dict:
    """{key: decoded image} of an LMDB made by asid-prepare."""
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        items = {k.decode('ascii'): cv2.imdecode(np.frombuffer(v, np.uint8), cv2.IMREAD_UNCHANGED)
                 for k, v in txn.cursor()}
    env.close()
    return items


def assert_lmdb_matches_folder(lmdb_path: Path, folder: Path) -> None:
    """The LMDB holds exactly the sub-images of ``folder``, pixel for pixel, and meta_info.txt lists them."""
    items = lmdb_items(lmdb_path)
    files = {p.stem: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in folder.glob('*.png')}
    assert sorted(items) == sorted(files)
    for key, img in items.items():
        assert np.array_equal(img, files[key]), key
    meta = [line.split(' ')[0] for line in (lmdb_path / 'meta_info.txt').read_text().splitlines()]
    assert sorted(meta) == sorted(f'{k}.png' for k in files)


def no_leftovers(root: Path) -> None:
    """No temporary file of an atomic write and no partial LMDB anywhere under ``root``."""
    left = [p for p in root.rglob('*') if p.name.endswith('.tmp') or p.name.startswith(prepare.PARTIAL_PREFIX)]
    assert not left, left


def same_size_bmp(path: Path, seed: int, mtime_ns: int = None) -> None:
    """A BMP of fixed size (all 60x70 BMPs have the same byte count), optionally with a given mtime."""
    ok, data = cv2.imencode('.bmp', synthetic_image(60, 70, seed))
    path.write_bytes(data.tobytes())
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


# ----------------------------------------------------------------------------------------------
# Case 4: done means done from these sources with these settings
# ----------------------------------------------------------------------------------------------
def test_bench_other_images_under_the_same_set_name_are_redone(tmp_path, capsys):
    """bench A/Set5/HR then B/Set5/HR into one --out: B's images replace A's, by name, even when size and
    mtime match (content hash); the summary says why."""
    for root, seed in (('A', 0), ('B', 9)):
        (tmp_path / root / 'Set5' / 'HR').mkdir(parents=True)
    st = None
    for name in ('baby', 'bird'):
        same_size_bmp(tmp_path / 'A' / 'Set5' / 'HR' / f'{name}.bmp', len(name))
        st = (tmp_path / 'A' / 'Set5' / 'HR' / f'{name}.bmp').stat()
        same_size_bmp(tmp_path / 'B' / 'Set5' / 'HR' / f'{name}.bmp', 50 + len(name), st.st_mtime_ns)
    out = tmp_path / 'd'
    assert run(['bench', '--hr', tmp_path / 'A' / 'Set5' / 'HR', '--out', out, '--scales', '2'], capsys)[0] == 0
    code, stdout, err = run(['bench', '--hr', tmp_path / 'B' / 'Set5' / 'HR', '--out', out, '--scales', '2'], capsys)
    assert code == 0
    assert '2 written, 0 already done' in stdout and 'source changed' in stdout
    assert f'{tmp_path / "B" / "Set5" / "HR" / "baby.bmp"}: made again (the source image changed' in err
    gt = cv2.imread(str(out / 'Set5' / 'GTmod2' / 'baby.png'))
    assert np.array_equal(gt, synthetic_image(60, 70, 50 + len('baby')))
    lr = cv2.imread(str(out / 'Set5' / 'LRbicx2' / 'baby.png'))
    assert np.array_equal(lr, prepare.bicubic_resize(gt, 1 / 2))
    code, stdout, _ = run(['bench', '--hr', tmp_path / 'B' / 'Set5' / 'HR', '--out', out, '--scales', '2'], capsys)
    assert code == 0 and '0 written, 2 already done' in stdout  # nothing changed: nothing redone


def test_train_source_replaced_with_same_name_size_and_mtime(tmp_path, capsys):
    """Every step follows a source whose bytes changed under the same name, size and mtime: HR, LR,
    sub-images, and both LMDBs (same keys, new pixels)."""
    hr, out = tmp_path / 'hr', tmp_path / 'out'
    hr.mkdir()
    for i in range(2):
        same_size_bmp(hr / f'img{i}.bmp', i)
    assert train(hr, out, capsys)[0] == 0
    st = (hr / 'img1.bmp').stat()
    same_size_bmp(hr / 'img1.bmp', 77, st.st_mtime_ns)
    assert (hr / 'img1.bmp').stat().st_size == st.st_size
    code, stdout, err = train(hr, out, capsys)
    assert code == 0 and 'source changed' in stdout and 'img1.bmp: made again' in err
    assert np.array_equal(cv2.imread(str(out / 't_HR' / 'img1.png')), synthetic_image(60, 70, 77))
    assert_lmdb_matches_folder(out / 't_HR_sub.lmdb', out / 't_HR_sub')
    assert_lmdb_matches_folder(out / 't_LR_bicubic_X2_sub.lmdb', out / 't_LR_bicubic' / 'X2_sub')
    sub = cv2.imread(str(out / 't_HR_sub' / 'img1_s001.png'))
    assert np.array_equal(sub, synthetic_image(60, 70, 77)[:CROP, :CROP])


def test_train_removed_source_leaves_nothing_behind(tmp_path, capsys):
    """A source removed from --hr: its HR, LR, sub-images and LMDB entries go, and the summary says so."""
    hr, out = tmp_path / 'hr', tmp_path / 'out'
    write_images(hr, 3, size=(60, 70))
    assert train(hr, out, capsys)[0] == 0
    (hr / 'img02.png').unlink()
    code, stdout, err = train(hr, out, capsys)
    assert code == 0 and 'outdated output(s) removed' in stdout and 't_HR/img02.png' in err
    assert not [p for p in out.rglob('img02*')]
    for lmdb_path in (out / 't_HR_sub.lmdb', out / 't_LR_bicubic_X2_sub.lmdb'):
        assert not [k for k in lmdb_items(lmdb_path) if k.startswith('img02')]
    assert_lmdb_matches_folder(out / 't_HR_sub.lmdb', out / 't_HR_sub')


def test_train_changed_crop_step_thresh_are_redone(tmp_path, capsys):
    """Other --crop-size/--step/--thresh: sub-images and LMDBs made again, crops of the old grid removed."""
    hr, out = tmp_path / 'hr', tmp_path / 'out'
    write_images(hr, 1, size=(100, 130))
    assert train(hr, out, capsys, '--crop-size', '32', '--step', '16')[0] == 0
    assert len(list((out / 't_HR_sub').glob('*.png'))) == 6 * 8
    code, stdout, _ = train(hr, out, capsys)  # 48 / 24
    assert code == 0 and 'settings changed' in stdout
    assert len(list((out / 't_HR_sub').glob('*.png'))) == 4 * 5
    assert_lmdb_matches_folder(out / 't_HR_sub.lmdb', out / 't_HR_sub')
    assert_lmdb_matches_folder(out / 't_LR_bicubic_X2_sub.lmdb', out / 't_LR_bicubic' / 'X2_sub')
    code, stdout, _ = train(hr, out, capsys, '--thresh', '30')
    assert code == 0 and 'settings changed' in stdout
    assert len(list((out / 't_HR_sub').glob('*.png'))) == 3 * 4  # the last row (52) and column (82) dropped
    assert_lmdb_matches_folder(out / 't_HR_sub.lmdb', out / 't_HR_sub')


def test_train_changed_scale_set(tmp_path, capsys):
    """--scales 2 4 then 4: the x2 data stay (the HR is still mod 4); then 3: HR is made again (mod 3) and the
    x2 and x4 data, no longer consistent with it, are removed."""
    hr, out = tmp_path / 'hr', tmp_path / 'out'
    write_images(hr, 2, size=(100, 130))
    assert train(hr, out, capsys, scales=('2', '4'))[0] == 0
    code, stdout, _ = train(hr, out, capsys, scales=('4', ))
    assert code == 0 and 'written' in stdout and 'removed' not in stdout
    assert (out / 't_LR_bicubic_X2_sub.lmdb' / 'data.mdb').is_file()
    code, stdout, err = run(['train', '--hr', hr, '--out', out, '--scales', '3', '--name', 't', '--crop-size', '48',
                             '--step', '24'], capsys)
    assert code == 0 and 'settings changed' in stdout and 'removed' in stdout
    assert sorted(p.name for p in (out / 't_LR_bicubic').iterdir()) == ['X3', 'X3_sub']
    assert not (out / 't_LR_bicubic_X2_sub.lmdb').exists() and not (out / 't_LR_bicubic_X4_sub.lmdb').exists()
    assert cv2.imread(str(out / 't_HR' / 'img00.png')).shape[:2] == (99, 129)
    assert_lmdb_matches_folder(out / 't_LR_bicubic_X3_sub.lmdb', out / 't_LR_bicubic' / 'X3_sub')


def test_outputs_edited_or_deleted_by_hand_are_made_again(tmp_path, capsys):
    hr, out = tmp_path / 'hr', tmp_path / 'out'
    write_images(hr, 2, size=(60, 70))
    assert train(hr, out, capsys)[0] == 0
    good_sub = (out / 't_HR_sub' / 'img00_s002.png').read_bytes()
    cv2.imwrite(str(out / 't_HR_sub' / 'img00_s002.png'), np.zeros((CROP, CROP, 3), np.uint8))  # edited
    (out / 't_LR_bicubic' / 'X2' / 'img01.png').unlink()  # deleted
    with open(out / 't_LR_bicubic_X2_sub.lmdb' / 'data.mdb', 'ab') as f:  # damaged
        f.write(b'\0' * 4096)
    code, stdout, err = train(hr, out, capsys)
    assert code == 0 and 'output edited or deleted' in stdout
    assert 't_HR_sub/img00_s002.png was edited or deleted' in err
    assert (out / 't_HR_sub' / 'img00_s002.png').read_bytes() == good_sub
    assert (out / 't_LR_bicubic' / 'X2' / 'img01.png').is_file()
    assert 't_LR_bicubic_X2_sub.lmdb: built again' in err
    assert_lmdb_matches_folder(out / 't_HR_sub.lmdb', out / 't_HR_sub')
    assert_lmdb_matches_folder(out / 't_LR_bicubic_X2_sub.lmdb', out / 't_LR_bicubic' / 'X2_sub')


def test_lmdb_rebuilt_when_a_sub_image_it_holds_is_rewritten(tmp_path, capsys):
    """Same key list, other pixels: the LMDB is built again (the old code compared keys only)."""
    hr, out = tmp_path / 'hr', tmp_path / 'out'
    write_images(hr, 2, size=(60, 70))
    assert train(hr, out, capsys)[0] == 0
    keys = sorted(lmdb_items(out / 't_HR_sub.lmdb'))
    cv2.imwrite(str(hr / 'img01.png'), synthetic_image(60, 70, 42))
    assert train(hr, out, capsys)[0] == 0
    assert sorted(lmdb_items(out / 't_HR_sub.lmdb')) == keys
    assert_lmdb_matches_folder(out / 't_HR_sub.lmdb', out / 't_HR_sub')
    assert np.array_equal(lmdb_items(out / 't_HR_sub.lmdb')['img01_s001'], synthetic_image(60, 70, 42)[:CROP, :CROP])


@pytest.mark.parametrize('damage', ['garbage', 'wrong types', 'outside', 'other source', 'directory'])
def test_damaged_or_edited_record_is_never_trusted(tmp_path, capsys, damage):
    hr, out = tmp_path / 'hr', tmp_path / 'out'
    write_images(hr, 2, size=(60, 70))
    assert train(hr, out, capsys)[0] == 0
    record = out / RECORD_NAME
    lines = record.read_text().splitlines()
    victim = tmp_path / 'victim.png'
    victim.write_bytes(b'keep me')
    if damage == 'garbage':
        record.write_bytes(b'\xff\xfe not json\n{"v": 1, "unit": 3}\n' + record.read_bytes()[:-40])
    elif damage == 'wrong types':
        record.write_text('\n'.join(line.replace('"files": {', '"files": {"x": "y", ') for line in lines))
    elif damage == 'outside':  # a hand-made entry for a file outside --out: never deleted
        st = victim.stat()
        entry = {'v': 1, 'unit': 't_HR/gone.png', 'recipe': {'made': 'hr'},
                 'files': {'../victim.png': [st.st_size, st.st_mtime_ns, '']}}
        record.write_text('\n'.join(lines + [json.dumps(entry)]) + '\n')
    elif damage == 'other source':  # claims another source hash: the outputs are made again
        record.write_text('\n'.join(line.replace('"source": "', '"source": "0') for line in lines) + '\n')
    else:
        record.unlink()
        record.mkdir()
        code, _, err = train(hr, out, capsys)
        assert code == 2 and 'is not a regular file' in err and err.count('\n') == 1
        return
    code, stdout, err = train(hr, out, capsys)
    assert code == 0, err
    assert 'Traceback' not in err
    assert victim.read_bytes() == b'keep me'
    if damage == 'other source':
        assert 'source changed' in stdout
    elif damage != 'outside':
        assert 'damaged or unknown line(s) ignored' in err
    assert_lmdb_matches_folder(out / 't_HR_sub.lmdb', out / 't_HR_sub')
    assert train(hr, out, capsys)[1].startswith('asid-prepare train: 0 written')  # the record is whole again


def test_demo_data_follow_their_record(tmp_path, capsys, monkeypatch):
    """demo: a sample edited by hand is made again from scikit-image, and so is everything made from it;
    a sample too small for one sub-image is named (case 6 in the demo's own data)."""
    monkeypatch.setattr(prepare, 'DEMO_TRAIN', ('coins', 'page'))
    monkeypatch.setattr(prepare, 'DEMO_VAL', ('coins', ))
    out = tmp_path / 'demo'
    code, stdout, err = run(['demo', '--out', out], capsys)
    assert code == 0 and '1 too small for a sub-image (demo_train_HR/page.png)' in stdout
    good = (out / 'source' / 'train' / 'coins.png').read_bytes()
    cv2.imwrite(str(out / 'source' / 'train' / 'coins.png'), synthetic_image(303, 384, 0))
    code, stdout, err = run(['demo', '--out', out], capsys)
    assert code == 0 and 'source changed' not in stdout  # the sample itself was restored first
    assert (out / 'source' / 'train' / 'coins.png').read_bytes() == good
    code, stdout, _ = run(['demo', '--out', out], capsys)
    assert code == 0 and ' 0 written' in stdout


# ----------------------------------------------------------------------------------------------
# Case 6: an image too small for one sub-image
# ----------------------------------------------------------------------------------------------
def test_image_too_small_for_a_sub_image_is_named(tmp_path, capsys):
    hr, out = tmp_path / 'hr', tmp_path / 'out'
    write_images(hr, 1, size=(60, 70))
    cv2.imwrite(str(hr / 'small.png'), synthetic_image(30, 40, 3))
    code, stdout, err = train(hr, out, capsys)
    assert code == 0
    assert '1 too small for a sub-image (t_HR/small.png)' in stdout
    assert 't_HR/small.png: 40x30 is smaller than one 48 px sub-image' in err
    assert '1 too small' in train(hr, out, capsys)[1]  # said again on a re-run, where nothing is redone


def test_animation_is_a_named_failure_not_its_first_frame(tmp_path, capsys):
    """An animated GIF or a multi-page TIFF among the HR images: refused by name with its frame count (training
    on its first frame alone would silently drop the others)."""
    from PIL import Image

    hr, out = tmp_path / 'hr', tmp_path / 'out'
    write_images(hr, 1, size=(60, 70))
    frames = [Image.fromarray(synthetic_image(60, 70, seed)[:, :, ::-1]) for seed in (1, 2, 3)]
    frames[0].save(hr / 'anim.gif', save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(hr / 'pages.tif', save_all=True, append_images=frames[1:2])
    code, stdout, err = train(hr, out, capsys)
    assert code == 1, err
    assert 'anim.gif: animated GIF (3 frames): only single pictures are read here' in err
    assert 'pages.tif: multi-page TIFF (2 pages): only single pictures are read here' in err
    assert sorted(p.name for p in (out / 't_HR').iterdir()) == ['img00.png']


def test_lmdb_with_a_flat_first_sub_image(tmp_path, capsys):
    """BasicSR sizes an LMDB at 10 x the first image's PNG: a flat first crop (a few hundred bytes) made the
    build die with MDB_MAP_FULL on noisy ones; the size now follows the pixels."""
    hr, out = tmp_path / 'hr', tmp_path / 'out'
    hr.mkdir()
    cv2.imwrite(str(hr / 'a_flat.png'), np.zeros((CROP, CROP, 3), np.uint8))
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(hr / f'noise{i}.png'), rng.integers(0, 256, (2 * CROP, 2 * CROP, 3), dtype=np.uint8))
    code, _, err = train(hr, out, capsys)
    assert code == 0, err
    assert_lmdb_matches_folder(out / 't_HR_sub.lmdb', out / 't_HR_sub')


# ----------------------------------------------------------------------------------------------
# Case 11: file names that are not UTF-8, or not usable as LMDB keys
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_non_utf8_and_unsafe_names(tmp_path, capsys):
    """``x\\xff.png`` used to kill asid-prepare with SIGSEGV inside OpenCV; now its outputs get an ASCII name,
    said by name, and the LMDB keys stay ASCII. Two names that map to one output name: the second fails."""
    hr = tmp_path / 'photos'
    write_images(hr, 1, size=(60, 70))
    raw = os.fsencode(hr)
    (hr / 'img00.png').rename(os.fsdecode(raw + b'/x\xff.png'))
    cv2.imwrite(str(hr / 'a b.c.png'), synthetic_image(60, 70, 1))
    cv2.imwrite(str(hr / 'a_b_c.png'), synthetic_image(60, 70, 2))
    result = run_module('asid_arch.cli.prepare', ['train', '--hr', str(hr), '--out', str(tmp_path / 'out'),
                                                  '--scales', '2', *TRAIN], tmp_path)
    assert result.returncode == 1, result.stderr
    assert 'Traceback' not in result.stderr
    assert "x\\xff.png: outputs named x_.png" in result.stderr
    assert 'a_b_c.png: its outputs would be named a_b_c.png like those of a b.c.png' in result.stderr
    keys = sorted(lmdb_items(tmp_path / 'out' / 't_HR_sub.lmdb'))
    assert keys and {k.split('_s')[0] for k in keys} == {'x_', 'a_b_c'}
    assert 'x_.png' in os.listdir(tmp_path / 'out' / 't_HR')
    code, _, err = run(['bench', '--hr', hr, '--out', tmp_path / 'b', '--scales', '2'], capsys)  # (no LMDB)
    assert code == 1 and "x\\xff.png: outputs named x_.png" in err
    assert sorted(os.listdir(tmp_path / 'b' / 'photos' / 'GTmod2')) == ['a_b_c.png', 'x_.png']


# ----------------------------------------------------------------------------------------------
# Case 15: SIGINT / SIGTERM
# ----------------------------------------------------------------------------------------------
SIGNAL_HOOK = """
import os, signal, sys
from asid_arch.cli import prepare as prepare_command
from asid_arch.data import prepare
real, calls = prepare.bicubic_resize, []
def hook(img, scale):
    calls.append(1)
    if len(calls) == 2:  # the second image, after the first is written
        os.kill(os.getpid(), signal.SIGTERM)
    return real(img, scale)
prepare.bicubic_resize = hook
sys.exit(prepare_command.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigterm_mid_run_summary_and_clean_resume(tmp_path, capsys):
    hr, out = tmp_path / 'hr', tmp_path / 'out'
    write_images(hr, 3, size=(60, 70))
    args = ['train', '--hr', str(hr), '--out', str(out), '--scales', '2', *TRAIN]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, '-c', SIGNAL_HOOK, *args], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert 'Traceback' not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('asid-prepare train: stopped by SIGTERM (1 written') and 'run the same command' in last
    no_leftovers(out)
    assert not (out / 't_HR_sub.lmdb').exists()
    code, stdout, _ = run(args, capsys)
    assert code == 0 and 'written' in stdout
    assert_lmdb_matches_folder(out / 't_HR_sub.lmdb', out / 't_HR_sub')
    assert len(lmdb_items(out / 't_HR_sub.lmdb')) == 3 * 4


def test_ctrl_c_while_building_an_lmdb_leaves_no_partial_one(tmp_path, capsys, monkeypatch):
    import basicsr.utils.lmdb_util as lmdb_util

    hr, out = tmp_path / 'hr', tmp_path / 'out'
    write_images(hr, 2, size=(60, 70))
    real = lmdb_util.make_lmdb_from_imgs

    def interrupted(data_path, lmdb_path, *args, **kwargs):
        real(data_path, lmdb_path, *args, **kwargs)  # the data are written, the rename has not happened
        raise KeyboardInterrupt

    monkeypatch.setattr(lmdb_util, 'make_lmdb_from_imgs', interrupted)
    code, _, err = train(hr, out, capsys)
    assert code == 130 and 'stopped by Ctrl-C' in err and 'Traceback' not in err
    assert not (out / 't_HR_sub.lmdb').exists()
    no_leftovers(out)
    monkeypatch.setattr(lmdb_util, 'make_lmdb_from_imgs', real)
    code, stdout, _ = train(hr, out, capsys)
    assert code == 0 and '0 written' in stdout  # the images were done: only the LMDBs are built
    assert_lmdb_matches_folder(out / 't_HR_sub.lmdb', out / 't_HR_sub')


def test_disk_full_mid_run_is_one_line(tmp_path, capsys, monkeypatch):
    """A write that fails (disk full) stops the run with the file named and the summary, exit 1; a re-run
    with space finishes it."""
    import errno

    from asid_arch import image_writer as images

    hr, out = tmp_path / 'hr', tmp_path / 'out'
    write_images(hr, 2, size=(60, 70))
    real, calls = images.imwrite_atomic, []

    def full(path, img, params=()):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real(path, img, params)

    monkeypatch.setattr(images, 'imwrite_atomic', full)
    code, _, err = train(hr, out, capsys)
    assert code == 1 and f'cannot write {calls[2]}: No space left on device' in err and 'Traceback' not in err
    assert err.strip().splitlines()[-1].startswith('asid-prepare train: stopped (1 written')
    monkeypatch.setattr(images, 'imwrite_atomic', real)
    assert train(hr, out, capsys)[0] == 0
    assert_lmdb_matches_folder(out / 't_HR_sub.lmdb', out / 't_HR_sub')


# ----------------------------------------------------------------------------------------------
# User mistakes: one line, exit 2, before any work
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize('extra,message', [
    (['--step', '0'], '--step must be a positive'),
    (['--crop-size', '-24'], '--crop-size must be a positive'),
    (['--crop-size', '0'], '--crop-size must be a positive'),
    (['--crop-size', '1'], '--crop-size 1 is smaller than scale 2'),
    (['--thresh', '-1'], '--thresh must be 0 or more'),
    (['--scales', '0'], 'scales must be positive integers, got 0'),
    (['--scales', '2', '2'], 'scale 2 is given twice'),
    (['--name', '../x'], '--name'),
])
def test_bad_train_arguments(tmp_path, capsys, extra, message):
    write_images(tmp_path / 'hr', 1, size=(60, 70))
    code, _, err = run(['train', '--hr', tmp_path / 'hr', '--out', tmp_path / 'out', '--scales', '2', *extra],
                       capsys)
    assert code == 2 and message in err and err.count('\n') == 1, err
    assert not (tmp_path / 'out').exists()


def test_bad_folders(tmp_path, capsys, monkeypatch):
    write_images(tmp_path / 'hr', 1, size=(60, 70))
    (tmp_path / 'file').write_text('x')
    cases = [
        (['train', '--hr', tmp_path / 'hr', '--out', tmp_path / 'file'], '--out', 'is a file, not a folder'),
        (['train', '--hr', tmp_path / 'file', '--out', tmp_path / 'o'], '--hr', 'is a file, not a folder'),
        (['train', '--hr', tmp_path / 'missing', '--out', tmp_path / 'o'], '--hr', 'does not exist'),
        (['bench', '--hr', tmp_path / 'hr', tmp_path / 'hr', '--out', tmp_path / 'o'], '--hr', 'is given twice'),
        (['train', '--hr', tmp_path / 'o' / 't_HR', '--out', tmp_path / 'o', '--name', 't'], '--hr',
         'is inside the output folder'),
    ]
    (tmp_path / 'o' / 't_HR').mkdir(parents=True)
    write_images(tmp_path / 'o' / 't_HR', 1, size=(60, 70))
    for args, option, message in cases:
        code, _, err = run(args, capsys)
        assert code == 2 and option in err and message in err and err.count('\n') == 1, (args, err)
    for root in ('A', 'B'):
        write_images(tmp_path / root / 'Set5' / 'HR', 1, size=(60, 70))
    code, _, err = run(['bench', '--hr', tmp_path / 'A' / 'Set5' / 'HR', tmp_path / 'B' / 'Set5' / 'HR', '--out',
                        tmp_path / 'd'], capsys)
    assert code == 2 and 'are both the set Set5' in err and not (tmp_path / 'd').exists()
    not_utf8 = os.fsdecode(os.fsencode(tmp_path) + b'/d\xff')  # BasicSR's LMDB builder would crash in OpenCV
    code, _, err = run(['train', '--hr', tmp_path / 'hr', '--out', not_utf8], capsys)
    assert code == 2 and '--out' in err and 'not valid UTF-8' in err and not os.path.lexists(not_utf8)
    code, _, err = run(['train', '--hr', tmp_path / 'hr', '--out', tmp_path / 'd', '--name', 'x\udcff'], capsys)
    assert code == 2 and "--name 'x\\xff'" in err and not (tmp_path / 'd').exists()

    readonly = tmp_path / 'ro'
    readonly.mkdir()
    readonly.chmod(stat.S_IRUSR | stat.S_IXUSR)
    real_access = os.access
    if os.geteuid() == 0:  # root writes anyway: pretend to be a user
        monkeypatch.setattr(os, 'access', lambda p, mode: False if Path(p) == readonly else real_access(p, mode))
    code, _, err = run(['bench', '--hr', tmp_path / 'hr', '--out', readonly], capsys)
    readonly.chmod(stat.S_IRWXU)
    assert code == 2 and f'--out {readonly} is not writable' in err and not list(readonly.iterdir())


# ----------------------------------------------------------------------------------------------
# Case 9: asid-kit and copies the user edited
# ----------------------------------------------------------------------------------------------
@pytest.fixture()
def checkout(tmp_path):
    """A minimal BasicSR checkout (what asid-kit looks for), kit installed."""
    for sub in ('archs', 'metrics', 'models', 'utils'):  # the folders of a checkout the kit writes to
        (tmp_path / 'BasicSR' / 'basicsr' / sub).mkdir(parents=True)
        (tmp_path / 'BasicSR' / 'basicsr' / sub / '__init__.py').write_text('')
    assert asid_kit(['install', str(tmp_path / 'BasicSR')]) == 0
    return tmp_path / 'BasicSR'


def test_kit_keeps_a_user_edited_copy(checkout, capsys):
    arch = checkout / 'basicsr' / 'archs' / 'asid_arch.py'
    mine = arch.read_text() + '\n# my change\n'
    arch.write_text(mine)
    capsys.readouterr()
    assert asid_kit(['check', str(checkout)]) == 1
    assert f'user-edited {arch} (was changed since asid-kit installed it)' in capsys.readouterr().out
    assert asid_kit(['install', str(checkout)]) == 2
    err = capsys.readouterr().err
    assert f'{arch} was changed since asid-kit installed it: kept; run with --force' in err
    assert arch.read_text() == mine and 'Traceback' not in err
    assert asid_kit(['install', str(checkout), '--force']) == 0
    assert 'your edited copy saved as' in capsys.readouterr().out
    assert (arch.parent / 'asid_arch.py.orig').read_text() == mine
    assert arch.read_bytes() == (REPO / 'asid_arch' / 'archs' / 'asid_arch.py').read_bytes()


def test_kit_updates_an_old_copy_it_installed(checkout, capsys):
    """An older copy asid-kit installed (the record has its hash) is replaced without --force, no .orig;
    a differing copy without any record is treated as the user's."""
    model = checkout / 'basicsr' / 'models' / 'asid_model.py'
    old = b'# an older asid_model.py\n'
    model.write_bytes(old)
    from asid_arch.cli.kit import RECORD_NAME

    record_path = checkout / 'basicsr' / RECORD_NAME
    record = json.loads(record_path.read_text())
    import hashlib

    record['models/asid_model.py'] = hashlib.sha256(old).hexdigest()
    record_path.write_text(json.dumps(record))
    capsys.readouterr()
    assert asid_kit(['check', str(checkout)]) == 1
    assert f'outdated    {model}' in capsys.readouterr().out
    assert asid_kit(['install', str(checkout)]) == 0
    assert 'replacing an older copy asid-kit installed, unchanged since' in capsys.readouterr().out
    assert not list(model.parent.glob('*.orig*'))
    model.write_bytes(old)
    record_path.write_text('{damaged')
    assert asid_kit(['install', str(checkout)]) == 2
    assert 'asid-kit has no record of installing it' in capsys.readouterr().err
    assert model.read_bytes() == old


def test_kit_recognises_an_earlier_version_without_a_record(checkout, capsys, monkeypatch):
    """A copy from before install kept a record: an unchanged earlier version of the kit file (known by its
    hash) is updated without --force; anything else stays the user's."""
    import hashlib

    from asid_arch.cli import kit

    model = checkout / 'basicsr' / 'models' / 'asid_model.py'
    old = b'# asid_model.py as an earlier release had it\n'
    monkeypatch.setitem(kit.EARLIER_VERSIONS, 'models/asid_model.py',
                        frozenset({hashlib.sha256(old).hexdigest()[:kit.VERSION_PREFIX]}))
    (checkout / 'basicsr' / kit.RECORD_NAME).unlink()
    model.write_bytes(old)
    capsys.readouterr()
    assert asid_kit(['check', str(checkout)]) == 1
    assert f'outdated    {model} (an earlier version of the kit file, unchanged)' in capsys.readouterr().out
    assert asid_kit(['install', str(checkout)]) == 0
    assert model.read_bytes() == (REPO / 'asid_arch' / 'models' / 'asid_model.py').read_bytes()
    model.write_bytes(old + b'# edited\n')
    (checkout / 'basicsr' / kit.RECORD_NAME).unlink()
    assert asid_kit(['install', str(checkout)]) == 2


@pytest.mark.parametrize('kind', ['symlink', 'directory', 'read-only'])
def test_kit_destination_it_will_not_write(checkout, tmp_path, capsys, kind):
    arch = checkout / 'basicsr' / 'archs' / 'omnisr_arch.py'
    elsewhere = tmp_path / 'elsewhere.py'
    elsewhere.write_text('# not the kit\n')
    arch.unlink()
    if kind == 'symlink':
        arch.symlink_to(elsewhere)
        expected = 'is a symbolic link'
    elif kind == 'directory':
        arch.mkdir()
        expected = 'is a folder, not a file'
    else:
        arch.write_text('# an old copy\n')
        arch.chmod(stat.S_IRUSR)
        expected = 'is read-only'
    capsys.readouterr()
    assert asid_kit(['install', str(checkout), '--force']) == 2
    err = capsys.readouterr().err
    assert f'asid-kit: error: {arch} ' in err and expected in err and 'Traceback' not in err
    assert elsewhere.read_text() == '# not the kit\n'
    assert asid_kit(['check', str(checkout)]) == 1
    assert f'unusable    {arch}' in capsys.readouterr().out
