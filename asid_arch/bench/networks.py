"""The zoo's networks for ``asid-bench``: each built by name and scale (ASID, ASID-D8, SwinIR-light, Omni-SR),
checkpoints named on the command line read through the package's checked loading, and the prepared benchmark
pairs they are evaluated on."""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence, Set, Tuple

import torch
from torch import nn

from ..console import shown
from ..utils.asid_errors import PretrainedWeightsError
from ..utils.asid_weights_loading import BASICSR_PARAM_KEYS, match_weights, read_weights, weights_for
from .figures import ZOO_MODELS

SWINIR_WINDOW = 8
SWINIR_IMG_SIZE = 64  # the released SwinIR-light models' img_size (their LR training patch)
ASID_FAMILY = {'ASID': 3, 'ASID-D8': 8}  # the released configurations' IDB counts, by name


class WindowPadded(nn.Module):
    """Pads the input to a multiple of the window by mirroring (SwinIR's test protocol), crops the output."""

    def __init__(self, net: nn.Module, scale: int, window: int = SWINIR_WINDOW) -> None:
        super().__init__()
        self.net, self.scale, self.window = net, scale, window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.window, (-w) % self.window
        x = torch.cat([x, x.flip(2)], 2)[:, :, :h + ph]
        x = torch.cat([x, x.flip(3)], 3)[:, :, :, :w + pw]
        return self.net(x)[..., :h * self.scale, :w * self.scale]


def build_model(name: str, scale: int, swinir_img_size: int = SWINIR_IMG_SIZE) -> nn.Module:
    """The released configuration of a zoo model (random weights); SwinIR-light with the training patch size its
    attention masks were made for (``img_size``, 64 in the released light models)."""
    from ..archs.asid_arch import ASID
    from ..archs.omnisr_arch import OmniSR

    if name == 'ASID':
        return ASID(upscale=scale, num_blocks=3)
    if name == 'ASID-D8':
        return ASID(upscale=scale, num_blocks=8)
    if name == 'Omni-SR':
        return OmniSR(upscale=scale)
    if name == 'SwinIR-light':
        from basicsr.archs.swinir_arch import SwinIR

        return WindowPadded(SwinIR(upscale=scale, in_chans=3, img_size=swinir_img_size, window_size=SWINIR_WINDOW,
                                   img_range=1.0,
                                   depths=[6, 6, 6, 6], embed_dim=60, num_heads=[6, 6, 6, 6], mlp_ratio=2,
                                   upsampler='pixelshuffledirect', resi_connection='1conv'), scale)
    raise ValueError(f'unknown model {name!r}; choose from {", ".join(ZOO_MODELS)}')


def unwrapped(net: nn.Module) -> nn.Module:
    """The network whose weights a checkpoint holds (SwinIR without its padding wrapper)."""
    return net.net if isinstance(net, WindowPadded) else net


def param_count(name: str, scale: int) -> int:
    """Parameters of the released configuration, counted on the meta device where it builds there (nothing
    allocated)."""
    try:
        with torch.device('meta'):
            net = build_model(name, scale)
    except (RuntimeError, NotImplementedError):  # a model that computes values while being built
        net = build_model(name, scale)
    return sum(p.numel() for p in net.parameters())


def parse_checkpoints(specs: Sequence[str]) -> Optional[Dict[Tuple[str, int], Path]]:
    """``MODEL:SCALE=PATH`` specs -> {(model, scale): path}; None (after one line on stderr) for a bad one."""
    checkpoints: Dict[Tuple[str, int], Path] = {}
    for spec in specs:
        key, sep, path = spec.partition('=')
        model, _, scale = key.rpartition(':')
        if not sep or not path or not scale.isdigit() or int(scale) not in (2, 3, 4):
            print(f'asid-bench: --checkpoint {spec!r} is not MODEL:SCALE=PATH (scale 2, 3 or 4), e.g. '
                  'ASID:2=net_g_latest.pth', file=sys.stderr)
            return None
        if model not in ZOO_MODELS:
            print(f'asid-bench: --checkpoint {spec!r}: unknown model {model!r} (choose from {", ".join(ZOO_MODELS)})',
                  file=sys.stderr)
            return None
        if (model, int(scale)) in checkpoints:
            print(f'asid-bench: --checkpoint {model}:{scale} is given twice', file=sys.stderr)
            return None
        checkpoints[(model, int(scale))] = Path(path)
    return checkpoints


