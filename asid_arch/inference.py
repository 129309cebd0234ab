"""The library side of ``asid-sr``: a memory plan for each image and the ``Upscaler`` that runs it whole or in
blended tiles. The command (arguments, files, the batch) is :mod:`asid_arch.cli.sr`."""
from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from .utils.asid_precision import casts_network, resolve_precision, torch_dtype
from .utils.asid_tiling import RAMP, RAMP_OVERLAP, tile_origins, tile_rows

MAX_OVERLAP = 128  # LR px: an automatic tile is at least twice the overlap
MIN_TILE = 32
PROGRESS_MIN_TILES = 16  # a tile progress bar for images of at least this many tiles

# ----------------------------------------------------------------------------------------------
# Memory. The network's working set per forward pass, from VmHWM (peak resident memory) of one pass
# per tile size in a fresh process, with the allocator settings asid-sr runs with
# (tuning.tune_cpu(keep_freed=False): blocks over 128 KB come from mmap and go back when freed). It grows
# with the LR pixels of a tile, by NET_BYTES_PER_FEATURE_PIXEL per feature channel (activations of the
# wide layers), NET_BYTES_PER_PIXEL (the six shared 64 x 64 attention maps per window, the input) and
# NET_BYTES_PER_OUTPUT_PIXEL per output pixel (upsampler, pixel shuffle, float32 result). Measured:
# 4.39 KB per LR pixel for 48 channels at x2 (tiles of 96 to 296 px), 4.46 KB at x4, 2.16 KB for 16
# channels at x2, plus about 32 MB per pass; the constants are 10-15 % above. With glibc's default
# (dynamic mmap threshold) the same passes kept up to twice as much (7.8 KB per pixel at x2).
# ----------------------------------------------------------------------------------------------
NET_BYTES_PER_FEATURE_PIXEL = 80
NET_BYTES_PER_PIXEL = 1_100
NET_BYTES_PER_OUTPUT_PIXEL = 10
NET_FIXED_BYTES = 40_000_000  # per pass: oneDNN scratch, the 16-px minimum padding, page rounding
# bf16 and fp16 activations take about half the bytes: 2.36 KB per LR pixel measured (48 channels, x2, bf16)
PRECISION_FACTOR = {'fp32': 1.0, 'bf16': 0.6, 'fp16': 0.6}
FLOAT_BYTES = 4
ACCUMULATOR_VALUES = 3 + 1 + 3  # per output pixel of a tile row: colour sums, weight sum, a finished-rows temporary
ENCODER_COPIES = 3  # OpenCV's encoder: its growing buffer (up to twice the file) and the copy handed to Python
PILLOW_BYTES_PER_PIXEL = 4  # Pillow holds RGB, RGBA and LA images as 4 bytes per pixel
DECODE_COPIES = 2  # the decoded image and its oriented / split copy


def network_bytes(num_feat: int, scale: int, precision: str, pixels: int) -> int:
    """Working set of one forward pass of ``pixels`` LR pixels (float32 output included), in bytes."""
    per_pixel = NET_BYTES_PER_FEATURE_PIXEL * num_feat + NET_BYTES_PER_PIXEL + NET_BYTES_PER_OUTPUT_PIXEL * scale**2
    return int(per_pixel * PRECISION_FACTOR[precision] * pixels + NET_FIXED_BYTES)


