"""The package works from a plain (non-editable) install: option files shipped inside it, commands found, the demo's
recipe resolved, nothing read from the checkout."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

pytestmark = pytest.mark.slow

# in the child: only the installed copy is importable from the package's name (the checkout is not on the path)
CHECK = """
import sys, asid_arch
from pathlib import Path
from asid_arch.cli.demo import DEMO_OPTIONS
from asid_arch.pipeline.options_reading import read_option_file, shipped_option_file
site = Path(sys.argv[1]).resolve()
assert Path(asid_arch.__file__).resolve().is_relative_to(site), asid_arch.__file__
demo = shipped_option_file(DEMO_OPTIONS)
assert demo.resolve().is_relative_to(site), demo
opt = read_option_file(demo)
assert opt['network_g']['type'] == 'ASID', opt['network_g']
shipped = sorted(p.relative_to(site / 'asid_arch' / 'options').as_posix()
                 for p in (site / 'asid_arch' / 'options').rglob('*.yml'))
print(len(shipped))
"""


@pytest.fixture(scope='module')
def installed(tmp_path_factory) -> Path:
    """``pip install --no-deps --target`` of the checkout (a wheel build, not an editable install)."""
    site, source = tmp_path_factory.mktemp('site'), tmp_path_factory.mktemp('source') / 'asid_arch'
    # a copy of the checkout's files, so that the build's own folders are not left in the checkout
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns('.git', '.venv', '__pycache__', '*.egg-info', 'build',
                                                                'experiments', 'results', 'datasets'))
    result = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-build-isolation', '-q',
                             '--target', str(site), str(source)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return site


@pytest.mark.slow
def test_installed_package_ships_every_option_file(installed, tmp_path):
    result = subprocess.run([sys.executable, '-c', CHECK, str(installed)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env={'PYTHONPATH': str(installed), 'PATH': '/usr/bin:/bin'})
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.split()[-1]) == len(list((REPO / 'options').rglob('*.yml')))


@pytest.mark.parametrize('module', ['cli.demo', 'cli.sr', 'cli.prepare', 'cli.export', 'cli.kit', 'cli.train',
                                    'cli.test', 'bench'])
def test_installed_commands_answer(installed, tmp_path, module):
    """Every command of the installed package runs from an empty folder elsewhere (``--help``)."""
    result = subprocess.run([sys.executable, '-m', f'asid_arch.{module}', '--help'], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300,
                            env={'PYTHONPATH': str(installed), 'PATH': '/usr/bin:/bin'})
    assert result.returncode == 0 and 'usage:' in result.stdout, result.stderr[-2000:]


def test_installed_console_scripts_start_at_the_entry_functions(installed):
    """Each command's script (pip writes them from setup.py) imports its entry function of asid_arch/cli/entry.py,
    which answers Ctrl-C from the start (tests/test_package/test_console.py), not the command's module."""
    from asid_arch.cli.entry import COMMANDS, entry_name

    for command in COMMANDS:
        script = (installed / 'bin' / command).read_text()
        assert f'from asid_arch.cli.entry import {entry_name(command)}\n' in script, (command, script)
