"""Hostile option files and data through asid-train / asid-test (issue 17).

Most cases fail before any work: they run in ONE helper process (``helpers.run_entry_points``: each case
is ``main(argv)`` of ``asid_arch.cli.train`` or ``asid_arch.cli.test`` in its own empty folder, its exit
status, stderr and any escaping traceback recorded), so that the table costs one import of torch and
BasicSR. Each case must end with exit status 2, a message naming the key, no traceback and no
experiments/ or results/ folder.
What needs a run of its own (a truncated LMDB would kill the helper with SIGBUS if the check were
missing; damaged data stops a run that started) runs as ``python -m asid_arch.cli.train``.
"""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple

import cv2
import pytest
import torch

from asid_arch.pipeline.options_files import lmdb_damage
from asid_arch.pipeline.options_reading import MAX_OPTION_FILE_BYTES, OptionFileError, read_option_file
from asid_arch.pipeline.options_values import check_structure

from helpers import REPO, run_entry_points, run_module, tiny_train_options, write_yaml

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
PNG_HEADER_BYTES = 41  # signature (8) + IHDR chunk (33): what a header reader needs
MARKER = 'code_ran'  # a file the option files' commands would create


def train_opt(data: Path, **overrides) -> dict:
    return tiny_train_options('hostile', data / 'train', data / 'valsrc', iters=2, **overrides)


def eval_opt(data: Path) -> dict:
    val = dict(train_opt(data)['datasets']['val'])
    return {'name': 'hostile_test', 'model_type': 'ASIDModel', 'scale': 2, 'num_gpu': 0, 'manual_seed': 0,
            'datasets': {'test_1': val}, 'network_g': {'type': 'ASID', 'upscale': 2, 'num_feat': 16, 'num_blocks': 1},
            'path': {'pretrain_network_g': None, 'strict_load_g': True},
            'val': {'save_img': False, 'tile': {'size': 16, 'overlap': 4},
                    'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': True}}}}


def edited(make: Callable[[Path], dict], *edits: Callable[[dict], None]) -> Callable[[Path, Path], str]:
    """An option file: ``make(data)`` changed by each edit, as YAML text."""
    import yaml

    def build(data: Path, case_dir: Path) -> str:
        opt = make(data)
        for edit in edits:
            edit(opt)
        return yaml.safe_dump(opt, sort_keys=False)
    return build


def setting(dotted: str, value) -> Callable[[dict], None]:
    def edit(opt: dict) -> None:
        *parents, leaf = dotted.split('.')
        node = opt
        for key in parents:
            node = node[key]
        node[leaf] = value
    return edit


def removing(dotted: str) -> Callable[[dict], None]:
    def edit(opt: dict) -> None:
        *parents, leaf = dotted.split('.')
        node = opt
        for key in parents:
            node = node[key]
        del node[leaf]
    return edit


def text(content: str) -> Callable[[Path, Path], str]:
    return lambda data, case_dir: content


def train_text_with(line_after: str, insert: str) -> Callable[[Path, Path], str]:
    """The tiny training file as YAML text, with ``insert`` (lines) added after the line ``line_after``."""
    def build(data: Path, case_dir: Path) -> str:
        base = edited(train_opt)(data, case_dir)
        lines = base.splitlines(keepends=True)
        at = next(i for i, line in enumerate(lines) if line.rstrip() == line_after) + 1
        return ''.join(lines[:at]) + insert + ''.join(lines[at:])
    return build


def val_copy_with(change: Callable[[Path], None], entry: str = 'val') -> Callable[[dict], None]:
    """An edit pointing ``datasets: <entry>`` at a copy of the validation pair, changed by ``change(copy)``."""
    def edit(opt: dict) -> None:
        src = Path(opt['datasets'][entry]['dataroot_gt']).parent
        dst = Path(CASE_DIR[0]) / 'valcopy'
        shutil.copytree(src, dst)
        change(dst)
        opt['datasets'][entry].update(dataroot_gt=str(dst / 'GTmod2'), dataroot_lq=str(dst / 'LRbicx2'))
    return edit


CASE_DIR: List[str] = ['']  # the folder of the case being built (for edits that make files)


def extra_gt_file(copy: Path) -> None:
    shutil.copy(copy / 'GTmod2' / 'img00.png', copy / 'GTmod2' / 'img01.png')


