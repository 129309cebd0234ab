"""Nothing lost, nothing silently wrong: real faults and bad files in training, asid-sr and asid-prepare."""
from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from asid_arch import ASID, image_reader
from asid_arch.cli.prepare import main as asid_prepare
from asid_arch.cli.sr import main as asid_sr
from asid_arch.from_weights import state_dict_from_file
from asid_arch.image_reader import apply_orientation, read_picture
from asid_arch.utils import asid_errors, asid_files
from asid_arch.utils.asid_errors import PretrainedWeightsError

from helpers import run_module, synthetic_image, tiny_train_options, write_images, write_yaml


def tiny_net(scale: int = 2, seed: int = 0) -> ASID:
    torch.manual_seed(seed)
    return ASID(upscale=scale, num_feat=16, num_blocks=1).eval()


@pytest.fixture()
def model_file(tmp_path):
    path = tmp_path / 'model.pth'
    torch.save({'params': tiny_net(2).state_dict()}, path)
    return path


# ----------------------------------------------------------------------------------------------
# Training: checkpoints that cannot be written, damaged states, bad pretrained weights
# ----------------------------------------------------------------------------------------------


def test_save_failure_raises_after_retries(tmp_path, monkeypatch):
    monkeypatch.setattr(asid_files, 'SAVE_RETRY_DELAY_S', 0)
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    with pytest.raises(asid_errors.CheckpointSaveError, match='tried 3 times'):
        asid_files.save_checkpoint({'a': torch.zeros(1)}, blocker / 'net_g_1.pth')


def test_written_files_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        asid_files.save_checkpoint({'a': torch.zeros(1)}, tmp_path / 'x.pth')
    finally:
        os.umask(old)
    assert (tmp_path / 'x.pth').stat().st_mode & 0o777 == 0o644


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / '.net_g_5.pth.abc12_yz.asid.tmp').write_bytes(b'half')
    (tmp_path / 'net_g_4.pth').write_bytes(b'keep')
    users = ['.thesis.docx.tmp', '.net_g_5.pth.abc12_yz.tmp', '.x.ABCDEFGH.asid.tmp']  # not this package's names
    for name in users:
        (tmp_path / name).write_bytes(b'mine')
    os.mkfifo(tmp_path / '.y.abcdefgh.asid.tmp')  # only regular files are removed
    assert [p.name for p in asid_files.remove_stale_temporaries(tmp_path)] == ['.net_g_5.pth.abc12_yz.asid.tmp']
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(users + ['.y.abcdefgh.asid.tmp', 'net_g_4.pth'])


