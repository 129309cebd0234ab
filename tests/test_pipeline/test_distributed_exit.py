"""A finished distributed run leaves its process group cleanly: no gloo thread survives into interpreter shutdown.

gloo's worker threads outliving the run aborted a rank now and then after "End of training" (SIGABRT,
"terminate called without an active exception"), and torchrun reported the finished run as failed.
"""
from __future__ import annotations

from helpers import run_python

GLOO_THREADS = ('pt_gloo_runloop', 'gloo_tcp_loop')  # the names gloo gives its worker and transport threads
# one process with the pipeline's imports, a gloo group of one, a DDP model held in a reference cycle (as BasicSR's
# models are: their hooks refer to them); prints the gloo threads alive before and after leave_process_group
CHILD = r'''
import os, socket, sys
import torch, torch.distributed as dist
from asid_arch.pipeline.launch import leave_process_group, prepare_basicsr
prepare_basicsr()  # what the pipeline imports before it joins the group

def gloo_threads():
    names = [open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task')]
    return sorted(n for n in names if n.startswith(tuple(sys.argv[1].split(','))))

with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=0, world_size=1)
class Holder:
    pass
holder = Holder()
holder.net = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))
holder.itself = holder  # a reference cycle, as a model whose hooks refer to it: freed by the garbage collector only
holder.net(torch.zeros(1, 2)).sum().backward()
del holder
print('before', len(gloo_threads()))
leave_process_group()
print('after', len(gloo_threads()), flush=True)
'''


def test_leave_process_group_ends_gloo_threads(tmp_path):
    result = run_python(CHILD, [','.join(GLOO_THREADS)], tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = dict(line.split() for line in result.stdout.splitlines() if line.startswith(('before', 'after')))
    assert int(counts['before']) > 0, result.stdout  # the check sees gloo's threads ...
    assert counts['after'] == '0', result.stdout  # ... and none is left once the group is left