def lq_of_wrong_size(copy: Path) -> None:
    lq = cv2.imread(str(copy / 'LRbicx2' / 'img00.png'))
    cv2.imwrite(str(copy / 'LRbicx2' / 'img00.png'), lq[:-3])


def meta_info_listing(*names: str) -> Callable[[dict], None]:
    """An edit giving datasets: val a meta_info_file that lists ``names`` (one per line)."""
    def edit(opt: dict) -> None:
        meta = Path(CASE_DIR[0]) / 'meta_info.txt'
        meta.write_text(''.join(f'{name} (40,56,3)\n' if name else '\n' for name in names))
        opt['datasets']['val']['meta_info_file'] = str(meta)
    return edit


BILLION_LAUGHS = 'name: x\n' + 'a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n' + ''.join(
    f'a{i}: &a{i} [{", ".join([f"*a{i - 1}"] * 9)}]\n' for i in range(1, 9))


class Case(NamedTuple):
    id: str
    module: str  # train or test
    build: Callable[[Path, Path], str]  # (data, case folder) -> option file text
    message: str  # what stderr must say
    args: tuple = ()
    premade: tuple = ()  # folders made in the case's run folder before the run


def foreign_state(kind: str) -> Callable[[Path, Path], str]:
    """A training file whose resume state is a file that loads but is not this run's training state."""
    def build(data: Path, case_dir: Path) -> str:
        run_states = case_dir / 'run' / 'experiments' / 'hostile' / 'training_states'  # what --auto_resume reads
        states = run_states if kind == 'auto' else case_dir / 'states'
        states.mkdir(parents=True)
        foreign = {'epoch': 0, 'iter': 4, 'optimizers': [{}], 'schedulers': [{}]}
        if kind == 'other_network':  # a well-formed state of a bigger network
            optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1)) for _ in range(3)])
            foreign['optimizers'] = [optimizer.state_dict()]
        torch.save(foreign, states / '4.state')
        opt = train_opt(data)
        if kind != 'auto':
            opt['path']['resume_state'] = str(states / '4.state')
        return edited(lambda d: opt)(data, case_dir)
    return build


