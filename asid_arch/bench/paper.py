"""``asid-bench paper``: the measured PSNR/SSIM of given checkpoints beside the published figures.

The reference protocol, as the published tables measure: each prepared LR image
(``{datasets}/{set}/LRbicx{s}``, made by ``asid-prepare bench``) super-resolved in LR tiles of the
reference size and overlap, averaged where they overlap (the one tiler's defaults); Y-channel PSNR with
MATLAB's rounding (the package's ``calculate_psnr_matlab``) and Y-channel SSIM (BasicSR's), border =
scale, averaged over the set. Each row: the measured figures, the published ones (:mod:`.published`;
a figure with no traced source is shown as not published, never estimated), the difference and the
source. With ``--out``: ``paper.md``, ``paper.csv`` and ``paper_vs_published.png`` (measured and
published points marked apart).
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..console import EXIT_FAILED, EXIT_OK, EXIT_USAGE, shown
from .common import outputs_problem, write_output
from .figures import PLOT_SET
from .networks import ASID_FAMILY, checked_networks, prepared_pair
from .published import PublishedFigure, published

NOT_PUBLISHED = 'not published'
NO_FIGURE = '-'
PAPER_OUTPUTS = ('paper.md', 'paper.csv', 'paper_vs_published.png')
CSV_FIELDS = ['model', 'scale', 'dataset', 'network', 'checkpoint', 'images', 'psnr', 'psnr_published', 'psnr_diff',
              'ssim', 'ssim_published', 'ssim_diff', 'source']


@dataclass
class Comparison:
    """One model, scale and data set: measured figures and the published ones."""
    model: str
    scale: int
    dataset: str
    network: str  # what the weights are (e.g. 'ASID x2', 'ASID (1 IDBs) x2')
    checkpoint: str
    images: int
    psnr: float
    ssim: float
    params: int
    reference: Optional[PublishedFigure]

    @property
    def psnr_diff(self) -> Optional[float]:
        return None if self.reference is None or self.reference.psnr is None else self.psnr - self.reference.psnr

    @property
    def ssim_diff(self) -> Optional[float]:
        return None if self.reference is None or self.reference.ssim is None else self.ssim - self.reference.ssim


def reference_sr(net, lq, scale: int, device: str):
    """A BGR uint8 LR image super-resolved with the reference protocol (tiles averaged); BGR uint8 out."""
    import numpy as np
    import torch

    from basicsr.utils import img2tensor, tensor2img

    from ..utils.asid_tiling import PROTOCOL_OVERLAP as DEFAULT_OVERLAP
    from ..utils.asid_tiling import PROTOCOL_TILE as DEFAULT_TILE
    from ..utils.asid_tiling import tile_forward

    x = img2tensor(lq.astype(np.float32) / 255.0)[None].to(device)
    with torch.inference_mode():
        return tensor2img(tile_forward(net, x, scale, DEFAULT_TILE, DEFAULT_OVERLAP))


Measured = Tuple[List[float], List[float], List[str]]  # per-image PSNR, SSIM, and the images that failed


def evaluate_set(net, scale: int, gt_dir: Path, lq_dir: Path, device: str) -> Measured:
    """Per-image Y-PSNR (MATLAB rounding) and Y-SSIM of one prepared set, and a line per image that could
    not be measured (unreadable, missing LR, sizes that do not match the scale)."""
    from basicsr.metrics import calculate_ssim

    from ..evaluation import paired_images
    from ..metrics.asid_metric import calculate_psnr_matlab

    psnr, ssim, failed = [], [], []
    for stem, gt, lq in paired_images(gt_dir, lq_dir):
        if gt is None or lq is None:
            failed.append(f'{shown(gt_dir.parent)}: {stem}: unreadable or missing (GT or LR)')
            continue
        if gt.shape[:2] != (lq.shape[0] * scale, lq.shape[1] * scale):
            failed.append(f'{shown(gt_dir.parent)}: {stem}: GT {gt.shape[1]}x{gt.shape[0]} is not x{scale} of LR '
                          f'{lq.shape[1]}x{lq.shape[0]}')
            continue
        sr = reference_sr(net, lq, scale, device)
        psnr.append(calculate_psnr_matlab(sr, gt, scale, input_order='HWC'))
        ssim.append(calculate_ssim(sr, gt, scale, input_order='HWC', test_y_channel=True))
    return psnr, ssim, failed


def compare_with_paper(nets: Dict[Tuple[str, int], object], checkpoints: Dict[Tuple[str, int], Path],
                       datasets: Path, sets: Sequence[str], device: str) -> Tuple[List[Comparison], List[str]]:
    """Every checkpoint on every prepared set of its scale: the comparison rows, and the failures."""
    import numpy as np

    rows, failed = [], []
    for (model, scale), net in nets.items():
        net = net.to(device)
        params = sum(p.numel() for p in net.parameters())
        for name in sets:
            pair = prepared_pair(datasets, name, scale)
            if pair is None:
                continue
            psnr, ssim, bad = evaluate_set(net, scale, *pair, device)
            failed += bad
            if psnr:
                rows.append(Comparison(model, scale, name, net.network_name, checkpoints[(model, scale)].name,
                                       len(psnr), float(np.mean(psnr)), float(np.mean(ssim)), params,
                                       published(model, scale, name)))
    return rows, failed


def _figure(value: Optional[float], digits: int, missing: str = NOT_PUBLISHED, signed: bool = False) -> str:
    if value is None:
        return missing
    return f'{value:+.{digits}f}' if signed else f'{value:.{digits}f}'


def table(rows: Sequence[Comparison]) -> List[str]:
    """The comparison as Markdown lines: one row per model, scale and set, then the sources."""
    sources: List[str] = []
    lines = ['| model | scale | data set | network (from the weights) | images | PSNR (Y) | published | difference | '
             'SSIM (Y) | published | difference | source |', '|' + '---|' * 12]
    for r in rows:
        ref = r.reference
        mark = NO_FIGURE
        if ref is not None:
            if str(ref.source) not in sources:
                sources.append(str(ref.source))
            mark = f'[{sources.index(str(ref.source)) + 1}]'
        lines.append(f'| {r.model} | x{r.scale} | {r.dataset} | {r.network} | {r.images} | {r.psnr:.2f} | '
                     f'{_figure(ref and ref.psnr, 2)} | {_figure(r.psnr_diff, 2, NO_FIGURE, True)} | {r.ssim:.4f} | '
                     f'{_figure(ref and ref.ssim, 4)} | {_figure(r.ssim_diff, 4, NO_FIGURE, True)} | {mark} |')
    lines += [''] + [f'[{i}] {s}' for i, s in enumerate(sources, 1)]
    return lines


def write_paper_outputs(out: Path, rows: Sequence[Comparison], lines: Sequence[str]) -> None:
    """paper.md, paper.csv and the plot of measured and published points."""
    from . import plots
    from .common import machine

    out.mkdir(parents=True, exist_ok=True)
    write_output(out / 'paper.md', '\n'.join([f'Measured on: {machine()}', '', *lines]) + '\n')
    table = io.StringIO(newline='')
    writer = csv.DictWriter(table, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for r in rows:
        ref = r.reference
        writer.writerow({'model': r.model, 'scale': r.scale, 'dataset': r.dataset, 'network': r.network,
                         'checkpoint': r.checkpoint, 'images': r.images, 'psnr': r.psnr, 'ssim': r.ssim,
                         'psnr_published': '' if ref is None or ref.psnr is None else ref.psnr,
                         'ssim_published': '' if ref is None or ref.ssim is None else ref.ssim,
                         'psnr_diff': '' if r.psnr_diff is None else r.psnr_diff,
                         'ssim_diff': '' if r.ssim_diff is None else r.ssim_diff,
                         'source': '' if ref is None else str(ref.source)})
    write_output(out / 'paper.csv', table.getvalue())
    measured = [{'model': r.model, 'scale': r.scale, 'params': r.params, 'psnr': r.psnr,
                 'label': f'{r.model} (measured: {r.checkpoint})'} for r in rows if r.dataset == PLOT_SET]
    plots.psnr_vs_params(out / 'paper_vs_published.png', measured, sorted({r.scale for r in rows}))


def paper(args: argparse.Namespace) -> int:
    """``asid-bench paper``: every argument and checkpoint checked before any image is measured."""
    device = args.device or 'cpu'
    problem = outputs_problem(args.out, PAPER_OUTPUTS) if args.out is not None else ''
    if problem:
        print(f'asid-bench: error: {problem}', file=sys.stderr)
        return EXIT_USAGE
    checked = checked_networks(args.checkpoint, args.datasets, args.sets)
    if checked is None:
        return EXIT_USAGE
    checkpoints, nets = checked
    for (model, scale), loaded in nets.items():
        network = loaded.network_name
        if model in ASID_FAMILY and not network.startswith(f'{model} x'):
            print(f'asid-bench: note: --checkpoint {model}:{scale}: the weights are {network}, not the released '
                  f'{model}: the published figures are of the released one', file=sys.stderr)
    for scale in sorted({s for _, s in checkpoints}):
        absent = [name for name in args.sets if prepared_pair(args.datasets, name, scale) is None]
        if absent:
            print(f'asid-bench: note: not prepared at x{scale} under {shown(args.datasets)}, left out: '
                  f'{", ".join(absent)}', file=sys.stderr)
    rows, failed = compare_with_paper(nets, checkpoints, args.datasets, args.sets, device)
    lines = table(rows)
    print('\n'.join(lines))
    if args.out is not None:
        write_paper_outputs(args.out, rows, lines)
        print(f'asid-bench: wrote {args.out}/paper.md, paper.csv, paper_vs_published.png')
    for line in failed:
        print(f'asid-bench: failed: {line}', file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK
