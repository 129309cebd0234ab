"""Animated PNG frames composed per the APNG specification (issue 26, item 9): blend_op SOURCE and OVER (alpha
compositing), dispose_op NONE, BACKGROUND and PREVIOUS, frame regions at offsets, the default image, and damage
refused by name. The files are built chunk by chunk here, with the expected pixels worked out by hand."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pytest

from asid_arch.image_reader import ImageError, open_image

NONE, BACKGROUND, PREVIOUS = 0, 1, 2
SOURCE, OVER = 0, 1
RED, BLUE, GREEN = (255, 0, 0, 255), (0, 0, 255, 255), (0, 255, 0, 255)
HALF_RED, HALF_BLUE = (255, 0, 0, 128), (0, 0, 255, 128)


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))


def rgba_data(pixels: np.ndarray) -> bytes:
    """8-bit RGBA rows, each with filter type 0, compressed (an IDAT stream)."""
    rows = b''.join(b'\0' + row.tobytes() for row in pixels.astype(np.uint8))
    return zlib.compress(rows)


def fill(h: int, w: int, rgba: Sequence[int]) -> np.ndarray:
    return np.tile(np.array(rgba, np.uint8), (h, w, 1))


Frame = Tuple[np.ndarray, int, int, int, int]  # RGBA pixels, x, y, dispose_op, blend_op


def apng(path: Path, size: Tuple[int, int], frames: Sequence[Frame], default: Optional[np.ndarray] = None,
         frame_count: Optional[int] = None) -> Path:
    """An 8-bit RGBA APNG of ``size`` (w, h): ``default`` (a still before the animation) or the first frame in
    IDAT, the others in fdAT; every frame 100 ms."""
    w, h = size
    out = b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 6, 0, 0, 0))
    out += chunk(b'acTL', struct.pack('>II', len(frames) if frame_count is None else frame_count, 0))
    seq = 0
    if default is not None:
        out += chunk(b'IDAT', rgba_data(default))
    for k, (pixels, x, y, dispose, blend) in enumerate(frames):
        fh, fw = pixels.shape[:2]
        out += chunk(b'fcTL', struct.pack('>IIIIIHHBB', seq, fw, fh, x, y, 1, 10, dispose, blend))
        seq += 1
        if k == 0 and default is None:
            out += chunk(b'IDAT', rgba_data(pixels))
        else:
            out += chunk(b'fdAT', struct.pack('>I', seq) + rgba_data(pixels))
            seq += 1
    path.write_bytes(out + chunk(b'IEND', b''))
    return path


def composed(path: Path) -> List[np.ndarray]:
    """Every frame as the reader gives it, as (H, W, 4) RGBA (opaque where it has no alpha)."""
    out = []
    for pic in open_image(path).decode():
        alpha = pic.alpha if pic.alpha is not None else np.full(pic.size, 255, np.uint8)
        out.append(np.dstack([pic.color[:, :, ::-1], alpha]))
    return out


def test_over_blend_composes_alpha(tmp_path):
    # half-transparent red OVER opaque blue: opaque (Pillow gave alpha 191); colour 128/255 red + 127/255 blue
    path = apng(tmp_path / 'over.png', (4, 4), [(fill(4, 4, BLUE), 0, 0, NONE, SOURCE),
                                                (fill(2, 2, HALF_RED), 1, 1, NONE, OVER)])
    first, second = composed(path)
    assert (first == BLUE).all()
    assert (second[1:3, 1:3] == (128, 0, 127, 255)).all()
    second[1:3, 1:3] = BLUE
    assert (second == BLUE).all()  # outside the region: untouched


def test_over_blend_on_transparent_and_on_half_transparent(tmp_path):
    # over transparent black: the source itself; half red over half blue: alpha 0.502 + 0.502 * 0.498 = 0.752
    path = apng(tmp_path / 'half.png', (4, 2), [(fill(2, 2, HALF_BLUE), 0, 0, NONE, SOURCE),
                                                (fill(2, 4, HALF_RED), 0, 0, NONE, OVER)])
    first, second = composed(path)
    assert (first[:, :2] == HALF_BLUE).all() and (first[:, 2:] == 0).all()
    assert (second[:, 2:] == HALF_RED).all()
    # the specification's integer formula gives (170, 0, 84, 191); exact arithmetic rounds to (170, 0, 85, 192)
    assert (np.abs(second[:, :2].astype(int) - (170, 0, 85, 192)) <= 1).all()


def test_source_blend_replaces_alpha_too(tmp_path):
    path = apng(tmp_path / 'source.png', (3, 3), [(fill(3, 3, BLUE), 0, 0, NONE, SOURCE),
                                                  (fill(1, 1, HALF_RED), 2, 0, NONE, SOURCE)])
    second = composed(path)[1]
    assert tuple(second[0, 2]) == HALF_RED and (second[1:] == BLUE).all()


@pytest.mark.parametrize('region, blend', [((3, 3, 1, 2), SOURCE), ((3, 3, 1, 2), OVER), ((6, 6, 0, 0), OVER)])
def test_dispose_previous_is_undone_in_later_frames(tmp_path, region, blend):
    # frame 2 (red, dispose PREVIOUS) must not stay in frames 3-5 (Pillow kept it where they blend OVER)
    h, w, x, y = region
    frames = [(fill(6, 6, BLUE), 0, 0, NONE, SOURCE), (fill(h, w, RED), x, y, PREVIOUS, blend)]
    frames += [(fill(1, 1, GREEN), 5, k, NONE, blend) for k in range(3)]
    got = composed(apng(tmp_path / 'prev.png', (6, 6), frames))
    assert len(got) == 5
    assert (got[1][y:y + h, x:x + w] == RED).all()
    for k, frame in enumerate(got[2:]):
        expected = fill(6, 6, BLUE)
        expected[:k + 1, 5] = GREEN
        assert np.array_equal(frame, expected), f'frame {k + 3}'


def test_dispose_background_clears_to_transparent_black(tmp_path):
    frames = [(fill(4, 4, BLUE), 0, 0, NONE, SOURCE), (fill(2, 2, RED), 2, 2, BACKGROUND, SOURCE),
              (fill(1, 1, GREEN), 0, 0, NONE, OVER)]
    third = composed(apng(tmp_path / 'bg.png', (4, 4), frames))[2]
    assert (third[2:, 2:] == 0).all()
    assert tuple(third[0, 0]) == GREEN and (third[:2, 1:] == BLUE).all()


def test_first_frame_dispose_previous_acts_as_background(tmp_path):
    frames = [(fill(2, 2, RED), 0, 0, PREVIOUS, SOURCE), (fill(1, 1, GREEN), 1, 1, NONE, OVER)]
    second = composed(apng(tmp_path / 'first.png', (2, 2), frames))[1]
    assert tuple(second[1, 1]) == GREEN
    second[1, 1] = 0
    assert (second == 0).all()


def test_default_image_comes_first_and_is_not_part_of_the_animation(tmp_path):
    still = fill(2, 3, GREEN)
    frames = [(fill(2, 3, RED), 0, 0, NONE, SOURCE), (fill(1, 1, HALF_BLUE), 0, 0, NONE, OVER)]
    image = open_image(apng(tmp_path / 'default.png', (3, 2), frames, default=still))
    assert image.default_image and len(image.frames) == 3
    pictures = image.decode()
    assert [p.duration for p in pictures] == [None, 100.0, 100.0]
    got = composed(tmp_path / 'default.png')
    assert (got[0] == GREEN).all() and (got[1] == RED).all()
    assert tuple(got[2][0, 0]) == (127, 0, 128, 255)  # half blue composed on frame 1 (red), not on the still


@pytest.mark.parametrize('frames, count, message', [
    ([(fill(2, 2, RED), 0, 0, NONE, SOURCE), (fill(2, 2, RED), 1, 1, NONE, SOURCE)], None, 'leaves the 2x2 canvas'),
    ([(fill(2, 2, RED), 0, 0, NONE, SOURCE), (fill(1, 1, RED), 0, 0, 3, SOURCE)], None, 'dispose_op 3'),
    ([(fill(2, 2, RED), 0, 0, NONE, SOURCE), (fill(1, 1, RED), 0, 0, NONE, SOURCE)], 3, 'frame'),
])
def test_damaged_animation_refused_by_name(tmp_path, frames, count, message):
    path = apng(tmp_path / 'bad.png', (2, 2), frames, frame_count=count)
    with pytest.raises(ImageError, match=message):
        open_image(path).decode()