NOT_WHOLE = 'is not a whole number'
CASES = [
    # 1. code in an option file: PYTHON_TAGS below, each in a training and a test file
    # 2. duplicate keys
    Case('duplicate_total_iter', 'train', train_text_with('  total_iter: 2', '  total_iter: 500\n'),
         'train: total_iter is given twice (lines'),
    Case('duplicate_top_level', 'train', train_text_with('scale: 2', 'scale: 4\n'), 'scale is given twice'),
    # memory bombs, size
    Case('alias_bomb', 'train', text(BILLION_LAUGHS), 'expand the options beyond'),
    Case('alias_loop', 'train', text('name: &a [1, *a]\n'), 'a loop'),
    Case('huge_file', 'train', text('name: x\n#' + 'x' * MAX_OPTION_FILE_BYTES + '\n'), 'larger than 1 MB'),
    Case('not_utf8', 'train', lambda d, c: 'name: x\n' + 'a: \udcff\n', 'not UTF-8 text'),
    Case('deep_nesting', 'train', text('name: ' + '[' * 3000 + ']' * 3000 + '\n'), 'nested too deeply'),
    Case('yaml_syntax', 'train', text('name: [x\nscale: 2\n'), 'line 2, column'),
    Case('two_documents', 'train', text('name: x\n---\nname: y\n'), 'another document'),
    # 3. warm-up longer than the run
    Case('warmup_longer', 'train', edited(train_opt, setting('train.warmup_iter', 10)),
         'train: warmup_iter: 10 is not shorter than train: total_iter: 2'),
    Case('warmup_equal', 'train', edited(train_opt, setting('train.warmup_iter', 2)), 'train: warmup_iter: 2'),
    # 4. name outside experiments/
    Case('name_parent', 'train', edited(train_opt, setting('name', '../data')), "name: '../data' must be a plain",
         premade=('data', )),
    Case('name_dot', 'train', edited(train_opt, setting('name', '.')), "name: '.' must be a plain"),
    Case('name_dotdot', 'test', edited(eval_opt, setting('name', '..')), "name: '..' must be a plain"),
    Case('name_absolute', 'train', edited(train_opt, setting('name', '/tmp/x')), "name: '/tmp/x' must be a plain"),
    Case('name_empty', 'train', edited(train_opt, setting('name', '')), "name: '' must be a plain"),
    Case('name_nested', 'test', edited(eval_opt, setting('name', 'a/b')), "name: 'a/b' must be a plain"),
    Case('name_backslash', 'train', edited(train_opt, setting('name', 'a\\b')), 'must be a plain'),
    Case('name_number', 'train', edited(train_opt, setting('name', 5)), 'name: 5 is not text'),
    Case('name_missing', 'train', edited(train_opt, removing('name')), 'name: missing'),
    Case('name_too_long', 'train', edited(train_opt, setting('name', 'n' * 245)),
         'name: 245 bytes long: the log file train_<name>_<date>_<time>.log'),
    Case('name_too_long_test', 'test', edited(eval_opt, setting('name', 'n' * 230)),
         'give a name of at most 223 bytes'),
    # 6. file-level mistakes
    Case('empty_file', 'train', text(''), 'empty: an option file is a mapping'),
    Case('comments_only', 'test', text('# nothing\n'), 'empty: an option file is a mapping'),
    Case('list_file', 'train', text('- name: x\n'), 'holds a list, not a mapping'),
    Case('scalar_file', 'test', text('42\n'), 'holds a number, not a mapping'),
    Case('folder_as_file', 'train', lambda d, c: None, 'it is a folder'),
    # scale
    Case('scale_float', 'train', edited(train_opt, setting('scale', 2.0)), f'scale: 2.0 {NOT_WHOLE}'),
    Case('scale_text', 'train', edited(train_opt, setting('scale', '2')), f"scale: '2' {NOT_WHOLE}"),
    Case('scale_missing', 'test', edited(eval_opt, removing('scale')), 'scale: missing'),
    # data pairs
    Case('gt_lq_counts_differ', 'train', edited(train_opt, val_copy_with(extra_gt_file)),
         'datasets: val: dataroot_gt has 2 files but dataroot_lq has 1'),
    Case('lq_not_gt_over_scale', 'train', edited(train_opt, val_copy_with(lq_of_wrong_size)),
         'datasets: val: 1 of 1 pair(s) checked are not x2 apart'),
    Case('lq_not_gt_over_scale_test', 'test', edited(eval_opt, val_copy_with(lq_of_wrong_size, 'test_1')),
         'datasets: test_1: 1 of 1 pair(s) checked are not x2 apart'),
    Case('meta_info_lists_a_missing_file', 'train', edited(train_opt, meta_info_listing('img00.png', 'ghost.png')),
         'datasets: val: 1 of 2 GT image(s) have no LQ file (first: '),
    Case('meta_info_blank_line', 'train', edited(train_opt, meta_info_listing('img00.png', '', 'img00.png')),
         'datasets: val: meta_info_file: '),
    # intervals and learning rate
    Case('val_freq_zero', 'train', edited(train_opt, setting('val.val_freq', 0)), 'val: val_freq: 0 must be > 0'),
    Case('checkpoint_freq_zero', 'train', edited(train_opt, setting('logger.save_checkpoint_freq', 0)),
         'logger: save_checkpoint_freq: 0 must be > 0'),
    Case('print_freq_fraction', 'train', edited(train_opt, setting('logger.print_freq', 2.5)),
         f'logger: print_freq: 2.5 {NOT_WHOLE}'),
    Case('lr_nan', 'train', edited(train_opt, setting('train.optim_g.lr', math.nan)),
         'train: optim_g: lr: nan must be a finite number'),
    Case('lr_inf', 'train', edited(train_opt, setting('train.optim_g.lr', math.inf)),
         'train: optim_g: lr: inf must be a finite number'),
    Case('lr_negative', 'train', edited(train_opt, setting('train.optim_g.lr', -1e-3)),
         'train: optim_g: lr: -0.001 must be > 0'),
    Case('lr_text_exponent', 'train', edited(train_opt, setting('train.optim_g.lr', '2e-4')),
         'YAML reads 2e-4 as text'),
    Case('optimizer_argument', 'train', edited(train_opt, setting('train.optim_g.betas', 0.9)), 'train: optim_g:'),
    Case('optimizer_for_srmodel', 'train', edited(train_opt, setting('model_type', 'SRModel')),
         'train: optim_g: AdamW with SRModel'),
    Case('scheduler_missing', 'train', edited(train_opt, removing('train.scheduler')), 'train: scheduler: missing'),
    Case('scheduler_typo', 'train', edited(train_opt, setting('train.scheduler.milestone', [5])),
         "train: scheduler: MultiStepLR: "),
    Case('scheduler_unknown', 'train', edited(train_opt, setting('train.scheduler.type', 'StepLR')),
         "train: scheduler: type: 'StepLR' is not a scheduler"),
    Case('no_loss', 'train', edited(train_opt, removing('train.pixel_opt')), 'train: pixel_opt: missing'),
    Case('loss_argument', 'train', edited(train_opt, setting('train.pixel_opt.reduce', 'mean')), 'train: pixel_opt:'),
    Case('ema_one', 'train', edited(train_opt, setting('train.ema_decay', 1)), 'train: ema_decay: 1 must be below 1'),
    # 6. foreign training states
    Case('foreign_state_path', 'train', foreign_state('path'), 'path: resume_state:'),
    Case('foreign_state_auto', 'train', foreign_state('auto'), '--auto_resume:', args=('--auto_resume', ),
         premade=('experiments', )),
    Case('other_network_state', 'train', foreign_state('other_network'), 'is the state of another network'),
    # 6. tiles (a test file)
    Case('tile_size_zero', 'test', edited(eval_opt, setting('val.tile.size', 0)), 'val: tile: size: 0 must be > 0'),
    Case('tile_size_negative', 'test', edited(eval_opt, setting('val.tile.size', -8)), 'val: tile: size: -8'),
    Case('tile_size_fraction', 'test', edited(eval_opt, setting('val.tile.size', 16.5)),
         f'val: tile: size: 16.5 {NOT_WHOLE}'),
    Case('tile_overlap_too_big', 'test', edited(eval_opt, setting('val.tile.overlap', 16)),
         'val: tile: overlap: 16 must be smaller than size: 16'),
    Case('tile_overlap_negative', 'test', edited(eval_opt, setting('val.tile.overlap', -1)),
         'val: tile: overlap: -1 must be >= 0'),
    Case('tile_not_mapping', 'test', edited(eval_opt, setting('val.tile', 64)), 'val: tile: 64 must be a mapping'),
    Case('tile_unknown_key', 'test', edited(eval_opt, setting('val.tile.sizee', 8)), 'val: tile: sizee: not a tile'),
    # 6. wrong types anywhere the pipelines index
    Case('datasets_list', 'train', edited(train_opt, setting('datasets', [1, 2])), 'datasets: must be a mapping'),
    Case('datasets_missing', 'test', edited(eval_opt, removing('datasets')), 'datasets: missing'),
    Case('dataset_text', 'train', edited(train_opt, setting('datasets.train', 'div2k')),
         'datasets: train: must be a mapping'),
    Case('dataset_phase_unknown', 'train', edited(train_opt, setting('datasets.training', {})),
         "datasets: training: not an entry BasicSR's training reads"),
    Case('dataset_phase_test_file', 'test', edited(eval_opt, setting('datasets.train', {})),
         "datasets: train: not an entry BasicSR's testing reads"),
    Case('dataset_name_missing', 'test', edited(eval_opt, removing('datasets.test_1.name')),
         'datasets: test_1: name: missing'),
    Case('dataset_type_unknown', 'train', edited(train_opt, setting('datasets.train.type', 'Paired')),
         "datasets: train: type: 'Paired' is not a registered dataset"),
    Case('dataroot_list', 'train', edited(train_opt, setting('datasets.val.dataroot_gt', ['a'])),
         "datasets: val: dataroot_gt: ['a'] is not a folder path"),
    Case('io_backend_missing', 'test', edited(eval_opt, removing('datasets.test_1.io_backend')),
         'datasets: test_1: io_backend: missing'),
    Case('io_backend_unknown', 'train', edited(train_opt, setting('datasets.train.io_backend.type', 'lmbd')),
         "datasets: train: io_backend: type: 'lmbd' is not one of disk, lmdb"),
    Case('io_backend_extra', 'train', edited(train_opt, setting('datasets.train.io_backend.map_size', 8)),
         'datasets: train: io_backend: map_size: not an option'),
    Case('workers_missing', 'train', edited(train_opt, removing('datasets.train.num_worker_per_gpu')),
         'datasets: train: num_worker_per_gpu: missing'),
    Case('batch_text', 'train', edited(train_opt, setting('datasets.train.batch_size_per_gpu', 'eight')),
         "datasets: train: batch_size_per_gpu: 'eight' is not a whole number"),
    Case('hflip_missing', 'train', edited(train_opt, removing('datasets.train.use_hflip')),
         'datasets: train: use_hflip: missing'),
    Case('prefetch_unknown', 'train', edited(train_opt, setting('datasets.train.prefetch_mode', 'gpu')),
         "datasets: train: prefetch_mode: 'gpu' is not one of"),
    Case('persistent_without_workers', 'train', edited(train_opt, setting('datasets.val.persistent_workers', True)),
         'datasets: val: persistent_workers: true needs data-loader workers'),
    Case('filename_tmpl_without_field', 'train', edited(train_opt, setting('datasets.train.filename_tmpl', 'x')),
         "datasets: train: filename_tmpl: 'x' must be text with one {}"),
    Case('network_text', 'train', edited(train_opt, setting('network_g', 'ASID')), 'network_g: must be a mapping'),
    Case('network_type_list', 'test', edited(eval_opt, setting('network_g.type', ['ASID'])),
         "network_g: type: ['ASID'] is not the name of an architecture"),
    Case('network_missing', 'test', edited(eval_opt, removing('network_g')), 'network_g: missing'),
    Case('path_list', 'train', edited(train_opt, setting('path', ['a'])), 'path: must be a mapping'),
    Case('path_missing', 'test', edited(eval_opt, removing('path')), 'path: missing'),
    Case('path_folder_number', 'train', edited(train_opt, setting('path.visualization_extra', 3)),
         'path: visualization_extra: 3 is not a folder path'),
    Case('strict_load_text', 'test', edited(eval_opt, setting('path.strict_load_g', 'yes please')),
         "path: strict_load_g: 'yes please' is not true or false"),
    Case('train_scalar', 'train', edited(train_opt, setting('train', 5)), 'train: must be a mapping'),
    Case('train_missing', 'train', edited(train_opt, removing('train')), 'train: missing'),
    Case('optim_text', 'train', edited(train_opt, setting('train.optim_g', 'AdamW')),
         'train: optim_g: must be a mapping'),
    Case('total_iter_text', 'train', edited(train_opt, setting('train.total_iter', 'many')),
         "train: total_iter: 'many' is not a whole number"),
    Case('logger_missing', 'train', edited(train_opt, removing('logger')), 'logger: missing'),
    Case('logger_keys_missing', 'train', edited(train_opt, setting('logger', {'print_freq': 1})),
         'logger: save_checkpoint_freq: missing'),
    Case('logger_tb_missing', 'train', edited(train_opt, removing('logger.use_tb_logger')),
         'logger: use_tb_logger: missing'),
    Case('wandb_text', 'train', edited(train_opt, setting('logger.wandb', 'on')), 'logger: wandb: must be a mapping'),
    Case('num_gpu_text', 'train', edited(train_opt, setting('num_gpu', 'two')), f"num_gpu: 'two' {NOT_WHOLE}"),
    Case('num_gpu_missing', 'test', edited(eval_opt, removing('num_gpu')), 'num_gpu: missing'),
    Case('num_gpu_negative', 'train', edited(train_opt, setting('num_gpu', -1)), 'num_gpu: -1 must be >= 0'),
    Case('seed_text', 'train', edited(train_opt, setting('manual_seed', 'abc')), "manual_seed: 'abc' must be"),
    Case('seed_negative', 'test', edited(eval_opt, setting('manual_seed', -1)), 'manual_seed: -1 must be'),
    Case('model_type_list', 'train', edited(train_opt, setting('model_type', ['ASIDModel'])),
         "model_type: ['ASIDModel'] is not a registered model"),
    Case('val_missing_in_test', 'test', edited(eval_opt, removing('val')), 'val: missing'),
    Case('val_text', 'train', edited(train_opt, setting('val', 'yes')), 'val: must be a mapping'),
    Case('save_img_missing', 'test', edited(eval_opt, removing('val.save_img')), 'val: save_img: missing'),
    Case('suffix_missing', 'test', edited(eval_opt, setting('val.save_img', True)), 'val: suffix: missing'),
    Case('metrics_text', 'test', edited(eval_opt, setting('val.metrics', 'psnr')), 'val: metrics: must be a mapping'),
    Case('metric_text', 'train', edited(train_opt, setting('val.metrics.psnr', 'yes')),
         'val: metrics: psnr: must be a mapping'),
    Case('metric_unknown', 'test', edited(eval_opt, setting('val.metrics.psnr.type', 'psnr')),
         "val: metrics: psnr: type: 'psnr' is not a registered metric"),
    Case('metric_no_border', 'test', edited(eval_opt, removing('val.metrics.psnr.crop_border')),
         'val: metrics: psnr: calculate_psnr:'),
    Case('dist_params_text', 'train', edited(train_opt, setting('dist_params', 'nccl')),
         'dist_params: must be a mapping'),
    # --force_yml: applied by us, as YAML values, to keys that exist
    Case('force_yml_no_value', 'train', edited(train_opt), "--force_yml 'train:total_iter': expected KEY=VALUE",
         args=('--force_yml', 'train:total_iter')),
    Case('force_yml_unknown_key', 'train', edited(train_opt), 'train has no key total_iters (did you mean total_iter?)',
         args=('--force_yml', 'train:total_iters=5')),
    Case('force_yml_code', 'train', edited(train_opt), 'the tag !!python/object/apply:os.system is refused',
         args=('--force_yml', f'manual_seed=!!python/object/apply:os.system ["touch {MARKER}"]')),
    Case('force_yml_quote', 'test', edited(eval_opt), "has no key x\"]",
         args=('--force_yml', f'x"]=__import__("os").system("touch {MARKER}")')),
    Case('force_yml_checked', 'train', edited(train_opt), 'train: total_iter: 0 must be > 0',
         args=('--force_yml', 'train:total_iter=0')),
    Case('force_yml_through_text', 'test', edited(eval_opt), "name: 'a/b' must be a plain",
         args=('--force_yml', 'name=a/b')),
]
PYTHON_TAGS = {  # each would run `touch code_ran` when BasicSR's loader reads it
    'python_apply': f'manual_seed: !!python/object/apply:os.system ["touch {MARKER}"]\n',
    'python_new': f'manual_seed: !!python/object/new:os.system ["touch {MARKER}"]\n',
    'python_name_call': f'manual_seed: !!python/object/apply:subprocess.call [["touch", "{MARKER}"]]\n',
    'python_tag_shorthand': f'%TAG !p! tag:yaml.org,2002:python/\n---\nmanual_seed: !p!object/apply:os.system '
                            f'["touch {MARKER}"]\n',
    'python_verbatim_key': f'? !<tag:yaml.org,2002:python/object/apply:os.system> ["touch {MARKER}"]\n: 1\n',
    'local_tag': 'manual_seed: !seed 3\n',
}


