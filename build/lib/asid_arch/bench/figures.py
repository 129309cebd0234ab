"""What the figures are: model names, output sizes, the speed figures' inputs. Light (no PyTorch), so that
the argument parser can offer them as choices without loading anything."""
from __future__ import annotations

import argparse
from typing import Tuple

ZOO_MODELS = ('ASID', 'ASID-D8', 'SwinIR-light', 'Omni-SR')
DEFAULT_SIZES = ('320x180', '640x360', '1280x720')  # output sizes (W x H) of the zoo's latency figures
MACS_OUTPUT = (1280, 720)  # MACs counted for this output size: the paper's Table 2 convention
BENCHMARK_SETS = ('Set5', 'Set14', 'B100', 'BSD68', 'Urban100', 'Manga109')  # prepared by `asid-prepare bench`
PLOT_SET = 'Urban100'  # the set of the paper's Fig. 1 (PSNR against parameters)

# the speed figures: ASID inference at two scales and one x2 training step
SPEED_FIGURES = ('x4', 'x2', 'step', 'step-fused')
FIGURE_SCALE = {'x4': 4, 'x2': 2, 'step': 2}
FIGURE_INPUT = {'x4': (320, 180), 'x2': (640, 360)}  # LR width, height of the inference figures
FIGURE_LABEL = {'x4': 'inference x4 320x180 -> 1280x720', 'x2': 'inference x2 640x360 -> 1280x720',
                'step': 'training step x2, batch 16, 64x64 LR, Adam'}
STEP_BATCH, STEP_LR_PATCH = 16, 64  # the training step's batch and LR patch size


def parse_size(text: str) -> Tuple[int, int]:
    """``WIDTHxHEIGHT`` -> ``(width, height)``, both positive."""
    try:
        w, h = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'size {text!r} is not WIDTHxHEIGHT') from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f'size {text!r}: width and height must be positive')
    return w, h
