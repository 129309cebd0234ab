"""Import order, the torchvision alias, and the kit dropped into a BasicSR tree."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from asid_arch.cli.kit import kit_files

from helpers import REPO

# What a BasicSR tree that imports with this torchvision would have done for itself:
PREINSTALLED_ALIAS = ("import sys, torchvision.transforms.functional as f; "
                      "sys.modules['torchvision.transforms.functional_tensor'] = f; ")


def run_python(code: str, cwd: Path, extra_path: str = '') -> subprocess.CompletedProcess:
    env = {'PYTHONPATH': extra_path, 'PATH': '/usr/bin:/bin'}
    return subprocess.run([sys.executable, '-c', code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_package_first_then_basicsr(tmp_path):
    code = ('import asid_arch.archs, basicsr; from basicsr.utils.registry import ARCH_REGISTRY; '
            "assert ARCH_REGISTRY.get('ASID') is asid_arch.ASID; print('ok')")
    result = run_python(code, tmp_path, str(REPO))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'ok'


@pytest.mark.slow
def test_basicsr_first_then_package(tmp_path):
    code = (PREINSTALLED_ALIAS + 'import basicsr; import asid_arch.archs; import asid_arch.archs; '
            "from basicsr.utils.registry import ARCH_REGISTRY; assert ARCH_REGISTRY.get('ASID') is asid_arch.ASID; "
            "print('ok')")
    result = run_python(code, tmp_path, str(REPO))
    assert result.returncode == 0, result.stderr


KIT = sorted(kit_files(REPO / 'asid_arch'))  # the kit's files, relative to the package (and to basicsr/)
KIT_FILES = [REPO / 'asid_arch' / rel for rel in KIT]


@pytest.fixture(scope='module')
def tree_with_kit(tmp_path_factory) -> Path:
    """A copy of the installed BasicSR with the kit files dropped in, each to its place in ``basicsr/``."""
    import basicsr

    tree = tmp_path_factory.mktemp('checkout')
    shutil.copytree(Path(basicsr.__file__).parent, tree / 'basicsr', ignore=shutil.ignore_patterns('__pycache__'))
    for rel in KIT:
        shutil.copy(REPO / 'asid_arch' / rel, tree / 'basicsr' / rel)
    return tree


@pytest.mark.parametrize('path', KIT_FILES, ids=lambda p: p.name)
def test_kit_files_import_only_torch_numpy_cv2_basicsr(path):
    """Kit files import the standard library, torch, numpy, cv2, basicsr and (relatively) each other only."""
    import ast

    tree = ast.parse(path.read_text())
    roots, relative = set(), set()
    folder = path.parent.relative_to(REPO / 'asid_arch')
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split('.')[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = Path(*folder.parts[:len(folder.parts) - node.level + 1], *(node.module or '').split('.'))
                for alias in node.names:  # `from ..metrics import asid_metric` names a module, `from .x import y` x
                    module = base / alias.name if (REPO / 'asid_arch' / base / f'{alias.name}.py').is_file() else base
                    relative.add(module.with_suffix('.py').as_posix())
            else:
                roots.add((node.module or '').split('.')[0])
    assert roots - set(sys.stdlib_module_names) <= {'torch', 'numpy', 'cv2', 'basicsr'}
    assert relative <= set(KIT)  # siblings inside the kit


@pytest.mark.slow
def test_drop_in_into_a_basicsr_tree(tree_with_kit, tmp_path):
    """Copy BasicSR, drop the kit files into basicsr/, build ASID from an option dict."""
    tree = tree_with_kit
    code = (PREINSTALLED_ALIAS + 'import torch; from basicsr.archs import build_network; '
            "net = build_network({'type': 'ASID', 'upscale': 3, 'num_blocks': 3}); "
            "assert type(net).__module__ == 'basicsr.archs.asid_arch', type(net).__module__; "
            "assert 'asid_arch' not in sys.modules; "
            "print(sum(p.numel() for p in net.parameters()), tuple(net(torch.rand(1, 3, 20, 20)).shape))")
    result = run_python(code, tmp_path, str(tree))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == '304011'


@pytest.mark.slow
def test_drop_in_and_package_together(tree_with_kit, tmp_path):
    """The package imported after a BasicSR tree that already has the kit: no double registration."""
    tree = tree_with_kit
    code = (PREINSTALLED_ALIAS + "import basicsr, asid_arch.archs; from basicsr.archs import build_network; "
            "print(type(build_network({'type': 'ASID'})).__name__)")
    result = run_python(code, tmp_path, f'{tree}:{REPO}')
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'ASID'


@pytest.mark.parametrize('command', ['asid-sr', 'asid-prepare', 'asid-export', 'asid-kit', 'asid-train', 'asid-test'])
def test_help_answers_without_importing_torch(command):
    """`--help` of our commands imports neither torch nor BasicSR (about 10 s on a busy 2-core machine)."""
    script = Path(sys.executable).parent / command
    if not script.is_file():
        pytest.skip(f'{script} is not installed (pip install -e . creates it)')
    result = subprocess.run([sys.executable, '-X', 'importtime', str(script), '--help'], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and 'usage:' in result.stdout
    imported = {line.rsplit('|', 1)[-1].strip() for line in result.stderr.splitlines() if '|' in line}
    assert 'torch' not in imported and 'basicsr' not in imported, sorted(imported)[:20]
    assert '``' not in result.stdout  # no reST quotes in help texts


@pytest.mark.slow
def test_public_names_register_what_they_use(tmp_path):
    """``import asid_arch`` imports neither torch nor BasicSR; a public name imports its module on first use, which
    registers it; ``import asid_arch.models`` registers the model and the metric."""
    code = ("import sys; import asid_arch; assert 'torch' not in sys.modules and 'basicsr' not in sys.modules; "
            "net = asid_arch.asid(2); "
            "from basicsr.utils.registry import ARCH_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY; "
            "assert ARCH_REGISTRY.get('ASID') is asid_arch.ASID and 'OmniSR' in ARCH_REGISTRY; "
            "assert 'ASIDModel' not in MODEL_REGISTRY; import asid_arch.models; "
            "assert 'ASIDModel' in MODEL_REGISTRY and 'calculate_psnr_matlab' in METRIC_REGISTRY; print('ok')")
    result = run_python(code, tmp_path, str(REPO))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'ok'


# ----------------------------------------------------------------------------------------------
# No side effects on import; the commands tune the process themselves
# ----------------------------------------------------------------------------------------------
TUNED_VARIABLES = ('THP_MEM_ALLOC_ENABLE', 'OMP_WAIT_POLICY')
FREED_MB = 800
# In a fresh process: allocate and free an 800 MB tensor, print the resident size then (MB) and the environment.
RESIDENT_AFTER_FREE = """
import os, sys, json
{imports}
import torch
def resident_mb():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) // 1024
before = resident_mb()
block = torch.ones({mb} * 2 ** 20 // 4)
del block
print(json.dumps({{'kept_mb': resident_mb() - before, 'env': {{k: os.environ.get(k) for k in {names}}}}}))
"""


@pytest.mark.skipif(not Path('/proc/self/status').exists(), reason='needs Linux /proc')
@pytest.mark.parametrize('imports', ['import asid_arch', 'import asid_arch.models', 'from asid_arch import ASID',
                                     'import asid_arch.integrations.spandrel'])
@pytest.mark.slow
def test_import_changes_nothing_in_the_host(tmp_path, imports):
    """What a chaiNNer or ComfyUI plugin does: the package (or its spandrel support) imported, then the host's own
    work. No environment variable is set, and freed memory goes back to the system as without the package."""
    import json

    if 'spandrel' in imports:
        pytest.importorskip('spandrel')
    code = RESIDENT_AFTER_FREE.format(imports=imports, mb=FREED_MB, names=TUNED_VARIABLES)
    result = run_python(code, tmp_path, str(REPO))
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen['env'] == {name: None for name in TUNED_VARIABLES}
    assert seen['kept_mb'] < FREED_MB // 4, seen  # freed memory handed back


@pytest.mark.slow
@pytest.mark.skipif(not Path('/proc/self/status').exists(), reason='needs Linux /proc')
def test_tune_cpu_is_what_keeps_freed_memory(tmp_path):
    """The same measurement after ``asid_arch.tune_cpu()``: the tuning is real (the test above would pass for a
    measurement that cannot see it otherwise)."""
    import json

    code = RESIDENT_AFTER_FREE.format(imports='import asid_arch; asid_arch.tune_cpu()', mb=FREED_MB,
                                      names=TUNED_VARIABLES)
    result = run_python(code, tmp_path, str(REPO))
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen['env'] == {'THP_MEM_ALLOC_ENABLE': '1', 'OMP_WAIT_POLICY': 'PASSIVE'}
    assert seen['kept_mb'] > FREED_MB // 2, seen


COMMAND_TUNING = """
import os, sys
from asid_arch.cpu_settings import keep_freed_memory, release_freed_memory
import asid_arch.cpu_settings as cpu_settings
calls = []
real = cpu_settings.tune_cpu
cpu_settings.tune_cpu = lambda *a, **k: calls.append(k) or real(*a, **k)
from asid_arch.cli.{module} import main
try:
    status = main({argv!r})
except SystemExit as stop:
    status = stop.code
print(status, calls, os.environ.get('OMP_WAIT_POLICY'), os.environ.get('THP_MEM_ALLOC_ENABLE'))
"""


@pytest.mark.parametrize('module, argv, keep', [
    ('train', ['-opt', 'missing.yml'], {}),
    ('test', ['-opt', 'missing.yml'], {}),
    ('sr', ['missing.png', '-m', 'missing.pth', '-o', 'out'], {'keep_freed': False}),  # --max-memory is a bound
    ('export', ['-m', 'missing.pth', '-o', 'x.onnx'], {}),
])
@pytest.mark.slow
def test_commands_apply_the_tuning(tmp_path, module, argv, keep):
    """Each command that runs a network tunes the process first (and asid-sr keeps malloc's default)."""
    code = COMMAND_TUNING.format(module=module, argv=argv)
    result = run_python(code, tmp_path, str(REPO))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == '2' and result.stdout.rstrip().endswith('PASSIVE 1'), result.stdout
    assert f'[{keep}]' in result.stdout, result.stdout


def test_tune_cpu_can_leave_the_openmp_waiting_policy_alone(tmp_path):
    """``asid-bench onnx`` runs the other runtimes with OpenMP's default waiting: tune_cpu(passive_wait=False)
    sets no waiting policy (and still its other settings)."""
    code = ("import os; os.environ.pop('OMP_WAIT_POLICY', None); os.environ.pop('GOMP_SPINCOUNT', None); "
            "os.environ.pop('THP_MEM_ALLOC_ENABLE', None); from asid_arch.cpu_settings import tune_cpu; "
            "applied = tune_cpu(passive_wait=False); "
            "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('THP_MEM_ALLOC_ENABLE'), sorted(applied))")
    result = run_python(code, tmp_path, str(REPO))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == ['None', '1'] and 'OMP_WAIT_POLICY' not in result.stdout.split(None, 2)[2]
