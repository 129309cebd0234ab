"""Writing pictures: the encoders (8/16-bit PNG and TIFF, JPEG, WebP, BMP, PPM/PGM, GIF; animations and pages as
the same kind of file), the colour information kept from the input (ICC profile; a PNG's gAMA, cHRM and sRGB
chunks) inserted into the encoded bytes, and atomic writes. Reading is :mod:`asid_arch.image_reader`."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from .image_reader import ICC_SUFFIXES, PNG_ICC_NAME, PNG_IHDR_END, ColorInfo, ImageError, Picture, to_depth
from .utils.asid_files import atomic_write

# Written formats: their suffixes, those that hold 8 bits per channel only, those without alpha.
WRITE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.webp', '.tif', '.tiff', '.bmp', '.ppm', '.pgm', '.gif')
EIGHT_BIT_FORMATS = ('.jpg', '.jpeg', '.webp', '.bmp', '.ppm', '.gif')  # formats that hold 8 bits per channel only
NO_ALPHA_FORMATS = ('.jpg', '.jpeg', '.bmp', '.ppm', '.pgm')
# one suffix per format a user picks by name (asid-sr --ext); the others of WRITE_SUFFIXES are written when an
# input of that format is kept (--ext same)
CHOSEN_SUFFIXES = ('.png', '.jpg', '.webp', '.tif')

JPEG_SOI, JPEG_APP0, JPEG_APP2 = b'\xff\xd8', 0xE0, 0xE2
JPEG_ICC_MARKER = b'ICC_PROFILE\0'
JPEG_SEGMENT_MAX = 65535 - 2  # payload of one marker segment (its length field counts itself)
JPEG_ICC_CHUNK = JPEG_SEGMENT_MAX - len(JPEG_ICC_MARKER) - 2  # profile bytes per APP2 segment
JPEG_ICC_MAX_SEGMENTS = 255
WEBP_ICC_FLAG, WEBP_ALPHA_FLAG = 0x20, 0x10  # VP8X flags
VP8L_SIGNATURE = 0x2F
GIF_COLORS = 256

# ----------------------------------------------------------------------------------------------
# Colour information inserted into encoded files
# ----------------------------------------------------------------------------------------------
Pieces = List[Union[bytes, memoryview]]  # a file as consecutive pieces: large encodings are never copied


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))


def _png_with_color(data: memoryview, color: ColorInfo) -> Pieces:
    chunks = [_png_chunk(kind, body) for kind, body in color.png_chunks]
    if color.icc:
        chunks.append(_png_chunk(b'iCCP', PNG_ICC_NAME + b'\0\0' + zlib.compress(color.icc, 9)))
    return [data[:PNG_IHDR_END], b''.join(chunks), data[PNG_IHDR_END:]]


def _jpeg_with_icc(data: memoryview, icc: bytes) -> Tuple[Pieces, str]:
    parts = [icc[i:i + JPEG_ICC_CHUNK] for i in range(0, len(icc), JPEG_ICC_CHUNK)]
    if len(parts) > JPEG_ICC_MAX_SEGMENTS:
        return [data], f'the ICC profile ({len(icc)} bytes) is too large for a JPEG file: not kept'
    segments = b''.join(struct.pack('>BBH', 0xFF, JPEG_APP2, 2 + len(JPEG_ICC_MARKER) + 2 + len(part))
                        + JPEG_ICC_MARKER + bytes((n, len(parts))) + part for n, part in enumerate(parts, 1))
    pos = len(JPEG_SOI)
    while data[pos] == 0xFF and data[pos + 1] == JPEG_APP0:  # after the JFIF header
        pos += 2 + struct.unpack('>H', data[pos + 2:pos + 4])[0]
    return [data[:pos], segments, data[pos:]], ''


def _webp_size_and_alpha(kind: bytes, payload: memoryview) -> Tuple[int, int, bool]:
    """Canvas width, height and alpha of a simple (VP8 or VP8L) WebP bitstream."""
    if kind == b'VP8L' and payload[0] == VP8L_SIGNATURE:
        bits = int.from_bytes(bytes(payload[1:5]), 'little')
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool((bits >> 28) & 1)
    width, height = struct.unpack('<HH', payload[6:10])  # after the frame tag and the start code
    return width & 0x3FFF, height & 0x3FFF, False


def _webp_with_icc(data: memoryview, icc: bytes) -> Pieces:
    iccp = b'ICCP' + struct.pack('<I', len(icc)) + icc + b'\0' * (len(icc) % 2)
    kind, size = bytes(data[12:16]), struct.unpack('<I', data[16:20])[0]
    if kind == b'VP8X':  # extended already (animation, alpha): set the flag, add the chunk after VP8X
        end = 20 + size + size % 2
        head = bytearray(data[:end])
        head[20] |= WEBP_ICC_FLAG
        rest = data[end:]
    else:
        width, height, alpha = _webp_size_and_alpha(kind, data[20:])
        flags = WEBP_ICC_FLAG | (WEBP_ALPHA_FLAG if alpha else 0)
        head = bytearray(data[:12]) + b'VP8X' + struct.pack('<IB3x', 10, flags)
        head += (width - 1).to_bytes(3, 'little') + (height - 1).to_bytes(3, 'little')
        rest = data[12:]
    head[4:8] = struct.pack('<I', len(head) - 8 + len(iccp) + len(rest))
    return [bytes(head), iccp, rest]


def with_color(data: Union[bytes, memoryview], suffix: str, color: ColorInfo) -> Tuple[Pieces, List[str]]:
    """``data`` (a PNG, JPEG or WebP file) with ``color`` inserted, and notes on what could not be kept."""
    data = memoryview(data).cast('B')
    if not color:
        return [data], []
    notes = []
    if suffix == '.png':
        return _png_with_color(data, color), notes
    if color.gamut_chunks:
        notes.append(f'the PNG colour chunks ({", ".join(color.gamut_chunks)}) cannot be kept in {suffix}'
                     + (' (the ICC profile is)' if color.icc and suffix in ICC_SUFFIXES else ''))
    if not color.icc:
        return [data], notes
    if suffix in ('.jpg', '.jpeg'):
        pieces, note = _jpeg_with_icc(data, color.icc)
        return pieces, notes + ([note] if note else [])
    if suffix == '.webp':
        return _webp_with_icc(data, color.icc), notes
    return [data], notes + [f'{suffix} cannot hold the ICC colour profile of the input: not kept (choose --ext png, '
                            'jpg, webp or tif to keep it)']


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------
Writer = Callable[[object], None]  # writes a whole file to a binary file object


def _pieces_writer(pieces: Pieces) -> Writer:
    def write(f) -> None:
        for piece in pieces:
            f.write(piece)
    return write


def _to_8bit(pic: Picture, suffix: str, notes: List[str]) -> Picture:
    if pic.color.dtype != np.uint16:
        return pic
    note = f'16-bit values scaled to 8 bits ({suffix} holds 8 bits per channel)'
    if note not in notes:
        notes.append(note)
    return Picture(to_depth(pic.color, np.uint8), None if pic.alpha is None else to_depth(pic.alpha, np.uint8),
                   pic.duration)


def _rgb_layers(pic: Picture) -> np.ndarray:
    """Pixels in Pillow's and TIFF's order: gray, gray + alpha, RGB or RGBA (a new array for colour)."""
    if pic.gray:
        return np.ascontiguousarray(pic.pixels())
    color = pic.color[:, :, ::-1]
    return np.ascontiguousarray(color) if pic.alpha is None else np.dstack([color, pic.alpha])


def _pillow_image(pic: Picture):
    """An 8-bit picture as a Pillow image: L, LA, RGB or RGBA (the mode follows the layers)."""
    from PIL import Image

    return Image.fromarray(_rgb_layers(pic))


def _tiff_writer(pictures: Sequence[Picture], color: ColorInfo) -> Writer:
    import tifffile

    def write(f) -> None:
        buffer = io.BytesIO()  # (tifffile takes the name of a file object, and os.fdopen's is a number)
        with tifffile.TiffWriter(buffer) as tiff:
            for pic in pictures:
                extra = {} if pic.alpha is None else {'extrasamples': ['unassalpha']}
                icc = None if color.icc_problem(pic.gray) else color.icc
                tiff.write(_rgb_layers(pic), photometric='minisblack' if pic.gray else 'rgb', compression='zlib',
                           iccprofile=icc, metadata=None, **extra)
        f.write(buffer.getbuffer())
    return write


def _gif_writer(pictures: Sequence[Picture], loop: Optional[int], notes: List[str]) -> Writer:
    from PIL import Image

    images = []
    for pic in pictures:
        im = _pillow_image(pic).convert('RGBA' if pic.alpha is not None else 'RGB')
        if pic.alpha is None:
            images.append(im.quantize(GIF_COLORS))
            continue
        # one palette entry for "transparent", below half opacity; the colours share the rest
        paletted = im.convert('RGB').quantize(GIF_COLORS - 1)
        index = np.asarray(paletted).copy()
        index[np.asarray(im)[:, :, 3] < 128] = GIF_COLORS - 1
        frame = Image.fromarray(index, 'P')
        frame.putpalette(paletted.getpalette()[:3 * (GIF_COLORS - 1)] + [0, 0, 0])
        frame.info['transparency'] = GIF_COLORS - 1
        images.append(frame)
    notes.append(f'GIF holds {GIF_COLORS} colours per frame: the result\'s colours were reduced to those'
                 + (', and its alpha to on/off transparency' if pictures[0].alpha is not None else ''))
    params = {'save_all': True, 'append_images': images[1:], 'optimize': False}
    if len(images) > 1 or pictures[0].duration is not None:
        params['duration'] = [round(p.duration or 0) for p in pictures]
        params['disposal'] = 2  # every frame is the whole picture
    if loop is not None:
        params['loop'] = loop
    if pictures[0].alpha is not None:
        params['transparency'] = GIF_COLORS - 1

    def write(f) -> None:
        images[0].save(f, format='GIF', **params)
    return write


def _animation_bytes(pictures: Sequence[Picture], fmt: str, loop: Optional[int],
                     default_image: bool = False) -> memoryview:
    """An animated PNG or WebP of ``pictures`` (8-bit), every frame whole, durations and loop count kept;
    ``default_image``: the first picture is an APNG's still for viewers without animation."""
    images = [_pillow_image(pic) for pic in pictures]
    animated = pictures[1:] if default_image else pictures
    params = {'save_all': True, 'append_images': images[1:], 'duration': [p.duration or 0 for p in animated]}
    if default_image:
        params['default_image'] = True
    if loop is not None:
        params['loop'] = loop
    if fmt == 'WEBP':
        params.update(lossless=True, exact=True)  # as OpenCV's still WebP: lossless, colours under alpha 0 kept
    buffer = io.BytesIO()
    images[0].save(buffer, format=fmt, **params)
    return buffer.getbuffer()


