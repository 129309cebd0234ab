"""``ASIDModel``: BasicSR's ``SRModel`` plus what ASID's protocol and CPU training need.

* tiled validation/testing (``val: {tile: {size: 64, overlap: 24}}``), the reference protocol;
  without ``tile``, whole-image inference as SRModel's;
* DistributedDataParallel on CPU (gloo) as well as on CUDA;
* every ``torch.optim`` optimizer by name (BasicSR 1.4.2 knows only ``Adam``; the released
  recipe uses ``AdamW``).
"""
from __future__ import annotations

import torch
from torch.nn.parallel import DataParallel, DistributedDataParallel

from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import MODEL_REGISTRY

from ..tiling import DEFAULT_OVERLAP, DEFAULT_TILE, tile_forward


@MODEL_REGISTRY.register()
class ASIDModel(SRModel):
    """SRModel with optional tiled inference and CPU-capable distributed training."""

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
