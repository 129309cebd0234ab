"""``ASIDModel``: BasicSR's ``SRModel`` plus what ASID's protocol and reliable training need.

Kit file: copied into ``basicsr/models/`` of a BasicSR checkout by ``asid-kit install`` (with the other
kit files it imports, relatively: ``utils/asid_*.py``, ``metrics/asid_metric.py``, ``archs/asid_*.py``),
where BasicSR's model scanner imports it. What differs from ``SRModel``:

* tiled validation/testing (``val: {tile: {size: 64, overlap: 24}}``), the reference protocol
  (``utils/asid_tiling.py``); without ``tile``, whole-image inference as SRModel's;
* DistributedDataParallel on CPU (gloo) as well as on CUDA;
* every ``torch.optim`` optimizer by name (BasicSR knows a fixed list; the released recipe uses
  ``AdamW``);
* checkpoints written atomically (``utils/asid_files.py``: a run killed while saving never leaves a
  truncated file for ``--auto_resume``); a checkpoint that cannot be written stops the run with
  :class:`~asid_arch.utils.asid_errors.CheckpointSaveError` (BasicSR logs "Just ignore it." and trains on
  without checkpoints);
* stale temporaries of a killed run removed from the experiment's folders at start;
* ``pretrain_network_g`` loaded safely (``utils/asid_weights_loading.py``: what the file declares is checked before
  torch reads it, then ``weights_only``), any key layout the network knows converted *before* the key
  comparison, every problem reported as one :class:`PretrainedWeightsError` naming the file;
  ``network_g: position_bias / channel_attention: auto`` read off those weights;
* a loss that becomes NaN or infinite stops the run before the optimizer step (the weights and
  the last checkpoint stay as they were) with :class:`TrainingDiverged`;
* exact resume: the training state also holds every rank's random states (``utils/asid_random.py``), restored
  per rank by ``resume_training``, the best validation figures (``best_metric_results``: the "Best:" of the
  validation log continues), and whatever the training loop sets in ``resume_extras`` (asid-train: the
  position in the epoch and the seed); validation leaves the random sequence of training as it was;
* mixed precision (``train: amp: bf16 | fp16``, ``utils/asid_precision.py``): autocast for the network's
  forward pass in training and validation; the loss, the gradients and the optimizer state stay float32;
  fp16 (CUDA only) scales the loss with a ``GradScaler`` whose state is saved with the training state and
  resumed;
* ``train: compile: true`` (or a dict of ``torch.compile`` arguments): the training forward pass
  runs compiled; validation and testing run the eager network (their image sizes vary, and each
  new size would recompile);
* the metric ``calculate_psnr_matlab`` (``metrics/asid_metric.py``, imported here because BasicSR does not
  scan a metrics folder).
"""
from __future__ import annotations

import os
import time
from collections import OrderedDict
from typing import Optional

import torch
from torch import Tensor
from torch.nn.parallel import DataParallel, DistributedDataParallel

from ..utils.asid_compat import register_once  # isort: skip  (first: installs the torchvision alias)

from basicsr.models.sr_model import SRModel  # after the alias
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY

from ..archs import asid_arch, omnisr_arch  # noqa: F401  (registers ASID, ASID-D8 and OmniSR: build_network)
from ..archs.asid_layouts import resolve_variant_options
from ..metrics import asid_metric  # noqa: F401  (registers calculate_psnr_matlab)
from ..utils.asid_errors import PretrainedWeightsError, TrainingDiverged, printable
from ..utils.asid_files import remove_stale_temporaries, save_checkpoint
from ..utils.asid_precision import autocast_dtype, compile_arguments
from ..utils.asid_random import (gather_random_states, preserved_random_states, random_states_problem,
                                 restore_random_states)
from ..utils.asid_tiling import PROTOCOL_OVERLAP, PROTOCOL_TILE, tile_forward
from ..utils.asid_weights_loading import dtype_mismatches, match_weights, weights_for

LOSS_ATTRIBUTES = ('cri_pix', 'cri_perceptual')  # SRModel's loss modules
BEST_KEY = 'best_metric_results'  # BasicSR's best validation figures: {dataset: {metric: {better, val, iter}}}
BETTER = ('higher', 'lower')


def best_metric_results_problem(value: object) -> Optional[str]:
    """Why ``value`` (read from a training state) is not what :meth:`ASIDModel.save_training_state` writes as
    ``best_metric_results`` (names to plain ``{'better': 'higher' | 'lower', 'val': number, 'iter': int >= -1}``),
    or None."""
    if not isinstance(value, dict):
        return f'{BEST_KEY} is {type(value).__name__}, not a dict of datasets'
    for dataset, records in value.items():
        if not isinstance(dataset, str) or not isinstance(records, dict):
            return f'{BEST_KEY}: {repr(dataset)[:60]} is not a dataset name with its metrics'
        for metric, record in records.items():
            where = f'{BEST_KEY}: {repr(dataset)[:60]}: {repr(metric)[:60]}'
            if not isinstance(metric, str) or not isinstance(record, dict) or set(record) != {'better', 'val', 'iter'}:
                return f'{where} is not a record of better, val and iter'
            val, iteration = record['val'], record['iter']
            if record['better'] not in BETTER or isinstance(val, bool) or not isinstance(val, (int, float)) or \
                    isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < -1:
                return f'{where} holds {repr(record)[:80]}'
    return None