def python_tag_case(case_id: str, module: str) -> Case:
    def build(data: Path, case_dir: Path) -> str:
        body = edited(train_opt if module == 'train' else eval_opt, removing('manual_seed'))(data, case_dir)
        return PYTHON_TAGS[case_id] + body if not PYTHON_TAGS[case_id].startswith('%') else \
            PYTHON_TAGS[case_id].replace('---\n', '---\n' + body)
    message = 'the tag !seed is refused' if case_id == 'local_tag' else 'never Python objects'
    return Case(f'{case_id}_{module}', module, build, message)


CASES = [c for c in CASES if c.id != 'python_apply'] + [
    python_tag_case(case_id, module) for case_id in PYTHON_TAGS for module in ('train', 'test')]


@pytest.fixture(scope='module')
def table(data, tmp_path_factory) -> Dict[str, dict]:
    """Every case of CASES run by the entry points in one helper process: {id: {code, stderr, cwd}}."""
    root = tmp_path_factory.mktemp('cases')
    specs = []
    for case in CASES:
        case_dir = root / case.id
        (case_dir / 'run').mkdir(parents=True)
        CASE_DIR[0] = str(case_dir)
        content = case.build(data, case_dir)
        if content is None:
            opt_path = case_dir / 'options_folder.yml'
            opt_path.mkdir()
        else:
            opt_path = case_dir / 'options.yml'
            opt_path.write_bytes(content.encode('utf-8', 'surrogateescape'))
        for folder in case.premade:
            (case_dir / 'run' / folder).mkdir(exist_ok=True)
        specs.append({'id': case.id, 'module': case.module, 'cwd': str(case_dir / 'run'),
                      'argv': ['-opt', str(opt_path), *case.args]})
    return run_entry_points(specs, root)


