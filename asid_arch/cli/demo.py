"""The README's main job: a short, real ASID x2 training + validation on CPU.

1. ``asid-prepare demo``: scikit-image's bundled sample images -> HR/LR, sub-images, LMDB.
2. BasicSR's training pipeline with ``options/train/ASID/demo_ASID_SRx2_cpu.yml``
   (``--auto_resume``: an interrupted demo continues from its last checkpoint).
3. The trained model against bicubic up-sampling on the validation images (Y-channel PSNR), and a picture of it:
   ``experiments/<name>/visual_comparison.png`` (a crop of one validation image: bicubic | ASID | ground truth).

Run it from any folder (data, experiments and results go under the current one): ``python -m asid_arch.cli.demo``
(``make demo`` sets up the venv first).
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, List, NamedTuple, Optional, Sequence, Tuple

from ..console import command
from .usage import command_parser

if TYPE_CHECKING:  # numpy is imported with the work, after tune_cpu()
    import numpy as np

DEMO_OPTIONS = 'train/ASID/demo_ASID_SRx2_cpu.yml'  # shipped with the package
FIGURE_NAME = 'visual_comparison.png'
CROP = 128  # HR pixels of the crop shown in the figure
ZOOM = 2  # each crop pixel drawn as ZOOM x ZOOM pixels (nearest neighbour), so that the differences show
GAP = 6  # white pixels between the panels
LABEL_HEIGHT = 30  # the white band under the panels that holds the labels
PNG_COMPRESSION = 9  # zlib's highest: the figure is small enough to commit


class Evaluated(NamedTuple):
    """One validation image: its PSNRs (Y channel, dB) and the three pictures the figure shows (BGR uint8)."""
    name: str
    bicubic_psnr: float
    asid_psnr: float
    bicubic: np.ndarray
    asid: np.ndarray
    gt: np.ndarray


def evaluate(net_path: Path, opt: dict) -> List[Evaluated]:
    """Every validation pair of ``opt`` through bicubic up-sampling and the trained network (whole images)."""
    import torch

    from basicsr.archs import build_network
    from basicsr.metrics import calculate_psnr

    from asid_arch.data.prepare import bicubic_resize
    from asid_arch.evaluation import paired_images, super_resolve

    scale = opt['scale']
    net = build_network(dict(opt['network_g']))
    net.load_state_dict(torch.load(net_path, map_location='cpu', weights_only=True)['params'])
    net.eval()
    val = opt['datasets']['val']
    rows = []
    for name, gt, lr in paired_images(val['dataroot_gt'], val['dataroot_lq']):
        bicubic, sr = bicubic_resize(lr, scale), super_resolve(net, lr)
        psnr = [calculate_psnr(img, gt, scale, input_order='HWC', test_y_channel=True) for img in (bicubic, sr)]
        rows.append(Evaluated(name, *psnr, bicubic, sr, gt))
    return rows


def detailed_crop(bicubic: np.ndarray, gt: np.ndarray, size: int) -> Tuple[int, int]:
    """Top-left corner of the ``size`` px square where bicubic up-sampling loses most (largest mean absolute
    difference from the ground truth, on a grid of half-crop steps): where a better network can show."""
    import numpy as np

    error = np.abs(bicubic.astype(np.float32) - gt.astype(np.float32)).mean(axis=2)
    height, width = error.shape
    size = min(size, height, width)
    step = max(1, size // 2)
    corners = [(y, x) for y in range(0, height - size + 1, step) for x in range(0, width - size + 1, step)]
    return max(corners, key=lambda c: float(error[c[0]:c[0] + size, c[1]:c[1] + size].mean()))


def comparison_figure(panels: Sequence[Tuple[np.ndarray, str]], zoom: int = ZOOM) -> np.ndarray:
    """The panels (BGR uint8 images of one size, each with its label) side by side, magnified ``zoom`` times
    (nearest neighbour, so no smoothing is added), separated by ``GAP`` white columns, each label written in a
    white band under its panel. Returns the BGR uint8 figure."""
    import cv2
    import numpy as np

    shapes = {p.shape for p, _ in panels}
    if len(shapes) != 1 or any(p.dtype != np.uint8 or p.ndim != 3 or p.shape[2] != 3 for p, _ in panels):
        raise ValueError(f'the panels must be BGR uint8 images of one size, got {sorted(shapes)}')
    height, width = panels[0][0].shape[0] * zoom, panels[0][0].shape[1] * zoom
    figure = np.full((height + LABEL_HEIGHT, len(panels) * width + (len(panels) - 1) * GAP, 3), 255, np.uint8)
    font, font_scale, thickness = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1
    for i, (panel, label) in enumerate(panels):
        left = i * (width + GAP)
        figure[:height, left:left + width] = cv2.resize(panel, (width, height), interpolation=cv2.INTER_NEAREST)
        (text_width, text_height), _ = cv2.getTextSize(label, font, font_scale, thickness)
        origin = (left + max(0, (width - text_width) // 2), height + (LABEL_HEIGHT + text_height) // 2)
        cv2.putText(figure, label, origin, font, font_scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return figure


def write_comparison(row: Evaluated, path: Path) -> None:
    """The figure of one validation image: the crop where bicubic loses most, bicubic | ASID | ground truth,
    labelled with the whole image's PSNR; written atomically as PNG."""
    import cv2

    from asid_arch.image_writer import imwrite_atomic

    y, x = detailed_crop(row.bicubic, row.gt, CROP)
    size = min(CROP, *row.gt.shape[:2])
    crop = (slice(y, y + size), slice(x, x + size))
    figure = comparison_figure([(row.bicubic[crop], f'bicubic {row.bicubic_psnr:.2f} dB'),
                                (row.asid[crop], f'ASID {row.asid_psnr:.2f} dB'),
                                (row.gt[crop], 'ground truth')])
    path.parent.mkdir(parents=True, exist_ok=True)
    imwrite_atomic(path, figure, (cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION))