class ASIDModel(SRModel):
    """SRModel with tiled inference, safe weight loading, checkpoints that never fail silently and
    CPU-capable distributed training."""

    def __init__(self, opt: dict) -> None:
        if opt.get('is_train') and opt.get('rank', 0) == 0:
            for key in ('models', 'training_states'):
                if opt['path'].get(key):
                    remove_stale_temporaries(opt['path'][key])
        resolved = resolve_variant_options(opt)
        if resolved:
            get_root_logger().info(resolved)
        self.resume_extras: dict = {}  # entries the training loop adds to the next training state
        self._random_states = None
        super().__init__(opt)

    # -- training -------------------------------------------------------------------------------
    def init_training_settings(self) -> None:
        super().init_training_settings()
        self._iter = 0
        for name in LOSS_ATTRIBUTES:
            loss = getattr(self, name, None)
            if isinstance(loss, torch.nn.Module):
                loss.register_forward_hook(self._make_finite_check(name))
        train_opt = self.opt['train']
        self.amp_dtype = autocast_dtype(train_opt.get('amp'), self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        kwargs = compile_arguments(train_opt.get('compile'))
        self._compile_pending = kwargs is not None
        self.net_g_train = torch.compile(self.net_g, **kwargs) if kwargs is not None else self.net_g
        if kwargs is not None and self.device.type == 'cpu':
            get_root_logger().warning(
                'train: compile on a CPU: the compiled training step can be slower than the eager one (eager uses '
                'oneDNN kernels that step aside under compile), after minutes of compilation. Measure both '
                '(asid-bench) before keeping compile on CPUs.')
        if self.amp_dtype is not None or kwargs is not None:
            get_root_logger().info(f'Training with amp: {train_opt.get("amp") or "off"}'
                                   f'{", grad scaler" if self.scaler.is_enabled() else ""}; compile: {kwargs}')

    def autocast(self):
        """Autocast to ``train: amp:``'s dtype (a no-op without it; validation uses it too)."""
        dtype = getattr(self, 'amp_dtype', None)
        return torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

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
        """SRModel's step with the network's forward pass under autocast (losses in float32) and, for
        fp16, the loss scaled by the grad scaler."""
        self._iter = current_iter
        start = time.perf_counter()
        self.optimizer_g.zero_grad()
        with self.autocast():
            output = self.net_g_train(self.lq)
        self.output = output.float()
        l_total = 0
        loss_dict = OrderedDict()
        if self.cri_pix:
            l_pix = self.cri_pix(self.output, self.gt)
            l_total += l_pix
            loss_dict['l_pix'] = l_pix
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(self.output, self.gt)
            for name, value in (('l_percep', l_percep), ('l_style', l_style)):
                if value is not None:
                    l_total += value
                    loss_dict[name] = value
        self.scaler.scale(l_total).backward()
        self.scaler.step(self.optimizer_g)
        self.scaler.update()
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
        if self._compile_pending:
            self._compile_pending = False
            get_root_logger().info(f'torch.compile: the first training iteration, compilation included, took '
                                   f'{time.perf_counter() - start:.1f} s')

    def resume_training(self, resume_state: dict) -> None:
        """Optimizers and schedulers (BasicSR), the fp16 grad scaler's state, and this rank's random states."""
        super().resume_training(resume_state)
        if self.scaler.is_enabled() and resume_state.get('scaler'):
            self.scaler.load_state_dict(resume_state['scaler'])
        states = resume_state.get('random_states')
        world_size, rank = self.opt.get('world_size', 1), self.opt.get('rank', 0)
        if not isinstance(states, list):
            why = 'none'
        elif len(states) != world_size:
            why = f'{len(states)} rank(s), this run has {world_size}'
        else:
            why = random_states_problem(states[rank])
        if why is None:
            restore_random_states(states[rank])
        else:
            get_root_logger().warning(f'The training state holds no random states for this run ({why}): the random '
                                      'sequence starts from manual_seed, not where the saved run was.')
        best = resume_state.get(BEST_KEY)
        why = None if best is None else best_metric_results_problem(best)
        if why is not None:
            get_root_logger().warning(f'The training state\'s best validation figures are not used ({why}): they '
                                      'start afresh.')
        elif best is not None:
            self.best_metric_results = {name: {metric: dict(record) for metric, record in records.items()}
                                        for name, records in best.items()}

    def _initialize_best_metric_results(self, dataset_name: str) -> None:
        """BasicSR's record of the best figures of ``dataset_name``'s metrics; those a training state restored are
        kept, for the metrics this run still computes the same way (a new metric, or one now better the other way,
        starts afresh)."""
        restored = getattr(self, BEST_KEY, {}).pop(dataset_name, None)
        super()._initialize_best_metric_results(dataset_name)
        for metric, record in self.best_metric_results[dataset_name].items():
            kept = (restored or {}).get(metric)
            if kept is not None and kept['better'] == record['better']:
                record.update(val=kept['val'], iter=kept['iter'])

    def validation(self, dataloader, current_iter: int, tb_logger, save_img: bool) -> None:
        """BasicSR's validation; whatever it draws at random leaves the training's random sequence unchanged."""
        with preserved_random_states():
            super().validation(dataloader, current_iter, tb_logger, save_img)

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

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, epoch: int, current_iter: int) -> None:
        """SRModel's save (network with its EMA, training state); every rank's random states are gathered first
        (a collective under DDP: BasicSR's loop calls ``save`` on every rank)."""
        if current_iter != -1:
            self._random_states = gather_random_states()
        super().save(epoch, current_iter)

    @master_only
    def save_network(self, net, net_label: str, current_iter: int, param_key='params') -> None:
        """BasicSR's ``net_g_{iter}.pth`` (``{param_key: state_dict}``), written atomically; raises
        :class:`~asid_arch.utils.asid_errors.CheckpointSaveError` when it cannot be written."""
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(keys):
            raise ValueError('save_network: one param_key per network is needed')
        save_dict = {}
        for net_, key in zip(nets, keys):
            state = self.get_bare_model(net_).state_dict()
            save_dict[key] = {(k[len('module.'):] if k.startswith('module.') else k): v.cpu() for k, v in state.items()}
        label = 'latest' if current_iter == -1 else current_iter
        save_checkpoint(save_dict, os.path.join(self.opt['path']['models'], f'{net_label}_{label}.pth'))

    @master_only
    def save_training_state(self, epoch: int, current_iter: int) -> None:
        """BasicSR's ``{iter}.state`` for resuming, written atomically; raises
        :class:`~asid_arch.utils.asid_errors.CheckpointSaveError`."""
        if current_iter == -1:
            return
        state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers]}
        scaler = getattr(self, 'scaler', None)
        if scaler is not None and scaler.is_enabled():
            state['scaler'] = scaler.state_dict()
        if self._random_states is not None:
            state['random_states'] = self._random_states
        if hasattr(self, BEST_KEY):  # plain numbers (a metric may give NumPy's): weights_only reads them
            state[BEST_KEY] = {str(name): {str(metric): {'better': str(r['better']), 'val': float(r['val']),
                                                         'iter': int(r['iter'])} for metric, r in records.items()}
                               for name, records in self.best_metric_results.items()}
        state.update(self.resume_extras)
        save_checkpoint(state, os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'))

    def load_network(self, net: torch.nn.Module, load_path: str, strict: bool = True, param_key='params') -> None:
        """Load weights safely; the layout is converted by the network's ``convert_state_dict`` (released
        checkpoints, ...) before keys are compared, so a released file loads without key warnings."""
        logger = get_root_logger()
        bare = self.get_bare_model(net)
        state, used = weights_for(bare, load_path, param_key)
        logger.info(f'Loading {type(bare).__name__} model from {load_path}, with param key: [{used}].')
        problems = (match_weights if strict else dtype_mismatches)(bare, state, printable(load_path))
        if problems:
            raise PretrainedWeightsError('; '.join(problems))
        if not strict:
            self._print_different_keys_loading(bare, state, strict)
        bare.load_state_dict(state, strict=strict)

    # -- inference ------------------------------------------------------------------------------
    def test(self) -> None:
        """Inference on ``self.lq``: whole image, or tiled when ``val: tile: {size, overlap}`` is set.

        Runs the bare, eager network (not its DDP wrapper, not the compiled one): BasicSR validates on
        rank 0 alone, and a DDP forward would broadcast buffers to ranks that are not there. Under
        ``train: amp:`` the network runs in autocast; outputs are float32 before tiles are averaged.
        """
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.get_bare_model(self.net_g)
        tile = (self.opt.get('val') or {}).get('tile')
        was_training = net.training
        net.eval()

        window = (self.opt.get('network_g') or {}).get('window_size')
        pad_to = window if isinstance(window, int) and window > 1 and not getattr(net, 'pads_input', False) else 1

        def run(x: Tensor) -> Tensor:
            # a network that does not pad its input itself (BasicSR's SwinIR) gets sides that are multiples of its
            # window, mirrored at the bottom and right, and its output cropped back
            h, w = x.shape[-2:]
            pad_h, pad_w = -h % pad_to, -w % pad_to
            if pad_h or pad_w:
                mode = 'reflect' if pad_h < h and pad_w < w else 'replicate'
                x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode=mode)
            with self.autocast():
                out = net(x).float()
            scale = self.opt['scale']
            return out[..., :h * scale, :w * scale] if pad_h or pad_w else out

        with torch.no_grad():
            if tile:
                self.output = tile_forward(run, self.lq, self.opt['scale'], tile.get('size', PROTOCOL_TILE),
                                           tile.get('overlap', PROTOCOL_OVERLAP))
            else:
                self.output = run(self.lq)
        net.train(was_training)


register_once(MODEL_REGISTRY, ASIDModel, __file__)
