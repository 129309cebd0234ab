"""The package's shape, checked: no import cycles, no import that runs up a floor (FLOORS), files of one concern
(no file over MAX_LINES lines but the network's), no module that only re-exports, every console command a module
of ``asid_arch/cli`` (or the bench), every ``:mod:``/``:func:``/``:class:`` reference in a docstring resolves,
no class or function defined twice."""
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


def module_level_imports(name: str, path: Path, known: Set[str], everywhere: bool = False) -> Set[str]:
    """The package modules ``name`` imports when it is imported (imports inside functions are left out, unless
    ``everywhere``)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == '__init__.py' else name.rsplit('.', 1)[0]
    out = set()
    for node in (ast.walk(tree) if everywhere else tree.body):
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
    from asid_arch.cli.entry import COMMANDS

    commands = {command: target[:-len(':main')] for command, target in COMMANDS.items() if target.endswith(':main')}
    assert set(commands) == {'asid-prepare', 'asid-train', 'asid-test', 'asid-sr', 'asid-export', 'asid-bench',
                             'asid-kit'}
    for command, target in commands.items():
        assert target.startswith(('asid_arch.cli.', 'asid_arch.bench.')), (command, target)
        path = REPO / (target.replace('.', '/') + '.py')
        assert 'def main(' in path.read_text(), (command, path)


# ----------------------------------------------------------------------------------------------
# Floors: a module imports only from its own floor or the floors below (imports inside functions too)
# ----------------------------------------------------------------------------------------------
FLOORS = (
    # kit utilities, messages, CPU settings, downloads: no other floor
    ('utils', 'console', 'cpu_settings', 'download'),
    # the networks, the metric, image files
    ('archs', 'metrics', 'image_reader', 'image_writer', 'image_damage', 'apng'),
    # built on the networks
    ('models', 'from_weights', 'released', 'released_quality', 'inference', 'evaluation', 'integrations', 'data'),
    ('pipeline', ),  # BasicSR's train/test pipelines, set up safely
    ('cli', 'bench'),  # the commands
)  # and the package itself (asid_arch/__init__.py: the lazy public names) on top
# packages a module may import for what their import does, at any floor
ANY_FLOOR = {'asid_arch'}


def floor_of(name: str) -> int:
    """The floor of a dotted module name (``asid_arch`` itself: above all)."""
    parts = name.split('.')
    if len(parts) == 1:
        return len(FLOORS)
    for level, members in enumerate(FLOORS):
        if parts[1] in members:
            return level
    raise AssertionError(f'{name} is on no floor: add it to FLOORS in {Path(__file__).name}')


def all_imports(name: str, path: Path, known: Set[str]) -> Set[str]:
    """The package modules ``name`` imports anywhere in its file (module level and inside functions)."""
    return module_level_imports(name, path, known, everywhere=True)


def test_no_import_runs_up_a_floor():
    found = modules()
    upward = []
    for name, path in found.items():
        for target in sorted(all_imports(name, path, set(found)) - ANY_FLOOR):
            if floor_of(target) > floor_of(name):
                upward.append(f'{name} (floor {floor_of(name)}) imports {target} (floor {floor_of(target)})')
    assert not upward, '\n'.join(upward)


def test_every_module_is_on_a_floor():
    for name in modules():
        floor_of(name)


# ----------------------------------------------------------------------------------------------
# Names: every docstring reference resolves; no class or function defined twice
# ----------------------------------------------------------------------------------------------
REFERENCE = re.compile(r':(mod|func|class|meth|data|exc|attr):`~?\.?([\w.]+)`')
# names defined in several modules on purpose: the interface every command module has
SAME_IN_EVERY_COMMAND = {'main', 'build_parser'}


def defined_names(tree: ast.Module) -> Dict[str, Set[str]]:
    """Names bound at a module's top level -> the names bound in their bodies (classes) or an empty set."""
    names: Dict[str, Set[str]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names[node.name] = set()
        elif isinstance(node, ast.ClassDef):
            members = set()
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    members.add(item.name)
                elif isinstance(item, (ast.Assign, ast.AnnAssign)):
                    targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                    members |= {t.id for t in targets if isinstance(t, ast.Name)}
            names[node.name] = members
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Name):
                        names[leaf.id] = set()
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names[(alias.asname or alias.name).split('.')[0]] = set()
    return names


def resolves(target: str, role: str, here: str, found: Dict[str, Path], trees: Dict[str, ast.Module]) -> bool:
    """Whether ``target`` (as written in module ``here``) names a module, or something defined in one."""
    if target.startswith('asid_arch.') or target == 'asid_arch':
        module = target
        while module and module not in found:
            module = module.rpartition('.')[0]
        rest = target[len(module):].lstrip('.').split('.') if module else []
        if not module or (role == 'mod' and rest != ['']):
            return False
    else:
        module, rest = here, target.split('.')
        names = defined_names(trees[here])
        if rest[0] not in names and any(rest[0] in members for members in names.values()):
            return True  # a member of a class of this module, named alone (a method, an attribute)
    if rest == ['']:
        return True
    names = defined_names(trees[module])
    if rest[0] not in names:
        return False
    return len(rest) == 1 or rest[1] in names[rest[0]] or not names[rest[0]]  # an imported or assigned name: as far


def test_docstring_references_resolve():
    """``:mod:``, ``:func:``, ``:class:`` ... references name modules and objects that exist (``asid_arch.x.y``
    from anywhere; a bare name: defined or imported in the module that mentions it)."""
    found = modules()
    trees = {name: ast.parse(path.read_text()) for name, path in found.items()}
    broken = []
    for name, path in found.items():
        for role, target in REFERENCE.findall(path.read_text()):
            if not resolves(target, role, name, found, trees):
                broken.append(f'{path.relative_to(REPO)}: :{role}:`{target}`')
    assert not broken, '\n'.join(broken)


def test_no_name_defined_twice():
    """A class or function has one home in the package (a helper used in two places is imported, not copied)."""
    homes: Dict[str, List[str]] = {}
    for name, path in modules().items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                homes.setdefault(node.name, []).append(name)
    twice = {name: where for name, where in homes.items() if len(where) > 1 and name not in SAME_IN_EVERY_COMMAND
             and not (name.startswith('__') and name.endswith('__'))}  # a module's protocol (__getattr__) is no helper
    assert not twice, twice
