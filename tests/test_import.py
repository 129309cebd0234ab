"""Import order, the torchvision alias, and the kit dropped into a BasicSR tree."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from asid_arch.kit import kit_files

from conftest import REPO

# What a BasicSR tree that imports with this torchvision would have done for itself:
PREINSTALLED_ALIAS = ("import sys, torchvision.transforms.functional as f; "
                      "sys.modules['torchvision.transforms.functional_tensor'] = f; ")


def run_python(code: str, cwd: Path, extra_path: str = '') -> subprocess.CompletedProcess:
    env = {'PYTHONPATH': extra_path, 'PATH': '/usr/bin:/bin'}
    return subprocess.run([sys.executable, '-c', code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_package_first_then_basicsr(tmp_path):
    code = ('import asid_arch, basicsr; from basicsr.utils.registry import ARCH_REGISTRY; '
            "assert ARCH_REGISTRY.get('ASID') is asid_arch.ASID; print('ok')")
    result = run_python(code, tmp_path, str(REPO))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'ok'


def test_basicsr_first_then_package(tmp_path):
    code = (PREINSTALLED_ALIAS + 'import basicsr; import asid_arch; import asid_arch; '
            "from basicsr.utils.registry import ARCH_REGISTRY; assert ARCH_REGISTRY.get('ASID') is asid_arch.ASID; "
            "print('ok')")
    result = run_python(code, tmp_path, str(REPO))
    assert result.returncode == 0, result.stderr


KIT = sorted(kit_files(REPO / 'asid_arch'))  # the kit's files, relative to the package (and to basicsr/)
KIT_FILES = [REPO / 'asid_arch' / rel for rel in KIT]


def drop_kit(tree: Path) -> None:
    """The kit files copied into the BasicSR tree at ``tree``, each to its place in ``basicsr/``."""
    for rel in KIT:
        shutil.copy(REPO / 'asid_arch' / rel, tree / 'basicsr' / rel)


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


def test_drop_in_into_a_basicsr_tree(tmp_path):
    """Copy BasicSR, drop the kit files into basicsr/, build ASID from an option dict."""
    import basicsr

    tree = tmp_path / 'checkout'
    shutil.copytree(Path(basicsr.__file__).parent, tree / 'basicsr', ignore=shutil.ignore_patterns('__pycache__'))
    drop_kit(tree)
    code = (PREINSTALLED_ALIAS + 'import torch; from basicsr.archs import build_network; '
            "net = build_network({'type': 'ASID', 'upscale': 3, 'num_blocks': 3}); "
            "assert type(net).__module__ == 'basicsr.archs.asid_arch', type(net).__module__; "
            "assert 'asid_arch' not in sys.modules; "
            "print(sum(p.numel() for p in net.parameters()), tuple(net(torch.rand(1, 3, 20, 20)).shape))")
    result = run_python(code, tmp_path, str(tree))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == '304011'


def test_drop_in_and_package_together(tmp_path):
    """The package imported after a BasicSR tree that already has the kit: no double registration."""
    import basicsr

    tree = tmp_path / 'checkout'
    shutil.copytree(Path(basicsr.__file__).parent, tree / 'basicsr', ignore=shutil.ignore_patterns('__pycache__'))
    drop_kit(tree)
    code = (PREINSTALLED_ALIAS + "import basicsr, asid_arch; from basicsr.archs import build_network; "
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


def test_commands_still_register_what_they_use(tmp_path):
    """Run as a command, the package is lazy; the names it exports still work and register on use."""
    code = ("import sys; sys.argv = ['asid-sr']; import asid_arch; assert 'torch' not in sys.modules; "
            "net = asid_arch.asid(2); from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY; "
            "assert ARCH_REGISTRY.get('ASID') is asid_arch.ASID and 'ASIDModel' in MODEL_REGISTRY; print('ok')")
    result = run_python(code, tmp_path, str(REPO))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'ok'
