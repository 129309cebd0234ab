"""Released weights by name (asid_arch.released, asid_arch.from_pretrained), against a mirror on 127.0.0.1 (mirror.py,
fixtures in conftest.py).

The mirror serves files made here in the released key layout: weights that up-scale better than bicubic
(linear_upscaler.py), random and all-zero weights of the same shapes, and other networks' weights. The
download's bounds against hostile servers are in test_downloads.py, the quality check in test_released_quality.py.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
from pathlib import Path

import cv2
import pytest
import torch

from asid_arch.archs.asid_arch import asid, asid_d8
from asid_arch.download import DownloadLimits
from asid_arch.released import (BASE_URL_ENV, CACHE_DIR_ENV, RELEASED, WeightsDownloadError, fetch, hash_record,
                                released, resolve_model)
from asid_arch.utils.asid_errors import PretrainedWeightsError

from helpers import REPO, run_module, synthetic_image

NAME = 'asid_x2'  # the smallest released network: the one served in these tests
ENTRY = RELEASED[NAME]
FAST = DownloadLimits(timeout_s=1.0, attempts=2, retry_pause_s=0.05, lock_wait_s=2.0)  # seconds, not minutes


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    return f'http://127.0.0.1:{port}/nothing'


def cache_names(folder: Path) -> list:
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_released_table_matches_the_factories():
    """Each name's parameter count is that of the package's own asid / asid_d8 at its scale; URLs pinned."""
    for entry in RELEASED.values():
        net = (asid_d8 if entry.architecture == 'ASID-D8' else asid)(upscale=entry.upscale)
        assert sum(p.numel() for p in net.parameters()) == entry.parameters, entry.name
        assert entry.url('').startswith('/train_logs/')
    assert len({e.file_name for e in RELEASED.values()}) == len(RELEASED)
    assert released('ASID_X4') is RELEASED['asid_x4'] and released('asid_x5') is None
    assert RELEASED['asid_x2'].url() == ('https://raw.githubusercontent.com/saturnian77/ASID/eb5af3b4ec923b5fb3e97917fa'
                                         '9cde219ad09a2d/train_logs/ASID_X2_DIV2K/checkpoints/epoch0_ASID.pth')
    assert RELEASED['asid_d8_x2'].url().endswith('e488abcf502bc514dac404a6c2f547956b282ea9/train_logs/ASIDd8_X2_DIV2K/'
                                                 'checkpoints/epoch0_ASID.pth')


def test_size_ranges_hold_real_size_files(files):
    """A file of the released shapes (saved by torch.save) is inside its name's size range."""
    low, high = ENTRY.size_range
    assert low < len(files[NAME]) < high and low == ENTRY.parameters * 4
    low, high = RELEASED['asid_d8_x2'].size_range
    assert low < len(files['asid_d8_x2']) < high


def test_download_then_cache_hit_without_the_server(mirror, files, tmp_path, capsys):
    mirror.serve(NAME, files[NAME])
    path = fetch(NAME, progress=False, limits=FAST)
    assert path == tmp_path / 'cache' / ENTRY.file_name and path.read_bytes() == files[NAME]
    record = hash_record(path)
    assert cache_names(tmp_path / 'cache') == [ENTRY.file_name, record.name]  # no temporary left
    assert record.read_text() == f'{hashlib.sha256(files[NAME]).hexdigest()}  {ENTRY.file_name}\n'
    assert 'checked: on the check picture' in capsys.readouterr().err
    assert len(mirror.requests) == 1
    mirror.stop()
    assert fetch(NAME, progress=False) == path  # served from the cache: the server is gone
    assert resolve_model(NAME) == path


def test_a_download_removes_only_the_temporaries_of_this_package(mirror, files, tmp_path):
    """What a killed download of this package left (``.<file>.XXXXXXXX.asid.tmp``) goes at the next download; files
    of other tools or of the user in the cache (torch.hub's partial download, a ``.tmp`` of one's own) stay."""
    cache = tmp_path / 'cache'
    cache.mkdir()
    ours, theirs = f'.{ENTRY.file_name}.ab12_xyz.asid.tmp', [f'.{ENTRY.file_name}.download.1f2e.partial',
                                                             f'.{ENTRY.file_name}.mine.tmp', '.other.pth.x.tmp']
    for name in (ours, *theirs):
        (cache / name).write_bytes(b'left')
    mirror.serve(NAME, files[NAME])
    path = fetch(NAME, progress=False, limits=FAST)
    assert cache_names(cache) == sorted([*theirs, ENTRY.file_name, hash_record(path).name])


