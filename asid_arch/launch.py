"""What BasicSR's train/test pipelines need to run on any machine, set up by our entry points.

BasicSR 1.4.2 assumes CUDA in two places: ``init_dist('pytorch')`` calls
``torch.cuda.set_device`` and initialises NCCL, and resuming maps the training state to
``torch.cuda.current_device()``. Without a GPU, our entry points replace those two functions
(in memory, for this process) by versions that use the gloo backend and the CPU. They also check
the parsed options (:mod:`asid_arch.options_check`) before any work starts.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .options_check import OptionsError


def init_dist_any_device(launcher: str, backend: str = 'nccl', **kwargs) -> None:
    """BasicSR's ``init_dist``; on a machine without CUDA, ``--launcher pytorch`` uses gloo."""
    from basicsr.utils import dist_util

    if torch.cuda.is_available() or launcher != 'pytorch':
        return dist_util.init_dist(launcher, backend, **kwargs)
    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    dist.init_process_group(backend='gloo')


def _state_iteration(name: str) -> Optional[int]:
    stem = name[:-len('.state')] if name.endswith('.state') else ''
    return int(stem) if stem.isdigit() else None


def load_resume_state_any_device(opt: dict):
    """BasicSR's ``load_resume_state``, mapping the state to the CPU when there is no GPU.

    With ``--auto_resume`` it takes the newest training state that loads: a damaged newest state
    (truncated by a full disk, say) is skipped with a warning naming it, and the one before is used.
    """
    from basicsr.utils import check_resume

    location = f'cuda:{torch.cuda.current_device()}' if torch.cuda.is_available() else 'cpu'
    if opt['auto_resume']:
        state_dir = os.path.join('experiments', opt['name'], 'training_states')
        names = sorted((n for n in (os.listdir(state_dir) if os.path.isdir(state_dir) else [])
                        if _state_iteration(n) is not None), key=_state_iteration, reverse=True)
        for name in names:
            path = os.path.join(state_dir, name)
            try:
                state = torch.load(path, map_location=location, weights_only=True)
                if not isinstance(state, dict) or 'iter' not in state:
                    raise ValueError('not a BasicSR training state')
            except Exception as err:  # truncated, empty, not a state
                # (printed, not logged: BasicSR's logger must first be set up by the pipeline, with its file)
                print(f'asid-train: warning: {path} cannot be loaded ({type(err).__name__}); resuming from an older '
                      'state', file=sys.stderr)
                continue
            opt['path']['resume_state'] = path
            check_resume(opt, state['iter'])
            return state
        return None
    path = opt['path'].get('resume_state')
    if not path:
        return None
    try:
        state = torch.load(path, map_location=location, weights_only=True)
    except Exception as err:
        raise OptionsError(path, [f'path: resume_state: {path} cannot be loaded ({type(err).__name__}: '
                                  f'{str(err).splitlines()[0][:200] if str(err) else "empty or truncated"})'])
    check_resume(opt, state['iter'])
    return state


def checked(parse_options):
    """Wrap BasicSR's ``parse_options`` so that invalid options stop the run with named keys."""
    from .options_check import validate_options

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


EXIT_FAILED = 1  # the run started and failed: diverged loss, a checkpoint that cannot be written
EXIT_USAGE = 2  # the run could not start: invalid options, unusable pretrained weights, unreadable option file


def run_pipeline(pipeline_name: str, argv, prog: str) -> None:
    """Run ``basicsr.train.train_pipeline`` or ``basicsr.test.test_pipeline`` in the current folder.

    User mistakes end with one clear message, not a traceback: exit status 2 for what stops a run
    before it starts (options, option file, pretrained weights), 1 for a run that fails on the way
    (a diverged loss, a checkpoint that cannot be written).
    """
    import yaml

    from .models.asid_model import CheckpointSaveError, PretrainedWeightsError, TrainingDiverged

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
    except (OptionsError, PretrainedWeightsError) as err:
        print(f'{prog}: {err}', file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except (FileNotFoundError, yaml.YAMLError) as err:
        print(f'{prog}: cannot read the option file: {err}', file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except (TrainingDiverged, CheckpointSaveError) as err:
        print(f'{prog}: {err}', file=sys.stderr)
        sys.exit(EXIT_FAILED)