def padded(side: int) -> int:
    """The side the network runs on: a multiple of its window, at least the smallest padded size."""
    from .archs.asid_arch import MIN_PADDED_SIZE, WINDOW_SIZE

    return max(MIN_PADDED_SIZE, -(-side // WINDOW_SIZE) * WINDOW_SIZE)


@dataclass(frozen=True)
class MemoryPlan:
    """The tile (0: whole image) and the estimated peak memory beyond the fixed cost, with its parts."""
    tile: int
    need: int
    parts: Dict[str, int]

    def describe(self) -> str:
        return ', '.join(f'{name} {size / 1e6:.0f} MB' for name, size in self.parts.items() if size)


class MemoryNeed(ValueError):
    """An image whose run would not fit the memory budget (a failed image, with what it needs)."""


def plan_memory(frames: Sequence, scale: int, file_bytes: int, network: Callable[[int], int], budget: float,
                tile: Optional[int] = None, overlap: int = RAMP_OVERLAP, pillow: bool = False) -> MemoryPlan:
    """The tile to run ``frames`` (:class:`~asid_arch.images.FrameInfo`) at ``scale`` in ``budget`` bytes:
    0 (whole) if that fits, else the largest tile that does (``tile`` None), or ``tile`` as given (0: whole).
    ``network(pixels)`` is the network's working set for a tile of that many LR pixels; ``pillow``: the
    result is encoded through Pillow (animations, gray + alpha, GIF), which holds its own copy.
    :class:`MemoryNeed` naming what is needed when even the smallest tile does not fit."""
    inputs = sum(f.width * f.height * (f.color_channels + f.alpha) * f.sample_bytes for f in frames)
    outputs = inputs * scale * scale
    out_pixels = sum(f.width * f.height for f in frames) * scale * scale
    biggest = max(frames, key=lambda f: f.width * f.height)
    h, w, sample = biggest.height, biggest.width, biggest.sample_bytes
    decode = file_bytes + DECODE_COPIES * inputs + PILLOW_BYTES_PER_PIXEL * h * w
    encode = outputs * (1 + ENCODER_COPIES) + (PILLOW_BYTES_PER_PIXEL * out_pixels if pillow else 0)

    def run_cost(t: int) -> int:
        """Peak while upscaling the biggest frame in tiles of ``t`` (0: whole)."""
        th, tw = (h, w) if t == 0 or t >= max(h, w) else (min(t, h), min(t, w))
        prepared = th * tw * 3 * (sample + FLOAT_BYTES)  # the tile as contiguous RGB, then float
        tiled = (th, tw) != (h, w)
        accumulators = ACCUMULATOR_VALUES * FLOAT_BYTES * th * w * scale * scale if tiled else 0
        weights = FLOAT_BYTES * th * tw * scale * scale if tiled else 0
        return inputs + outputs + prepared + network(padded(th) * padded(tw)) + accumulators + weights

    def plan(t: int) -> MemoryPlan:
        run = run_cost(t)
        need = max(decode, run, encode)
        parts = {'file': file_bytes, 'decoded image': inputs, 'result': outputs,
                 'network and tiles': run - inputs - outputs, 'encoder': encode - outputs}
        return MemoryPlan(0 if t >= max(h, w) else t, need, parts)

    if tile is not None:  # as asked: whole (0) or that tile
        return plan(tile or max(h, w))
    smallest = max(MIN_TILE, 2 * overlap)
    if plan(max(h, w)).need <= budget or smallest >= max(h, w):
        return plan(max(h, w))
    if plan(smallest).need > budget:
        return plan(smallest)  # the caller refuses it, naming what it needs
    low, high = smallest, max(h, w)  # largest fitting tile: the cost grows with the tile
    from .archs.asid_arch import WINDOW_SIZE as step  # automatic tiles are multiples of the network's window

    while high - low > step:
        mid = (low + high) // 2 // step * step
        if mid <= low:
            break
        low, high = (mid, high) if plan(mid).need <= budget else (low, mid)
    return plan(low)


# ----------------------------------------------------------------------------------------------
# The network on integer images
# ----------------------------------------------------------------------------------------------
class Upscaler:
    """Runs the network on integer images, whole or in blended tiles, into arrays of the final pixel type."""

    def __init__(self, net, scale: int, device, precision: str, tile: Optional[int], overlap: int,
                 max_memory_bytes: float, source: str) -> None:
        import torch

        self.torch = torch
        self.net = net.to(device).eval()
        self.scale, self.device, self.overlap, self.source = scale, device, overlap, source
        self.tile = tile  # None: automatic (from the memory budget), 0: whole, >0: that tile
        self.max_memory = max_memory_bytes
        self.precision = precision  # a name of PRECISION_CHOICES: auto picks per image depth (_network)
        # the memory plan assumes the precision of the deepest images (16-bit: float32 under auto)
        self.plan_precision = resolve_precision(precision, device, np.iinfo(np.uint16).bits)
        self._networks: Dict[str, tuple] = {}  # precision -> (network, dtype, cast to it)
        self.num_feat = int(net.conv_first.out_channels) if hasattr(net, 'conv_first') else 48

    def _network(self, sample_bits: int) -> tuple:
        """``(network, dtype, cast)`` for images of ``sample_bits`` bits: bf16 on the CPU runs a bf16 copy of the
        network (one dtype end to end); other precisions run the float32 network (under autocast)."""
        precision = resolve_precision(self.precision, self.device, sample_bits)
        if precision not in self._networks:
            cast = casts_network(precision, self.device)
            dtype = torch_dtype(precision)
            net = copy.deepcopy(self.net).to(dtype) if cast else self.net
            self._networks[precision] = (net, dtype, cast)
        return self._networks[precision]

    def network_bytes(self, pixels: int) -> int:
        return network_bytes(self.num_feat, self.scale, self.plan_precision, pixels)

    def plan(self, frames: Sequence, file_bytes: int, pillow: bool) -> MemoryPlan:
        """:func:`plan_memory` for this network and settings (``--max-memory``, ``--tile``, ``--tile-overlap``)."""
        return plan_memory(frames, self.scale, file_bytes, self.network_bytes, self.max_memory, self.tile,
                           self.overlap, pillow)

    def _run(self, lr: np.ndarray, max_value: int):
        """Network output (h*s, w*s, 3) float32 numpy in [0, 1] for an integer (h, w, 3) RGB tile."""
        torch = self.torch
        net, dtype, cast = self._network(int(max_value).bit_length())
        x = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1))).to(self.device, torch.float32)
        x = x.div_(max_value)[None]
        x = x.to(dtype) if cast else x
        mixed = not cast and dtype != torch.float32  # fp16 on CUDA, bf16 on a GPU: autocast
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=mixed):
            y = net(x)[0].float()
            del x
            if not torch.isfinite(y).all():
                raise ValueError(f'the network produced NaN or Inf values with the weights of {self.source}: '
                                 'the checkpoint is unusable')
            return y.clamp_(0, 1).permute(1, 2, 0).cpu().numpy()

    def upscale(self, src: np.ndarray, dest: np.ndarray, reverse_channels: bool, tile: Optional[int] = None) -> None:
        """Super-resolve ``src`` ((H, W, 3) RGB or (H, W) gray, integer) into ``dest`` ((H*s, W*s, 3) or
        (H*s, W*s), integer, written in place; a view into a larger array is fine). ``reverse_channels``
        writes RGB results as BGR. ``tile``: 0 whole, N tiles of N px, None this upscaler's setting."""
        s = self.scale
        h, w = src.shape[:2]
        max_in, max_out = np.iinfo(src.dtype).max, np.iinfo(dest.dtype).max
        gray = src.ndim == 2
        rgb = (lambda a: np.repeat(a[:, :, None], 3, axis=2)) if gray else (lambda a: a)

        def store(rows: slice, values: np.ndarray) -> None:
            """Float results in [0, 1] (an array of our own, changed in place) into ``dest`` rows."""
            values = values.mean(axis=2) if dest.ndim == 2 else values[:, :, ::-1] if reverse_channels else values
            np.multiply(values, max_out, out=values)
            np.rint(values, out=values)
            np.clip(values, 0, max_out, out=values)
            dest[rows] = values

        t = self.tile if tile is None else tile
        if t is None:
            t = self.plan([_frame_of(src)], 0, False).tile
        if t == 0 or t >= max(h, w):
            store(slice(0, h * s), self._run(rgb(src), max_in))
            return
        from tqdm import tqdm

        th, tw = min(t, h), min(t, w)
        tiles = len(tile_origins(h, th, self.overlap)) * len(tile_origins(w, tw, self.overlap))
        bar = tqdm(total=tiles, desc='tiles', unit='tile', leave=False, file=sys.stderr,
                   disable=tiles < PROGRESS_MIN_TILES)

        def run(y: int, x: int, th: int, tw: int) -> np.ndarray:
            return self._run(rgb(src[y:y + th, x:x + tw]), max_in)

        try:
            tile_rows(run, (h, w), s, t, self.overlap, store, blend=RAMP, done=bar.update)
        finally:
            bar.close()


