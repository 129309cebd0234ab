"""asid-sr on hostile inputs: animations and pages, colour profiles, links, existing outputs, file names that
are not UTF-8, the memory budget, signals and bad arguments (issue 17)."""
from __future__ import annotations

import fcntl
import os
import signal
import stat
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from asid_arch import ASID
from asid_arch import image_writer as images_module
from asid_arch.cli.sr import main as asid_sr
from asid_arch.from_weights import network_from_file
from asid_arch.image_reader import FrameInfo, png_chunks
from asid_arch.inference import network_bytes, plan_memory
from asid_arch.utils.asid_tiling import shift_up

from helpers import synthetic_image


def nearest(pixels: np.ndarray) -> np.ndarray:
    return pixels.repeat(2, axis=0).repeat(2, axis=1)


def sr(*args) -> int:
    return asid_sr([str(a) for a in args])


def network_output(model_file: Path, rgb: np.ndarray) -> np.ndarray:
    """The network's own uint8 result for an RGB uint8 image (the reference for whole-image runs)."""
    net, _ = network_from_file(model_file)
    with torch.no_grad():
        y = net(torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float().div(255)[None])
    return y[0].clamp(0, 1).mul(255).round().byte().numpy().transpose(1, 2, 0)


def frames_of(path: Path):
    """Every frame of an animation as RGBA arrays, with duration and the file's loop count."""
    im = Image.open(path)
    frames = []
    for k in range(im.n_frames):
        im.seek(k)
        im.load()
        frames.append((np.asarray(im.convert('RGBA')), im.info.get('duration')))
    im.seek(0)
    return frames, im.info.get('loop')


def rgba_frames(count: int, h: int = 20, w: int = 24) -> list:
    """Frames with changing content and a transparent corner."""
    frames = []
    for k in range(count):
        rgba = np.dstack([synthetic_image(h, w, k)[:, :, ::-1], np.full((h, w), 255, np.uint8)])
        rgba[:6, :6, 3] = 0
        frames.append(Image.fromarray(np.ascontiguousarray(rgba)))
    return frames


# ----------------------------------------------------------------------------------------------
# 3. Animations and multi-page TIFFs: every frame, same kind of file, durations and loop kept
# ----------------------------------------------------------------------------------------------
def test_animated_webp_every_frame_with_alpha_durations_and_loop(tmp_path, nearest_file):
    frames = rgba_frames(3)
    frames[0].save(tmp_path / 'anim.webp', save_all=True, append_images=frames[1:], duration=[80, 120, 200], loop=3,
                   lossless=True, exact=True)
    source, _ = frames_of(tmp_path / 'anim.webp')  # (the decoder gives black under alpha 0)
    assert sr(tmp_path / 'anim.webp', '-o', tmp_path / 'o', '-m', nearest_file) == 0
    assert sorted(p.name for p in (tmp_path / 'o').iterdir()) == ['anim_x2.webp']
    got, loop = frames_of(tmp_path / 'o' / 'anim_x2.webp')
    assert [d for _, d in got] == [80, 120, 200] and loop == 3
    for (pixels, _), (src, _) in zip(got, source):
        assert np.array_equal(pixels, nearest(src))  # colour and alpha of every frame


def test_animated_gif_sub_rectangle_frames_transparency_and_loop(tmp_path, nearest_file):
    frames = rgba_frames(3)
    # GIF frames are sub-rectangles: the 2nd differs from the 1st in a small patch only, so Pillow stores
    # a smaller frame, which a viewer composes on the previous one
    second = np.asarray(frames[0]).copy()
    second[10:16, 12:20, :3] = 255
    frames[1] = Image.fromarray(second)
    frames[0].save(tmp_path / 'a.gif', save_all=True, append_images=frames[1:], duration=[100, 250, 400], loop=0,
                   disposal=1)
    source, _ = frames_of(tmp_path / 'a.gif')
    assert sr(tmp_path / 'a.gif', '-o', tmp_path / 'o', '-m', nearest_file) == 0
    got, loop = frames_of(tmp_path / 'o' / 'a_x2.gif')
    assert [d for _, d in got] == [100, 250, 400] and loop == 0
    for (pixels, _), (src, _) in zip(got, source):
        expected = nearest(src)
        assert np.array_equal(pixels[:, :, 3], expected[:, :, 3])  # on/off transparency kept
        opaque = expected[:, :, 3] > 0
        assert np.abs(pixels[opaque].astype(int) - expected[opaque]).mean() < 2  # the same 256 colours or close