@pytest.mark.slow
@pytest.mark.parametrize('case', CASES, ids=[c.id for c in CASES])
def test_hostile_option_file_is_refused_before_any_work(table, case):
    result = table[case.id]
    assert result['code'] == 2, result['stderr'][-3000:]
    assert case.message in result['stderr'], result['stderr'][-3000:]
    assert 'Traceback' not in result['stderr'], result['stderr'][-3000:]
    assert result['cwd'] == sorted(case.premade)  # no experiments/, results/, tb_logger/, no code_ran
    messages = [line for line in result['stderr'].splitlines() if line.startswith(f'asid-{case.module}:')]
    assert len(messages) == 1, result['stderr'][-3000:]  # one message (the option list follows it, indented)


@pytest.mark.slow
def test_python_tags_never_run_in_plain_subprocesses(data, tmp_path):
    """The issue's exact command lines: nothing runs, exit 2, the file and the line are named."""
    for module, make in (('train', train_opt), ('test', eval_opt)):
        opt = tmp_path / f'{module}.yml'
        body = edited(make, removing('manual_seed'))(data, tmp_path)
        opt.write_text(f'manual_seed: !!python/object/apply:os.system ["touch {tmp_path / MARKER}"]\n' + body)
        result = run_module(f'asid_arch.cli.{module}', ['-opt', str(opt)], tmp_path)
        assert result.returncode == 2, result.stderr[-3000:]
        assert f'asid-{module}: option file {opt}, line 1: the tag !!python/object/apply:os.system is refused' \
            in result.stderr
        assert not (tmp_path / MARKER).exists()
        assert not (tmp_path / 'experiments').exists() and not (tmp_path / 'results').exists()


