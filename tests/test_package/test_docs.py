"""The user documents tell the truth about the repository: every relative link resolves (anchors included),
every ``asid-*`` command line they show names a subcommand and flags that command's ``--help`` lists, the
README stays short and links every page of docs/."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from asid_arch.cli.entry import COMMANDS as ENTRY_COMMANDS

from helpers import REPO

README = REPO / 'README.md'
DOC_PAGES = sorted((REPO / 'docs').glob('*.md'))
DOCUMENTS = [README] + DOC_PAGES
README_MAX_LINES = 200
MIN_FLAGS_SHOWN = 40  # the docs show more; fewer found means the parsing below lost them

# the console scripts, from their one list: {'asid-sr': 'asid_arch.cli.sr', ...}
COMMANDS: Dict[str, str] = {command: target.split(':')[0] for command, target in ENTRY_COMMANDS.items()}
MODULE_COMMANDS = {module: command for command, module in COMMANDS.items()}  # python -m / torchrun -m forms
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')
FENCE = re.compile(r'^```[^\n]*\n(.*?)^```', re.S | re.M)
INLINE = re.compile(r'`([^`\n]+)`')
# a shell line: its commands are separated by these; quoted strings and comments are no part of them
SEPARATOR = re.compile(r'&&|\|\||;|\||\$\(|\)|\bdo\b|\bthen\b')
QUOTED = re.compile(r'"[^"]*"|\'[^\']*\'')
SUBSTITUTION = re.compile(r'\$\([^()]*\)')  # $(...) once its quoted strings are out: a word of the outer command
COMMENT = re.compile(r'(?:^|\s)#.*$')
PREFIX = re.compile(r'^(?:\w+=\S*\s+|time\s+|/usr/bin/time\s+-v\s+|sudo\s+)*')  # env assignments, timers
SCRIPT = re.compile(r'^(asid-[a-z]+)(?=\s|$)')
MODULE = re.compile(r'^(?:\S*python\S*|torchrun)\s(?:.*\s)?-m\s+(asid_arch\.[\w.]+)(?=\s|$)')
FLAG = re.compile(r'^--?[A-Za-z][\w-]*')

HELP_SCRIPT = r'''
import contextlib, io, json, re, sys
from importlib import import_module
commands = json.loads(sys.argv[1])
texts = {}
for command, module in commands.items():
    main = import_module(module).main
    def help_of(argv):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            try:
                main(argv + ['--help'])
            except SystemExit:
                pass
        return out.getvalue()
    top = help_of([])
    texts[command] = top
    # subcommands: argparse lists them as the first positional argument, {a,b,c}
    found = re.search(r'^positional arguments:\n\s+\{([^}]*)\}', top, re.M)
    for sub in found.group(1).split(',') if found else ():
        texts[command + ' ' + sub] = help_of([sub])
print(json.dumps(texts))
'''


@pytest.fixture(scope='module')
def help_texts() -> Dict[str, str]:
    """``--help`` of every console script and subcommand: {'asid-sr': ..., 'asid-prepare train': ...}, read in
    one child process (the commands' main tunes the process it runs in)."""
    result = subprocess.run([sys.executable, '-c', HELP_SCRIPT, json.dumps(COMMANDS)], cwd=REPO, capture_output=True,
                            text=True, timeout=600, env={**os.environ, 'COLUMNS': '200'})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r'[`*_\[\]()]', '', heading.strip().lower())
    return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


def anchors(path: Path) -> set:
    return {slug(line.lstrip('#')) for line in path.read_text().splitlines() if re.match(r'#{1,6} ', line)}


def without_code(text: str) -> str:
    """The Markdown without fenced code blocks (links inside code are not links)."""
    return FENCE.sub('', text)


