"""Random states of a training process, as data a training state can hold, and samples seeded by their identity.

Kit file (``utils/``). What a resumed run needs to continue exactly as the uninterrupted one:

* :func:`capture_random_states` / :func:`restore_random_states`: Python's ``random``, NumPy's global
  generator, torch's CPU generator and, where CUDA is in use, the current device's generator, as plain
  lists, ints, floats and CPU tensors, so that ``torch.load(weights_only=True)`` reads them back;
* :func:`gather_random_states`: every rank's states, in rank order (a collective under DDP: every rank
  calls it);
* :func:`preserved_random_states`: a block (validation, say) whose draws leave the training's random
  sequence as it was;
* :func:`sample_seed` and :func:`seeded`: one sample's augmentation as a pure function of (seed, epoch,
  position in the epoch's order): whichever process, data-loader worker or restart loads it, it draws
  the same crop, flips and rotation, and another epoch draws others.
"""
from __future__ import annotations

import contextlib
import hashlib
import random
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch
import torch.distributed as dist

NUMPY_SEED_MODULUS = 2**32  # numpy.random.seed takes 32-bit seeds
TORCH_SEED_MODULUS = 2**63  # torch.Generator.manual_seed takes int64 seeds
SEED_BYTES = 8
PYTHON_STATE_LEN = 625  # random.getstate()[1]: 624 words and the position
NUMPY_KEYS_LEN = 624  # numpy's MT19937 key
SAMPLE_STREAM = 1  # sample seeds derive from (seed, SAMPLE_STREAM, epoch, position); other uses take other streams


def derived_seed(*parts: int) -> int:
    """A 64-bit seed that is a fixed function of ``parts`` (the same in every process and Python version)."""
    text = '/'.join(str(int(p)) for p in parts).encode('ascii')
    return int.from_bytes(hashlib.blake2b(text, digest_size=SEED_BYTES).digest(), 'little')


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The seed of the sample drawn at ``position`` of ``epoch``'s order (before it is split among ranks)."""
    return derived_seed(seed, SAMPLE_STREAM, epoch, position)


def seed_all(seed: int) -> None:
    """Seed ``random``, NumPy's global generator and torch's CPU generator from one 64-bit ``seed``
    (CUDA generators untouched: ``torch.manual_seed`` would reseed them too)."""
    random.seed(seed)
    np.random.seed(seed % NUMPY_SEED_MODULUS)
    torch.random.default_generator.manual_seed(seed % TORCH_SEED_MODULUS)


def _host_states() -> tuple:
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _set_host_states(states: tuple) -> None:
    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.set_rng_state(states[2])


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Inside the block, ``random``, NumPy and torch (CPU) draw from ``seed``; afterwards they continue as before it."""
    saved = _host_states()
    seed_all(seed)
    try:
        yield
    finally:
        _set_host_states(saved)


def _cuda_in_use() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


@contextlib.contextmanager
def preserved_random_states() -> Iterator[None]:
    """Draws inside the block (CPU and the current CUDA device) do not change the sequence after it."""
    saved = _host_states()
    cuda = torch.cuda.get_rng_state() if _cuda_in_use() else None
    try:
        yield
    finally:
        _set_host_states(saved)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)


def capture_random_states() -> Dict[str, object]:
    """This process's random states as data: lists, ints, floats and CPU uint8 tensors."""
    version, python_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        'python': {'version': int(version), 'state': [int(v) for v in python_state],
                   'gauss': None if gauss is None else float(gauss)},
        'numpy': {'name': str(name), 'keys': [int(v) for v in keys], 'pos': int(pos), 'has_gauss': int(has_gauss),
                  'cached_gaussian': float(cached)},
        'torch': torch.get_rng_state(),
    }
    if _cuda_in_use():
        states['cuda'] = torch.cuda.get_rng_state()
    return states


def _python_state(python: dict) -> tuple:
    """``random.setstate``'s argument from the ``python`` entry of :func:`capture_random_states`."""
    return python['version'], tuple(python['state']), python.get('gauss')


def _numpy_state(numpy: dict) -> tuple:
    """``numpy.random.set_state``'s argument from the ``numpy`` entry of :func:`capture_random_states`."""
    return (numpy['name'], np.asarray(numpy['keys'], dtype=np.uint32), numpy['pos'], numpy['has_gauss'],
            numpy['cached_gaussian'])


def restore_random_states(states: Dict[str, object]) -> None:
    """Set this process's generators to ``states`` (from :func:`capture_random_states`; tensors may have been
    mapped to a GPU on loading)."""
    random.setstate(_python_state(states['python']))
    np.random.set_state(_numpy_state(states['numpy']))
    torch.set_rng_state(states['torch'].cpu())
    if states.get('cuda') is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(states['cuda'].cpu())


def random_states_problem(states: object) -> Optional[str]:
    """Why ``states`` (read from a training state) is not what :func:`capture_random_states` writes, or None."""
    if not isinstance(states, dict):
        return f'not a dict but {type(states).__name__}'
    python, numpy, cpu = states.get('python'), states.get('numpy'), states.get('torch')
    if not (isinstance(python, dict) and isinstance(python.get('state'), list)
            and len(python['state']) == PYTHON_STATE_LEN and all(isinstance(v, int) for v in python['state'])):
        return 'python: not a random.getstate() of Mersenne Twister'
    if not (isinstance(numpy, dict) and isinstance(numpy.get('keys'), list) and len(numpy['keys']) == NUMPY_KEYS_LEN
            and isinstance(numpy.get('pos'), int) and 0 <= numpy['pos'] <= NUMPY_KEYS_LEN):
        return 'numpy: not a numpy.random.get_state() of MT19937'
    for key in ('torch', 'cuda'):
        value = cpu if key == 'torch' else states.get('cuda')
        if (key == 'torch' or value is not None) and not (isinstance(value, torch.Tensor)
                                                          and value.dtype == torch.uint8 and value.dim() == 1):
            return f'{key}: not a generator state (a 1-D uint8 tensor)'
    try:  # the values themselves: the generators accept them (on a scratch generator, nothing changed here)
        random.Random().setstate(_python_state(python))
        np.random.RandomState().set_state(_numpy_state(numpy))
        torch.Generator().set_state(cpu.cpu())
    except (TypeError, ValueError, KeyError, OverflowError, RuntimeError) as err:
        return f'rejected by the generator ({type(err).__name__})'
    return None


def gather_random_states() -> List[Dict[str, object]]:
    """Every rank's :func:`capture_random_states`, in rank order (one entry without DDP). Under DDP every rank must
    call it (a collective); all receive the list."""
    mine = capture_random_states()
    if not (dist.is_available() and dist.is_initialized()):
        return [mine]
    gathered: List[Optional[Dict[str, object]]] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    return gathered
