"""Why a file is not a readable image, said by name: the format its signature names when it is not one of the
formats read here (OpenEXR, JPEG 2000, HEIF, PSD, ...), the sample layout of a TIFF that no reader here decodes
(floating point, 5 samples per pixel, 16-bit gray + alpha), or the damage in a PNG (a chunk whose CRC does not
match, a file that ends inside a chunk). Used by :mod:`asid_arch.image_reader` where a decoder only says "cannot
identify" or returns nothing."""
from __future__ import annotations

import struct
import zlib
from typing import Dict, Iterator, NamedTuple, Optional, Tuple, Union

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
SUPPORTED = 'PNG, JPEG, WebP, TIFF, GIF, BMP, PPM/PGM'
# signatures of formats that are not read here: (offset, bytes) -> name
OTHER_FORMATS: Tuple[Tuple[int, bytes, str], ...] = (
    (0, b'\x76\x2f\x31\x01', 'an OpenEXR image'),
    (0, b'#?RADIANCE', 'a Radiance HDR image'),
    (0, b'#?RGBE', 'a Radiance HDR image'),
    (0, b'\x00\x00\x00\x0cjP  \r\n\x87\n', 'a JPEG 2000 image'),
    (0, b'\xff\x4f\xff\x51', 'a JPEG 2000 codestream'),
    (0, b'8BPS', 'a Photoshop (PSD) file'),
    (4, b'ftypheic', 'a HEIF (HEIC) image'),
    (4, b'ftypheix', 'a HEIF (HEIC) image'),
    (4, b'ftypmif1', 'a HEIF image'),
    (4, b'ftypavif', 'an AVIF image'),
    (0, b'\xff\x0a', 'a JPEG XL image'),
    (0, b'\x00\x00\x00\x0cJXL \r\n\x87\n', 'a JPEG XL image'),
    (0, b'\x00\x00\x01\x00', 'a Windows icon (ICO)'),
    (0, b'%PDF', 'a PDF document'),
    (0, b'%!PS', 'a PostScript file'),
    (0, b'qoif', 'a QOI image'),
    (0, b'SIMPLE  =', 'a FITS file'),
)
TIFF_LITTLE, TIFF_BIG, BIGTIFF_LITTLE, BIGTIFF_BIG = b'II*\0', b'MM\0*', b'II+\0', b'MM\0+'
TIFF_TAGS = {258: 'bits', 262: 'photometric', 277: 'samples', 338: 'extra', 339: 'format'}
TIFF_MAX_ENTRIES, TIFF_MAX_VALUES = 4096, 16  # read at most (a hostile directory may claim billions)
TIFF_TYPE_SIZE = {1: 1, 3: 2, 4: 4, 16: 8}  # BYTE, SHORT, LONG, LONG8
TIFF_SAMPLE_FORMATS = {1: 'unsigned integer', 2: 'signed integer', 3: 'floating point', 4: 'undefined',
                       5: 'complex integer', 6: 'complex floating point'}
TIFF_SUPPORTED = ('8- and 16-bit unsigned gray, RGB, RGBA, palette and CMYK, and 8-bit gray + alpha')


def unreadable_reason(data: bytes) -> str:
    """What keeps ``data`` from being read: a named format, an unsupported TIFF layout, PNG damage; or a
    generic line when nothing specific is found."""
    for offset, magic, name in OTHER_FORMATS:
        if data[offset:offset + len(magic)] == magic:
            return f'{name}: not a format read here (formats read: {SUPPORTED})'
    if data[:len(PNG_SIGNATURE)] == PNG_SIGNATURE:
        return png_damage(data) or 'damaged PNG (its chunks are intact, its image data is not)'
    if data[:4] in (TIFF_LITTLE, TIFF_BIG, BIGTIFF_LITTLE, BIGTIFF_BIG):
        return tiff_layout(data) or 'damaged TIFF'
    return f'not an image in a format read here ({SUPPORTED}), or damaged'


class PNGChunk(NamedTuple):
    """A chunk of a PNG file: the byte where it starts (its length field), its type, its body (a slice of the
    file's data) and the CRC stored after it."""
    pos: int
    kind: bytes
    body: Union[bytes, memoryview]
    crc: int


class PNGEnded(ValueError):
    """A PNG's data end before its IEND chunk: between two chunks (``kind`` None) or inside the chunk of type
    ``kind`` that starts at byte ``pos``."""

    def __init__(self, pos: int, kind: Optional[bytes]) -> None:
        where = 'between two chunks' if kind is None else f'inside its {kind.decode("latin-1")} chunk'
        super().__init__(f'the PNG ends {where} at byte {pos}')
        self.pos, self.kind = pos, kind