def test_apng_every_frame_exact(tmp_path, model_file):
    frames = [Image.fromarray(synthetic_image(18, 22, k)[:, :, ::-1].copy()) for k in range(3)]
    frames[0].save(tmp_path / 'a.png', save_all=True, append_images=frames[1:], duration=[40, 50, 60], loop=2)
    assert sr(tmp_path / 'a.png', '-o', tmp_path / 'o', '-m', model_file, '--precision', 'fp32') == 0
    got, loop = frames_of(tmp_path / 'o' / 'a_x2.png')
    assert [d for _, d in got] == [40, 50, 60] and loop == 2
    for (pixels, _), frame in zip(got, frames):
        assert np.array_equal(pixels[:, :, :3], network_output(model_file, np.asarray(frame)))
        assert pixels[:, :, 3].min() == 255  # opaque frames stay without alpha
    # an APNG whose first picture is the still for viewers without animation: it stays that
    frames[0].save(tmp_path / 'd.png', save_all=True, append_images=frames[1:], duration=[70, 80], default_image=True)
    assert sr(tmp_path / 'd.png', '-o', tmp_path / 'o', '-m', model_file) == 0
    out = Image.open(tmp_path / 'o' / 'd_x2.png')
    assert out.info.get('default_image') and out.n_frames == 3
    assert [d for _, d in frames_of(tmp_path / 'o' / 'd_x2.png')[0]] == [None, 70, 80]


def test_multi_page_tiff_pages_of_different_sizes_modes_and_depths(tmp_path, nearest_file):
    import tifffile

    rgb = synthetic_image(20, 24, 1)[:, :, ::-1]
    gray16 = synthetic_image(12, 10, 2)[:, :, 0].astype(np.uint16) * 257
    gray_alpha = np.dstack([synthetic_image(8, 16, 3)[:, :, 0], np.linspace(0, 255, 128).reshape(8, 16)]).astype(
        np.uint8)
    with tifffile.TiffWriter(tmp_path / 'scan.tif') as tif:
        tif.write(np.ascontiguousarray(rgb), photometric='rgb')
        tif.write(gray16, photometric='minisblack')
        tif.write(gray_alpha, photometric='minisblack', extrasamples=['unassalpha'])
    assert sr(tmp_path / 'scan.tif', '-o', tmp_path / 'o', '-m', nearest_file) == 0
    with tifffile.TiffFile(tmp_path / 'o' / 'scan_x2.tif') as tif:
        pages = [page.asarray() for page in tif.pages]
    assert len(pages) == 3
    for page, source in zip(pages, (rgb, gray16, gray_alpha)):
        assert page.dtype == source.dtype and np.array_equal(page, nearest(source))


def test_frames_count_against_the_pixel_limit_and_ext_cannot_drop_them(tmp_path, model_file, capsys):
    frames = [Image.fromarray(synthetic_image(30, 30, k)[:, :, ::-1].copy()) for k in range(10)]
    frames[0].save(tmp_path / 'long.gif', save_all=True, append_images=frames[1:], duration=50)
    # one frame at x2 is 3600 pixels, ten are 36000: a limit of 20000 refuses the animation
    assert sr(tmp_path / 'long.gif', '-o', tmp_path / 'o', '-m', model_file, '--max-pixels', '0.02') == 1
    err = capsys.readouterr().err
    assert 'x 10 frames' in err and 'above the limit' in err and not (tmp_path / 'o' / 'long_x2.gif').exists()
    assert sr(tmp_path / 'long.gif', '-o', tmp_path / 'o', '-m', model_file, '--ext', 'jpg') == 0
    err = capsys.readouterr().err
    assert 'animated GIF (10 frames): every frame upscaled, written as .gif' in err
    assert Image.open(tmp_path / 'o' / 'long_x2.gif').n_frames == 10
    assert not list((tmp_path / 'o').glob('*.jpg'))