def broken_links(path: Path) -> List[str]:
    """Relative links of ``path`` whose file, or whose anchor in that file, does not exist."""
    problems = []
    for target in LINK.findall(without_code(path.read_text())):
        if re.match(r'[a-z]+:', target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition('#')
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            problems.append(f'{path.name}: {target} (no such file)')
        elif anchor and resolved.suffix == '.md' and anchor not in anchors(resolved):
            problems.append(f'{path.name}: {target} (no such heading)')
    return problems


def command_lines(text: str) -> Iterator[str]:
    """Every piece of code of a Markdown text: the lines of fenced blocks (continuation lines joined) and the
    inline code spans of the prose."""
    for block in FENCE.findall(text):
        yield from block.replace('\\\n', ' ').splitlines()
    yield from INLINE.findall(without_code(text))


def invocations(text: str) -> Iterator[Tuple[str, List[str]]]:
    """``(command, words after it)`` for every shell command of ``text`` that calls a console script, by name or
    as ``python -m`` / ``torchrun -m`` of its module. A command starts a line, or follows a separator, an
    environment assignment or a timer: a message quoted in prose that names a command is not a command."""
    for line in command_lines(text):
        for segment in SEPARATOR.split(SUBSTITUTION.sub('S', COMMENT.sub('', QUOTED.sub('Q', line)))):
            segment = PREFIX.sub('', segment.strip())
            match = SCRIPT.match(segment) or MODULE.match(segment)
            if match and match.re is MODULE:
                command = MODULE_COMMANDS.get(match.group(1))
            else:
                command = match.group(1) if match else None
            if command in COMMANDS:
                yield command, segment[match.end():].split()


def unknown_arguments(text: str, help_texts: Dict[str, str]) -> List[str]:
    """Subcommands and flags shown in ``text`` that the command's ``--help`` does not list."""
    problems = []
    for command, words in invocations(text):
        key = command
        subcommands = {k.split(' ', 1)[1] for k in help_texts if k.startswith(command + ' ')}
        if subcommands:
            if not words or words[0].startswith('-'):
                key = command  # the top level's own flags (--help)
            elif words[0] not in subcommands:
                problems.append(f'{command} {words[0]}: no such subcommand')
                continue
            else:
                key = f'{command} {words[0]}'
        for word in words:
            flag = FLAG.match(word)
            if flag and not re.search(r'(?<![\w-])' + re.escape(flag.group()) + r'(?![\w-])', help_texts[key]):
                problems.append(f'{key} {flag.group()}: not in its --help')
    return problems


def test_relative_links_resolve():
    problems = [p for path in DOCUMENTS for p in broken_links(path)]
    assert not problems, '\n'.join(problems)


def test_readme_is_short_and_links_every_page():
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    assert DOC_PAGES, 'no docs pages'
    linked = {(README.parent / target.partition('#')[0]).resolve() for target in LINK.findall(without_code(text))}
    assert not [p.name for p in DOC_PAGES if p.resolve() not in linked]


def test_commands_and_flags_exist(help_texts):
    assert set(COMMANDS) <= set(help_texts) and 'asid-prepare train' in help_texts and 'asid-bench zoo' in help_texts
    problems = [f'{path.name}: {p}' for path in DOCUMENTS for p in unknown_arguments(path.read_text(), help_texts)]
    assert not problems, '\n'.join(problems)
    flags = [w for path in DOCUMENTS for _, words in invocations(path.read_text()) for w in words if FLAG.match(w)]
    assert len(flags) >= MIN_FLAGS_SHOWN, 'the docs show fewer flags than expected: is the command parsing broken?'


def test_the_checks_find_what_is_wrong(help_texts, tmp_path):
    """The checker itself: misspelt flags, an unknown subcommand and a dead link are found; what is right is not."""
    text = ('```bash\nasid-sr a.png -o out -m asid_x4 --max-memroy 4   # a comment --not-a-flag\n'
            'asid-prepare trian --hr x\nasid-bench zoo --repeats 2 \\\n    --warmpu 1\n```\n'
            'Prose: `asid-export -m m.pth -o m.onnx --opset 18`, `a message naming asid-sr --not-a-flag`,\n'
            '`torchrun -m asid_arch.cli.train -opt x --launchr y`,\n'
            '`asid-bench paper --checkpoint A:2=$(python -c \'\') --datsets d`.\n')
    assert unknown_arguments(text, help_texts) == ['asid-sr --max-memroy: not in its --help',
                                                   'asid-prepare trian: no such subcommand',
                                                   'asid-bench zoo --warmpu: not in its --help',
                                                   'asid-train --launchr: not in its --help',
                                                   'asid-bench paper --datsets: not in its --help']
    page = tmp_path / 'page.md'
    page.write_text('[ok](page.md) [dead](missing.md) [web](https://example.org) [anchor](#nowhere)\n# Title\n')
    assert broken_links(page) == ['page.md: missing.md (no such file)', 'page.md: #nowhere (no such heading)']