def test_every_shipped_option_file_has_a_sound_structure():
    for path in sorted((REPO / 'options').rglob('*.yml')):
        opt = read_option_file(path)
        assert check_structure(opt, is_train='/train/' in str(path)) == [], path


def test_option_file_reader_refuses_what_yaml_would_keep(tmp_path):
    """Direct checks of the reader: the duplicate's lines, merges kept, an alias that is fine."""
    path = tmp_path / 'o.yml'
    path.write_text('base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  x: 3\nshared: [*b, *b]\n')
    assert read_option_file(path)['use'] == {'x': 3, 'y': 2}  # a merge may override: not a duplicate
    path.write_text('a:\n  b: 1\n  c: 2\n  b: 3\n')
    with pytest.raises(OptionFileError, match=r'line 4: a: b is given twice \(lines 2 and 4\)'):
        read_option_file(path)
    path.write_text('1: a\n0x1: b\n')  # the same key written two ways
    with pytest.raises(OptionFileError, match='given twice'):
        read_option_file(path)


# ----------------------------------------------------------------------------------------------
# LMDB damage and damaged data
# ----------------------------------------------------------------------------------------------
def lmdb_copy(data: Path, tmp_path: Path, name: str = 'tiny_HR_sub.lmdb') -> Path:
    copy = tmp_path / name
    shutil.copytree(data / 'train' / name, copy)
    return copy


