"""``asid-bench data``: the training data pipeline's share of an iteration, for an option file's recipe.

Model steps on a fixed batch against steps fed by BasicSR's data loader of the option file's
``datasets: train``, alternating in one process; each worker count in a fresh process.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import List

from ..console import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from .common import in_fresh_process, machine, missing_file, print_json

OPTION_HINT = 'give a training option file, e.g. options/train/ASID/train_ASID_SRx2_scratch.yml'
STEP_LR = 5e-4  # the optimiser's learning rate (the step's time does not depend on it)


def data_share(opt_path: Path, workers: int, iters: int, rounds: int) -> dict:
    """The recipe's data pipeline against the model step alone, in one process (ABAB...): ``rounds`` x
    (``iters`` model steps on one fixed batch, then ``iters`` steps each fed by BasicSR's dataloader
    with ``workers`` workers). Returns the medians and the share of the fed iteration spent waiting."""
    import torch
    import torch.nn.functional as F

    from basicsr.data import build_dataloader, build_dataset

    from ..archs.asid_arch import ASID
    from ..pipeline.options_reading import read_option_file

    opt = read_option_file(opt_path)  # checked by `data` before this process started
    ds_opt = dict(opt['datasets']['train'], phase='train', scale=opt['scale'], num_worker_per_gpu=workers)
    loader = build_dataloader(build_dataset(ds_opt), ds_opt, num_gpu=0, dist=False, seed=0)
    net_opt = dict(opt['network_g'])
    net_opt.pop('type')
    torch.manual_seed(0)
    net = ASID(**net_opt).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=STEP_LR)

    def step(batch: dict) -> None:
        optimizer.zero_grad(set_to_none=True)
        F.l1_loss(net(batch['lq']), batch['gt']).backward()
        optimizer.step()

    batches = iter(loader)
    fixed = next(batches)
    step(fixed)  # warm-up
    alone: List[float] = []
    fed: List[float] = []
    waits: List[float] = []
    for _ in range(rounds):
        for _ in range(iters):
            start = time.perf_counter()
            step(fixed)
            alone.append(time.perf_counter() - start)
        for _ in range(iters):
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                batches = iter(loader)
                batch = next(batches)
            waited = time.perf_counter() - start
            step(batch)
            fed.append(time.perf_counter() - start)
            waits.append(waited)
    return {'workers': workers, 'batch': ds_opt['batch_size_per_gpu'], 'gt_size': ds_opt['gt_size'],
            'step_alone_s': statistics.median(alone), 'iteration_s': statistics.median(fed),
            'wait_s': statistics.median(waits), 'wait_share': sum(waits) / sum(fed),
            'overhead': statistics.median(fed) / statistics.median(alone) - 1}


def data_one_command(args: argparse.Namespace) -> int:
    """``asid-bench _data_one`` (internal): one worker count, as a JSON line."""
    return print_json(data_share(args.opt, args.workers, args.iters, args.rounds))


def data(args: argparse.Namespace) -> int:
    """``asid-bench data``: the option file checked first, then each worker count in a fresh process."""
    if missing_file(args.opt, '-opt', OPTION_HINT):
        return EXIT_USAGE
    from ..pipeline.options_files import check_training_data
    from ..pipeline.options_reading import OptionFileError, read_option_file

    try:
        problems = check_training_data(read_option_file(args.opt))
    except OptionFileError as err:
        problems = [str(err)]
    if problems:
        print(f'asid-bench: -opt {args.opt}: ' + '; '.join(problems), file=sys.stderr)
        return EXIT_USAGE
    print(f'asid-bench data -opt {args.opt} on {machine()}')
    for workers in args.workers:
        try:
            fig = in_fresh_process(['_data_one', '-opt', str(args.opt), '--workers', str(workers), '--iters',
                                    str(args.iters), '--rounds', str(args.rounds)], f'{workers} workers')
        except RuntimeError as err:
            print(f'asid-bench: {err}', file=sys.stderr)
            return EXIT_FAILED
        print(f"{workers} workers (batch {fig['batch']}, HR patch {fig['gt_size']}): iteration "
              f"{fig['iteration_s']:.3f} s vs model step alone {fig['step_alone_s']:.3f} s "
              f"({100 * fig['overhead']:+.1f}%); waiting for data {fig['wait_s']:.3f} s "
              f"({100 * fig['wait_share']:.1f}% of the iterations)")
    return EXIT_OK