def test_from_pretrained_is_the_released_network_in_eval_mode(mirror, files):
    """``asid_arch.from_pretrained``: the public name, one call, the served weights loaded strictly."""
    import asid_arch

    mirror.serve(NAME, files[NAME])
    net = asid_arch.from_pretrained(NAME.upper(), progress=False)
    assert type(net) is asid_arch.ASID and not net.training and net.upscale == ENTRY.upscale
    expected = asid(upscale=2)
    expected.load_state_dict(torch.load(fetch(NAME, progress=False), weights_only=True))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), expected.state_dict().values()))
    with pytest.raises(KeyError, match='asid_x5'):
        asid_arch.from_pretrained('asid_x5')


@pytest.mark.parametrize('how', ['short', 'chunked-cut'])
def test_broken_transfer_leaves_nothing(mirror, files, tmp_path, how):
    mirror.serve(NAME, files[NAME], how)
    with pytest.raises(WeightsDownloadError) as err:
        fetch(NAME, progress=False, limits=FAST)
    message = str(err.value)
    assert '\n' not in message and mirror.url in message and 'nothing was kept' in message
    assert '(2 attempts)' in message and len(mirror.requests) == 2  # retried once, then given up
    assert cache_names(tmp_path / 'cache') == []
    if how == 'short':
        assert 'closed after' in message


@pytest.mark.parametrize('served', ['asid_x3', 'asid_d8_x2', 'omnisr'])
def test_file_of_another_network_is_refused(mirror, files, tmp_path, served):
    mirror.serve(NAME, files[served])
    with pytest.raises(PretrainedWeightsError) as err:
        fetch(NAME, progress=False, limits=FAST)
    if served == 'asid_x3':  # inside asid_x2's size range: refused when it is loaded
        assert 'nothing was kept' in str(err.value) and f'ASID x2 weights of {NAME}' in str(err.value)
        assert 'holds ASID x3 weights' in str(err.value)
    else:  # larger than asid_x2's size range: refused from the Content-Length
        assert 'refused before reading it' in str(err.value) and len(mirror.requests) == 1
    assert cache_names(tmp_path / 'cache') == []


@pytest.mark.parametrize('served', ['zero', 'random'])
def test_weights_of_the_right_shapes_that_do_not_upscale_are_refused(mirror, files, tmp_path, served):
    """All-zero or random weights load strictly into ASID x2, but fall far below bicubic: nothing is cached."""
    mirror.serve(NAME, files[served])
    with pytest.raises(PretrainedWeightsError) as err:
        fetch(NAME, progress=False, limits=FAST)
    message = str(err.value)
    assert 'bicubic' in message and 'nothing was kept' in message and '\n' not in message
    assert cache_names(tmp_path / 'cache') == []


def test_wrong_file_in_the_cache_is_refused_not_deleted(mirror, files, tmp_path):
    cached = tmp_path / 'cache' / ENTRY.file_name
    cached.parent.mkdir()
    cached.write_bytes(files['asid_d8_x2'])  # placed by hand, wrongly
    with pytest.raises(PretrainedWeightsError, match='delete it to download it again'):
        fetch(NAME, progress=False)
    assert cached.exists() and not mirror.requests


@pytest.mark.parametrize('swapped', ['zero', 'random', 'damaged'])
def test_cache_changed_after_the_download_is_refused(mirror, files, tmp_path, swapped):
    """The cached file is compared with the sha256 recorded at its download: a swapped or damaged file is
    refused (and kept: the user decides), even when it would load."""
    mirror.serve(NAME, files[NAME])
    path = fetch(NAME, progress=False, limits=FAST)
    body = files[NAME][:-1] + bytes([files[NAME][-1] ^ 1]) if swapped == 'damaged' else files[swapped]
    path.write_bytes(body)
    with pytest.raises(PretrainedWeightsError, match='is not the file checked when it was downloaded') as err:
        fetch(NAME, progress=False, limits=FAST)
    assert 'delete both files' in str(err.value) and path.read_bytes() == body and len(mirror.requests) == 1


