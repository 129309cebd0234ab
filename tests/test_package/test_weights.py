"""Released weights by name (asid_arch.weights, asid_arch.from_pretrained), against a small HTTP server on 127.0.0.1.

The server holds a mirror of the authors' repository tree (``train_logs/...``) made here: real-size random
weights of the named network in the released key layout, so that they load strictly into it.
"""
from __future__ import annotations

import http.server
import os
import socket
import threading
from pathlib import Path
from typing import Dict, Iterator, Tuple

import cv2
import pytest
import torch

from asid_arch.archs.asid_arch import asid, asid_d8
from asid_arch.archs.asid_layouts import state_dict_to_reference
from asid_arch.archs.omnisr_arch import OmniSR
from asid_arch.utils.asid_errors import PretrainedWeightsError
from asid_arch.weights import (BASE_URL_ENV, CACHE_DIR_ENV, RELEASED, WeightsDownloadError, fetch, released,
                               resolve_model)

from helpers import REPO, run_module, synthetic_image

NAME = 'asid_x2'  # the smallest released network: the one served in these tests
ENTRY = RELEASED[NAME]


def saved(state: Dict[str, torch.Tensor], path: Path) -> bytes:
    torch.save(state, path)
    return path.read_bytes()


@pytest.fixture(scope='module')
def files(tmp_path_factory) -> Dict[str, bytes]:
    """Checkpoint bytes: the right file for asid_x2, ASID-D8 x2 weights, Omni-SR weights (all released layout)."""
    folder = tmp_path_factory.mktemp('weights')
    torch.manual_seed(0)
    return {'asid_x2': saved(state_dict_to_reference(asid(upscale=2).state_dict()), folder / 'a.pth'),
            'asid_d8_x2': saved(state_dict_to_reference(asid_d8(upscale=2).state_dict()), folder / 'd.pth'),
            'omnisr': saved(OmniSR(upscale=2).state_dict(), folder / 'o.pth')}


class Mirror:
    """``{path: (bytes, how)}`` served over HTTP; ``how``: 'whole', 'short' (a Content-Length larger than the body,
    then the connection closed) or 'chunked-cut' (chunked transfer closed mid-body)."""

    def __init__(self) -> None:
        self.files: Dict[str, Tuple[bytes, str]] = {}
        self.requests = []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                mirror.requests.append(self.path)
                body, how = mirror.files.get(self.path.lstrip('/'), (None, None))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                if how == 'chunked-cut':
                    self.send_header('Transfer-Encoding', 'chunked')
                    self.end_headers()
                    half = body[:len(body) // 2]
                    self.wfile.write(f'{len(body):x}\r\n'.encode() + half)
                else:
                    self.send_header('Content-Length', str(len(body)))
                    self.end_headers()
                    self.wfile.write(body if how == 'whole' else body[:len(body) // 2])
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f'http://127.0.0.1:{self.server.server_address[1]}/mirror'

    def serve(self, name: str, body: bytes, how: str = 'whole') -> None:
        self.files[f'mirror/{RELEASED[name].path}'] = (body, how)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror(monkeypatch, tmp_path) -> Iterator[Mirror]:
    server = Mirror()
    monkeypatch.setenv(BASE_URL_ENV, server.url)
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / 'cache'))
    yield server
    server.stop()


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


def test_download_then_cache_hit_without_the_server(mirror, files, tmp_path):
    mirror.serve(NAME, files[NAME])
    path = fetch(NAME, progress=False)
    assert path == tmp_path / 'cache' / ENTRY.file_name and path.read_bytes() == files[NAME]
    assert cache_names(tmp_path / 'cache') == [ENTRY.file_name]  # no temporary left
    assert len(mirror.requests) == 1
    mirror.stop()
    assert fetch(NAME, progress=False) == path  # served from the cache: the server is gone
    assert resolve_model(NAME) == path


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
    with pytest.raises(PretrainedWeightsError) as err:
        fetch(NAME, progress=False)
    message = str(err.value)
    assert '\n' not in message and mirror.url in message
    assert cache_names(tmp_path / 'cache') == []
    if how == 'short':  # urllib hands a short body on silently: the check of the file refuses it
        assert 'nothing was kept' in message and 'truncated' in message
    else:
        assert isinstance(err.value, WeightsDownloadError)


@pytest.mark.parametrize('served', ['asid_d8_x2', 'omnisr'])
def test_file_of_another_network_is_refused(mirror, files, tmp_path, served):
    mirror.serve(NAME, files[served])
    with pytest.raises(PretrainedWeightsError, match='nothing was kept') as err:
        fetch(NAME, progress=False)
    assert f'ASID x2 weights of {NAME}' in str(err.value)
    assert ('ASID-D8' if served == 'asid_d8_x2' else 'Omni-SR') in str(err.value)
    assert cache_names(tmp_path / 'cache') == []


def test_wrong_file_in_the_cache_is_refused_not_deleted(mirror, files, tmp_path):
    cached = tmp_path / 'cache' / ENTRY.file_name
    cached.parent.mkdir()
    cached.write_bytes(files['asid_d8_x2'])  # placed by hand, wrongly
    with pytest.raises(PretrainedWeightsError, match='delete it to download it again'):
        fetch(NAME, progress=False)
    assert cached.exists() and not mirror.requests


def test_offline_error_names_the_url_and_where_to_place_the_file(monkeypatch, tmp_path):
    base = closed_port_url()
    monkeypatch.setenv(BASE_URL_ENV, base)
    with pytest.raises(WeightsDownloadError) as err:
        fetch(NAME, tmp_path / 'cache', progress=False)
    message = str(err.value)
    assert f'{base}/{ENTRY.path}' in message and str(tmp_path / 'cache' / ENTRY.file_name) in message
    assert '\n' not in message and cache_names(tmp_path / 'cache') == []


def test_missing_file_on_the_mirror(mirror):
    with pytest.raises(WeightsDownloadError, match='404'):
        fetch(NAME, progress=False)


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
    assert cache_names(tmp_path / 'cache') == [ENTRY.file_name]


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
    from asid_arch.pipeline.options_structure import OptionsError

    mirror.serve(NAME, files[NAME])
    opt = yaml.safe_load((REPO / 'options' / 'test' / 'ASID' / 'test_ASID_SRx2.yml').read_text())
    opt['path']['pretrain_network_g'] = NAME
    (tmp_path / 'o.yml').write_text(yaml.safe_dump(opt))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', ['asid-test', '-opt', 'o.yml'])
    with pytest.raises(OptionsError) as err:  # the benchmark data is absent here: only that is reported
        parse_options_safely(str(tmp_path), is_train=False)
    assert 'pretrain_network_g' not in str(err.value) and 'datasets:' in str(err.value)
    assert cache_names(tmp_path / 'cache') == [ENTRY.file_name] and len(mirror.requests) == 1