def _frame_of(src: np.ndarray):
    from .images import FrameInfo

    return FrameInfo(src.shape[1], src.shape[0], 1 if src.ndim == 2 else 3, False, src.dtype.itemsize)


# ----------------------------------------------------------------------------------------------
# One image
# ----------------------------------------------------------------------------------------------
def upscale_image(image, upscaler: Upscaler, plan: MemoryPlan) -> list:
    """Every picture of ``image`` (an :class:`~asid_arch.images.ImageFile`) super-resolved: colour and alpha
    go into one interleaved array per picture (what the encoder takes, no copy to join them)."""
    from .images import Picture

    s = upscaler.scale
    pictures = image.decode()
    image.data = b''  # the file's bytes are not needed any more
    results = []
    for k, pic in enumerate(pictures):
        h, w = pic.size
        channels = (1 if pic.gray else 3) + (pic.alpha is not None)
        full = np.empty((h * s, w * s) + ((channels, ) if channels > 1 else ()), pic.color.dtype)
        if pic.alpha is None:
            color = full  # (H, W) gray or (H, W, 3)
        else:
            color = full[:, :, 0] if pic.gray else full[:, :, :3]
        upscaler.upscale(pic.color if pic.gray else pic.color[:, :, ::-1], color, reverse_channels=True,
                         tile=plan.tile)
        alpha = None
        if pic.alpha is not None:
            alpha = full[:, :, -1]
            upscaler.upscale(pic.alpha, alpha, reverse_channels=False, tile=plan.tile)
        results.append(Picture(color, alpha, pic.duration, full if channels > 1 else None))
        pictures[k] = None  # the input picture is not needed any more
    return results