@pytest.mark.parametrize('placed', ['asid_x2', 'zero'])
def test_file_placed_by_hand_is_checked_then_recorded(mirror, files, tmp_path, placed):
    cached = tmp_path / 'cache' / ENTRY.file_name
    cached.parent.mkdir()
    cached.write_bytes(files[placed])
    if placed == NAME:
        assert fetch(NAME, progress=False) == cached
        assert hash_record(cached).read_text().startswith(hashlib.sha256(files[NAME]).hexdigest())
    else:
        with pytest.raises(PretrainedWeightsError, match='bicubic'):
            fetch(NAME, progress=False)
        assert cached.exists() and not hash_record(cached).exists()
    assert not mirror.requests


@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='FIFOs are POSIX')
def test_a_record_that_is_not_a_regular_file_is_never_opened_nor_replaced(mirror, files, tmp_path, capsys):
    from asid_arch.utils.asid_files import path_kind

    cached = tmp_path / 'cache' / ENTRY.file_name
    cached.parent.mkdir()
    cached.write_bytes(files[NAME])
    os.mkfifo(hash_record(cached))  # opening it for reading would block
    assert fetch(NAME, progress=False) == cached  # checked in full instead
    assert path_kind(hash_record(cached)) == 'FIFO'
    assert 'cannot record the sha256' in capsys.readouterr().err


@pytest.mark.parametrize('pinned', ['right', 'wrong'])
def test_pinned_sha256(mirror, files, tmp_path, monkeypatch, pinned):
    digest = hashlib.sha256(files[NAME] + (b'' if pinned == 'right' else b'x')).hexdigest()
    monkeypatch.setitem(RELEASED, NAME, dataclasses.replace(ENTRY, sha256=digest))
    mirror.serve(NAME, files[NAME])
    if pinned == 'right':
        assert fetch(NAME, progress=False, limits=FAST).read_bytes() == files[NAME]
    else:
        with pytest.raises(PretrainedWeightsError, match=f'not the released {NAME} file.s {digest}'):
            fetch(NAME, progress=False, limits=FAST)
        assert cache_names(tmp_path / 'cache') == []


def test_offline_error_names_the_url_and_where_to_place_the_file(monkeypatch, tmp_path):
    base = closed_port_url()
    monkeypatch.setenv(BASE_URL_ENV, base)
    with pytest.raises(WeightsDownloadError) as err:
        fetch(NAME, tmp_path / 'cache', progress=False, limits=FAST)
    message = str(err.value)
    assert f'{base}/{ENTRY.path}' in message and str(tmp_path / 'cache' / ENTRY.file_name) in message
    assert 'connection refused' in message
    assert '\n' not in message and cache_names(tmp_path / 'cache') == []


def test_missing_file_on_the_mirror(mirror):
    with pytest.raises(WeightsDownloadError, match='404'):
        fetch(NAME, progress=False, limits=FAST)
    assert len(mirror.requests) == 1  # not retried


def test_cache_folder_that_is_a_file_is_named(mirror, tmp_path, monkeypatch):
    (tmp_path / 'afile').write_text('x')
    for cache, said in ((tmp_path / 'afile', 'is a regular file, not a folder'),
                        (tmp_path / 'afile' / 'sub', f'cannot be made: {tmp_path / "afile"} is a regular file')):
        monkeypatch.setenv(CACHE_DIR_ENV, str(cache))
        with pytest.raises(WeightsDownloadError) as err:
            fetch(NAME, progress=False, limits=FAST)
        assert said in str(err.value) and CACHE_DIR_ENV in str(err.value) and 'File exists' not in str(err.value)
    assert not mirror.requests


def read_only_folder(path: Path) -> Path:
    """A folder that cannot be written: a read-only tmpfs as root, mode 0555 otherwise (skipped if neither)."""
    import subprocess

    path.mkdir()
    if os.geteuid() == 0:
        done = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs', str(path)], capture_output=True)
        if done.returncode != 0:
            pytest.skip('root without mount: no read-only folder to test with')
    else:
        path.chmod(0o555)
    return path


