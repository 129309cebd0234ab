"""Two nodes with torchrun on one machine (rendezvous on 127.0.0.1, gloo), as ``asid-train`` runs on a cluster.

Each node is a ``torchrun --nnodes 2 --nproc_per_node 1 --node_rank R`` of its own, both in one folder (a shared
file system). Node 1 runs in a mount namespace where that folder is read-only (where ``unshare`` can make one):
only rank 0 writes the experiment folder. A node killed with SIGKILL (the agent and its worker), the job started
again with ``--auto_resume`` and stopped by SIGUSR1 between checkpoints, then started once more; and a worker
killed under ``torchrun --max-restarts`` (restarted by the agents with the same arguments): both end with the
weights and training state of the uninterrupted run, every rank's random states included. Every process a
test starts is killed when it ends, whatever happened.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest
import torch

from helpers import REPO, make_tiny_data, tiny_train_options, write_yaml

NAME = 'two_nodes'
ITERS, CHECKPOINT_EVERY = 12, 4
KILL_AFTER = 4  # a node is killed once the state of this iteration is on disk (the run is then past it)
SIGNAL_AT = 6  # SIGUSR1 is sent once this iteration is logged: between two checkpoints
JOB_TIMEOUT_S = 420  # one two-node job of ITERS iterations (four Python processes on a shared 2-core machine)
NODE_LOSS_TIMEOUT_S = 120  # the nodes left end within this once one is gone or signalled
SEPARATE_STORES = 'TORCH_DISABLE_SHARE_RDZV_TCP_STORE'  # torchrun's opt-out of one store for every round
SIGNALS_TO_HANDLE = ['--signals-to-handle', 'SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1']  # torchrun passes these on
POLL_S = 0.2
READ_ONLY_MOUNT = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def can_mount_read_only(folder: Path) -> bool:
    """Whether ``unshare`` can show ``folder`` read-only to one process tree here (root, mount namespaces)."""
    try:
        done = subprocess.run(['unshare', '-m', 'sh', '-c', READ_ONLY_MOUNT, str(folder), 'true'],
                              capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def descendants(pid: int) -> List[int]:
    """``pid``'s children, grandchildren, ... (torchrun starts its workers in sessions of their own)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            children = [int(c) for t in os.listdir(f'/proc/{parent}/task')
                        for c in Path(f'/proc/{parent}/task/{t}/children').read_text().split()]
        except OSError:
            continue
        found += children
        todo += children
    return found


def kill_tree(pid: int) -> None:
    for target in [*descendants(pid), pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)


