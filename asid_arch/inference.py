"""The library side of ``asid-sr``: a memory plan for each image and the ``Upscaler`` that runs it whole or in
blended tiles. The command (arguments, files, the batch) is :mod:`asid_arch.cli.sr`."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .console import progress_bar
from .utils.asid_precision import casts_network, resolve_precision, torch_dtype
from .utils.asid_tiling import RAMP, RAMP_OVERLAP, tile_origins, tile_rows

MAX_OVERLAP = 128  # LR px: an automatic tile is at least twice the overlap
MIN_TILE = 32
PROGRESS_MIN_TILES = 16  # a tile progress bar for images of at least this many tiles
PROGRESS_MIN_FRAMES = 16  # a frame progress bar for animations and pages of at least this many pictures
BATCH_PIXELS = 128 * 128  # small frames run through the network together, up to this many padded LR pixels a pass

# ----------------------------------------------------------------------------------------------
# Memory. The network's working set per forward pass, from VmHWM (peak resident memory) of one pass
# per tile size in a fresh process, with the allocator settings asid-sr runs with
# (cpu_settings.tune_cpu(keep_freed=False): blocks over 128 KB come from mmap and go back when freed). It grows
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
DEFAULT_NUM_FEAT = 48  # ASID's width, for a network that does not say its own
ACCUMULATOR_VALUES = 3 + 1 + 3  # per output pixel of a tile row: colour sums, weight sum, a finished-rows temporary
ENCODER_COPIES = 3  # OpenCV's encoder: its growing buffer (up to twice the file) and the copy handed to Python
PILLOW_BYTES_PER_PIXEL = 4  # Pillow holds RGB, RGBA and LA images as 4 bytes per pixel
DECODE_COPIES = 2  # the decoded image and its oriented / split copy


def network_bytes(num_feat: int, scale: int, precision: str, pixels: int) -> int:
    """Working set of one forward pass of ``pixels`` LR pixels (float32 output included), in bytes."""
    per_pixel = NET_BYTES_PER_FEATURE_PIXEL * num_feat + NET_BYTES_PER_PIXEL + NET_BYTES_PER_OUTPUT_PIXEL * scale**2
    return int(per_pixel * PRECISION_FACTOR[precision] * pixels + NET_FIXED_BYTES)


def feature_channels(net) -> int:
    """The width (feature channels) of an ASID network, for :func:`network_bytes`."""
    return int(net.conv_first.out_channels) if hasattr(net, 'conv_first') else DEFAULT_NUM_FEAT


def padded(side: int) -> int:
    """The side the network runs on: a multiple of its window, at least the smallest padded size."""
    from .archs.asid_arch import MIN_PADDED_SIZE, WINDOW_SIZE

    return max(MIN_PADDED_SIZE, -(-side // WINDOW_SIZE) * WINDOW_SIZE)


@dataclass(frozen=True)
class MemoryPlan:
    """The tile (0: whole image), the estimated peak memory beyond the fixed cost with its parts, and how many
    whole pictures (frames, pages; colour and alpha each count) run through the network in one pass."""
    tile: int
    need: int
    parts: Dict[str, int]
    batch: int = 1

    def describe(self) -> str:
        return ', '.join(f'{name} {size / 1e6:.0f} MB' for name, size in self.parts.items() if size)


class MemoryNeed(ValueError):
    """An image whose run would not fit the memory budget (a failed image, with what it needs)."""


def plan_memory(frames: Sequence, scale: int, file_bytes: int, network: Callable[[int], int], budget: float,
                tile: Optional[int] = None, overlap: int = RAMP_OVERLAP, pillow: bool = False) -> MemoryPlan:
    """The tile to run ``frames`` (:class:`~asid_arch.image_reader.FrameInfo`) at ``scale`` in ``budget`` bytes:
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

    pictures = sum(1 + f.alpha for f in frames)  # colour and alpha are each a network input

    def run_cost(t: int, batch: int = 1) -> int:
        """Peak while upscaling the biggest frame in tiles of ``t`` (0: whole), ``batch`` pictures a pass."""
        th, tw = (h, w) if t == 0 or t >= max(h, w) else (min(t, h), min(t, w))
        prepared = batch * th * tw * 3 * (sample + FLOAT_BYTES)  # the tile as contiguous RGB, then float
        tiled = (th, tw) != (h, w)
        accumulators = ACCUMULATOR_VALUES * FLOAT_BYTES * th * w * scale * scale if tiled else 0
        weights = FLOAT_BYTES * th * tw * scale * scale if tiled else 0
        return inputs + outputs + prepared + network(batch * padded(th) * padded(tw)) + accumulators + weights

    def plan(t: int, batch: int = 1) -> MemoryPlan:
        run = run_cost(t, batch)
        need = max(decode, run, encode)
        parts = {'file': file_bytes, 'decoded image': inputs, 'result': outputs,
                 'network and tiles': run - inputs - outputs, 'encoder': encode - outputs}
        return MemoryPlan(0 if t >= max(h, w) else t, need, parts, batch)

    def batched(whole: MemoryPlan) -> MemoryPlan:
        """The whole-picture plan with as many pictures a pass as :data:`BATCH_PIXELS` and the budget allow."""
        batch = min(pictures, BATCH_PIXELS // (padded(h) * padded(w)))
        while batch > 1:
            candidate = plan(max(h, w), batch)
            if candidate.need <= budget:
                return candidate
            batch //= 2
        return whole

    if tile is not None:  # as asked: whole (0) or that tile
        return batched(plan(max(h, w))) if not tile or tile >= max(h, w) else plan(tile)
    smallest = max(MIN_TILE, 2 * overlap)
    if plan(max(h, w)).need <= budget or smallest >= max(h, w):
        return batched(plan(max(h, w)))
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
        self._precisions: Dict[int, str] = {}  # bits per sample -> the precision they run in
        self.num_feat = feature_channels(net)

    def _network(self, sample_bits: int) -> tuple:
        """``(network, dtype, cast)`` for images of ``sample_bits`` bits: bf16 on the CPU runs a bf16 copy of the
        network (one dtype end to end); other precisions run the float32 network (under autocast)."""
        if sample_bits not in self._precisions:  # (asked once: resolving auto queries the CPU)
            self._precisions[sample_bits] = resolve_precision(self.precision, self.device, sample_bits)
        precision = self._precisions[sample_bits]
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
        """Network output (h*s, w*s, 3) float32 numpy in [0, 1] for an integer (h, w, 3) RGB tile, or (B, h*s,
        w*s, 3) for a (B, h, w, 3) batch."""
        torch = self.torch
        net, dtype, cast = self._network(int(max_value).bit_length())
        batch = lr if lr.ndim == 4 else lr[None]
        x = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).to(self.device, torch.float32)
        x = x.div_(max_value)
        x = x.to(dtype) if cast else x
        mixed = not cast and dtype != torch.float32  # fp16 on CUDA, bf16 on a GPU: autocast
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=mixed):
            y = net(x).float()
            del x
            if not torch.isfinite(y).all():
                raise ValueError(f'the network produced NaN or Inf values with the weights of {self.source}: '
                                 'the checkpoint is unusable')
            y = y.clamp_(0, 1).permute(0, 2, 3, 1).cpu().numpy()
            return y if lr.ndim == 4 else y[0]

    def upscale_batch(self, jobs: Sequence[Tuple[np.ndarray, np.ndarray, bool]]) -> None:
        """Several whole pictures of one shape and type in one network pass: each job is ``(src, dest,
        reverse_channels)`` as in :meth:`upscale` (gray sources repeated to RGB)."""
        rgb = np.stack([src if src.ndim == 3 else np.repeat(src[:, :, None], 3, axis=2) for src, _, _ in jobs])
        out = self._run(rgb, np.iinfo(rgb.dtype).max)
        del rgb
        for (_, dest, reverse), values in zip(jobs, out):
            _store(dest, slice(0, dest.shape[0]), values, reverse)

    def upscale(self, src: np.ndarray, dest: np.ndarray, reverse_channels: bool, tile: Optional[int] = None) -> None:
        """Super-resolve ``src`` ((H, W, 3) RGB or (H, W) gray, integer) into ``dest`` ((H*s, W*s, 3) or
        (H*s, W*s), integer, written in place; a view into a larger array is fine). ``reverse_channels``
        writes RGB results as BGR. ``tile``: 0 whole, N tiles of N px, None this upscaler's setting."""
        s = self.scale
        h, w = src.shape[:2]
        max_in = np.iinfo(src.dtype).max
        gray = src.ndim == 2
        rgb = (lambda a: np.repeat(a[:, :, None], 3, axis=2)) if gray else (lambda a: a)

        def store(rows: slice, values: np.ndarray) -> None:
            _store(dest, rows, values, reverse_channels)

        t = self.tile if tile is None else tile
        if t is None:
            t = self.plan([_frame_of(src)], 0, False).tile
        if t == 0 or t >= max(h, w):
            store(slice(0, h * s), self._run(rgb(src), max_in))
            return
        from .console import progress_bar

        th, tw = min(t, h), min(t, w)
        tiles = len(tile_origins(h, th, self.overlap)) * len(tile_origins(w, tw, self.overlap))
        bar = progress_bar(total=tiles, desc='tiles', unit='tile', leave=False, disable=tiles < PROGRESS_MIN_TILES)

        def run(y: int, x: int, th: int, tw: int) -> np.ndarray:
            return self._run(rgb(src[y:y + th, x:x + tw]), max_in)

        try:
            tile_rows(run, (h, w), s, t, self.overlap, store, blend=RAMP, done=bar.update)
        finally:
            bar.close()


