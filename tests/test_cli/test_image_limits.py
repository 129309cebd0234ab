"""Images against the commands' limits and readers (issue 26, items 10-13, 16 and the image messages): files
that are no readable image named by format or damage, large ICC profiles read back, one pixel limit per command
checked from the header with the memory it would need, small frames batched with a progress bar, zoo sizes
checked up front, and asid-sr's freed memory returned. Large images are headers only: the tests stay small."""
from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, PngImagePlugin

from asid_arch.bench.main import main as asid_bench
from asid_arch.cli.export import main as asid_export
from asid_arch.cli.prepare import main as asid_prepare
from asid_arch.cli.sr import main as asid_sr
from asid_arch.image_reader import FrameInfo, ImageError, open_image
from asid_arch.inference import plan_memory
from asid_arch.pipeline.options_files import MAX_WHOLE_LQ_PIXELS, _read_sizes

from helpers import REPO, synthetic_image

ICC_HEADER = 128


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))


def header_png(path: Path, width: int, height: int, extra: bytes = b'') -> Path:
    """A PNG that claims ``width`` x ``height`` (8-bit RGB) with a few bytes of image data: a header to check."""
    ihdr = chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0))
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + ihdr + extra + chunk(b'IDAT', zlib.compress(b'\0' * 64))
                     + chunk(b'IEND', b''))
    return path


def icc_profile(size: int) -> bytes:
    """An RGB ICC profile of ``size`` bytes (a valid header, the rest arbitrary)."""
    head = bytearray(ICC_HEADER)
    head[0:4] = struct.pack('>I', size)
    head[16:20], head[36:40] = b'RGB ', b'acsp'
    return bytes(head) + np.random.default_rng(0).integers(0, 256, size - ICC_HEADER, np.uint8).tobytes()


# ----------------------------------------------------------------------------------------------
# Messages: the format or the damage, by name
# ----------------------------------------------------------------------------------------------
def hostile_files(folder: Path) -> dict:
    """name -> what its message must say."""
    tifffile.imwrite(folder / 'float.tif', np.zeros((8, 8, 3), np.float32), photometric='rgb')
    tifffile.imwrite(folder / 'five.tif', np.zeros((8, 8, 5), np.uint8), photometric='minisblack',
                     planarconfig='contig')
    tifffile.imwrite(folder / 'gray_alpha16.tif', np.zeros((8, 8, 2), np.uint16), photometric='minisblack',
                     extrasamples=['unassalpha'])
    (folder / 'scene.png').write_bytes(b'\x76\x2f\x31\x01\x02\0\0\0' + b'channels\0' * 8)  # OpenEXR, misnamed
    good = chunk(b'IHDR', struct.pack('>IIBBBBB', 4, 4, 8, 2, 0, 0, 0))
    data = zlib.compress(b''.join(b'\0' + bytes(12) for _ in range(4)))
    idat = bytearray(chunk(b'IDAT', data))
    idat[-1] ^= 1  # the CRC of IDAT
    (folder / 'crc_idat.png').write_bytes(b'\x89PNG\r\n\x1a\n' + good + bytes(idat) + chunk(b'IEND', b''))
    bad = bytearray(good)
    bad[-1] ^= 1
    (folder / 'crc_ihdr.png').write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(bad) + chunk(b'IDAT', data)
                                          + chunk(b'IEND', b''))
    return {'float.tif': '32-bit floating point', 'five.tif': '5 samples per pixel',
            'gray_alpha16.tif': '16-bit unsigned integer gray + alpha', 'scene.png': 'OpenEXR',
            'crc_idat.png': 'CRC of its IDAT chunk', 'crc_ihdr.png': 'CRC of its IHDR chunk'}


def test_unreadable_files_named_by_format_or_damage(tmp_path, nearest_file, capsys):
    expected = hostile_files(tmp_path)
    for name, words in expected.items():
        with pytest.raises(ImageError, match=re.escape(words)):
            open_image(tmp_path / name).decode()
    assert asid_sr([str(tmp_path), '-o', str(tmp_path / 'o'), '-m', str(nearest_file)]) == 1
    err = capsys.readouterr().err
    for name, words in expected.items():
        line = next(x for x in err.splitlines() if f'failed: {tmp_path / name}' in x)
        assert words in line and 'BytesIO' not in line, line


