"""What several subcommands share: the machine's description, timing helpers, one figure in a fresh
process, and the checks of user-given files."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

SHARED_ENV = 'ASID_SHARED'  # the reference-data folder (golden files), as the test suite finds it
STDERR_TAIL = 2000  # characters of a failed measurement's stderr shown


def machine() -> str:
    """CPU model, cores, torch version and threads (and the GPU): the line every report starts with."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    gpu = f', {torch.cuda.get_device_name()}' if torch.cuda.is_available() else ''
    return f'{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads{gpu}'


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_times(runs: Dict[str, Callable[[], object]], rounds: int, warmup: int,
                      clock: Callable[[], float] = time.perf_counter) -> Dict[str, List[float]]:
    """Each function of ``runs`` in turn, ``warmup`` untimed rounds then ``rounds`` timed ones: the times
    per name by ``clock`` (wall clock; ``time.process_time`` gives the CPU time of the process's threads).
    Interleaving gives every contender the same machine state (load, caches, heap)."""
    times: Dict[str, List[float]] = {name: [] for name in runs}
    for i in range(warmup + rounds):
        for name, fn in runs.items():
            start = clock()
            fn()
            if i >= warmup:
                times[name].append(clock() - start)
    return times


def in_fresh_process(args: Sequence[str], what: str, env: Optional[Dict[str, str]] = None,
                     unset: Sequence[str] = ()) -> dict:
    """``python -m asid_arch.bench <args>`` in a new process (this one's environment, updated by ``env``, without
    the variables named in ``unset``); the JSON dict of its last output line. (Importing asid_arch keeps freed
    heap memory for reuse, so one process per figure keeps each peak its own.) A failed run is a RuntimeError
    with the end of its stderr."""
    environment = {**os.environ, **(env or {})}
    for name in unset:
        environment.pop(name, None)
    result = subprocess.run([sys.executable, '-m', 'asid_arch.bench', *args], capture_output=True, text=True,
                            env=environment)
    if result.returncode != 0:
        raise RuntimeError(f'{what}: measurement failed:\n{result.stderr[-STDERR_TAIL:]}')
    return json.loads(result.stdout.strip().splitlines()[-1])


def print_json(figure: dict) -> int:
    """An internal subcommand's answer: its figure as one JSON line (read by :func:`in_fresh_process`)."""
    print(json.dumps(figure))
    return 0


def missing_file(path: Optional[Path], option: str, hint: str) -> bool:
    """True (after saying so on stderr) when the user named a ``path`` that is not a file."""
    if path is None or path.is_file():
        return False
    print(f'asid-bench: {option} {path}: no such file ({hint})', file=sys.stderr)
    return True


def shared_folder() -> Optional[Path]:
    """The reference-data folder named by ``ASID_SHARED``, or None when the variable is unset or empty."""
    value = os.environ.get(SHARED_ENV, '')
    return Path(value) if value else None


def no_grad_call(net, x):
    """``net(x)`` in inference mode."""
    import torch

    with torch.inference_mode():
        return net(x)


def outputs_problem(out: Path, names: Sequence[str]) -> str:
    """'' when the outputs ``names`` can be written in ``out``; otherwise the first that may not be replaced (only
    a regular file is ever replaced: not a FIFO, a device, a folder, a link), in one line."""
    from ..utils.asid_files import NotARegularFile, check_replaceable

    for name in names:
        try:
            check_replaceable(out / name)
        except NotARegularFile as err:
            return str(err)
    return ''


def write_output(path: Path, data: Union[str, bytes]) -> None:
    """Write a result file atomically (a reader sees the old file or the new one; only a regular file is
    replaced)."""
    from ..utils.asid_files import atomic_write

    content = data.encode('utf-8') if isinstance(data, str) else data
    atomic_write(path, lambda f: f.write(content))
