"""A checkpoint that could run code refused by asid-sr, and the asid-sr command on many kinds of images."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from asid_arch import ASID
from asid_arch.cli.sr import main as asid_sr
from asid_arch.from_weights import network_from_file, state_dict_from_file
from asid_arch.utils.asid_errors import PretrainedWeightsError

from helpers import synthetic_image


def tiny_net(scale: int = 2) -> ASID:
    torch.manual_seed(0)
    return ASID(upscale=scale, num_feat=16, num_blocks=1).eval()


class Payload:
    """Unpickling this would create a marker file: stands in for code a malicious checkpoint runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker, ))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / 'executed'
    torch.save({'params': tiny_net().state_dict(), 'extra': Payload(marker)}, tmp_path / 'evil.pth')
    with pytest.raises(PretrainedWeightsError, match='refused'):
        state_dict_from_file(tmp_path / 'evil.pth')
    assert not marker.exists()
    out = tmp_path / 'out'
    code = asid_sr([str(tmp_path), '-o', str(out), '-m', str(tmp_path / 'evil.pth')])
    assert code == 2 and not marker.exists()


@pytest.fixture()
def model_file(tmp_path):
    path = tmp_path / 'model.pth'
    torch.save({'params': tiny_net(2).state_dict()}, path)
    return path


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / 'in'
    folder.mkdir()
    rgb = synthetic_image(30, 41, 1)
    cv2.imwrite(str(folder / 'rgb8.png'), rgb)
    cv2.imwrite(str(folder / 'rgb16.png'), rgb.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / 'photo.jpg'), rgb)
    cv2.imwrite(str(folder / 'web.webp'), rgb)
    cv2.imwrite(str(folder / 'gray.png'), rgb[:, :, 1])
    cv2.imwrite(str(folder / 'rgba.png'), np.dstack([rgb, np.linspace(0, 255, 30 * 41).reshape(30, 41)]).astype(
        np.uint8))
    cv2.imwrite(str(folder / 'tiny.png'), rgb[:3, :2])
    (folder / 'corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n garbage')
    return folder


def test_asid_sr_on_every_kind_of_image(tmp_path, images, model_file, capsys):
    out = tmp_path / 'out'
    code = asid_sr([str(images), '-o', str(out), '-m', str(model_file), '--tile', '0'])
    err = capsys.readouterr().err
    assert code == 1  # the corrupt image failed ...
    assert 'corrupt.png' in err and '7 images written' in err and '1 failed' in err  # ... named, others done
    read = {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in out.glob('*')}
    assert sorted(read) == sorted(f'{n}_x2.png' for n in ('rgb8', 'rgb16', 'photo', 'web', 'gray', 'rgba', 'tiny'))
    assert read['rgb8_x2.png'].shape == (60, 82, 3) and read['rgb8_x2.png'].dtype == np.uint8
    assert read['rgb16_x2.png'].dtype == np.uint16 and read['rgb16_x2.png'].shape == (60, 82, 3)
    assert read['gray_x2.png'].shape == (60, 82)
    assert read['rgba_x2.png'].shape == (60, 82, 4)
    assert np.array_equal(read['rgba_x2.png'][:, :, :3], read['rgb8_x2.png'])  # colour unaffected by alpha
    net, _ = network_from_file(model_file)
    alpha = cv2.imread(str(images / 'rgba.png'), cv2.IMREAD_UNCHANGED)[:, :, 3]
    with torch.no_grad():  # alpha: upscaled on its own, as a grayscale image
        gray = torch.from_numpy(alpha).float().div(255).expand(1, 3, -1, -1)
        expected = net(gray).clamp(0, 1).mean(1)[0].mul(255).round().byte().numpy()
    assert np.abs(read['rgba_x2.png'][:, :, 3].astype(int) - expected).max() <= 1
    assert read['tiny_x2.png'].shape == (6, 4, 3)
    # 16-bit output carries the 8-bit content at 16-bit scale
    assert np.abs(read['rgb16_x2.png'].astype(float) / 257 - read['rgb8_x2.png']).mean() < 2


def test_asid_sr_matches_the_network(tmp_path, model_file):
    rgb = synthetic_image(24, 24, 3)
    cv2.imwrite(str(tmp_path / 'a.png'), rgb)
    assert asid_sr([str(tmp_path / 'a.png'), '-o', str(tmp_path / 'o'), '-m', str(model_file), '--tile', '0',
                    '--precision', 'fp32']) == 0
    net, _ = network_from_file(model_file)
    x = torch.from_numpy(rgb[:, :, ::-1].transpose(2, 0, 1).copy()).float().div(255)[None]
    with torch.no_grad():
        expected = net(x)[0].clamp(0, 1).mul(255).round().byte().numpy().transpose(1, 2, 0)[:, :, ::-1]
    assert np.array_equal(cv2.imread(str(tmp_path / 'o' / 'a_x2.png')), expected)


def test_asid_sr_never_overwrites_an_input(tmp_path, model_file, capsys):
    rgb = synthetic_image(20, 20, 0)
    cv2.imwrite(str(tmp_path / 'a.png'), rgb)
    cv2.imwrite(str(tmp_path / 'a_x2.png'), rgb)  # an input that has the output's name
    before = (tmp_path / 'a_x2.png').read_bytes()
    code = asid_sr([str(tmp_path / '*.png'), '-o', str(tmp_path), '-m', str(model_file)])
    assert code == 1 and 'would overwrite an input' in capsys.readouterr().err
    assert (tmp_path / 'a_x2.png').read_bytes() == before
    assert not list(tmp_path.glob('.*.tmp'))  # nothing half-written left behind


def test_asid_sr_usage_errors(tmp_path, model_file, capsys):
    cv2.imwrite(str(tmp_path / 'a.png'), synthetic_image(20, 20, 0))
    assert asid_sr([str(tmp_path / 'a.png'), '-o', str(tmp_path / 'o'), '-m', str(model_file), '--device', 'cpu',
                    '--precision', 'fp16']) == 2
    assert 'fp16 needs a CUDA device' in capsys.readouterr().err
    assert asid_sr([str(tmp_path / 'a.png'), '-o', str(tmp_path / 'o'), '-m', str(tmp_path / 'nope.pth')]) == 2
    assert asid_sr([str(tmp_path / 'missing.png'), '-o', str(tmp_path / 'o'), '-m', str(model_file)]) == 1
    assert 'no such file' in capsys.readouterr().err


def test_asid_sr_bf16_on_cpu(tmp_path, model_file):
    cv2.imwrite(str(tmp_path / 'a.png'), synthetic_image(24, 32, 0))
    assert asid_sr([str(tmp_path / 'a.png'), '-o', str(tmp_path / 'fp32'), '-m', str(model_file), '--precision',
                    'fp32']) == 0
    assert asid_sr([str(tmp_path / 'a.png'), '-o', str(tmp_path / 'bf16'), '-m', str(model_file), '--precision',
                    'bf16']) == 0
    fp32 = cv2.imread(str(tmp_path / 'fp32' / 'a_x2.png')).astype(float)
    bf16 = cv2.imread(str(tmp_path / 'bf16' / 'a_x2.png')).astype(float)
    assert np.abs(fp32 - bf16).mean() < 3  # bf16 keeps ~3 significant digits