def load_checked(model: str, scale: int, path: Path):
    """The network of ``model`` at ``scale`` with the weights of ``path``, read through the package's checked
    loading (safe ``torch.load``, NaN/Inf, every key, shape and kind of number matched strictly).
    ASID weights decide their own network (width, IDBs, variant); the others load into the released
    configuration. A :class:`PretrainedWeightsError` with a one-line reason otherwise."""
    from ..from_weights import network_from_file

    if not path.is_file():
        raise PretrainedWeightsError(f'{shown(path)}: no such file')
    if model in ASID_FAMILY:
        net, config = network_from_file(path)
        if config.upscale != scale:
            raise PretrainedWeightsError(f'{shown(path)} holds x{config.upscale} weights, not x{scale}')
        net.network_name = f'{config.variant} x{config.upscale}'
        return net
    if model == 'SwinIR-light':  # one read: its masks, saved with the weights, give the patch it was trained on
        state, _ = read_weights(path, BASICSR_PARAM_KEYS)  # (SwinIR's keys need no conversion)
        masks = [v for k, v in state.items() if k.endswith('attn_mask')]
        img_size = SWINIR_WINDOW * math.isqrt(masks[0].shape[0]) if masks and masks[0].dim() == 3 else SWINIR_IMG_SIZE
        net = build_model(model, scale, img_size)
    else:
        net = build_model(model, scale)
        state, _ = weights_for(unwrapped(net), path, BASICSR_PARAM_KEYS)
    target = unwrapped(net)
    problems = match_weights(target, state, shown(path))
    if problems:
        raise PretrainedWeightsError('; '.join(problems))
    target.load_state_dict(state, strict=True)
    net.network_name = f'{model} x{scale}'
    return net.eval()


def prepared_pair(datasets: Path, name: str, scale: int) -> Optional[Tuple[Path, Path]]:
    """``(GTmod{s}, LRbicx{s})`` folders of a set prepared by ``asid-prepare bench``, or None."""
    gt_dir, lq_dir = datasets / name / f'GTmod{scale}', datasets / name / f'LRbicx{scale}'
    return (gt_dir, lq_dir) if gt_dir.is_dir() and lq_dir.is_dir() else None


def unusable_datasets(datasets: Path, sets: Sequence[str], scales: Set[int]) -> bool:
    """True (after one line on stderr) when ``--datasets`` holds none of ``sets`` prepared at one of ``scales``."""
    if not datasets.is_dir():
        print(f'asid-bench: --datasets {shown(datasets)}: no such folder (prepare the benchmark sets with '
              '`asid-prepare bench --hr .../Set5/HR ... --out DIR`, then give --datasets DIR)', file=sys.stderr)
        return True
    for scale in sorted(scales):
        if not any(prepared_pair(datasets, name, scale) for name in sets):
            print(f'asid-bench: --datasets {shown(datasets)}: none of {", ".join(sets)} is prepared at x{scale} '
                  f'(no {{set}}/GTmod{scale} and {{set}}/LRbicx{scale}: run `asid-prepare bench --scales {scale}`)',
                  file=sys.stderr)
            return True
    return False


def checked_networks(specs: Sequence[str], datasets: Path, sets: Sequence[str], need_sets: bool = True):
    """``--checkpoint MODEL:SCALE=PATH ...`` read and checked before any measurement, with the prepared sets they
    need: ``({(model, scale): path}, {(model, scale): loaded})``, or None after one line on stderr for the first
    problem (exit 2)."""
    checkpoints = parse_checkpoints(specs)
    if checkpoints is None:
        return None
    if (checkpoints or need_sets) and unusable_datasets(datasets, sets, {s for _, s in checkpoints}):
        return None
    nets = {}
    for (model, scale), path in checkpoints.items():
        try:
            nets[(model, scale)] = load_checked(model, scale, path)
        except PretrainedWeightsError as err:
            print(f'asid-bench: --checkpoint {model}:{scale}: {err}', file=sys.stderr)
            return None
    return checkpoints, nets