def encoder(pictures: Sequence[Picture], suffix: str, color: ColorInfo = ColorInfo(), loop: Optional[int] = None,
            default_image: bool = False) -> Tuple[Writer, List[str]]:
    """A function writing ``pictures`` as one file of format ``suffix`` (several pictures: an animation or
    pages, which only GIF, PNG, WebP and TIFF hold), and notes on the conversions made (colours kept or not,
    depth); :class:`ImageError` when the format cannot hold them. ``loop`` and ``default_image``: see
    :class:`asid_arch.image_reader.ImageFile`."""
    suffix = suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise ImageError(f'cannot write {suffix or "files without a suffix"} (formats written: '
                         f'{", ".join(WRITE_SUFFIXES)})')
    if len(pictures) > 1 and suffix not in ('.gif', '.png', '.webp', '.tif', '.tiff'):
        raise ImageError(f'{suffix} holds one picture, not {len(pictures)}')
    notes: List[str] = []
    kinds = sorted({p.gray for p in pictures})  # gray, RGB or (TIFF pages) both
    problems = [color.icc_problem(gray) for gray in kinds if color.icc_problem(gray)]
    notes += problems
    if len(problems) == len(kinds):  # it describes none of the pictures (a TIFF keeps it on the pages it does)
        color = color.without_icc()
    if any(p.alpha is not None for p in pictures) and suffix in NO_ALPHA_FORMATS:
        raise ImageError(f'{suffix} cannot hold the alpha channel of this image; choose --ext png, webp or tif')
    if suffix in ('.tif', '.tiff'):
        if color.gamut_chunks:
            notes.append(f'the PNG colour chunks ({", ".join(color.gamut_chunks)}) cannot be kept in {suffix}'
                         + (' (the ICC profile is)' if color.icc else ''))
        return _tiff_writer(pictures, color), notes
    if suffix in EIGHT_BIT_FORMATS or (len(pictures) > 1 and suffix == '.png'):
        pictures = [_to_8bit(p, suffix if len(pictures) == 1 else f'an animated {suffix}', notes) for p in pictures]
    if suffix == '.gif':
        writer = _gif_writer(pictures, loop, notes)
        if color.icc or color.gamut_chunks:
            notes.append('GIF cannot hold the colour profile of the input: not kept')
        return writer, notes
    if len(pictures) > 1:
        data = _animation_bytes(pictures, 'PNG' if suffix == '.png' else 'WEBP', loop, default_image)
    else:
        data = _encode_still(pictures[0], suffix, notes)
    pieces, color_notes = with_color(data, suffix, color)
    return _pieces_writer(pieces), notes + color_notes


