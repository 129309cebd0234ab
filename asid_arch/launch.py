"""What BasicSR's train/test pipelines need to run on any machine, set up by our entry points.

BasicSR 1.4.2 assumes CUDA in two places: ``init_dist('pytorch')`` calls
``torch.cuda.set_device`` and initialises NCCL, and resuming maps the training state to
``torch.cuda.current_device()``. Without a GPU, our entry points replace those two functions
(in memory, for this process) by versions that use the gloo backend and the CPU. They also check
the parsed options (:mod:`asid_arch.options_check`) before any work starts.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def init_dist_any_device(launcher: str, backend: str = 'nccl', **kwargs) -> None:
    """BasicSR's ``init_dist``; on a machine without CUDA, ``--launcher pytorch`` uses gloo."""
    from basicsr.utils import dist_util

    if torch.cuda.is_available() or launcher != 'pytorch':
        return dist_util.init_dist(launcher, backend, **kwargs)
    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    dist.init_process_group(backend='gloo')


def load_resume_state_any_device(opt: dict):
    """BasicSR's ``load_resume_state``, mapping the state to the CPU when there is no GPU."""
    from basicsr.utils import check_resume, scandir

    path = None
    if opt['auto_resume']:
        state_dir = os.path.join('experiments', opt['name'], 'training_states')
        if os.path.isdir(state_dir):
            iters = [int(name.split('.state')[0]) for name in scandir(state_dir, suffix='state', recursive=False)
                     if name.split('.state')[0].isdigit()]
            if iters:
                path = os.path.join(state_dir, f'{max(iters)}.state')
                opt['path']['resume_state'] = path
    else:
        path = opt['path'].get('resume_state')
    if path is None:
        return None
    location = f'cuda:{torch.cuda.current_device()}' if torch.cuda.is_available() else 'cpu'
    state = torch.load(path, map_location=location, weights_only=True)
    check_resume(opt, state['iter'])
    return state


def checked(parse_options):
    """Wrap BasicSR's ``parse_options`` so that invalid options stop the run with named keys."""
    from .options_check import OptionsError, validate_options

    def parse_and_check(root_path: str, is_train: bool = True):
        opt, args = parse_options(root_path, is_train=is_train)
        problems = validate_options(opt, is_train)
        if problems:
            raise OptionsError(args.opt, problems)
        return opt, args

    return parse_and_check


def prepare_basicsr() -> None:
    """Install the CPU-capable replacements and the option checks in BasicSR's pipelines."""
    import basicsr.test
    import basicsr.train
    import basicsr.utils.options

    basicsr.utils.options.init_dist = init_dist_any_device
    basicsr.train.load_resume_state = load_resume_state_any_device
    basicsr.train.parse_options = checked(basicsr.utils.options.parse_options)
    basicsr.test.parse_options = checked(basicsr.utils.options.parse_options)


def run_pipeline(pipeline_name: str, argv, prog: str) -> None:
    """Run ``basicsr.train.train_pipeline`` or ``basicsr.test.test_pipeline`` in the current folder.

    User mistakes (invalid options, a missing option file, a diverged loss) end with one clear
    message and exit status 2 (options) or 1 (diverged), not a traceback.
    """
    import sys

    import yaml

    from .models.asid_model import TrainingDiverged
    from .options_check import OptionsError

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    prepare_basicsr()
    import basicsr.test
    import basicsr.train

    pipeline = basicsr.train.train_pipeline if pipeline_name == 'train' else basicsr.test.test_pipeline
    try:
        pipeline(os.getcwd())
        if dist.is_available() and dist.is_initialized():
            # BasicSR returns without shutting the process group down: a rank that exits while
            # another still validates aborts in the backend's teardown. Leave together, cleanly.
            dist.barrier()
            dist.destroy_process_group()
    except OptionsError as err:
        sys.exit(f'{prog}: {err}')
    except (FileNotFoundError, yaml.YAMLError) as err:
        sys.exit(f'{prog}: cannot read the option file: {err}')
    except TrainingDiverged as err:
        print(f'{prog}: {err}', file=sys.stderr)
        sys.exit(1)