@pytest.mark.slow
def test_damaged_newest_state_falls_back_to_an_older_one(data, tmp_path):
    opt = tiny_train_options('damaged', data / 'train', data / 'valsrc', iters=4,
                             **{'logger.save_checkpoint_freq': 2, 'val.val_freq': 10000})
    first = run_module('asid_arch.cli.train', ['-opt', str(write_yaml(tmp_path / 'd.yml', opt))], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    states = tmp_path / 'experiments' / 'damaged' / 'training_states'
    (states / '4.state').write_bytes((states / '4.state').read_bytes()[:100])  # truncated
    opt['train']['total_iter'] = 6
    resumed = run_module('asid_arch.cli.train', ['-opt', str(write_yaml(tmp_path / 'd.yml', opt)), '--auto_resume'],
                         tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert '4.state cannot be loaded' in resumed.stderr and 'resuming from an older state' in resumed.stderr
    assert 'iter: 2.' in resumed.stderr  # resumed from 2.state
    assert (states / '6.state').exists()


def bad_weight_files(tmp_path: Path) -> dict:
    good = tiny_net(2).state_dict()
    files = {}

    def save(name, obj):
        torch.save(obj, tmp_path / name)
        files[name] = tmp_path / name

    (tmp_path / 'empty.pth').write_bytes(b'')
    files['empty.pth'] = tmp_path / 'empty.pth'
    (tmp_path / 'random.pth').write_bytes(np.random.default_rng(0).bytes(4096))
    files['random.pth'] = tmp_path / 'random.pth'
    save('x4.pth', {'params': tiny_net(4).state_dict()})
    torch.save({'params': good}, tmp_path / 'full.pth')
    data = (tmp_path / 'full.pth').read_bytes()
    (tmp_path / 'truncated.pth').write_bytes(data[:len(data) // 2])
    files['truncated.pth'] = tmp_path / 'truncated.pth'
    save('missing_key.pth', {'params': {k: v for k, v in good.items() if k != 'conv_first.bias'}})
    save('extra_key.pth', {'params': {**good, 'something.else': torch.zeros(1)}})
    nan = {k: v.clone() for k, v in good.items()}
    nan['conv_first.weight'][0, 0, 0, 0] = float('nan')
    save('nan.pth', {'params': nan})
    save('evil.pth', {'params': good, 'extra': Payload(tmp_path / 'executed')})
    from asid_arch.archs.omnisr_arch import OmniSR
    save('omnisr.pth', {'params': OmniSR(upscale=2, num_feat=16, num_groups=1).state_dict()})
    return files


class Payload:
    """Unpickling this would create a marker file: stands in for code a malicious checkpoint runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker, ))


EXPECTED_MESSAGES = {
    'empty.pth': 'is empty (0 bytes)',
    'random.pth': 'is not a PyTorch checkpoint',
    'x4.pth': 'the weights are for x4, the network is x2',
    'truncated.pth': 'truncated or another format',
    'missing_key.pth': 'missing keys: conv_first.bias',
    'extra_key.pth': 'unexpected keys: something.else',
    'nan.pth': 'non-finite weights (NaN or Inf) in 1 tensor(s): conv_first.weight',
    'evil.pth': 'holds Python objects, which could run code when loaded; only plain weights files are accepted',
    'omnisr.pth': 'these look like Omni-SR weights',
}


def test_bad_checkpoints_in_asid_sr(tmp_path, capsys):
    files = bad_weight_files(tmp_path)
    cv2.imwrite(str(tmp_path / 'a.png'), synthetic_image(20, 20, 0))
    for name, path in files.items():
        if name in ('x4.pth', ):
            continue  # a valid x4 model for asid-sr
        code = asid_sr([str(tmp_path / 'a.png'), '-o', str(tmp_path / 'out'), '-m', str(path)])
        err = capsys.readouterr().err
        assert code == 2, (name, err)
        assert str(path) in err, (name, err)
        if name != 'omnisr.pth':
            assert EXPECTED_MESSAGES[name] in err, (name, err)
        else:
            assert 'does not look like ASID weights' in err and 'Omni-SR' in err, err
        assert 'could execute code' not in err or name == 'evil.pth'
    assert not (tmp_path / 'executed').exists()


def test_bad_pretrained_weights_are_found_by_the_option_checks(data, tmp_path):
    from asid_arch.pipeline.options_files import validate_options

    files = bad_weight_files(tmp_path)
    for name, message in EXPECTED_MESSAGES.items():
        opt = tiny_train_options('pre', data / 'train', data / 'valsrc',
                                 **{'path.pretrain_network_g': str(files[name])})
        for phase, ds in opt['datasets'].items():
            ds['phase'] = phase
        problems = validate_options(opt)
        assert any(message in p and str(files[name]) in p for p in problems), (name, problems)
    assert not (tmp_path / 'executed').exists()


@pytest.mark.slow
def test_bad_pretrained_weights_stop_training_before_it_starts(data, tmp_path):
    files = bad_weight_files(tmp_path)
    opt = tiny_train_options('pre', data / 'train', data / 'valsrc', iters=2,
                             **{'path.pretrain_network_g': str(files['x4.pth'])})
    result = run_module('asid_arch.cli.train', ['-opt', str(write_yaml(tmp_path / 'p.yml', opt))], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert EXPECTED_MESSAGES['x4.pth'] in result.stderr, result.stderr[-2000:]
    assert 'Traceback' not in result.stderr
    assert not (tmp_path / 'experiments' / 'pre').exists()  # found before any work


def test_model_load_network_reports_bad_weights(data, tmp_path):
    """The kit's ASIDModel (plain BasicSR, no option checks) stops with the same messages."""
    from basicsr.models import build_model

    files = bad_weight_files(tmp_path)
    for name in ('missing_key.pth', 'evil.pth', 'omnisr.pth'):
        opt = tiny_train_options('m', data / 'train', data / 'valsrc', **{'path.pretrain_network_g': str(files[name])})
        opt.update(is_train=False, dist=False, rank=0, world_size=1)
        with pytest.raises(asid_errors.PretrainedWeightsError, match=re.escape(EXPECTED_MESSAGES[name])):
            build_model(opt)
    assert not (tmp_path / 'executed').exists()


@pytest.mark.slow
def test_plain_state_dict_with_default_param_key_loads(data, tmp_path):
    plain = tmp_path / 'plain.pth'
    torch.save(tiny_net(2).state_dict(), plain)  # no 'params' wrapper, param_key_g left at its default
    opt = tiny_train_options('plain', data / 'train', data / 'valsrc', iters=1,
                             **{'path.pretrain_network_g': str(plain)})
    result = run_module('asid_arch.cli.train', ['-opt', str(write_yaml(tmp_path / 'p.yml', opt))], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'Current net - loaded net' not in result.stderr


# ----------------------------------------------------------------------------------------------
# asid-sr and asid-prepare on real files
# ----------------------------------------------------------------------------------------------
def test_16bit_input_to_8bit_formats_is_scaled(tmp_path, model_file, capsys):
    rgb = synthetic_image(24, 32, 4)
    cv2.imwrite(str(tmp_path / 'a8.png'), rgb)
    cv2.imwrite(str(tmp_path / 'a16.png'), rgb.astype(np.uint16) * 257)
    for ext in ('webp', 'jpg'):
        assert asid_sr([str(tmp_path / 'a8.png'), str(tmp_path / 'a16.png'), '-o', str(tmp_path / ext), '-m',
                        str(model_file), '--ext', ext]) == 0
        assert '16-bit values scaled to 8 bits' in capsys.readouterr().err
        a8 = cv2.imread(str(tmp_path / ext / f'a8_x2.{ext}')).astype(float)
        a16 = cv2.imread(str(tmp_path / ext / f'a16_x2.{ext}')).astype(float)
        assert abs(a16.mean() - a8.mean()) < 1 and np.abs(a16 - a8).mean() < 2  # not clipped to white


def test_truncated_jpeg_is_a_named_failure(tmp_path, model_file, capsys):
    cv2.imwrite(str(tmp_path / 'full.jpg'), synthetic_image(64, 80, 1))
    data = (tmp_path / 'full.jpg').read_bytes()
    (tmp_path / 'cut.jpg').write_bytes(data[:len(data) // 2])
    code = asid_sr([str(tmp_path / 'cut.jpg'), str(tmp_path / 'full.jpg'), '-o', str(tmp_path / 'o'), '-m',
                    str(model_file)])
    err = capsys.readouterr().err
    assert code == 1 and 'cut.jpg: damaged image' in err and 'truncated' in err
    assert sorted(p.name for p in (tmp_path / 'o').iterdir()) == ['full_x2.png']


def test_truncated_jpeg_in_asid_prepare(tmp_path, capsys):
    hr = tmp_path / 'hr'
    write_images(hr, 2, size=(96, 120))
    cv2.imwrite(str(hr / 'photo.jpg'), synthetic_image(96, 120, 5))
    data = (hr / 'photo.jpg').read_bytes()
    (hr / 'photo.jpg').write_bytes(data[:len(data) // 2])
    code = asid_prepare(['train', '--hr', str(hr), '--out', str(tmp_path / 'out'), '--name', 't', '--scales', '2',
                         '--crop-size', '48', '--step', '24'])
    err = capsys.readouterr().err
    assert code == 1 and 'photo.jpg' in err and 'damaged image' in err
    assert not (tmp_path / 'out' / 't_HR' / 'photo.png').exists()
    assert not list((tmp_path / 'out' / 't_HR_sub').glob('photo_*'))


def test_nan_output_is_an_error(tmp_path, capsys):
    net = tiny_net(2)
    with torch.no_grad():
        net.conv_first.bias.fill_(1e38)  # finite weights, non-finite activations
    torch.save({'params': net.state_dict()}, tmp_path / 'huge.pth')
    cv2.imwrite(str(tmp_path / 'a.png'), synthetic_image(20, 20, 0))
    code = asid_sr([str(tmp_path / 'a.png'), '-o', str(tmp_path / 'o'), '-m', str(tmp_path / 'huge.pth')])
    err = capsys.readouterr().err
    assert code == 1 and 'NaN or Inf' in err and 'huge.pth' in err
    assert not (tmp_path / 'o' / 'a_x2.png').exists()


def test_huge_image_refused_before_decoding(tmp_path, model_file, capsys, monkeypatch):
    from PIL import Image

    Image.new('L', (12000, 12000)).save(tmp_path / 'black.png', optimize=True)
    assert (tmp_path / 'black.png').stat().st_size < 1_000_000
    decoded = []
    monkeypatch.setattr(image_reader, 'decode_file', lambda *args, **kwargs: decoded.append(args))
    code = asid_sr([str(tmp_path / 'black.png'), '-o', str(tmp_path / 'o'), '-m', str(model_file)])
    err = capsys.readouterr().err
    assert code == 1 and '12000x12000' in err and 'above the limit' in err and '--max-pixels' in err
    assert decoded == []  # refused from the header: nothing was decoded


def test_exif_orientation_is_applied(tmp_path, model_file):
    from PIL import Image

    rgb = synthetic_image(30, 40, 2)[:, :, ::-1]  # 40 wide, 30 high as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    Image.fromarray(np.ascontiguousarray(rgb)).save(tmp_path / 'portrait.jpg', exif=exif, quality=95)
    assert asid_sr([str(tmp_path / 'portrait.jpg'), '-o', str(tmp_path / 'o'), '-m', str(model_file)]) == 0
    assert cv2.imread(str(tmp_path / 'o' / 'portrait_x2.png')).shape == (80, 60, 3)  # portrait, as viewed


@pytest.mark.parametrize('orientation', range(1, 9))
def test_orientation_matches_pillow(orientation):
    from PIL import Image, ImageOps

    pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    im = Image.fromarray(pixels)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.info['exif'] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(im))
    assert np.array_equal(apply_orientation(pixels, orientation), expected)


def test_gray_alpha_and_cmyk_keep_their_kind(tmp_path, model_file):
    from PIL import Image

    gray = synthetic_image(20, 24, 3)[:, :, 0]
    Image.fromarray(np.dstack([gray, np.full_like(gray, 200)]), 'LA').save(tmp_path / 'ga.png')
    Image.fromarray(synthetic_image(20, 24, 3)).convert('CMYK').save(tmp_path / 'cmyk.tif')
    assert asid_sr([str(tmp_path / 'ga.png'), str(tmp_path / 'cmyk.tif'), '-o', str(tmp_path / 'o'), '-m',
                    str(model_file)]) == 0
    assert Image.open(tmp_path / 'o' / 'ga_x2.png').mode == 'LA'
    assert cv2.imread(str(tmp_path / 'o' / 'cmyk_x2.png'), cv2.IMREAD_UNCHANGED).shape == (40, 48, 3)  # no alpha
    assert read_picture(tmp_path / 'cmyk.tif').alpha is None


def test_unusable_output_folder_is_found_first(tmp_path, model_file, capsys):
    cv2.imwrite(str(tmp_path / 'a.png'), synthetic_image(20, 20, 0))
    (tmp_path / 'blocker').write_text('a file')
    code = asid_sr([str(tmp_path / 'a.png'), '-o', str(tmp_path / 'blocker' / 'out'), '-m', str(model_file)])
    assert code == 2 and 'cannot write there' in capsys.readouterr().err


def column_jumps(tiled: np.ndarray, whole: np.ndarray) -> float:
    """Largest change between neighbouring columns (and rows) of the mean difference tiled - whole, grey levels."""
    diff = tiled.astype(np.float64) - whole.astype(np.float64)
    cols, rows = diff.mean(axis=(0, 2)), diff.mean(axis=(1, 2))
    return float(max(np.abs(np.diff(cols)).max(), np.abs(np.diff(rows)).max()))


def test_tiles_are_blended_without_seams(tmp_path, model_file):
    """Tiled inference vs the whole image: blending leaves far smaller jumps in the column means at tile
    boundaries than averaging the overlaps (the reference protocol), and stays close to the whole image."""
    from asid_arch.from_weights import network_from_file
    from asid_arch.utils.asid_tiling import tile_forward

    rgb = synthetic_image(150, 170, 7)
    cv2.imwrite(str(tmp_path / 'a.png'), rgb)
    assert asid_sr([str(tmp_path / 'a.png'), '-o', str(tmp_path / 'whole'), '-m', str(model_file), '--tile', '0']) == 0
    assert asid_sr([str(tmp_path / 'a.png'), '-o', str(tmp_path / 'tiled'), '-m', str(model_file), '--tile', '64',
                    '--tile-overlap', '16']) == 0
    whole = cv2.imread(str(tmp_path / 'whole' / 'a_x2.png'))
    tiled = cv2.imread(str(tmp_path / 'tiled' / 'a_x2.png'))
    assert tiled.shape == whole.shape == (300, 340, 3)
    net, _ = network_from_file(model_file)
    x = torch.from_numpy(rgb[:, :, ::-1].transpose(2, 0, 1).copy()).float().div(255)[None]
    with torch.no_grad():
        averaged = tile_forward(net, x, 2, 64, 16)[0].clamp(0, 1).mul(255).round().byte().numpy()
    averaged = averaged.transpose(1, 2, 0)[:, :, ::-1]
    assert column_jumps(tiled, whole) < 0.5 * column_jumps(averaged, whole)


def test_tiles_of_an_image_narrower_than_the_tile(tmp_path, model_file):
    """A wide strip (40 px high) with 64 px tiles: tiles are cut to the image, the result stays close to whole."""
    rgb = synthetic_image(40, 300, 5)
    cv2.imwrite(str(tmp_path / 'wide.png'), rgb)
    assert asid_sr([str(tmp_path / 'wide.png'), '-o', str(tmp_path / 'w'), '-m', str(model_file), '--tile', '0']) == 0
    assert asid_sr([str(tmp_path / 'wide.png'), '-o', str(tmp_path / 't'), '-m', str(model_file), '--tile', '64',
                    '--tile-overlap', '16']) == 0
    whole, tiled = (cv2.imread(str(tmp_path / d / 'wide_x2.png')).astype(int) for d in ('w', 't'))
    assert tiled.shape == whole.shape == (80, 600, 3)
    assert np.abs(tiled - whole).mean() < 3


def test_automatic_mode_runs_small_images_whole(tmp_path, model_file):
    rgb = synthetic_image(40, 50, 3)
    cv2.imwrite(str(tmp_path / 'a.png'), rgb)
    assert asid_sr([str(tmp_path / 'a.png'), '-o', str(tmp_path / 'auto'), '-m', str(model_file)]) == 0
    assert asid_sr([str(tmp_path / 'a.png'), '-o', str(tmp_path / 'whole'), '-m', str(model_file), '--tile', '0']) == 0
    assert (tmp_path / 'auto' / 'a_x2.png').read_bytes() == (tmp_path / 'whole' / 'a_x2.png').read_bytes()


def test_checkpoint_error_messages(tmp_path):
    files = bad_weight_files(tmp_path)
    for name in ('empty.pth', 'random.pth', 'truncated.pth', 'nan.pth', 'evil.pth'):
        with pytest.raises(PretrainedWeightsError) as info:
            state_dict_from_file(files[name])
        assert EXPECTED_MESSAGES[name] in str(info.value)
        assert str(info.value).rstrip().endswith((')', '.', 'torch.save)', 'conv_first.weight', 'checkpoint'))


def test_two_prepare_runs_on_one_folder(tmp_path, capsys):
    """A second asid-prepare on the same --out says another run holds it (exit 2); the data stay intact."""
    write_images(tmp_path / 'set1', 1, size=(48, 48))
    args = ['bench', '--hr', str(tmp_path / 'set1'), '--out', str(tmp_path / 'out'), '--scales', '2']
    assert asid_prepare(args) == 0
    done = (tmp_path / 'out' / 'set1' / 'GTmod2' / 'img00.png').read_bytes()
    from asid_arch.data.prepare import exclusive_folder

    with exclusive_folder(tmp_path / 'out'):  # another run holds the folder (a second open file: flock conflicts)
        assert asid_prepare(args) == 2
        err = capsys.readouterr().err
        assert f'another asid-prepare run (pid {os.getpid()}) is working in {tmp_path / "out"}' in err
    assert (tmp_path / 'out' / 'set1' / 'GTmod2' / 'img00.png').read_bytes() == done
    stale = tmp_path / 'out' / 'set1' / 'GTmod2' / '.img00.png.k1ll3d_x.asid.tmp'  # left by a killed write
    stale.write_bytes(b'half an image')
    assert asid_prepare(args) == 0
    assert not stale.exists() and (tmp_path / 'out' / 'set1' / 'GTmod2' / 'img00.png').is_file()