# ----------------------------------------------------------------------------------------------
# 5. Colour profiles
# ----------------------------------------------------------------------------------------------
def srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB')).tobytes()


SRGB = srgb_profile()  # once: a profile holds the time it was made


def icc_profile(space: bytes = b'RGB ', size: int = 70_000) -> bytes:
    """Pillow's sRGB profile, made to describe ``space`` data and padded to ``size`` bytes (over one JPEG
    segment, 65519 bytes: the JPEG writer has to split it)."""
    data = bytearray(SRGB + bytes(size - len(SRGB)))
    data[0:4], data[16:20] = struct.pack('>I', size), space
    return bytes(data)


ICC = icc_profile()
GAMA = struct.pack('>I', 45455)
CHRM = struct.pack('>8I', 31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))


def png_with(path: Path, pixels: np.ndarray, icc=None, gama=None, chrm=None) -> None:
    """A PNG (any depth, written by OpenCV) with the given colour chunks after its header."""
    data = cv2.imencode('.png', pixels)[1].tobytes()
    extra = b''
    if chrm:
        extra += png_chunk(b'cHRM', chrm)
    if gama:
        extra += png_chunk(b'gAMA', gama)
    if icc:
        extra += png_chunk(b'iCCP', b'test\0\0' + zlib.compress(icc))
    path.write_bytes(data[:33] + extra + data[33:])


def test_icc_profile_and_png_colour_chunks_kept_in_every_format(tmp_path, model_file, capsys):
    rgb = synthetic_image(20, 24, 0)
    png_with(tmp_path / 'p8.png', rgb, ICC, GAMA, CHRM)
    png_with(tmp_path / 'p16.png', rgb.astype(np.uint16) * 257, ICC)
    Image.fromarray(rgb[:, :, ::-1].copy()).save(tmp_path / 'photo.jpg', icc_profile=ICC, quality=95)
    inputs = [tmp_path / n for n in ('p8.png', 'p16.png', 'photo.jpg')]
    for ext in ('png', 'jpg', 'webp', 'tif'):
        assert sr(*inputs, '-o', tmp_path / ext, '-m', model_file, '--ext', ext) == 0
        err = capsys.readouterr().err
        for name in ('p8', 'p16', 'photo'):
            out = tmp_path / ext / f'{name}_x2.{ext}'
            assert Image.open(out).info.get('icc_profile') == ICC, out
        if ext == 'png':
            chunks = dict(png_chunks((tmp_path / ext / 'p8_x2.png').read_bytes()))
            assert chunks[b'gAMA'] == GAMA and chunks[b'cHRM'] == CHRM
            assert cv2.imread(str(tmp_path / ext / 'p16_x2.png'), cv2.IMREAD_UNCHANGED).dtype == np.uint16
        else:  # what the format cannot hold is said
            assert f'p8_x2.{ext}: ' in err and f'(cHRM, gAMA) cannot be kept in .{ext} (the ICC profile is)' in err
    for ext in ('png', 'jpg', 'webp', 'tif'):  # the pixels are the same as without a profile
        assert cv2.imread(str(tmp_path / ext / f'p8_x2.{ext}')).shape == (40, 48, 3)