def _encode_still(pic: Picture, suffix: str, notes: List[str]) -> memoryview:
    if pic.alpha is not None and pic.gray:  # gray + alpha: OpenCV writes no 2-channel files, Pillow does
        if pic.color.dtype == np.uint16:
            pic = Picture(to_depth(pic.color, np.uint8), to_depth(pic.alpha, np.uint8))
            notes.append('16-bit gray + alpha written as 8-bit gray + alpha (no 16-bit two-channel writer here)')
        fmt = {'.png': 'PNG', '.webp': 'WEBP'}.get(suffix)
        if fmt is None:
            raise ImageError(f'{suffix} cannot hold a gray + alpha image; choose --ext png, webp or tif')
        buffer = io.BytesIO()
        _pillow_image(pic).save(buffer, format=fmt, **({'lossless': True, 'exact': True} if fmt == 'WEBP' else {}))
        return buffer.getbuffer()
    ok, data = cv2.imencode(suffix, pic.pixels())
    if not ok:
        raise ImageError(f'could not encode the result as {suffix}')
    return memoryview(data)  # the encoder's buffer itself: no second copy of a large file


def write_image(path: Union[str, Path], pictures: Sequence[Picture], color: ColorInfo = ColorInfo(),
                loop: Optional[int] = None, default_image: bool = False) -> str:
    """Write ``pictures`` (see :func:`encoder`) atomically to ``path``, in the format of its suffix;
    returns the notes on conversions ('' if none)."""
    writer, notes = encoder(pictures, Path(path).suffix, color, loop, default_image)
    atomic_write(path, writer)
    return '; '.join(notes)


def imwrite_atomic(path: Union[str, Path], img: np.ndarray, params: Sequence[int] = ()) -> memoryview:
    """``cv2.imwrite`` made atomic; the format follows the suffix of ``path``. Returns the bytes written
    (``asid-prepare`` records their hash)."""
    ok, data = cv2.imencode(Path(path).suffix, img, list(params))
    if not ok:
        raise ValueError(f'could not encode an image as {Path(path).suffix}')
    atomic_write(path, lambda f: f.write(data))
    return memoryview(data)
