"""Reading an option file (YAML) as data only: no code runs, sizes are bounded, no key is silently lost.

BasicSR's ``parse_options`` reads option files with PyYAML's full ``Loader``, which builds whatever
Python object a tag names: ``manual_seed: !!python/object/apply:os.system ["..."]`` runs a command
the moment the file is read. ``asid-train``, ``asid-test``, the demo and ``asid-bench data`` read
option files with :func:`read_option_file` instead, which

* accepts only the tags of plain YAML data (mappings, lists, text, numbers, booleans, null, dates,
  binary, sets): every other tag (any ``!!python/...`` form, a local ``!tag``, a ``%TAG`` shorthand for
  either) is refused, naming its line, before anything is built;
* refuses a key given twice in one mapping (YAML keeps the last one without a word), naming both lines;
* bounds the file's size, the nesting depth and the size of the data once aliases are expanded: nine
  lines of anchors and aliases ("billion laughs") stand for 10^9 values, which BasicSR would expand
  when it logs the options;
* wants a mapping at the top level.

Every refusal is an :class:`OptionFileError`: one line naming the file and, where there is one, the line.
``--force_yml`` entries are applied by :func:`apply_overrides`, through the same loader (BasicSR
``eval``-s and ``exec``-s them).
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..console import shown

# The option files this project ships: inside the installed package (setup.py copies the repository's
# options/ folder there), or beside the package in a checkout (an editable install).
SHIPPED_OPTIONS = (Path(__file__).resolve().parents[1] / 'options', Path(__file__).resolve().parents[2] / 'options')
MAX_OPTION_FILE_BYTES = 1 << 20  # BasicSR option files are a few KB; 1 MiB is far beyond any real one
# the data once aliases are expanded, counted as the characters of every scalar plus one per value:
# a file without aliases stays below its own size, a few shared sections add a few times that
MAX_EXPANDED_SIZE = 8 * MAX_OPTION_FILE_BYTES
MAX_DEPTH = 32  # nesting levels (BasicSR's option files use 4)
YAML_TAG_PREFIX = 'tag:yaml.org,2002:'
PYTHON_TAG_PREFIX = YAML_TAG_PREFIX + 'python/'
MERGE_TAG = YAML_TAG_PREFIX + 'merge'  # the `<<` key, resolved by the loader itself
DATA_TAGS = frozenset(tag for tag in yaml.SafeLoader.yaml_constructors if tag is not None) | {MERGE_TAG}
NONE_WORDS = ('~', 'none', 'null')  # --force_yml values meaning None (BasicSR also reads `none`)
FORCE_YML_EXAMPLE = 'train:ema_decay=0.999'


class OptionFileError(ValueError):
    """An option file (or a ``--force_yml`` entry) that cannot be used; ``str()`` is one line."""


def _where(source: str, node_or_line: Union[Node, int, None] = None) -> str:
    line = node_or_line.start_mark.line + 1 if isinstance(node_or_line, Node) else node_or_line
    label = source if source.startswith('--') else f'option file {source}'  # a file, or a command-line value
    return label + (f', line {line}' if line else '')


def _shown_tag(tag: str) -> str:
    return '!!' + tag[len(YAML_TAG_PREFIX):] if tag.startswith(YAML_TAG_PREFIX) else tag


def _key_text(node: Node) -> str:
    return node.value if isinstance(node, ScalarNode) else f'({node.id})'


class OptionLoader(yaml.SafeLoader):
    """PyYAML's ``SafeLoader`` that checks the whole document (tags, duplicate keys, expanded size, depth)
    before building anything; refusals are :class:`OptionFileError`. ``source`` names the file in messages."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self.source = source

    def get_single_data(self) -> object:
        node = self.get_single_node()
        if node is None:
            return None
        self._check_document(node)
        return self.construct_document(node)

    def _check_document(self, root: Node) -> None:
        """One depth-first pass over the node graph (an alias is the same node object as its anchor)."""
        sizes: Dict[int, int] = {}  # id(node) -> size of the node once expanded
        on_path = set()
        stack: List[Tuple[Node, bool, Tuple[str, ...]]] = [(root, False, ())]
        while stack:
            node, leaving, path = stack.pop()
            if leaving:
                on_path.discard(id(node))
                size = sizes[id(node)] = 1 + sum(sizes[id(child)] for child in _children(node))
                if size > MAX_EXPANDED_SIZE:
                    raise OptionFileError(
                        f'{_where(self.source, node)}: its aliases (*name) expand the options beyond '
                        f'{MAX_EXPANDED_SIZE // (1 << 20)} MB: refused (an option file needs no more; a YAML alias '
                        'bomb needs far more)')
                if isinstance(node, MappingNode):
                    self._check_unique_keys(node, path)
                continue
            if id(node) in sizes:
                continue  # an alias of a node already checked
            if id(node) in on_path:
                raise OptionFileError(f'{_where(self.source, node)}: an alias refers to a value that contains it '
                                      '(a loop): refused')
            if len(path) > MAX_DEPTH:
                raise OptionFileError(f'{_where(self.source, node)}: nested more than {MAX_DEPTH} levels deep: '
                                      'refused')
            self._check_tag(node)
            if isinstance(node, ScalarNode):
                sizes[id(node)] = 1 + len(node.value)
                continue
            on_path.add(id(node))
            stack.append((node, True, path))
            if isinstance(node, MappingNode):
                for key, value in reversed(node.value):
                    stack.append((value, False, path + (_key_text(key), )))
                    stack.append((key, False, path))
            else:
                stack.extend((child, False, path + (f'[{i}]', )) for i, child in reversed(list(enumerate(node.value))))

    def _check_tag(self, node: Node) -> None:
        if node.tag in DATA_TAGS:
            return
        if node.tag.startswith(PYTHON_TAG_PREFIX):
            reason = 'an option file holds data (mappings, lists, text, numbers), never Python objects'
        else:
            reason = 'not a tag of plain YAML data (mappings, lists, text, numbers)'
        raise OptionFileError(f'{_where(self.source, node)}: the tag {_shown_tag(node.tag)} is refused: {reason}')

    def _check_unique_keys(self, node: MappingNode, path: Tuple[str, ...]) -> None:
        seen: Dict[object, Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG or not isinstance(key_node, ScalarNode):
                continue  # merged keys may be overridden; a list or mapping as a key is refused when built
            key = self.construct_object(key_node)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # unhashable: refused when the mapping is built
                continue
            if first is not key_node:
                dotted = ': '.join(path + (key_node.value, ))
                raise OptionFileError(
                    f'{_where(self.source, key_node)}: {dotted} is given twice (lines {first.start_mark.line + 1} '
                    f'and {key_node.start_mark.line + 1}); YAML would silently keep the last one: remove one')


def _children(node: Node) -> List[Node]:
    if isinstance(node, MappingNode):
        return [child for pair in node.value for child in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _yaml_error(err: yaml.YAMLError, source: str) -> OptionFileError:
    """A PyYAML error as one line naming the file, the line and the column."""
    mark = getattr(err, 'problem_mark', None)
    if isinstance(err, yaml.MarkedYAMLError) and mark is not None:
        context = f' ({err.context})' if err.context else ''
        return OptionFileError(f'{_where(source, mark.line + 1)}, column {mark.column + 1}: not valid YAML: '
                               f'{err.problem}{context}')
    return OptionFileError(f'{_where(source)}: not valid YAML: {" ".join(str(err).split())}')


def load_option_text(text: str, source: str) -> object:
    """The data of a YAML text, read by :class:`OptionLoader`; raises :class:`OptionFileError`."""
    loader = OptionLoader(text, source)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as err:
        raise _yaml_error(err, source) from None
    except RecursionError:
        raise OptionFileError(f'{_where(source)}: nested too deeply: refused') from None
    finally:
        loader.dispose()


def read_option_text(path: Union[str, os.PathLike]) -> str:
    """The text of the option file at ``path``: read once, at most :data:`MAX_OPTION_FILE_BYTES`, UTF-8.
    Raises :class:`OptionFileError` naming the file."""
    source = shown(path)
    try:
        with open(path, 'rb') as f:
            data = f.read(MAX_OPTION_FILE_BYTES + 1)
    except IsADirectoryError:
        raise OptionFileError(f'cannot read the option file {source}: it is a folder') from None
    except OSError as err:
        raise OptionFileError(f'cannot read the option file {source}: {err.strerror or err}') from None
    if len(data) > MAX_OPTION_FILE_BYTES:
        raise OptionFileError(f'{_where(source)}: larger than {MAX_OPTION_FILE_BYTES // (1 << 20)} MB: refused (an '
                              'option file is a few KB)')
    try:
        return data.decode('utf-8-sig')
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b'\n') + 1
        raise OptionFileError(f'{_where(source, line)}: not UTF-8 text (byte 0x{data[err.start]:02x}): save the '
                              'option file as UTF-8') from None


def options_from_text(text: str, path: Union[str, os.PathLike]) -> dict:
    """The options in ``text`` (the option file ``path``), a mapping, read as data only (see the module's
    docstring). Raises :class:`OptionFileError` with one line naming the file (and the line)."""
    source = shown(path)
    opt = load_option_text(text, source)
    if opt is None:
        raise OptionFileError(f'{_where(source)}: empty: an option file is a mapping of options (name:, model_type:, '
                              'datasets:, ...)')
    if not isinstance(opt, dict):
        raise OptionFileError(f'{_where(source)}: holds {kind_of(opt)}, not a mapping of options (name:, model_type:, '
                              'datasets:, ...)')
    return opt


def read_option_file(path: Union[str, os.PathLike]) -> dict:
    """The options of the file at ``path``: :func:`read_option_text`, then :func:`options_from_text`."""
    return options_from_text(read_option_text(path), path)


def kind_of(value: object) -> str:
    """'a list', 'text', 'a number', ... for messages about a value of the wrong kind."""
    return {list: 'a list', str: 'text', int: 'a number', float: 'a number', bool: 'a boolean'}.get(
        type(value), f'a {type(value).__name__}')


def parse_override_value(text: str, entry: str) -> object:
    """A ``--force_yml`` value: YAML data (``0.999``, ``[1, 2]``, ``!!float 5e3``, ``~``), or None for ``none``
    as BasicSR reads it. Tags other than plain data ones are refused as in a file."""
    text = text.strip()
    if text.lower() in NONE_WORDS:
        return None
    return load_option_text(text, f'--force_yml {entry!r}')


def apply_overrides(opt: dict, entries: Optional[Sequence[str]]) -> None:
    """Apply ``--force_yml KEY:SUBKEY=VALUE`` entries to ``opt``, in order. Every key must already exist
    (as BasicSR intends: a typo must not add an option nobody reads). Raises :class:`OptionFileError`."""
    for entry in entries or ():
        keys_text, sep, value_text = entry.partition('=')
        keys = [key.strip() for key in keys_text.split(':')]
        if not sep or not all(keys):
            raise OptionFileError(f'--force_yml {entry!r}: expected KEY=VALUE or KEY:SUBKEY=VALUE, e.g. '
                                  f'{FORCE_YML_EXAMPLE}')
        node: object = opt
        for depth, key in enumerate(keys):
            where = ':'.join(keys[:depth]) or 'the option file'
            if not isinstance(node, dict):
                raise OptionFileError(f'--force_yml {entry!r}: {where} is {kind_of(node)}, not a mapping with keys')
            if key not in node:
                close = difflib.get_close_matches(key, [str(k) for k in node], n=1)
                hint = f' (did you mean {close[0]}?)' if close else ''
                raise OptionFileError(f'--force_yml {entry!r}: {where} has no key {key}{hint}; --force_yml only '
                                      'changes options the file already has')
            if depth < len(keys) - 1:
                node = node[key]
        node[keys[-1]] = parse_override_value(value_text, entry)


def shipped_option_file(relative: str) -> Path:
    """One of the project's option files (``'train/ASID/demo_ASID_SRx2_cpu.yml'``), from an installed package
    or a checkout; :class:`OptionFileError` when neither has it."""
    for folder in SHIPPED_OPTIONS:
        if (folder / relative).is_file():
            return folder / relative
    raise OptionFileError(f'the option file {relative} is in neither ' + ' nor '.join(map(str, SHIPPED_OPTIONS)))
