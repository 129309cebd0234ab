"""``ASIDModel``: BasicSR's ``SRModel`` plus what ASID's protocol and CPU training need.

* tiled validation/testing (``val: {tile: {size: 64, overlap: 24}}``), the reference protocol;
  without ``tile``, whole-image inference as SRModel's;
* DistributedDataParallel on CPU (gloo) as well as on CUDA;
* every ``torch.optim`` optimizer by name (BasicSR 1.4.2 knows only ``Adam``; the released
  recipe uses ``AdamW``);
* atomic checkpoints: ``net_g_*.pth`` and ``*.state`` are written to a temporary file and renamed,
  so a run killed while saving never leaves a truncated file for ``--auto_resume`` to pick up;
* a loss that becomes NaN or infinite stops the run before the optimizer step (the weights and
  the last checkpoint stay as they were) with :class:`TrainingDiverged`.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch
from torch.nn.parallel import DataParallel, DistributedDataParallel

from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import MODEL_REGISTRY

from ..fileio import atomic_write
from ..tiling import DEFAULT_OVERLAP, DEFAULT_TILE, tile_forward

LOSS_ATTRIBUTES = ('cri_pix', 'cri_perceptual')  # SRModel's loss modules


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite."""


@contextlib.contextmanager
def atomic_torch_save() -> Iterator[None]:
    """Within the block, ``torch.save(obj, path)`` writes a temporary file and renames it."""
    original = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):
            return atomic_write(f, lambda handle: original(obj, handle, *args, **kwargs))
        return original(obj, f, *args, **kwargs)

    torch.save = save
    try:
        yield
    finally:
        torch.save = original


@MODEL_REGISTRY.register()
class ASIDModel(SRModel):
    """SRModel with optional tiled inference and CPU-capable distributed training."""

    def init_training_settings(self) -> None:
        super().init_training_settings()
        self._iter = 0
        for name in LOSS_ATTRIBUTES:
            loss = getattr(self, name, None)
            if isinstance(loss, torch.nn.Module):
                loss.register_forward_hook(self._make_finite_check(name))

    def _make_finite_check(self, name: str):
        def check(module, args, output):
            values = output if isinstance(output, (tuple, list)) else (output, )
            for value in values:
                if isinstance(value, torch.Tensor) and not torch.isfinite(value).all():
                    raise TrainingDiverged(
                        f'{name} became {value.detach().float().sum().item()} at iteration {self._iter}: training '
                        f'stopped before the optimizer step. The checkpoints in {self.opt["path"]["models"]} are '
                        'intact; lower the learning rate or check the data, then resume with --auto_resume.')
        return check

    def optimize_parameters(self, current_iter: int) -> None:
        self._iter = current_iter
        super().optimize_parameters(current_iter)

    def save_network(self, *args, **kwargs) -> None:
        with atomic_torch_save():
            super().save_network(*args, **kwargs)

    def save_training_state(self, *args, **kwargs) -> None:
        with atomic_torch_save():
            super().save_training_state(*args, **kwargs)

    def model_to_device(self, net: torch.nn.Module) -> torch.nn.Module:
        net = net.to(self.device)
        if self.opt['dist']:
            find_unused = self.opt.get('find_unused_parameters', False)
            device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
            net = DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused)
        elif self.opt['num_gpu'] > 1:
            net = DataParallel(net)
        return net

    def get_optimizer(self, optim_type: str, params, lr: float, **kwargs) -> torch.optim.Optimizer:
        optimizer_cls = getattr(torch.optim, optim_type, None)
        if not (isinstance(optimizer_cls, type) and issubclass(optimizer_cls, torch.optim.Optimizer)):
            raise ValueError(f'train: optim_g: type: {optim_type!r} is not an optimizer of torch.optim '
                             '(e.g. Adam, AdamW, SGD)')
        return optimizer_cls(params, lr, **kwargs)

    def test(self) -> None:
        """Inference on ``self.lq``: whole image, or tiled when ``val: tile: {size, overlap}`` is set.

        Runs the bare network (not its DDP wrapper): BasicSR validates on rank 0 alone, and a DDP
        forward would broadcast buffers to ranks that are not there.
        """
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.get_bare_model(self.net_g)
        tile = (self.opt.get('val') or {}).get('tile')
        was_training = net.training
        net.eval()
        with torch.no_grad():
            if tile:
                self.output = tile_forward(net, self.lq, self.opt['scale'], tile.get('size', DEFAULT_TILE),
                                           tile.get('overlap', DEFAULT_OVERLAP))
            else:
                self.output = net(self.lq)
        net.train(was_training)
