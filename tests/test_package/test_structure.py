"""The package's shape, checked: no import cycles, files of one concern (no file over MAX_LINES lines but the
network's), no module that only re-exports, every console command a module of ``asid_arch/cli`` (or the bench)."""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, Set

import pytest

from helpers import REPO

PACKAGE = REPO / 'asid_arch'
MAX_LINES = 600
LONGER_ALLOWED = {'archs/asid_arch.py'}  # the network, top-down in the paper's order


def modules() -> Dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob('*.py')):
        parts = path.relative_to(REPO).with_suffix('').parts
        name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
        found[name] = path
    return found


def module_level_imports(name: str, path: Path, known: Set[str]) -> Set[str]:
    """The package modules ``name`` imports when it is imported (imports inside functions are left out)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == '__init__.py' else name.rsplit('.', 1)[0]
    out = set()
    for node in tree.body:
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = package.split('.')
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = '.'.join(anchor + ([base] if base else []))
            targets = [f'{base}.{alias.name}' for alias in node.names] + [base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition('.')[0]
            if target and target != name:
                out.add(target)
    return out


def test_no_import_cycles():
    found = modules()
    graph = {name: module_level_imports(name, path, set(found)) for name, path in found.items()}
    # a package imports its parents implicitly; only edges between distinct modules count
    state: Dict[str, int] = {}
    stack: List[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, '\n'.join(' -> '.join(c) for c in cycles)


@pytest.mark.parametrize('path', sorted(PACKAGE.rglob('*.py')), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_files_hold_one_concern(path):
    relative = str(path.relative_to(PACKAGE))
    lines = len(path.read_text().splitlines())
    assert relative in LONGER_ALLOWED or lines <= MAX_LINES, f'{relative}: {lines} lines (split it by concern)'


@pytest.mark.parametrize('path', sorted(PACKAGE.rglob('*.py')), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_only_re_exports(path):
    """A module whose body is imports of names (and ``__all__``) is a shim: import from the one home instead.
    Importing modules for what their import does (registration) is allowed."""
    tree = ast.parse(path.read_text())
    body = [node for node in tree.body if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    if not body or any(not isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign)) for node in body):
        return
    if any(isinstance(node, ast.Assign) and [getattr(t, 'id', '') for t in node.targets] != ['__all__']
           for node in body):
        return
    names = [alias.name for node in body if isinstance(node, ast.ImportFrom) for alias in node.names]
    submodules = {p.stem for p in path.parent.glob('*.py')} | {p.name for p in path.parent.iterdir() if p.is_dir()}
    re_exported = [n for n in names if n not in submodules and n != 'annotations']
    assert not re_exported, f'{path.relative_to(PACKAGE)} only re-exports {re_exported}'


def test_every_command_is_a_module_with_main():
    setup = (REPO / 'setup.py').read_text()
    commands = dict(re.findall(r"'(asid-[a-z]+)': '([\w.]+):main'", setup))
    assert set(commands) == {'asid-prepare', 'asid-train', 'asid-test', 'asid-sr', 'asid-export', 'asid-bench',
                             'asid-kit'}
    for command, target in commands.items():
        assert target.startswith(('asid_arch.cli.', 'asid_arch.bench.')), (command, target)
        path = REPO / (target.replace('.', '/') + '.py')
        assert 'def main(' in path.read_text(), (command, path)