@pytest.mark.slow
@pytest.mark.parametrize('fraction', [0.3, 0.0, 0.01])
def test_truncated_lmdb_is_named_not_sigbus(data, tmp_path, fraction):
    """``truncate -s 30% data.mdb``: was SIGBUS (exit 135, empty stderr) in the option check."""
    gt = lmdb_copy(data, tmp_path)
    size = (gt / 'data.mdb').stat().st_size
    os.truncate(gt / 'data.mdb', int(size * fraction))
    assert lmdb_damage(str(gt)) is not None  # reads only the header
    if fraction != 0.3:
        return  # the entry point's run is the same for each size
    opt = write_yaml(tmp_path / 't.yml', train_opt(data, **{'datasets.train.dataroot_gt': str(gt)}))
    result = run_module('asid_arch.cli.train', ['-opt', str(opt)], tmp_path)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert f'datasets: train: dataroot_gt: {gt}/data.mdb is truncated: {int(size * fraction)} bytes, but the LMDB ' \
           f'declares {size}' in result.stderr
    assert not (tmp_path / 'experiments').exists()


def damage_png_signatures(path: Path) -> int:
    """Overwrite every PNG signature in ``path`` (an image or data.mdb) with other bytes; how many."""
    content = bytearray(path.read_bytes())
    count, at = 0, content.find(PNG_SIGNATURE)
    while at >= 0:
        content[at:at + len(PNG_SIGNATURE)] = bytes(range(1, len(PNG_SIGNATURE) + 1))
        count, at = count + 1, content.find(PNG_SIGNATURE, at + 1)
    path.write_bytes(bytes(content))
    return count