class Job:
    """The two torchrun processes of one job; :meth:`node` starts one, :meth:`wait` waits for all."""

    def __init__(self, run: Path, opt: Path, logs: Path, read_only_node1: bool, torchrun_args=(), args=(),
                 elastic: bool = False) -> None:
        self.run, self.opt, self.logs, self.read_only = run, opt, logs, read_only_node1
        self.torchrun_args, self.args, self.elastic = list(torchrun_args), list(args), elastic
        self.port = free_port()
        self.nodes: List[subprocess.Popen] = []

    def node(self, rank: int) -> subprocess.Popen:
        """Start node ``rank``: static rendezvous (``--node_rank``, ``--master_addr``), or, ``elastic``, torchrun's
        c10d rendezvous (the nodes get their ranks from it and restart together)."""
        rendezvous = (['--rdzv-backend', 'c10d', '--rdzv-endpoint', f'127.0.0.1:{self.port}', '--rdzv-id', 'nodes']
                      if self.elastic else
                      ['--node_rank', str(rank), '--master_addr', '127.0.0.1', '--master_port', str(self.port)])
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--nnodes', '2', '--nproc_per_node', '1', *rendezvous,
               *self.torchrun_args, '-m', 'asid_arch.cli.train', '-opt', str(self.opt), '--launcher', 'pytorch',
               *self.args]
        if rank == 1 and self.read_only:
            cmd = ['unshare', '-m', 'sh', '-c', READ_ONLY_MOUNT, str(self.run), *cmd]
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1',
                   PYTHONDONTWRITEBYTECODE='1')
        if self.elastic:  # a new store per rendezvous round: the restarted workers find no stale keys of the
            env[SEPARATE_STORES] = '1'  # workers they replace (with torchrun's shared store they waited forever)
        log = open(self.logs / f'node{rank}_{len(self.nodes)}.log', 'w')
        with log:
            process = subprocess.Popen(cmd, cwd=self.run, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.nodes.append(process)
        return process

    def wait(self, deadline: float) -> List[Optional[int]]:
        for process in self.nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
        return [p.poll() for p in self.nodes]

    def log(self, tail: Optional[int] = 2500) -> str:
        """The nodes' output (the last ``tail`` characters of each; all of it with None)."""
        texts = {p.name: p.read_text(errors='replace') for p in sorted(self.logs.glob('*.log'))}
        return '\n'.join(f'--- {name}\n' + (text if tail is None else text[-tail:]) for name, text in texts.items())

    def kill(self) -> None:
        for process in self.nodes:
            kill_tree(process.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)


@contextlib.contextmanager
def job(run: Path, opt: Path, name: str, read_only_node1: bool, **kwargs) -> Iterator[Job]:
    logs = run.parent / f'logs_{name}'
    logs.mkdir()
    started = Job(run, opt, logs, read_only_node1, **kwargs)
    try:
        yield started
    finally:
        started.kill()


def run_job(run: Path, opt: Path, name: str, read_only: bool, **kwargs) -> None:
    with job(run, opt, name, read_only, **kwargs) as j:
        j.node(0), j.node(1)
        codes = j.wait(time.monotonic() + JOB_TIMEOUT_S)
        assert codes == [0, 0], f'exit statuses {codes}\n{j.log()}'


def wait_for(condition: Callable[[], bool], j: Job, deadline: float) -> None:
    while not condition():
        assert time.monotonic() < deadline and all(p.poll() is None for p in j.nodes), f'never happened\n{j.log()}'
        time.sleep(POLL_S)


def final(run: Path) -> tuple:
    """(network weights, training state) at the end of the run in ``run``."""
    experiment = run / 'experiments' / NAME
    return (torch.load(experiment / 'models' / 'net_g_latest.pth', weights_only=True)['params'],
            torch.load(experiment / 'training_states' / f'{ITERS}.state', weights_only=True))


def max_abs_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def assert_same_end(run: Path, reference: tuple) -> None:
    weights, state = final(run)
    assert max_abs_diff(weights, reference[0]) == 0  # bit for bit
    assert state['iter'] == reference[1]['iter'] == ITERS
    assert_equal_nested(state['random_states'], reference[1]['random_states'])
    for new, old in zip(state['optimizers'][0]['state'].values(), reference[1]['optimizers'][0]['state'].values()):
        assert all(torch.equal(new[k], old[k]) for k in old)


def assert_equal_nested(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_equal_nested(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_equal_nested(x, y)
    else:
        assert a == b


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('nodes')
    data = make_tiny_data(root / 'data', train_images=3, val_images=1)
    opt = tiny_train_options(NAME, data / 'train', data / 'valsrc', iters=ITERS,
                             **{'logger.save_checkpoint_freq': CHECKPOINT_EVERY})
    return root, write_yaml(root / 'two_nodes.yml', opt)


@pytest.fixture(scope='module')
def uninterrupted(setup):
    """The uninterrupted two-node run: (its folder, whether node 1 ran read-only, its final weights and state)."""
    root, opt = setup
    run = root / 'uninterrupted'
    run.mkdir()
    read_only = can_mount_read_only(run)
    run_job(run, opt, 'uninterrupted', read_only)
    return run, read_only, final(run)


@pytest.mark.slow
def test_two_nodes_only_rank0_writes(uninterrupted):
    run, read_only, (weights, state) = uninterrupted
    experiment = run / 'experiments' / NAME
    assert sorted(p.name for p in run.iterdir()) == ['experiments']
    assert len(list(experiment.glob('train_*.log'))) == 1
    assert sorted(p.name for p in (experiment / 'training_states').iterdir()) == \
        sorted(f'{i}.state' for i in range(CHECKPOINT_EVERY, ITERS + 1, CHECKPOINT_EVERY))
    assert state['world_size'] == 2 and len(state['random_states']) == 2
    with pytest.raises(AssertionError):  # the ranks' random states differ: restoring another rank's would show
        assert_equal_nested(state['random_states'][0], state['random_states'][1])
    if not read_only:
        pytest.skip('node 1 could not run with the folder read-only here (unshare -m needs root): only the '
                    'files were checked')


@pytest.mark.slow
def test_node_killed_then_signalled_then_resumed_ends_equal(setup, uninterrupted):
    """A cluster's life: node 1 dies (SIGKILL, after the state of KILL_AFTER), the job is started again with
    --auto_resume and stopped by SIGUSR1 between checkpoints (what ``sbatch --signal`` sends; torchrun passes it
    on with ``--signals-to-handle``: docs/training.md), then started again to the end."""
    root, opt = setup
    run = root / 'killed'
    run.mkdir()
    read_only = uninterrupted[1]
    states = run / 'experiments' / NAME / 'training_states'
    with job(run, opt, 'killed', read_only) as j:
        j.node(0), j.node(1)
        wait_for(lambda: (states / f'{KILL_AFTER}.state').exists(), j, time.monotonic() + JOB_TIMEOUT_S)
        kill_tree(j.nodes[1].pid)  # node 1 dies: its agent and its worker
        codes = j.wait(time.monotonic() + NODE_LOSS_TIMEOUT_S)
        assert codes[0] not in (0, None), f'node 0 did not stop: {codes}\n{j.log()}'  # (its peer is gone)
    assert not (states / f'{ITERS}.state').exists()

    with job(run, opt, 'signalled', read_only, torchrun_args=SIGNALS_TO_HANDLE, args=['--auto_resume']) as j:
        j.node(0), j.node(1)
        logged = f'iter: {SIGNAL_AT:7d},'  # BasicSR's log line of that iteration
        wait_for(lambda: logged in j.log(tail=None), j, time.monotonic() + JOB_TIMEOUT_S)
        for node in j.nodes:  # to the agents, as Slurm signals the job steps
            os.kill(node.pid, signal.SIGUSR1)
        j.wait(time.monotonic() + NODE_LOSS_TIMEOUT_S)
        stopped = re.search(r'SIGUSR1: stopped after iteration (\d+)', j.log(tail=None))
        assert stopped, j.log()
        assert SIGNAL_AT <= int(stopped.group(1)) < ITERS, j.log()
    assert (states / f'{stopped.group(1)}.state').exists() and not (states / f'{ITERS}.state').exists()

    run_job(run, opt, 'resumed', read_only, args=['--auto_resume'])
    assert_same_end(run, uninterrupted[2])


@pytest.mark.slow
def test_worker_killed_under_max_restarts_ends_equal(setup, uninterrupted):
    """torchrun's elastic restart: node 1's worker dies; both agents (c10d rendezvous, ``--max-restarts 1``) start
    their workers again with the same arguments, --auto_resume among them."""
    root, opt = setup
    run = root / 'elastic'
    run.mkdir()
    with job(run, opt, 'elastic', False, torchrun_args=['--max-restarts', '1'], args=['--auto_resume'],
             elastic=True) as j:
        j.node(0), j.node(1)
        deadline = time.monotonic() + 2 * JOB_TIMEOUT_S
        wait_for(lambda: (run / 'experiments' / NAME / 'training_states' / f'{KILL_AFTER}.state').exists(), j,
                 deadline)
        workers = [pid for pid in descendants(j.nodes[1].pid)
                   if b'asid_arch.cli.train' in Path(f'/proc/{pid}/cmdline').read_bytes()]
        assert workers, j.log()
        os.kill(workers[-1], signal.SIGKILL)
        codes = j.wait(deadline)
        assert codes == [0, 0], f'exit statuses {codes}\n{j.log()}'
        assert 'Resuming training from epoch' in j.log(tail=None), j.log()
    assert_same_end(run, uninterrupted[2])