@command('[demo]', '; run it again to continue (prepared data and saved checkpoints are kept)')
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = command_parser('python -m asid_arch.cli.demo', __doc__)
    parser.add_argument('-opt', type=Path, default=None, help=f'demo option file (default: the shipped {DEMO_OPTIONS})')
    args = parser.parse_args(argv)

    from asid_arch.cpu_settings import tune_cpu

    tune_cpu()  # before torch is imported
    from asid_arch.pipeline.options_reading import OptionFileError, read_option_file, shipped_option_file
    from asid_arch.pipeline.options_values import check_structure

    try:
        args.opt = args.opt or shipped_option_file(DEMO_OPTIONS)
        opt = read_option_file(args.opt)  # data only: the demo reads it before the training's own checks
    except OptionFileError as err:
        print(f'[demo] {err}', file=sys.stderr)
        return 2
    problems = check_structure(opt, is_train=True)
    if problems:
        print(f'[demo] invalid options in {args.opt}:\n' + '\n'.join(f'  - {p}' for p in problems), file=sys.stderr)
        return 2
    data_root = Path(opt['datasets']['train']['dataroot_gt']).parent
    from asid_arch.data.prepare import prepare_demo

    print(f'[demo] 1/3 preparing the embedded data set in {data_root}', flush=True)
    report = prepare_demo(data_root, scales=(opt['scale'], ))
    if report.failed:
        print(f'[demo] could not prepare: {report.failed}', file=sys.stderr)
        return 1

    print(f"[demo] 2/3 training {opt['name']} ({opt['train']['total_iter']} iterations, CPU)", flush=True)
    from asid_arch.cli.train import main as train_main

    start = time.time()
    train_main(['-opt', str(args.opt), '--auto_resume'])
    seconds = time.time() - start

    print('[demo] 3/3 ASID vs bicubic on the validation images', flush=True)
    experiment = Path('experiments') / opt['name']
    rows = evaluate(experiment / 'models' / 'net_g_latest.pth', opt)
    print(f"\n{'image':<12} {'bicubic':>9} {'ASID':>9}   (Y-channel PSNR, dB, border {opt['scale']})")
    for row in rows:
        print(f'{row.name:<12} {row.bicubic_psnr:9.2f} {row.asid_psnr:9.2f}')
    mean_bic, mean_sr = statistics.mean(r.bicubic_psnr for r in rows), statistics.mean(r.asid_psnr for r in rows)
    print(f"{'mean':<12} {mean_bic:9.2f} {mean_sr:9.2f}   ({mean_sr - mean_bic:+.2f} dB)")
    print(f'[demo] training + validation took {seconds:.0f} s; logs and checkpoints in {experiment}')
    if rows:
        figure = experiment / FIGURE_NAME
        write_comparison(rows[0], figure)
        print(f'[demo] picture: {figure} ({rows[0].name}: bicubic | ASID | ground truth)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