def test_opencv_size_limit_said_not_asserted(tmp_path):
    image = open_image(header_png(tmp_path / 'huge.png', 100000, 100000))
    with pytest.raises(ImageError, match='100000x100000: larger than the decoder takes'):
        image.decode()


# ----------------------------------------------------------------------------------------------
# 10. Large ICC profiles: what is written is read back; Pillow's own settings stay as they were
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_large_icc_profile_round_trip(tmp_path, nearest_file):
    profile = icc_profile(5 << 20)
    assert len(profile) > PngImagePlugin.MAX_TEXT_CHUNK  # beyond what Pillow reads alone
    Image.fromarray(synthetic_image(16, 20, 0)).save(tmp_path / 'photo.jpg', icc_profile=profile, quality=95)
    limits = (Image.MAX_IMAGE_PIXELS, PngImagePlugin.MAX_TEXT_CHUNK)
    assert asid_sr([str(tmp_path / 'photo.jpg'), '-o', str(tmp_path / 'a'), '-m', str(nearest_file)]) == 0
    first = tmp_path / 'a' / 'photo_x2.png'
    assert open_image(first).color.icc == profile
    assert asid_sr([str(first), '-o', str(tmp_path / 'b'), '-m', str(nearest_file)]) == 0  # the PNG is read back
    assert open_image(tmp_path / 'b' / 'photo_x2_x2.png').color.icc == profile
    assert (Image.MAX_IMAGE_PIXELS, PngImagePlugin.MAX_TEXT_CHUNK) == limits


def test_icc_profile_beyond_the_bound_refused(tmp_path):
    body = b'ICC profile\0\0' + zlib.compress(bytes(33 << 20), 1)  # 33 MB of zeros: a few KB compressed
    path = header_png(tmp_path / 'bomb.png', 4, 4, chunk(b'iCCP', body))
    with pytest.raises(ImageError, match='larger than 32 MB'):
        open_image(path)


# ----------------------------------------------------------------------------------------------
# 12. One limit per command, from the header, with the memory needed; exit 2 before any work
# ----------------------------------------------------------------------------------------------
def test_seams_image_limit(tmp_path, nearest_file, capsys):
    big = header_png(tmp_path / 'big.png', 20000, 20000)
    assert asid_bench(['seams', '-m', str(nearest_file), '--image', str(big)]) == 2
    err = capsys.readouterr().err
    assert '20000x20000 are 400.0 M pixels, above the limit of 1.0 M' in err and 'GB' in err


@pytest.mark.slow
def test_export_check_image_limit(tmp_path, nearest_file, capsys):
    big = header_png(tmp_path / 'big.png', 20000, 20000)
    out = tmp_path / 'm.onnx'
    assert asid_export(['-m', str(nearest_file), '-o', str(out), '--check-image', str(big)]) == 2
    err = capsys.readouterr().err
    assert 'above the limit of 1.0 M (it would need about' in err and not out.exists()


def test_prepare_limit_before_any_work(tmp_path, capsys):
    hr = tmp_path / 'hr'
    hr.mkdir()
    header_png(hr / 'big.png', 20000, 20000)
    with pytest.raises(SystemExit) as stop:
        asid_prepare(['bench', '--hr', str(hr), '--out', str(tmp_path / 'out'), '--scales', '2'])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "above asid-prepare's limit of 100 M (it would need about 28.0 GB)" in err
    assert not (tmp_path / 'out').exists()


def test_option_check_says_too_large_not_unreadable(tmp_path):
    gt, lq = header_png(tmp_path / 'gt.png', 20000, 20000), header_png(tmp_path / 'lq.png', 10000, 10000)
    problems = []
    sizes = _read_sizes('datasets: val', [('x', str(gt), str(lq))], problems, whole=True, scale=2)
    assert sizes == [('x', (20000, 20000), (10000, 10000))]
    assert len(problems) == 1 and 'not readable' not in problems[0]
    assert f'too large to validate whole (limit {MAX_WHOLE_LQ_PIXELS // 1_000_000} M LQ pixels' in problems[0]
    assert 'val: tile' in problems[0]
    problems = []
    _read_sizes('datasets: val', [('x', str(gt), str(lq))], problems, whole=False, scale=2)
    assert problems == []  # in tiles it can be validated
    huge = header_png(tmp_path / 'huge.png', 100000, 100000)
    _read_sizes('datasets: train', [('x', str(huge), str(lq))], problems, whole=False, scale=2)
    assert len(problems) == 1 and 'OpenCV, which decodes at most 1073.7 M pixels' in problems[0]


# ----------------------------------------------------------------------------------------------
# 16. asid-bench zoo: sizes checked before any work
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize('size, words', [('1x1', 'the input would be 0x0 px'),
                                         ('100000x100000', 'above the limit of 16 M')])
def test_zoo_sizes_checked_up_front(tmp_path, capsys, size, words):
    assert asid_bench(['zoo', '--sizes', size, '--models', 'ASID', '--scales', '2', '--out', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert words in err and 'Traceback' not in err
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# 13. Small frames batched through the network, with progress; --max-pixels counts frames
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_small_frames_batched_exact_with_progress(tmp_path, nearest_file, capsys):
    frames = [synthetic_image(8, 8, k)[:, :, ::-1].copy() for k in range(40)]
    plan = plan_memory([FrameInfo(8, 8, 3, True, 1)] * 40, 2, 10_000, lambda p: 1000 * p, 1e9)
    assert plan.tile == 0 and plan.batch > 1
    images = [Image.fromarray(f) for f in frames]
    images[0].save(tmp_path / 'many.gif', save_all=True, append_images=images[1:], duration=30, loop=0)
    source = []
    with Image.open(tmp_path / 'many.gif') as im:
        for k in range(im.n_frames):
            im.seek(k)
            source.append(np.asarray(im.convert('RGB')).copy())
    assert asid_sr([str(tmp_path / 'many.gif'), '-o', str(tmp_path / 'o'), '-m', str(nearest_file)]) == 0
    assert 'frames' in capsys.readouterr().err  # the frame progress bar
    with Image.open(tmp_path / 'o' / 'many_x2.gif') as out:
        assert out.n_frames == 40
        for k, src in enumerate(source):
            out.seek(k)
            expected = src.repeat(2, axis=0).repeat(2, axis=1)
            assert np.abs(np.asarray(out.convert('RGB')).astype(int) - expected).mean() < 2  # (GIF's 256 colours)


@pytest.mark.slow
def test_max_pixels_says_it_counts_frames(tmp_path, nearest_file, capsys):
    images = [Image.fromarray(synthetic_image(16, 16, k)) for k in range(100)]
    images[0].save(tmp_path / 'a.gif', save_all=True, append_images=images[1:])
    assert asid_sr([str(tmp_path / 'a.gif'), '-o', str(tmp_path / 'o'), '-m', str(nearest_file),
                    '--max-pixels', '0.1']) == 1
    err = capsys.readouterr().err
    assert '16x16 x 100 frames give 0.1 M pixels at x2, above the limit of 0.1 M' in err
    assert '--max-pixels counts every frame' in err


# ----------------------------------------------------------------------------------------------
# 11. asid-sr's malloc returns freed blocks: the peak follows what is in use
# ----------------------------------------------------------------------------------------------
FREED_PROBE = '''
import numpy as np
from asid_arch.cpu_settings import tune_cpu
tune_cpu(keep_freed=False)
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * 4096
a = np.ones(1 << 20); del a  # 8 MB, mmapped and freed: glibc's default would raise its mmap threshold here
start = rss()
b = np.ones(3 << 18); c = np.ones(3 << 18); del b, c  # in the heap after a raised threshold, then kept there
print(rss() - start)
'''


def test_freed_memory_returned_after_large_blocks():
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    kept = int(subprocess.run([sys.executable, '-c', FREED_PROBE], capture_output=True, text=True, env=env,
                              check=True, timeout=120).stdout)
    assert kept < 1 << 20, f'{kept} bytes of freed arrays still resident'