def test_profiles_kept_only_where_they_describe_the_result(tmp_path, model_file, capsys):
    gray_icc, cmyk_icc = icc_profile(b'GRAY', 2000), icc_profile(b'CMYK', 2000)
    png_with(tmp_path / 'gray.png', synthetic_image(16, 16, 0)[:, :, 0], gray_icc)
    Image.fromarray(synthetic_image(16, 16, 1)).convert('CMYK').save(tmp_path / 'cmyk.jpg', icc_profile=cmyk_icc)
    png_with(tmp_path / 'damaged.png', synthetic_image(16, 16, 2), ICC[:100])
    assert sr(tmp_path / 'gray.png', tmp_path / 'cmyk.jpg', tmp_path / 'damaged.png', '-o', tmp_path / 'o', '-m',
              model_file, '--ext', 'jpg') == 0
    err = capsys.readouterr().err
    assert Image.open(tmp_path / 'o' / 'gray_x2.jpg').info.get('icc_profile') == gray_icc
    assert 'cmyk_x2.jpg: the colour profile of the input is for CMYK data, not the RGB result: not kept' in err
    assert 'damaged_x2.jpg: the colour profile (ICC) of the input is damaged: not kept' in err
    assert not Image.open(tmp_path / 'o' / 'cmyk_x2.jpg').info.get('icc_profile')
    assert not Image.open(tmp_path / 'o' / 'damaged_x2.jpg').info.get('icc_profile')


def test_colour_of_animations_and_gray_alpha_kept(tmp_path, model_file):
    frames = rgba_frames(2)
    frames[0].save(tmp_path / 'a.webp', save_all=True, append_images=frames[1:], duration=100, lossless=True,
                   icc_profile=ICC)
    frames[0].save(tmp_path / 'a.png', save_all=True, append_images=frames[1:], duration=100, icc_profile=ICC)
    gray_alpha = Image.fromarray(np.dstack([synthetic_image(16, 16, 0)[:, :, 0]] * 2))
    gray_alpha.save(tmp_path / 'ga.png', icc_profile=icc_profile(b'GRAY'))
    assert sr(tmp_path / 'a.webp', tmp_path / 'a.png', tmp_path / 'ga.png', '-o', tmp_path / 'o', '-m',
              model_file) == 0
    for name in ('a_x2.webp', 'a_x2.png'):
        assert Image.open(tmp_path / 'o' / name).info.get('icc_profile') == ICC, name
    assert Image.open(tmp_path / 'o' / 'ga_x2.png').info.get('icc_profile') == icc_profile(b'GRAY')
    assert Image.open(tmp_path / 'o' / 'a_x2.webp').n_frames == 2
    assert Image.open(tmp_path / 'o' / 'ga_x2.png').mode == 'LA'


# ----------------------------------------------------------------------------------------------
# 6. Symbolic links: named as given; the input checks see the real files
# ----------------------------------------------------------------------------------------------
def test_link_named_as_given_and_checked_as_the_real_file(tmp_path, model_file, capsys):
    cv2.imwrite(str(tmp_path / 'base.png'), synthetic_image(16, 16, 0))
    (tmp_path / 'holiday.png').symlink_to('base.png')
    assert sr(tmp_path / 'holiday.png', '-o', tmp_path / 'o', '-m', model_file) == 0
    assert sorted(p.name for p in (tmp_path / 'o').iterdir()) == ['holiday_x2.png']
    # both names given: one file, upscaled once, with a note
    assert sr(tmp_path / 'base.png', tmp_path / 'holiday.png', '-o', tmp_path / 'o2', '-m', model_file) == 0
    assert 'holiday.png is the same file as' in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / 'o2').iterdir()) == ['base_x2.png']
    # an output name that is a link to an input is never written through
    (tmp_path / 'holiday_x2.png').symlink_to('base.png')
    before = (tmp_path / 'base.png').read_bytes()
    assert sr(tmp_path / 'holiday.png', '-o', tmp_path, '-m', model_file, '--overwrite') == 2  # before any work
    assert 'holiday_x2.png is a symbolic link: only a regular file is ever replaced' in capsys.readouterr().err
    assert (tmp_path / 'base.png').read_bytes() == before and (tmp_path / 'holiday_x2.png').is_symlink()