def _store(dest: np.ndarray, rows: slice, values: np.ndarray, reverse_channels: bool) -> None:
    """Float results in [0, 1] (an array of our own, changed in place) into ``dest`` rows, as integers of its type
    (gray: the mean of the three channels; ``reverse_channels``: RGB written as BGR)."""
    max_out = np.iinfo(dest.dtype).max
    values = values.mean(axis=2) if dest.ndim == 2 else values[:, :, ::-1] if reverse_channels else values
    np.multiply(values, max_out, out=values)
    np.rint(values, out=values)
    np.clip(values, 0, max_out, out=values)
    dest[rows] = values


def _frame_of(src: np.ndarray):
    from .image_reader import FrameInfo

    return FrameInfo(src.shape[1], src.shape[0], 1 if src.ndim == 2 else 3, False, src.dtype.itemsize)


# ----------------------------------------------------------------------------------------------
# One image
# ----------------------------------------------------------------------------------------------
def upscale_image(image, upscaler: Upscaler, plan: MemoryPlan) -> list:
    """Every picture of ``image`` (an :class:`~asid_arch.image_reader.ImageFile`) super-resolved: colour and alpha
    go into one interleaved array per picture (what the encoder takes, no copy to join them)."""
    from .image_reader import Picture

    s = upscaler.scale
    pictures = image.decode()
    image.data = b''  # the file's bytes are not needed any more
    results = []
    bar = progress_bar(total=len(pictures), desc='frames', unit='frame', leave=False,
                       disable=len(pictures) < PROGRESS_MIN_FRAMES)
    jobs: List[Tuple[np.ndarray, np.ndarray, bool]] = []  # whole pictures waiting for a batch

    def flush() -> None:
        if jobs:
            upscaler.upscale_batch(jobs)
            jobs.clear()

    for k, pic in enumerate(pictures):
        h, w = pic.size
        channels = (1 if pic.gray else 3) + (pic.alpha is not None)
        full = np.empty((h * s, w * s) + ((channels, ) if channels > 1 else ()), pic.color.dtype)
        if pic.alpha is None:
            color = full  # (H, W) gray or (H, W, 3)
        else:
            color = full[:, :, 0] if pic.gray else full[:, :, :3]
        work = [(pic.color if pic.gray else pic.color[:, :, ::-1], color, True)]
        alpha = None
        if pic.alpha is not None:
            alpha = full[:, :, -1]
            work.append((pic.alpha, alpha, False))
        for src, dest, reverse in work:
            if plan.batch <= 1:
                upscaler.upscale(src, dest, reverse_channels=reverse, tile=plan.tile)
                continue
            if jobs and (jobs[0][0].shape[:2] != src.shape[:2] or jobs[0][0].dtype != src.dtype):
                flush()  # a batch holds pictures of one shape and type
            jobs.append((src, dest, reverse))
            if len(jobs) >= plan.batch:
                flush()
        results.append(Picture(color, alpha, pic.duration, full if channels > 1 else None))
        pictures[k] = None  # the input picture is not needed any more (a waiting batch holds its arrays)
        bar.update()
    flush()
    bar.close()
    return results