@pytest.mark.slow
def test_damaged_lmdb_value_names_the_lmdb_and_key(data, tmp_path):
    gt = lmdb_copy(data, tmp_path)
    assert damage_png_signatures(gt / 'data.mdb') == 36  # every value: whichever sample is drawn first
    opt = write_yaml(tmp_path / 'v.yml', train_opt(data, **{'datasets.train.dataroot_gt': str(gt)}))
    result = run_module('asid_arch.cli.train', ['-opt', str(opt)], tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert f'asid-train: cannot read the data: datasets: train (tiny): LMDB {gt}, key img0' in result.stderr
    assert 'not a decodable image' in result.stderr
    assert 'Traceback' not in result.stderr


def damage_png_body(path: Path) -> None:
    """Keep a PNG's signature and size header (its header still reads), replace its pixel data with other bytes."""
    content = path.read_bytes()
    garbage = bytes((7 * i + 3) % 256 for i in range(len(content) - PNG_HEADER_BYTES))
    path.write_bytes(content[:PNG_HEADER_BYTES] + garbage)


@pytest.mark.slow
def test_damaged_image_file_with_workers_names_the_file(data, tmp_path):
    """A PNG whose header reads but whose pixels are damaged: found by the worker that decodes it, named."""
    gt = tmp_path / 'gt'
    shutil.copytree(data / 'train' / 'tiny_HR_sub', gt)
    for image in gt.glob('*.png'):
        damage_png_body(image)
    opt = write_yaml(tmp_path / 'd.yml', train_opt(data, backend='disk', **{
        'datasets.train.dataroot_gt': str(gt), 'datasets.train.num_worker_per_gpu': 2}))
    result = run_module('asid_arch.cli.train', ['-opt', str(opt)], tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert f'asid-train: cannot read the data: datasets: train (tiny): {gt}/img0' in result.stderr
    assert 'not a decodable image' in result.stderr
    assert 'Traceback' not in result.stderr


@pytest.mark.slow
def test_valid_files_still_run_with_force_yml(data, tmp_path):
    """The safe reading changes nothing for a valid file: --force_yml applies as a YAML value."""
    opt = write_yaml(tmp_path / 'ok.yml', train_opt(data, **{'train.total_iter': 50}))
    result = run_module('asid_arch.cli.train', ['-opt', str(opt), '--force_yml', 'train:total_iter=2',
                                                'val:val_freq=!!float 2'], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'iters: 2.' in result.stderr
    copied = (tmp_path / 'experiments' / 'hostile' / 'ok.yml').read_text()
    assert copied.startswith('# GENERATE TIME:') and 'total_iter: 50' in copied  # the file as read


@pytest.mark.parametrize('reader', ['demo', 'bench data'])
def test_other_option_file_readers_read_data_only(data, tmp_path, capsys, reader):
    """The demo and ``asid-bench data`` read option files too: the same reader, the same refusals."""
    from asid_arch.bench.main import main as asid_bench
    from asid_arch.cli.demo import main as demo

    opt = tmp_path / 'o.yml'
    body = edited(train_opt, removing('manual_seed'))(data, tmp_path)
    opt.write_text(f'manual_seed: !!python/object/apply:os.system ["touch {tmp_path / MARKER}"]\n' + body)
    run = demo if reader == 'demo' else lambda argv: asid_bench(['data', *argv])
    assert run(['-opt', str(opt)]) == 2
    assert 'the tag !!python/object/apply:os.system is refused' in capsys.readouterr().err
    assert not (tmp_path / MARKER).exists()
    opt.write_text(edited(train_opt, setting('datasets.train', 'div2k'))(data, tmp_path))
    assert run(['-opt', str(opt)]) == 2
    assert 'datasets: train: must be a mapping' in capsys.readouterr().err


def test_upscale_of_another_type_is_named_once(data):
    """``upscale: '2'`` used to add "upscale: 2 does not match scale: 2" to the real problem."""
    from asid_arch.pipeline.options_files import validate_options

    opt = train_opt(data, **{'network_g.upscale': '2'})
    for phase, ds in opt['datasets'].items():
        ds.update(phase=phase, scale=opt['scale'])
    assert validate_options(opt) == ["network_g: upscale must be a positive integer, got '2'"]
