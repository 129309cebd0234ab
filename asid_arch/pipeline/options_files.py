"""What an option dict needs from the files, checked before any work (every message names the option key):
:func:`validate_options` runs the structure check (:mod:`asid_arch.pipeline.options_values`), then the
architectures and their arguments, the data folders and LMDBs (complete, not truncated; GT and LQ paired and
``scale`` apart) and the pretrained weights; :func:`training_state_problem` checks a training state to resume.
"""
from __future__ import annotations

import copy
import inspect
import os
import re
from typing import List, Mapping, Optional, Sequence, Tuple

from ..utils.asid_errors import first_line
from ..utils.asid_files import NotARegularFile, check_readable_file, path_kind
from .options_reading import kind_of
from .options_values import check_structure

Size = Tuple[int, int]
MAX_WHOLE_LQ_PIXELS = 16_000_000  # LQ pixels of an image validated without val: tile (the network at once)
WHOLE_NUM_FEAT, TILE_HINT = 48, 256  # ASID's width, for the memory a whole image needs; a tile size to suggest
META_INFO_LINE = re.compile(r'^(\S+?)(?:\.png)? \((\d+),(\d+),(\d+)\)')
MAX_PAIRS_READ = 1000  # image headers read per disk-folder dataset (evenly spread); the rest are named when read
MODELS_TRAINING_ONE_NETWORK = ('ASIDModel', 'SRModel')  # one optimizer, one scheduler in their training states
# what asid-train's loop (training_loop.py) adds to a training state, checked here: the position in the epoch, the
# seed, and what defines the epoch's order (the sampler's definition, the batch size, the number of processes)
RESUME_KEYS = ('epoch_position', 'manual_seed', 'batch_size', 'world_size', 'dataset_size', 'epoch_size',
               'data_names')
POSITIVE_RESUME_KEYS = ('batch_size', 'world_size', 'epoch_size')  # at least 1
TEXT_RESUME_KEYS = ('data_names', )  # a hex digest (sampler.names_digest), '' when the data list no names
HEX_DIGEST = re.compile(r'[0-9a-f]{0,128}')


# ----------------------------------------------------------------------------------------------
# What needs the files: architectures, data, weights
# ----------------------------------------------------------------------------------------------
def _check_arch(opt: Mapping, problems: List[str]) -> None:
    from basicsr.utils.registry import ARCH_REGISTRY

    net = opt['network_g']  # a mapping with a type (check_structure)
    if net['type'] not in ARCH_REGISTRY:
        problems.append(f"network_g: type: {net['type']!r} is not a registered architecture "
                        f"(known: {', '.join(sorted(ARCH_REGISTRY.keys()))})")
        return
    params = inspect.signature(ARCH_REGISTRY.get(net['type'])).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        for key in net:
            if key != 'type' and key not in params:
                problems.append(f"network_g: {key}: not an argument of {net['type']} "
                                f"(arguments: {', '.join(params)})")
    if not any(p.startswith('network_g') for p in problems):
        try:
            ARCH_REGISTRY.get(net['type'])(**{k: v for k, v in net.items() if k != 'type'})
        except (ValueError, TypeError) as err:
            problems.append(f"network_g: {err}")
    upscale = net.get('upscale')
    if isinstance(upscale, int) and upscale != opt['scale']:  # (another type is named by the network's own check)
        problems.append(f"network_g: upscale: {upscale} does not match scale: {opt['scale']}")