def png_chunk_walk(data: Union[bytes, memoryview]) -> Iterator[PNGChunk]:
    """The chunks of a PNG (``data`` starts with :data:`PNG_SIGNATURE`, not checked here) in file order, IEND the
    last; :class:`PNGEnded` where the data end before it. Nothing is checked but the lengths: the one walk of PNG
    chunks of the package (what they must hold is for each reader to say)."""
    pos, size = len(PNG_SIGNATURE), len(data)
    while True:
        if pos + 8 > size:
            raise PNGEnded(pos, None)
        length, kind = struct.unpack('>I4s', data[pos:pos + 8])
        if pos + 12 + length > size:
            raise PNGEnded(pos, kind)
        yield PNGChunk(pos, kind, data[pos + 8:pos + 8 + length],
                       struct.unpack('>I', data[pos + 8 + length:pos + 12 + length])[0])
        if kind == b'IEND':
            return
        pos += 12 + length


def png_damage(data: bytes) -> str:
    """The first damage found in a PNG's chunk structure ('' when there is none): a first chunk that is not IHDR,
    a chunk whose CRC does not match, a file that ends inside a chunk or before IEND."""
    first = True
    try:
        for chunk in png_chunk_walk(data):
            name = chunk.kind.decode('latin-1')
            if first and chunk.kind != b'IHDR':
                return f'damaged PNG: its first chunk is {name!r}, not IHDR'
            first = False
            if zlib.crc32(chunk.body, zlib.crc32(chunk.kind)) != chunk.crc:
                return f'damaged PNG: the CRC of its {name} chunk at byte {chunk.pos} does not match its content'
    except PNGEnded as end:
        if end.kind is None:
            return f'truncated PNG: the file ends at byte {len(data)} before its IEND chunk'
        name = end.kind.decode('latin-1')
        if first and end.kind != b'IHDR':
            return f'damaged PNG: its first chunk is {name!r}, not IHDR'
        return f'truncated PNG: the file ends at byte {len(data)}, inside its {name} chunk at byte {end.pos}'
    return ''


def _tiff_first_ifd(data: bytes) -> Optional[Dict[str, Tuple[int, ...]]]:
    """The tags of :data:`TIFF_TAGS` in a (Big)TIFF's first directory; None when it cannot be parsed."""
    order = '<' if data[:2] == b'II' else '>'
    big = data[2:4] in (b'+\0', b'\0+')
    try:
        if big:
            offset = struct.unpack(order + 'Q', data[8:16])[0]
            count = struct.unpack(order + 'Q', data[offset:offset + 8])[0]
            entry, first, inline = 20, offset + 8, 8
        else:
            offset = struct.unpack(order + 'I', data[4:8])[0]
            count = struct.unpack(order + 'H', data[offset:offset + 2])[0]
            entry, first, inline = 12, offset + 2, 4
        tags: Dict[str, Tuple[int, ...]] = {}
        for k in range(min(count, TIFF_MAX_ENTRIES)):
            at = first + k * entry
            tag, kind = struct.unpack(order + 'HH', data[at:at + 4])
            if tag not in TIFF_TAGS or kind not in TIFF_TYPE_SIZE:
                continue
            word = order + ('Q' if big else 'I')
            n = min(struct.unpack(word, data[at + 4:at + 4 + inline])[0], TIFF_MAX_VALUES)
            item = TIFF_TYPE_SIZE[kind]
            value_at = at + 4 + inline
            if n * item > inline:  # the values stand elsewhere, at this offset
                value_at = struct.unpack(word, data[value_at:value_at + inline])[0]
            code = {1: 'B', 3: 'H', 4: 'I', 16: 'Q'}[kind]
            tags[TIFF_TAGS[tag]] = struct.unpack(order + code * n, data[value_at:value_at + n * item])
        return tags
    except (struct.error, IndexError):
        return None


def tiff_layout(data: bytes) -> str:
    """The sample layout of a TIFF's first page when no reader here decodes it ('' when it looks ordinary)."""
    tags = _tiff_first_ifd(data)
    if tags is None:
        return 'damaged TIFF: its first page directory cannot be read'
    samples = tags.get('samples', (1, ))[0]
    bits = max(tags.get('bits', (1, )))
    fmt = TIFF_SAMPLE_FORMATS.get(max(tags.get('format', (1, ))), 'unknown')
    kind = 'gray + alpha' if samples == 2 else f'{samples} samples per pixel'
    if fmt != 'unsigned integer' or bits not in (1, 2, 4, 8, 16) or samples > 4 or (samples == 2 and bits == 16):
        return (f'TIFF of {bits}-bit {fmt} {kind}: not a layout read here (TIFFs read: {TIFF_SUPPORTED})')
    return ''