# ----------------------------------------------------------------------------------------------
# 7. Existing outputs: kept and counted unless --overwrite; read-only ones never replaced
# ----------------------------------------------------------------------------------------------
def test_existing_outputs_are_kept_unless_overwrite(tmp_path, model_file, capsys):
    for name in ('a', 'b', 'c'):
        cv2.imwrite(str(tmp_path / f'{name}.png'), synthetic_image(16, 16, 0))
    out = tmp_path / 'o'
    out.mkdir()
    (out / 'a_x2.png').write_bytes(b'mine')
    (out / 'b_x2.png').write_bytes(b'read-only')
    (out / 'b_x2.png').chmod(0o444)
    inputs = [tmp_path / f'{n}.png' for n in 'abc']
    assert sr(*inputs, '-o', out, '-m', model_file) == 0
    err = capsys.readouterr().err
    assert '1 images written' in err and '2 skipped (their outputs exist; --overwrite replaces them)' in err
    assert (out / 'a_x2.png').read_bytes() == b'mine' and (out / 'b_x2.png').read_bytes() == b'read-only'
    (out / 'a_x2.png').chmod(0o600)
    assert sr(*inputs, '-o', out, '-m', model_file, '--overwrite') == 1
    err = capsys.readouterr().err
    assert 'b_x2.png is read-only: not replaced' in err and '2 images written' in err
    assert (out / 'b_x2.png').read_bytes() == b'read-only' and stat.S_IMODE((out / 'b_x2.png').stat().st_mode) == 0o444
    assert cv2.imread(str(out / 'a_x2.png')).shape == (32, 32, 3)
    assert stat.S_IMODE((out / 'a_x2.png').stat().st_mode) == 0o600  # replaced, its permissions kept