def test_read_only_cache_is_named_before_any_download(mirror, files, tmp_path, monkeypatch):
    import subprocess

    cache = read_only_folder(tmp_path / 'ro')
    monkeypatch.setenv(CACHE_DIR_ENV, str(cache))
    mirror.serve(NAME, files[NAME])
    try:
        with pytest.raises(WeightsDownloadError) as err:
            fetch(NAME, progress=False, limits=FAST)
    finally:
        if os.geteuid() == 0:
            subprocess.run(['umount', str(cache)], check=True)
    message = str(err.value)
    assert f'cannot write {NAME} into the weights cache {cache}' in message
    assert ('Read-only file system' in message or 'Permission denied' in message) and 'internet' not in message
    assert not mirror.requests  # found before any download


def test_resolve_model_paths_and_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / NAME).write_bytes(b'x')  # a file of that name is the file, not the download
    assert resolve_model(NAME) == Path(NAME)
    with pytest.raises(PretrainedWeightsError, match='not the name of released weights.*asid_d8_x4'):
        resolve_model('asid_x5')
    assert resolve_model(tmp_path / 'absent.pth') == tmp_path / 'absent.pth'  # the loader names the missing file


@pytest.mark.slow
def test_asid_sr_by_name_end_to_end(mirror, files, tmp_path):
    mirror.serve(NAME, files[NAME])
    cv2.imwrite(str(tmp_path / 'tiny.png'), synthetic_image(12, 16, 0))
    done = run_module('asid_arch.cli.sr', ['tiny.png', '-o', 'out', '-m', NAME], tmp_path)
    assert done.returncode == 0, done.stderr
    assert cv2.imread(str(tmp_path / 'out' / 'tiny_x2.png')).shape == (24, 32, 3)
    assert cache_names(tmp_path / 'cache') == [ENTRY.file_name, hash_record(Path(ENTRY.file_name)).name]


@pytest.mark.slow
def test_asid_sr_zero_weights_by_name_exit_2(mirror, files, tmp_path):
    """Issue 26: an all-zero state dict served for asid_x2 gave an all-black image and exit 0."""
    mirror.serve(NAME, files['zero'])
    cv2.imwrite(str(tmp_path / 'tiny.png'), synthetic_image(12, 16, 0))
    done = run_module('asid_arch.cli.sr', ['tiny.png', '-o', 'out', '-m', NAME], tmp_path)
    assert done.returncode == 2, done.stderr
    assert 'Traceback' not in done.stderr and 'bicubic' in done.stderr
    assert cache_names(tmp_path / 'cache') == [] and not (tmp_path / 'out').exists()


@pytest.mark.slow
def test_asid_sr_by_name_offline_exit_2(monkeypatch, tmp_path):
    monkeypatch.setenv(BASE_URL_ENV, closed_port_url())
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / 'cache'))
    cv2.imwrite(str(tmp_path / 'tiny.png'), synthetic_image(12, 16, 0))
    done = run_module('asid_arch.cli.sr', ['tiny.png', '-o', 'out', '-m', NAME], tmp_path)
    assert done.returncode == 2, done.stderr
    assert 'Traceback' not in done.stderr and 'place it at' in done.stderr


def test_pretrain_network_g_by_name(mirror, files, tmp_path, monkeypatch):
    """asid-test/asid-train's option reading: ``pretrain_network_g: asid_x2`` becomes the cached, checked file."""
    import sys

    import yaml

    from asid_arch.pipeline.launch import parse_options_safely
    from asid_arch.pipeline.options_values import OptionsError

    mirror.serve(NAME, files[NAME])
    opt = yaml.safe_load((REPO / 'options' / 'test' / 'ASID' / 'test_ASID_SRx2.yml').read_text())
    opt['path']['pretrain_network_g'] = NAME
    (tmp_path / 'o.yml').write_text(yaml.safe_dump(opt))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', ['asid-test', '-opt', 'o.yml'])
    with pytest.raises(OptionsError) as err:  # the benchmark data is absent here: only that is reported
        parse_options_safely(str(tmp_path), is_train=False)
    assert 'pretrain_network_g' not in str(err.value) and 'datasets:' in str(err.value)
    assert cache_names(tmp_path / 'cache')[0] == ENTRY.file_name and len(mirror.requests) == 1