def _check_dataset(phase: str, ds: Mapping, opt: Mapping, problems: List[str]) -> None:
    """The data of one dataset entry (whose structure is sound): folders, LMDBs, pairs, patch size."""
    start = len(problems)
    backend = (ds.get('io_backend') or {}).get('type', 'disk')
    for key in ('dataroot_gt', 'dataroot_lq'):
        root = ds.get(key)
        if root is None:
            continue
        where = f'datasets: {phase}: {key}'
        kind = path_kind(root)
        if kind == 'missing':
            problems.append(f'{where}: {root} does not exist (prepare it with asid-prepare)')
        elif kind != 'folder':
            problems.append(f'{where}: {root} is a {kind}, not a folder (prepare the data with asid-prepare)')
        elif backend == 'lmdb':
            if not str(root).endswith('.lmdb'):
                problems.append(f'{where}: {root} must be an LMDB folder ending in .lmdb (io_backend: lmdb)')
            missing = False
            for name in ('data.mdb', 'meta_info.txt'):
                kind = path_kind(os.path.join(root, name))
                missing = missing or kind != 'regular file'
                if kind == 'missing':
                    problems.append(f'{where}: {root} has no {name}: not a complete LMDB (re-run asid-prepare)')
                elif kind != 'regular file':
                    problems.append(f'{where}: {root}: its {name} is a {kind}, not a regular file: not an LMDB '
                                    '(rebuild it with asid-prepare)')
            damage = None if missing else lmdb_damage(root)
            if damage:
                problems.append(f'{where}: {damage}')
    meta = ds.get('meta_info_file')
    if meta:
        _readable_file(f'datasets: {phase}: meta_info_file:', meta, problems)
    scale = opt['scale']
    gt_size = ds.get('gt_size') if phase == 'train' else None
    if len(problems) == start and ds.get('type') == 'PairedImageDataset':
        whole = phase != 'train' and not (opt.get('val') or {}).get('tile')
        _check_data_files(phase, ds, scale, backend, gt_size, problems, whole)
    if gt_size is not None:
        from ..archs.asid_arch import WINDOW_SIZE

        window = opt['network_g'].get('window_size', WINDOW_SIZE)
        if gt_size % scale:
            problems.append(f'datasets: train: gt_size: {gt_size} is not a multiple of scale {scale}')
        elif isinstance(window, int) and window > 0 and (gt_size // scale) % window:
            problems.append(f'datasets: train: gt_size: {gt_size} gives LR patches of {gt_size // scale} px, '
                            f'not a multiple of the window size {window} (use a multiple of {scale * window})')


def _readable_file(where: str, path: str, problems: List[str]) -> None:
    """A problem naming ``path`` unless it is a regular file: what is there instead (a FIFO, a device, a folder),
    or that nothing is; found without opening it (:func:`asid_arch.utils.asid_files.check_readable_file`)."""
    try:
        check_readable_file(path, where)
    except NotARegularFile as err:
        problems.append(str(err))


def lmdb_damage(root: str) -> Optional[str]:
    """Why the LMDB folder ``root`` cannot be read safely, or None.

    LMDB reads its data through a memory map: a page that the file no longer holds (a copy cut short,
    ``truncate``) kills the process with SIGBUS, without a message, at the first read. So before any
    read through the map, the size the LMDB declares in its header ((last used page + 1) x page size,
    from ``env.info()`` and ``env.stat()``, which LMDB reads from its two meta pages with plain file
    reads when it opens) is compared with the real size of data.mdb.
    """
    import lmdb

    data = os.path.join(root, 'data.mdb')
    try:
        env = lmdb.open(root, readonly=True, lock=False, readahead=False, meminit=False)
    except lmdb.Error as err:
        return (f'{data} cannot be opened as an LMDB ({first_line(err)}): copy it again or rebuild it with '
                'asid-prepare')
    try:
        last_page, page_size = env.info()['last_pgno'], env.stat()['psize']
    finally:
        env.close()
    declared, actual = (last_page + 1) * page_size, os.path.getsize(data)
    if actual < declared:
        return (f'{data} is truncated: {actual} bytes, but the LMDB declares {declared} ({last_page + 1} pages of '
                f'{page_size} bytes); copy it again or rebuild it with asid-prepare')
    return None


def _lmdb_meta(root: str) -> List[Tuple[str, int, int]]:
    """``(key, height, width)`` of each line of an LMDB's meta_info.txt."""
    rows = []
    with open(os.path.join(root, 'meta_info.txt'), encoding='utf-8', errors='replace') as f:
        for line in f:
            match = META_INFO_LINE.match(line.strip())
            if match:
                rows.append((match.group(1), int(match.group(2)), int(match.group(3))))
    return rows


def _files(folder: str) -> List[str]:
    """The names BasicSR's ``scandir`` lists: files (links followed) not starting with '.', not recursive."""
    return sorted(e.name for e in os.scandir(folder) if not e.name.startswith('.') and e.is_file())


def _image_size(path: str) -> Tuple[Optional[Tuple[int, int]], str]:
    """``((height, width), '')`` from an image file's header, ``(None, why)`` when it is not a readable image."""
    from ..image_reader import ImageError, header_size

    try:
        width, height = header_size(path)
    except (ImageError, OSError) as err:
        return None, first_line(err)
    return (height, width), ''


def _too_large(path: str, size: Size, lq: bool, whole: bool, scale: int) -> str:
    """Why an image is too large for the run ('' when it is not): OpenCV (BasicSR's reader) decodes at most
    :data:`~asid_arch.image_reader.OPENCV_MAX_PIXELS`; an LQ image validated whole at most
    :data:`MAX_WHOLE_LQ_PIXELS`."""
    from ..image_reader import OPENCV_MAX_PIXELS
    from ..inference import network_bytes

    pixels = size[0] * size[1]
    shape = f'{path}: {size[1]}x{size[0]} ({pixels / 1e6:.1f} M pixels)'
    if pixels > OPENCV_MAX_PIXELS:
        return (f'{shape} is too large: BasicSR reads images with OpenCV, which decodes at most '
                f'{OPENCV_MAX_PIXELS / 1e6:.1f} M pixels')
    if lq and whole and pixels > MAX_WHOLE_LQ_PIXELS:
        need = network_bytes(WHOLE_NUM_FEAT, scale, 'fp32', pixels)
        return (f'{shape} is too large to validate whole (limit {MAX_WHOLE_LQ_PIXELS / 1e6:.0f} M LQ pixels; the '
                f'network alone would need about {need / 1e9:.0f} GB): set val: tile: {{size: {TILE_HINT}}} to '
                'validate in tiles')
    return ''


def _lmdb_pairs(where: str, gt_root: str, lq_root: str, problems: List[str]) -> List[Tuple[str, Size, Size]]:
    """(key, GT size, LQ size) of every key both LMDBs list (BasicSR wants the same keys in both)."""
    for key, root in (('dataroot_gt', gt_root), ('dataroot_lq', lq_root)):
        missing = _missing_lmdb_keys(root)
        if missing:
            problems.append(f'{where}: {key}: {root}: meta_info.txt lists {len(missing)} key(s) the LMDB does not '
                            f'hold (first: {missing[0]}); rebuild it with asid-prepare')
    gt = {k: (h, w) for k, h, w in _lmdb_meta(gt_root)}
    lq = {k: (h, w) for k, h, w in _lmdb_meta(lq_root)}
    only_gt, only_lq = sorted(set(gt) - set(lq)), sorted(set(lq) - set(gt))
    if only_gt or only_lq:
        first = f'{only_gt[0]} only in GT' if only_gt else f'{only_lq[0]} only in LQ'
        problems.append(f'{where}: dataroot_gt and dataroot_lq do not hold the same keys ({len(gt)} and {len(lq)} '
                        f'keys; {len(only_gt)} only in GT, {len(only_lq)} only in LQ; first: {first}): BasicSR pairs '
                        'them by key')
    return [(k, gt[k], lq[k]) for k in gt if k in lq]


def _folder_pairs(where: str, ds: Mapping, problems: List[str]) -> List[Tuple[str, str, str]]:
    """(name, GT file, LQ file) as BasicSR pairs them: every file of dataroot_gt (or each line of
    meta_info_file) with the file of dataroot_lq named by filename_tmpl."""
    gt_root, lq_root, tmpl = ds['dataroot_gt'], ds['dataroot_lq'], ds.get('filename_tmpl', '{}')
    meta = ds.get('meta_info_file')
    if meta:
        with open(meta, encoding='utf-8', errors='replace') as f:
            gt_names = [line.strip().split(' ')[0] for line in f]
        if '' in gt_names:
            problems.append(f'{where}: meta_info_file: {meta}: line {gt_names.index("") + 1} is empty (BasicSR would '
                            'read it as an image name)')
            return []
        lq_names = None
    else:
        gt_names, lq_names = _files(gt_root), set(_files(lq_root))
        if len(gt_names) != len(lq_names):
            problems.append(f'{where}: dataroot_gt has {len(gt_names)} files but dataroot_lq has {len(lq_names)}: '
                            'BasicSR pairs every GT file with one LQ file (remove what is not part of the data)')
    pairs, unpaired = [], []
    for name in gt_names:
        stem, ext = os.path.splitext(os.path.basename(name))
        lq_name = f'{tmpl.format(stem)}{ext}'
        gt_path, lq_path = os.path.join(gt_root, name), os.path.join(lq_root, lq_name)
        listed = lq_name in lq_names if lq_names is not None else os.path.isfile(gt_path) and os.path.isfile(lq_path)
        if not listed:
            unpaired.append((gt_path, lq_path))
        else:
            pairs.append((stem, gt_path, lq_path))
    if unpaired:
        gt_path, lq_path = unpaired[0]
        problems.append(f'{where}: {len(unpaired)} of {len(gt_names)} GT image(s) have no LQ file (first: {gt_path}: '
                        f'no {lq_path}; LQ names follow filename_tmpl: {tmpl!r})')
    return pairs


def _read_sizes(where: str, pairs: Sequence[Tuple[str, str, str]], problems: List[str], whole: bool,
                scale: int) -> List[Tuple[str, Size, Size]]:
    """Header sizes of the pairs (at most MAX_PAIRS_READ, evenly spread; the others are named when read);
    ``whole``: images are validated without tiles."""
    if len(pairs) > MAX_PAIRS_READ:
        pairs = [pairs[i * len(pairs) // MAX_PAIRS_READ] for i in range(MAX_PAIRS_READ)]
    sizes, unreadable, large = [], [], []
    for name, gt_path, lq_path in pairs:
        (gt, gt_why), (lq, lq_why) = _image_size(gt_path), _image_size(lq_path)
        if gt is None or lq is None:
            unreadable.append(f'{gt_path}: {gt_why}' if gt is None else f'{lq_path}: {lq_why}')
            continue
        sizes.append((name, gt, lq))
        large += [why for why in (_too_large(gt_path, gt, False, whole, scale),
                                  _too_large(lq_path, lq, True, whole, scale)) if why]
    if unreadable:
        problems.append(f'{where}: {len(unreadable)} file(s) are not readable images (first: {unreadable[0]}); '
                        'BasicSR reads every file of dataroot_gt and dataroot_lq')
    if large:
        problems.append(f'{where}: {len(large)} image(s) too large (first: {large[0]})')
    return sizes


def _check_data_files(phase: str, ds: Mapping, scale: int, backend: str, gt_size: Optional[int],
                      problems: List[str], whole: bool = False) -> None:
    """GT and LQ paired as BasicSR pairs them, each pair ``scale`` apart, and the patch size against the images
    (and their sizes against the limits; ``whole``: validated without tiles)."""
    where = f'datasets: {phase}'
    gt_root = ds['dataroot_gt']
    if backend == 'lmdb':
        sizes = _lmdb_pairs(where, gt_root, ds['dataroot_lq'], problems)
    else:
        sizes = _read_sizes(where, _folder_pairs(where, ds, problems), problems, whole, scale)
    if not sizes:
        return
    name, gt, lq = sizes[0]
    if gt[0] % lq[0] == 0 and gt[1] % lq[1] == 0 and gt[0] // lq[0] == gt[1] // lq[1] != scale:
        problems.append(f'{where}: the data are x{gt[0] // lq[0]} (GT {gt[1]}x{gt[0]}, LQ {lq[1]}x{lq[0]} for '
                        f'{name}) but scale is {scale}: point dataroot_lq at the x{scale} data')
        return
    # training crops need GT = LQ x scale exactly; validation crops GT to LQ x scale, so a GT image that was not
    # cropped to a multiple of scale is fine: LQ = GT / scale, rounded down
    slack = 1 if phase == 'train' else scale
    wrong = [(n, g, q) for n, g, q in sizes if not all(0 <= g[i] - q[i] * scale < slack for i in (0, 1))]
    if wrong:
        n, g, q = wrong[0]
        problems.append(f'{where}: {len(wrong)} of {len(sizes)} pair(s) checked are not x{scale} apart (first: {n}: '
                        f'GT {g[1]}x{g[0]}, LQ {q[1]}x{q[0]}; the LQ image must be the GT image / {scale})')
    if gt_size is not None:
        smallest = min(sizes, key=lambda r: min(r[1]))
        if gt_size > min(smallest[1]):
            problems.append(f'{where}: gt_size: {gt_size} is larger than the image {smallest[0]} '
                            f'({smallest[1][1]}x{smallest[1][0]}) in {gt_root}')


def _missing_lmdb_keys(root: str) -> List[str]:
    """Keys of meta_info.txt the LMDB does not hold (its size was checked by :func:`lmdb_damage`)."""
    import lmdb

    keys = [row[0] for row in _lmdb_meta(root)]
    try:
        env = lmdb.open(root, readonly=True, lock=False, readahead=False, meminit=False)
    except lmdb.Error as err:
        return [f'(the LMDB cannot be opened: {err})']
    try:
        with env.begin(write=False) as txn:
            return [k for k in keys if txn.get(k.encode('utf-8')) is None]
    except lmdb.Error as err:  # a damaged page: LMDB checks them as it reads
        return [f'(the LMDB cannot be read: {first_line(err)})']
    finally:
        env.close()


def _check_pretrained(opt: Mapping, problems: List[str]) -> None:
    """The weights of ``path: pretrain_network_g`` load into ``network_g`` (checked before any work)."""
    from basicsr.utils.registry import ARCH_REGISTRY

    from ..utils.asid_errors import PretrainedWeightsError
    from ..utils.asid_weights_loading import match_weights, weights_for

    path = opt.get('path') or {}
    weights = path.get('pretrain_network_g')
    net_opt = dict(opt.get('network_g') or {})
    if not weights or not os.path.exists(weights) or net_opt.get('type') not in ARCH_REGISTRY:
        return
    try:
        net = ARCH_REGISTRY.get(net_opt.pop('type'))(**net_opt)
    except Exception:  # reported by the network check
        return
    try:
        state, _ = weights_for(net, weights, path.get('param_key_g', 'params'))
    except PretrainedWeightsError as err:
        problems.append(f'path: pretrain_network_g: {err}')
        return
    if path.get('strict_load_g', True):
        problems += [f'path: pretrain_network_g: {p}' for p in match_weights(net, state, weights)]


def validate_options(opt: Mapping, is_train: bool = True) -> List[str]:
    """Problems found in ``opt`` (a BasicSR option dict); empty when it looks runnable.

    The structure first (:func:`check_structure`); what reads files (architectures, data, weights) only
    when the structure is sound, so that every check may rely on the types.
    """
    from ..archs.asid_layouts import resolve_variant_options

    problems = check_structure(opt, is_train)
    if problems:
        return problems
    opt = copy.deepcopy(dict(opt))
    resolve_variant_options(opt)  # network_g: ... auto -> what the pretrained weights tell
    _check_arch(opt, problems)
    for phase, ds in opt['datasets'].items():
        _check_dataset(phase, ds, opt, problems)
    for key in ('pretrain_network_g', 'resume_state'):
        value = opt['path'].get(key)
        # pretrained weights that exist but are no regular file (a folder, a FIFO) are described by _check_pretrained
        if value and (key == 'resume_state' or path_kind(value) == 'missing'):
            _readable_file(f'path: {key}:', value, problems)
    if not any(p.startswith('network_g') for p in problems):
        _check_pretrained(opt, problems)
    return problems


def check_training_data(opt: Mapping) -> List[str]:
    """Problems with what reading ``datasets: train`` needs (scale, network_g, that entry and its data), for tools
    that use the training data alone (``asid-bench data``)."""
    needed = ('scale', 'network_g', 'datasets: train', 'datasets: missing', 'datasets: must')
    problems = [p for p in check_structure(opt, is_train=True) if p.startswith(needed)]
    if not problems:
        _check_dataset('train', opt['datasets']['train'], opt, problems)
    return problems


def _trainable_parameters(opt: Mapping) -> Optional[list]:
    """``(name, parameter)`` of each parameter ``network_g`` trains, in the order its optimizer holds them (BasicSR
    gives the optimizer ``named_parameters()`` that require gradients); None if it cannot be built."""
    from basicsr.utils.registry import ARCH_REGISTRY

    from ..archs.asid_layouts import resolve_variant_options

    opt = copy.deepcopy(dict(opt))
    try:
        resolve_variant_options(opt)
        net_opt = dict(opt['network_g'])
        net = ARCH_REGISTRY.get(net_opt.pop('type'))(**net_opt)
    except Exception:
        return None
    return [(name, p) for name, p in net.named_parameters() if p.requires_grad]


def _optimizer_state_problem(optim: Mapping, params: list, opt: Mapping) -> Optional[str]:
    """Why the optimizer state ``optim`` would fail at the first step of ``network_g``'s optimizer, or None.

    The state's tensors are checked by trial, as resuming uses them: a throwaway optimizer of ``train: optim_g``
    over the network's parameters loads a copy of the state and takes one step on zero gradients (Adam's moments
    of another shape, for instance, load without complaint and fail there). The message names the first
    parameter whose state has another shape, where one has.
    """
    import torch

    from basicsr.utils.registry import MODEL_REGISTRY

    optim_opt = dict(opt['train']['optim_g'])
    gpu = opt.get('num_gpu') not in (0, None) and torch.cuda.is_available()  # where the run's optimizer steps
    params = [(name, torch.nn.Parameter(p.detach().to('cuda' if gpu else 'cpu'))) for name, p in params]
    try:
        optimizer = MODEL_REGISTRY.get(opt['model_type']).get_optimizer(
            None, optim_opt.pop('type'), [p for _, p in params], **copy.deepcopy(optim_opt))
    except Exception:  # an optimizer the option check names, or one that needs its model: not tried here
        return None
    try:
        optimizer.load_state_dict(copy.deepcopy(dict(optim)))
        for _, p in params:
            p.grad = torch.zeros_like(p)
        optimizer.step()
        return None
    except Exception as err:
        failure = first_line(err)
    ids = [i for group in optim['param_groups'] for i in group['params']]
    for (name, param), pid in zip(params, ids):
        for key, value in (optim['state'].get(pid) or {}).items():
            if isinstance(value, torch.Tensor) and value.dim() and value.shape != param.shape:
                return (f'is the state of another network: its optimizer holds {key} of shape {tuple(value.shape)} '
                        f'for network_g\'s {name} of shape {tuple(param.shape)} (was network_g changed since it was '
                        'saved?)')
    return f'holds an optimizer state that train: optim_g cannot step with ({failure})'


def training_state_problem(state: object, opt: Mapping, compare_network: bool = True) -> Optional[str]:
    """Why ``state`` (a loaded ``.state`` file) cannot resume this run, or None.

    It must be a BasicSR training state (epoch, iter, optimizer and scheduler states) and, for the
    models that train one network, hold one optimizer with as many parameters as ``network_g`` trains,
    whose state tensors fit them (:func:`_optimizer_state_problem`): BasicSR would otherwise fail in
    ``resume_training`` (``KeyError: 'param_groups'``, a size mismatch) or at the first step, after the
    run started. ``compare_network=False`` checks the state's own structure only.
    """
    not_state = 'is not a BasicSR training state'
    if not isinstance(state, Mapping):
        return f'{not_state} (it holds {kind_of(state)})'
    for key, kind in (('epoch', int), ('iter', int), ('optimizers', list), ('schedulers', list)):
        value = state.get(key)
        if isinstance(value, bool) or not isinstance(value, kind) or (kind is int and value < 0):
            return f'{not_state} ({key}: {"missing" if key not in state else repr(value)[:60]})'
    for i, optim in enumerate(state['optimizers']):
        groups = optim.get('param_groups') if isinstance(optim, Mapping) else None
        if (not isinstance(groups, list) or not isinstance(optim.get('state'), Mapping)
                or not all(isinstance(g, Mapping) and isinstance(g.get('params'), list) for g in groups)):
            return f'{not_state} (optimizers[{i}] is not an optimizer state: no param_groups)'
    for i, scheduler in enumerate(state['schedulers']):
        if not isinstance(scheduler, Mapping):
            return f'{not_state} (schedulers[{i}] is not a scheduler state)'
    if len(state['schedulers']) != len(state['optimizers']):
        return f"{not_state} ({len(state['optimizers'])} optimizer(s) but {len(state['schedulers'])} scheduler(s))"
    if state.get('scaler') is not None and not isinstance(state['scaler'], Mapping):
        return f'{not_state} (scaler is not a grad-scaler state)'
    for key in RESUME_KEYS:
        value = state.get(key)
        if key not in state:
            continue
        if key in TEXT_RESUME_KEYS:
            wrong = not isinstance(value, str) or not HEX_DIGEST.fullmatch(value)
        else:
            wrong = isinstance(value, bool) or not isinstance(value, int) or (key != 'manual_seed' and (
                value < 0 or (key in POSITIVE_RESUME_KEYS and value == 0)))
        if wrong:
            return f'{not_state} ({key}: {repr(value)[:60]})'
    if all(key in state for key in ('epoch_position', 'epoch_size', 'world_size', 'batch_size')):
        batches = state['epoch_size'] // state['world_size'] // state['batch_size']  # in an epoch, per process
        if state['epoch_position'] > batches:
            return (f"{not_state} (epoch_position: {state['epoch_position']} is past the {batches} batches of its "
                    'epoch)')
    if 'random_states' in state and not isinstance(state['random_states'], list):
        return f"{not_state} (random_states is not a list, one entry per rank)"
    if 'best_metric_results' in state:
        from ..models.asid_model import best_metric_results_problem

        problem = best_metric_results_problem(state['best_metric_results'])
        if problem:
            return f'{not_state} ({problem})'
    model_type = opt.get('model_type')
    if compare_network and model_type in MODELS_TRAINING_ONE_NETWORK:
        if len(state['optimizers']) != 1:
            return f"holds {len(state['optimizers'])} optimizer states; {model_type} trains one network (optim_g)"
        held = sum(len(g['params']) for g in state['optimizers'][0]['param_groups'])
        params = _trainable_parameters(opt)
        if params is not None and held != len(params):
            return (f'is the state of another network: its optimizer holds {held} parameter tensors, network_g trains '
                    f'{len(params)} (was network_g changed since it was saved?)')
        if params is not None:
            return _optimizer_state_problem(state['optimizers'][0], params, opt)
    return None