# ----------------------------------------------------------------------------------------------
# 11. File names that are not UTF-8
# ----------------------------------------------------------------------------------------------
def test_non_utf8_names_are_read_written_and_shown(tmp_path, model_file, capsys, monkeypatch):
    def no_imread(*args, **kwargs):
        raise AssertionError('cv2.imread crashes on non-UTF-8 names: never call it')

    monkeypatch.setattr(cv2, 'imread', no_imread)
    folder = os.fsencode(tmp_path / 'in\xe9')  # the folder name is Latin-1 as well
    folder = folder[:-2] + b'\xe9'
    os.mkdir(folder)
    good, bad = os.path.join(folder, b'x\xff.png'), os.path.join(folder, b'bad\xfe.png')
    with open(good, 'wb') as f:
        f.write(cv2.imencode('.png', synthetic_image(16, 16, 0))[1].tobytes())
    with open(bad, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n broken')
    cv2.imwrite(str(tmp_path / 'ok.png'), synthetic_image(16, 16, 1))
    out = os.fsdecode(os.path.join(folder, b'out\xfd'))
    code = asid_sr([os.fsdecode(folder), str(tmp_path / 'ok.png'), '-o', out, '-m', str(model_file)])
    err = capsys.readouterr().err
    assert code == 1 and 'failed: ' in err and 'bad\\xfe.png' in err and '2 images written' in err
    assert 'out\\xfd' in err  # the summary names the folder printably
    assert sorted(os.listdir(os.fsencode(out))) == [b'ok_x2.png', b'x\xff_x2.png']


# ----------------------------------------------------------------------------------------------
# 14. The memory budget: tiles from the budget, refusal up front, exact whole-image runs
# ----------------------------------------------------------------------------------------------
def network(pixels: int) -> int:
    return network_bytes(48, 2, 'fp32', pixels)


def test_tile_choice_follows_the_budget():
    frames = [FrameInfo(3200, 2400, 3, False, 1)]
    plans = {gb: plan_memory(frames, 2, 23_000_000, network, gb * 1e9) for gb in (0.5, 1, 2, 4, 200)}
    assert plans[200].tile == 0  # fits whole
    tiles = [plans[gb].tile for gb in (0.5, 1, 2, 4)]
    assert all(t > 0 for t in tiles) and tiles == sorted(tiles) and len(set(tiles)) == 4  # more budget, larger tiles
    for gb, plan in plans.items():
        assert plan.need <= gb * 1e9
        if plan.tile:  # the largest tile that fits: one step more does not
            assert plan_memory(frames, 2, 23_000_000, network, gb * 1e9, tile=plan.tile + 16).need > gb * 1e9
    # the result alone (92 MB) and the encoder's copies cannot fit in 0.1 GB: refused, saying what it needs
    refused = plan_memory(frames, 2, 23_000_000, network, 0.1e9)
    assert refused.need > 0.1e9 and 'result 92 MB' in refused.describe()
    # every frame counts; a larger scale or network needs more
    assert plan_memory(frames * 3, 2, 0, network, 1e9).tile < plans[1].tile
    small = [FrameInfo(200, 150, 3, False, 1)]
    assert plan_memory(small, 2, 0, network, 2e9).tile == 0
    assert network_bytes(48, 4, 'fp32', 10_000) > network_bytes(48, 2, 'fp32', 10_000) > network_bytes(
        16, 2, 'fp32', 10_000)


@pytest.mark.parametrize('rows, shift', [(10, 3), (10, 5), (10, 9), (7, 7), (8, 1)])
def test_accumulator_rows_shift_in_place(rows, shift):
    acc = np.arange(rows * 6, dtype=np.float32).reshape(rows, 2, 3)
    expected = np.zeros_like(acc)
    expected[:rows - shift] = acc[shift:]
    shift_up(acc, shift)  # (no temporary as large as the accumulator: numpy makes one for overlapping copies)
    assert np.array_equal(acc, expected)


def test_budget_decides_tiles_and_refuses_what_cannot_fit(tmp_path, model_file, capsys):
    rgb = synthetic_image(96, 120, 0)
    cv2.imwrite(str(tmp_path / 'a.png'), rgb)
    # a budget the whole image fits: the network's exact output
    assert sr(tmp_path / 'a.png', '-o', tmp_path / 'whole', '-m', model_file, '--max-memory', '2',
              '--precision', 'fp32') == 0
    whole = cv2.imread(str(tmp_path / 'whole' / 'a_x2.png'))
    assert np.array_equal(whole, network_output(model_file, rgb[:, :, ::-1].copy())[:, :, ::-1])
    # a budget that needs tiles: close to whole, not identical
    assert sr(tmp_path / 'a.png', '-o', tmp_path / 'tiled', '-m', model_file, '--max-memory', '0.06',
              '--precision', 'fp32') == 0
    tiled = cv2.imread(str(tmp_path / 'tiled' / 'a_x2.png'))
    assert not np.array_equal(tiled, whole) and np.abs(tiled.astype(int) - whole).mean() < 3
    # too small for even the smallest tile, or for --tile 0: refused before decoding, with what it needs
    for extra in ([], ['--tile', '0']):
        assert sr(tmp_path / 'a.png', '-o', tmp_path / 'no', '-m', model_file, '--max-memory', '0.01', *extra) == 1
        err = capsys.readouterr().err
        assert 'a.png: needs about' in err and 'above --max-memory 0.01 GB' in err
    assert not (tmp_path / 'no' / 'a_x2.png').exists()


# ----------------------------------------------------------------------------------------------
# 15. Signals: the summary, the exit status, no temporary file; stale ones of killed runs removed
# ----------------------------------------------------------------------------------------------
def interrupt_second_write(monkeypatch, signum: int) -> None:
    """The second image's write is stopped half-way by ``signum`` sent to this process (no timing involved)."""
    real = images_module._pieces_writer
    calls = []

    def pieces_writer(pieces):
        write = real(pieces)

        def interrupted(f):
            calls.append(1)
            f.write(b'half an image')
            if len(calls) == 2:
                os.kill(os.getpid(), signum)  # delivered here, before the next bytecode
            write(f)
        return interrupted

    monkeypatch.setattr(images_module, '_pieces_writer', pieces_writer)


@pytest.mark.parametrize('signum, status, name', [(signal.SIGTERM, 143, 'SIGTERM'), (signal.SIGINT, 130, 'Ctrl-C')])
def test_signal_during_a_write_ends_with_the_summary(tmp_path, model_file, capsys, monkeypatch, signum, status, name):
    for k in range(3):
        cv2.imwrite(str(tmp_path / f'{k}.png'), synthetic_image(16, 16, k))
    interrupt_second_write(monkeypatch, signum)
    code = sr(*(tmp_path / f'{k}.png' for k in range(3)), '-o', tmp_path / 'o', '-m', model_file)
    err = capsys.readouterr().err
    assert code == status and f'stopped by {name}: 1 images written' in err and 'Traceback' not in err
    assert sorted(os.listdir(tmp_path / 'o')) == ['0_x2.png']  # no temporary file
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored


def test_stale_temporaries_removed_unless_another_run_holds_the_folder(tmp_path, model_file, capsys):
    cv2.imwrite(str(tmp_path / 'a.png'), synthetic_image(16, 16, 0))
    out = tmp_path / 'o'
    out.mkdir()
    stale = ['.a_x2.png.k1ll3d_x.asid.tmp', '.photo_x4.webp.abcdefgh.asid.tmp', '.asid-sr-check.zz9z_z9z.asid.tmp']
    others = ['.notes.txt.abcdefgh.asid.tmp', '.other.tmp', 'b_x2.png.abcdefgh.asid.tmp', '.a_x2.png.abcdefgh.tmp']
    for name in stale + others:
        (out / name).write_bytes(b'half')
    fd = os.open(out, os.O_RDONLY)
    try:  # another run holds the folder: its temporaries may be in use
        fcntl.flock(fd, fcntl.LOCK_SH)
        assert sr(tmp_path / 'a.png', '-o', out, '-m', model_file) == 0
        assert all((out / name).exists() for name in stale)
    finally:
        os.close(fd)
    assert sr(tmp_path / 'a.png', '-o', out, '-m', model_file, '--overwrite') == 0
    assert 'removed 3 temporary file(s)' in capsys.readouterr().err
    assert sorted(os.listdir(out)) == sorted(others + ['a_x2.png'])


@pytest.mark.slow
def test_interrupted_in_a_subprocess_by_sigterm(tmp_path, model_file):
    """The real signal path: SIGTERM arrives from outside Python's handlers (sent while the model loads)."""
    import subprocess
    import sys

    from helpers import REPO

    cv2.imwrite(str(tmp_path / 'a.png'), synthetic_image(16, 16, 0))
    script = ('import os, signal, sys\n'
              'import asid_arch.from_weights as c\n'
              'real = c.network_from_file\n'
              'def load(*a, **k):\n'
              '    net = real(*a, **k)\n'
              '    os.kill(os.getpid(), signal.SIGTERM)\n'
              '    return net\n'
              'c.network_from_file = load\n'
              'from asid_arch.cli.sr import main\n'
              'sys.exit(main(sys.argv[1:]))\n')
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, '-c', script, str(tmp_path / 'a.png'), '-o', str(tmp_path / 'o'), '-m',
                             str(model_file)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 143, result.stderr[-2000:]
    assert 'stopped by SIGTERM: 0 images written' in result.stderr and 'Traceback' not in result.stderr


# ----------------------------------------------------------------------------------------------
# User mistakes: one line, exit 2, before any work
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize('flags', [['--max-memory', 'nan'], ['--max-memory', 'inf'], ['--max-memory', '-1'],
                                   ['--max-memory', '0'], ['--max-pixels', 'nan'], ['--max-pixels', 'inf'],
                                   ['--max-pixels', '1e-12'], ['--tile-overlap', '-1'],
                                   ['--tile-overlap', '100000000000000000000'],
                                   ['--tile', '64', '--tile-overlap', '64']])
def test_bad_numbers_are_one_line_and_exit_2(tmp_path, model_file, capsys, flags):
    cv2.imwrite(str(tmp_path / 'a.png'), synthetic_image(16, 16, 0))
    try:
        code = asid_sr([str(tmp_path / 'a.png'), '-o', str(tmp_path / 'o'), '-m', str(model_file)] + flags)
    except SystemExit as stop:  # argparse's own checks
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and flags[-2] in err, err
    assert not (tmp_path / 'o').exists()


def test_model_of_one_channel_refused_up_front(tmp_path, capsys):
    torch.manual_seed(0)
    torch.save({'params': ASID(upscale=2, num_in_ch=1, num_out_ch=1, num_feat=16, num_blocks=1).state_dict()},
               tmp_path / 'y.pth')
    cv2.imwrite(str(tmp_path / 'a.png'), synthetic_image(16, 16, 0))
    assert sr(tmp_path / 'a.png', '-o', tmp_path / 'o', '-m', tmp_path / 'y.pth') == 2
    err = capsys.readouterr().err
    assert 'takes 1-channel images' in err and 'RGB models' in err and not (tmp_path / 'o').exists()


def test_ext_same_without_a_writable_suffix_refused_up_front(tmp_path, model_file, capsys):
    cv2.imwrite(str(tmp_path / 'a.png'), synthetic_image(16, 16, 0))
    (tmp_path / 'photo').write_bytes((tmp_path / 'a.png').read_bytes())  # a PNG without a suffix
    Image.new('1', (8, 8)).save(tmp_path / 'scan.pbm')  # read here, not written
    for name, shown_as in (('photo', 'photo (no suffix)'), ('scan.pbm', 'scan.pbm (.pbm)')):
        assert sr(tmp_path / 'a.png', tmp_path / name, '-o', tmp_path / 'o', '-m', model_file, '--ext', 'same') == 2
        err = capsys.readouterr().err
        assert f'--ext same: no format to keep for {shown_as}' in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / 'o').exists()
    assert sr(tmp_path / 'photo', '-o', tmp_path / 'o', '-m', model_file) == 0  # --ext png: fine
    assert (tmp_path / 'o' / 'photo_x2.png').is_file()


def test_one_walk_of_png_chunks_serves_the_damage_report_the_colour_chunks_and_apng():
    """The same bytes through the package's three PNG readers (one chunk walk): intact, cut inside a chunk, cut
    between chunks, a CRC changed, another first chunk."""
    from asid_arch.apng import APNGError, _chunks
    from asid_arch.image_damage import png_damage

    ok, encoded = cv2.imencode('.png', np.full((8, 8, 3), 77, np.uint8))
    data = encoded.tobytes()
    gama = struct.pack('>I', 4) + b'gAMA' + struct.pack('>I', 45455)
    data = data[:33] + gama + struct.pack('>I', zlib.crc32(gama[4:])) + data[33:]  # after IHDR (8 + 25 bytes)
    idat = data.index(b'IDAT') - 4
    assert png_damage(data) == '' and [kind for kind, _ in png_chunks(data)] == [b'IHDR', b'gAMA']
    assert [kind for kind, _ in _chunks(data)][-1] == b'IEND'
    cut = data[:idat + 10]  # inside IDAT
    assert png_damage(cut) == f'truncated PNG: the file ends at byte {len(cut)}, inside its IDAT chunk at byte {idat}'
    assert png_chunks(cut) == png_chunks(data)
    with pytest.raises(APNGError, match=f'inside its IDAT chunk at byte {idat}'):
        list(_chunks(cut))
    assert png_damage(data[:idat]) == f'truncated PNG: the file ends at byte {idat} before its IEND chunk'
    flipped = bytearray(data)
    flipped[idat + 9] ^= 1
    assert png_damage(bytes(flipped)) == f'damaged PNG: the CRC of its IDAT chunk at byte {idat} does not match ' \
                                         'its content'
    assert png_damage(data[:8] + data[33:]) == "damaged PNG: its first chunk is 'gAMA', not IHDR"
