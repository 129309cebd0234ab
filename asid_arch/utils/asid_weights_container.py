"""What a weights file declares, read and checked before torch reads it.

Kit file (``basicsr/utils/asid_weights_container.py`` in a BasicSR checkout): torch and the standard library
only. The three formats torch.load reads (a zip archive of stored records, the legacy pickle format from
before PyTorch 1.6, safetensors) are read here as metadata only: the pickle is unpickled into what it
*declares* (:class:`View`: dtype, shape, stride, offset, the storage's size) with no tensor built and no
storage read, and every record and storage is checked against the bytes the file holds. A forged size,
stride or record therefore cannot make a small file cost more memory or time than its size. Every problem
is a :class:`~asid_arch.utils.asid_errors.PretrainedWeightsError` naming the file.
"""
from __future__ import annotations

import io
import json
import math
import mmap
import os
import pickle
import stat
import struct
import zipfile
from collections import Counter, OrderedDict
from pathlib import Path
from typing import BinaryIO, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .asid_errors import PretrainedWeightsError, first_line, printable

MAX_KEYS_LISTED = 8  # key names shown in an error message

ZIP_SIGNATURE = b'PK\x03\x04'  # torch.save's format since PyTorch 1.6: a zip archive of stored records
PICKLE_PROTOCOL_OPCODE = b'\x80'  # the legacy format (before 1.6) starts with a pickle
LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION = 0x1950a86a20f9469cfc6c, 1001  # torch.serialization's constants
ZIP_LOCAL_HEADER = struct.Struct('<4s22xHH')  # signature, ..., file name length, extra field length
LEGACY_RECORD_COUNT = 8  # a legacy storage's data is preceded by its element count (int64)
# the storage classes a checkpoint names: (dtype, bytes per element)
STORAGE_TYPES = {
    'DoubleStorage': ('float64', 8), 'FloatStorage': ('float32', 4), 'HalfStorage': ('float16', 2),
    'BFloat16Storage': ('bfloat16', 2), 'LongStorage': ('int64', 8), 'IntStorage': ('int32', 4),
    'ShortStorage': ('int16', 2), 'CharStorage': ('int8', 1), 'ByteStorage': ('uint8', 1), 'BoolStorage': ('bool', 1),
    'ComplexFloatStorage': ('complex64', 8), 'ComplexDoubleStorage': ('complex128', 16),
    'QInt8Storage': ('qint8', 1), 'QUInt8Storage': ('quint8', 1), 'QInt32Storage': ('qint32', 4),
    'QUInt4x2Storage': ('quint4x2', 1), 'QUInt2x4Storage': ('quint2x4', 1), 'UntypedStorage': ('uint8', 1),
}
# tensors a weights file may declare but ASID cannot use: what they are, and what to do instead
UNUSABLE_TENSORS = {
    'sparse': ('sparse tensors', "a network's weights are dense: save net.state_dict() as it is"),
    'meta': ('meta-device tensors (a shape without values)', 'the network was never given real weights; '
             'save the state dict of a trained network'),
    'quantized': ('quantized tensors', 'ASID loads floating-point weights: save the state dict of the float model'),
    'complex': ('complex tensors', "the network's weights are real floating-point numbers"),
    'other': ('tensors of a kind a weights file does not hold (nested, subclassed or device-specific)',
              'save net.state_dict() of a plain PyTorch network'),
}
MAX_TENSOR_DIMS = 64  # PyTorch's own limit on the number of dimensions
SAFETENSORS_SUFFIX = '.safetensors'  # torch.load reads files so named through the safetensors package
SAFETENSORS_HEADER = struct.Struct('<Q')  # the length of the JSON header that follows
SAFETENSORS_DTYPES = {
    'F64': ('float64', 8), 'F32': ('float32', 4), 'F16': ('float16', 2), 'BF16': ('bfloat16', 2),
    'F8_E5M2': ('float8_e5m2', 1), 'F8_E4M3': ('float8_e4m3fn', 1), 'I64': ('int64', 8), 'I32': ('int32', 4),
    'I16': ('int16', 2), 'I8': ('int8', 1), 'U64': ('uint64', 8), 'U32': ('uint32', 4), 'U16': ('uint16', 2),
    'U8': ('uint8', 1), 'BOOL': ('bool', 1), 'C64': ('complex64', 8),
}
PICKLE2_MODULES = {'__builtin__': 'builtins'}  # torch.save writes pickle protocol 2, with Python 2's module names


class View(NamedTuple):
    """A strided tensor as described by its metadata: what touching its elements would read."""
    dtype: str
    itemsize: int
    shape: tuple
    stride: tuple
    offset: int
    storage_bytes: int


class Unusable(NamedTuple):
    """A tensor of a kind the network cannot load (a key of :data:`UNUSABLE_TENSORS`)."""
    kind: str


class _Storage(NamedTuple):
    """A storage as a checkpoint declares it (already checked against the bytes the file holds)."""
    dtype: str
    itemsize: int
    numel: int


class _StorageType(NamedTuple):
    dtype: str
    itemsize: int


class _RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a Python object that is not part of a weights file."""


def _is_count(value: object) -> bool:
    return type(value) is int and value >= 0


def _declared_view(storage: object, offset: object, shape: object, stride: object, dtype: object = None) -> View:
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError('a tensor without a storage')
    if dtype is None:
        return View(storage.dtype, storage.itemsize, shape, stride, offset, storage.numel * storage.itemsize)
    if not isinstance(dtype, _StorageType):
        raise pickle.UnpicklingError(f'unknown tensor dtype {dtype!r}')
    return View(dtype.dtype, dtype.itemsize, shape, stride, offset, storage.numel * storage.itemsize)


def _dtype_global(name: str) -> Optional[_StorageType]:
    """``torch.float32`` and the other dtypes a pickle may name, as (name, bytes per element)."""
    value = vars(torch).get(name)  # not getattr: that could import a lazily loaded submodule of that name
    if not isinstance(value, torch.dtype):
        return None
    sizes = {dtype: size for dtype, size in STORAGE_TYPES.values()}
    size = sizes.get(name, getattr(value, 'itemsize', None))
    return _StorageType(name, size) if size else None


# torch._utils' rebuild functions, as metadata readers: nothing is built, no storage is read
_TENSOR_BUILDERS: Dict[str, Callable[..., object]] = {
    '_rebuild_tensor': lambda storage, offset, shape, stride: _declared_view(storage, offset, shape, stride),
    '_rebuild_tensor_v2': lambda storage, offset, shape, stride, *rest: _declared_view(storage, offset, shape, stride),
    '_rebuild_tensor_v3': lambda storage, offset, shape, stride, grad, hooks, dtype, *rest: _declared_view(
        storage, offset, shape, stride, dtype),
    '_rebuild_parameter': lambda data, *rest: data,
    '_rebuild_parameter_with_state': lambda data, *rest: data,
    '_rebuild_sparse_tensor': lambda *args: Unusable('sparse'),
    '_rebuild_meta_tensor_no_storage': lambda *args: Unusable('meta'),
    '_rebuild_qtensor': lambda *args: Unusable('quantized'),
    '_rebuild_nested_tensor': lambda *args: Unusable('other'),
    '_rebuild_wrapper_subclass': lambda *args: Unusable('other'),
    '_rebuild_device_tensor_from_numpy': lambda *args: Unusable('other'),
    '_rebuild_device_tensor_from_cpu_tensor': lambda *args: Unusable('other'),
}


def _latin1(text: object, encoding: str = 'latin1') -> bytes:
    """``_codecs.encode`` as pickle protocol 2 uses it for bytes: never another codec (hex or base64 grow
    their input, and a chain of them would multiply a small pickle into gigabytes)."""
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
        raise pickle.UnpicklingError('_codecs.encode used for more than bytes')
    return text.encode('latin1')


def _copied_bytes(data: object = b'') -> bytearray:
    """``bytearray(data)`` of existing bytes only (``bytearray(n)`` would allocate n bytes)."""
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError('bytearray of something else than bytes')
    return bytearray(data)


_PLAIN_GLOBALS: Dict[Tuple[str, str], object] = {
    ('collections', 'OrderedDict'): OrderedDict, ('collections', 'Counter'): Counter, ('builtins', 'set'): set,
    ('builtins', 'frozenset'): frozenset, ('builtins', 'bytearray'): _copied_bytes, ('builtins', 'complex'): complex,
    ('_codecs', 'encode'): _latin1, ('torch', 'Size'): tuple, ('torch', 'device'): lambda *args: args,
    ('torch.serialization', '_get_layout'): str,
    # subclass of a tensor (torch._tensor._rebuild_from_type_v2): the tensor it wraps is what counts; the
    # classes themselves are names here, never called (torch.Tensor(n) would allocate n elements)
    ('torch._tensor', '_rebuild_from_type_v2'): lambda build, new_type, args, state: build(*args),
    ('torch', 'Tensor'): 'torch.Tensor', ('torch.nn.parameter', 'Parameter'): 'torch.nn.Parameter',
}


class _DeclarationReader(pickle.Unpickler):
    """Reads a checkpoint's pickle into what it *declares*: containers of :class:`View` (and
    :class:`Unusable`), building no tensor and reading no storage. Globals are limited to those a
    weights file needs (a subset of what ``torch.load(weights_only=True)`` accepts); any other is
    refused with :class:`_RefusedGlobal`, and nothing named in the file is imported or called."""

    def __init__(self, file: object, storage: Callable[[object], _Storage]) -> None:
        super().__init__(file, encoding='utf-8')
        self._storage = storage

    def persistent_load(self, pid: object) -> _Storage:
        return self._storage(pid)

    def find_class(self, module: str, name: str) -> object:
        module = PICKLE2_MODULES.get(module, module)
        if (module, name) in _PLAIN_GLOBALS:
            return _PLAIN_GLOBALS[module, name]
        if module == 'torch' and name in STORAGE_TYPES:
            return _StorageType(*STORAGE_TYPES[name])
        if module == 'torch._utils' and name in _TENSOR_BUILDERS:
            return _TENSOR_BUILDERS[name]
        if module == 'torch':
            dtype = _dtype_global(name)
            if dtype is not None:
                return dtype
            if isinstance(vars(torch).get(name), torch.qscheme):  # quantization scheme of a quantized tensor
                return name
        raise _RefusedGlobal(f'{module}.{name}')


class _NoGlobals(pickle.Unpickler):
    """Plain data only (the legacy format's header pickles)."""

    def find_class(self, module: str, name: str) -> object:
        raise _RefusedGlobal(f'{module}.{name}')


def _storage_reference(pid: object, fields: int) -> tuple:
    if not (isinstance(pid, tuple) and len(pid) == fields and pid[0] == 'storage' and isinstance(pid[1], _StorageType)
            and isinstance(pid[2], str) and _is_count(pid[4])):
        raise pickle.UnpicklingError(f'unknown persistent id {str(pid)[:80]}')
    return pid


def _zip_declarations(file: BinaryIO, size: int, source: str) -> object:
    """What a zip checkpoint declares, after checking its records: stored (not compressed), each within
    the file, every storage exactly the size of its record. Raises :class:`PretrainedWeightsError`."""
    archive = zipfile.ZipFile(file)
    infos = archive.infolist()
    names = [info.filename for info in infos]
    if not infos or '/' not in names[0] or len(set(names)) != len(names):
        raise PretrainedWeightsError(f'{source} is a zip archive but not a PyTorch checkpoint (no single folder of '
                                     'records, or a record named twice)')
    prefix = names[0].split('/', 1)[0] + '/'
    if any(name[len(prefix):] == 'constants.pkl' or name[len(prefix):].startswith('code/') for name in names):
        raise PretrainedWeightsError(
            f'{source} is a TorchScript archive (torch.jit.save), not a state dict of weights: load it with '
            'torch.jit.load (it runs code: only a file you trust) and save its state_dict() with torch.save')
    records = {}
    for info in infos:
        if not info.filename.startswith(prefix):
            raise PretrainedWeightsError(f'{source} is a zip archive but not a PyTorch checkpoint (records outside '
                                         f'{prefix}: {printable(info.filename)})')
        name = info.filename[len(prefix):]
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1 or info.compress_size != info.file_size:
            raise PretrainedWeightsError(
                f'{source}: record {printable(name)} is compressed or encrypted; torch.save stores records as they '
                'are (a compressed record can unpack to far more than the file holds): re-save them with torch.save')
        file.seek(info.header_offset)
        header = file.read(ZIP_LOCAL_HEADER.size)
        if len(header) < ZIP_LOCAL_HEADER.size or not header.startswith(ZIP_SIGNATURE):
            raise PretrainedWeightsError(f'{source} is not a readable PyTorch checkpoint: truncated or another format '
                                         f'(record {printable(name)} has no header)')
        _, name_length, extra_length = ZIP_LOCAL_HEADER.unpack(header)
        start = info.header_offset + ZIP_LOCAL_HEADER.size + name_length + extra_length
        if start + info.file_size > size:
            raise PretrainedWeightsError(f'{source}: record {printable(name)} declares {info.file_size} bytes, more '
                                         f'than the file holds ({size} bytes): truncated or forged')
        records[name] = (start, info.file_size)
    if 'data.pkl' not in records:
        raise PretrainedWeightsError(f'{source} is a zip archive but not a PyTorch checkpoint (no data.pkl)')

    def storage(pid: object) -> _Storage:
        _, kind, key, _location, numel = _storage_reference(pid, 5)
        held = records.get(f'data/{key}', (0, None))[1]
        if held is None:
            raise PretrainedWeightsError(f'{source}: storage {key} has no record data/{key}: truncated or forged')
        if numel * kind.itemsize != held:
            raise PretrainedWeightsError(f'{source}: storage data/{key} declares {numel * kind.itemsize} bytes '
                                         f'({numel} x {kind.dtype}), its record holds {held}: damaged or forged')
        return _Storage(kind.dtype, kind.itemsize, numel)

    start, length = records['data.pkl']  # read as torch reads it (zipfile would also insist on a CRC torch may omit)
    file.seek(start)
    return _DeclarationReader(io.BytesIO(file.read(length)), storage).load()


def _legacy_declarations(file: BinaryIO, size: int, source: str) -> object:
    """What a legacy (before PyTorch 1.6) checkpoint declares, after checking that each storage's data,
    read after the pickles as (element count, bytes), is in the file at the size declared."""
    with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:  # reads never allocate more than the file
        if _NoGlobals(data).load() != LEGACY_MAGIC_NUMBER or _NoGlobals(data).load() != LEGACY_PROTOCOL_VERSION:
            raise PretrainedWeightsError(f'{source} is not a PyTorch checkpoint (a pickle without the magic number)')
        system = _NoGlobals(data).load()
        order = '<' if not isinstance(system, Mapping) or system.get('little_endian', True) else '>'
        roots: Dict[str, _Storage] = {}

        def storage(pid: object) -> _Storage:
            if isinstance(pid, tuple) and pid[:1] == ('module', ):
                raise _RefusedGlobal('a pickled nn.Module')
            _, kind, key, _location, numel, view = _storage_reference(pid, 6)
            root = roots.setdefault(key, _Storage(kind.dtype, kind.itemsize, numel))  # the first declaration counts
            if view is None:
                return root
            if not (isinstance(view, tuple) and len(view) == 3 and _is_count(view[1]) and _is_count(view[2])
                    and view[1] + view[2] <= root.numel):
                raise PretrainedWeightsError(f'{source}: a storage view reaches beyond storage {key}: damaged or '
                                             'forged')
            return _Storage(root.dtype, root.itemsize, view[2])

        content = _DeclarationReader(data, storage).load()
        keys = _NoGlobals(data).load()
        if not isinstance(keys, list) or set(keys) != set(roots) or len(keys) != len(roots):
            raise PretrainedWeightsError(f'{source}: the storages listed do not match those the tensors use: damaged')
        position = data.tell()
        for key in keys:
            count = struct.unpack(order + 'q', data[position:position + LEGACY_RECORD_COUNT])[0] \
                if position + LEGACY_RECORD_COUNT <= size else -1
            position += LEGACY_RECORD_COUNT + max(count, 0) * roots[key].itemsize
            if count != roots[key].numel or position > size:
                raise PretrainedWeightsError(f'{source}: storage {key} declares {roots[key].numel} x '
                                             f'{roots[key].dtype}, the file does not hold them: truncated or forged')
    return content


def _safetensors_declarations(file: BinaryIO, size: int, source: str) -> Dict[str, View]:
    """What a ``.safetensors`` file declares in its JSON header, after checking that each tensor's bytes
    are inside the data that follows and of the size its shape and dtype give."""
    length = SAFETENSORS_HEADER.unpack(file.read(SAFETENSORS_HEADER.size))[0]
    if length > size - SAFETENSORS_HEADER.size:
        raise PretrainedWeightsError(f'{source}: its header declares {length} bytes, more than the file holds '
                                     f'({size} bytes): truncated or forged')
    header = json.loads(file.read(length))
    data_bytes = size - SAFETENSORS_HEADER.size - length
    views = {}
    for key, entry in header.items():
        if key == '__metadata__':
            continue
        dtype, itemsize = SAFETENSORS_DTYPES[entry['dtype']]
        shape, (begin, end) = tuple(entry['shape']), entry['data_offsets']
        if not (all(_is_count(n) for n in (*shape, begin, end)) and begin <= end <= data_bytes
                and math.prod(shape) * itemsize == end - begin):
            raise PretrainedWeightsError(f'{source}: tensor {key} declares {shape} x {dtype} at bytes {begin} to '
                                         f'{end} of {data_bytes}: truncated or forged')
        stride = tuple(math.prod(shape[i + 1:]) for i in range(len(shape)))
        views[key] = View(dtype, itemsize, shape, stride, 0, end - begin)
    return views


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, 'a named pipe'), (stat.S_ISCHR, 'a character device'), (stat.S_ISBLK, 'a block device'),
             (stat.S_ISSOCK, 'a socket'))
    return next((name for test, name in kinds if test(mode)), 'not a regular file')


def declared_content(path: Path, source: str) -> Tuple[object, int, bool]:
    """``(what the file declares, its size, whether it is a zip archive)``, for a readable regular file whose
    records and storages are all within what it holds; :class:`PretrainedWeightsError` otherwise. Only the
    file's headers and pickle are read (never a FIFO or a device: they could block or never end)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise PretrainedWeightsError(f'{source}: no such file') from None
    except OSError as err:
        raise PretrainedWeightsError(f'{source} cannot be read ({err.strerror or err})') from None
    if stat.S_ISDIR(info.st_mode):
        raise PretrainedWeightsError(f'{source} is a folder, not a weights file: give the path of the .pth file')
    if not stat.S_ISREG(info.st_mode):
        raise PretrainedWeightsError(f'{source} is {_file_kind(info.st_mode)}, not a weights file: give the path of '
                                     'a .pth file')
    if info.st_size == 0:
        raise PretrainedWeightsError(f'{source} is empty (0 bytes): not a checkpoint')
    try:  # O_NONBLOCK: should the path have become a FIFO since, opening it does not wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0))
    except OSError as err:
        raise PretrainedWeightsError(f'{source} cannot be read ({err.strerror or err})') from None
    with os.fdopen(fd, 'rb') as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
            raise PretrainedWeightsError(f'{source} changed while it was read: not a regular file any more')
        head = file.read(len(ZIP_SIGNATURE))
        file.seek(0)
        try:
            if path.name.endswith(SAFETENSORS_SUFFIX):
                return _safetensors_declarations(file, info.st_size, source), info.st_size, False
            if head == ZIP_SIGNATURE:
                return _zip_declarations(file, info.st_size, source), info.st_size, True
            if head.startswith(PICKLE_PROTOCOL_OPCODE):
                return _legacy_declarations(file, info.st_size, source), info.st_size, False
        except _RefusedGlobal:
            raise PretrainedWeightsError(
                f'refused to load {source}: besides tensors it holds Python objects, which could run code when '
                'loaded; only plain weights files are accepted (re-save the state dict with torch.save)') from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
                OverflowError, RecursionError, MemoryError, OSError, struct.error, zipfile.BadZipFile) as err:
            if isinstance(err, PretrainedWeightsError):
                raise
            raise PretrainedWeightsError(f'{source} is not a readable PyTorch checkpoint: truncated or another format '
                                         f'({type(err).__name__}: {first_line(err)})') from None
    raise PretrainedWeightsError(f'{source} is not a PyTorch checkpoint (neither a zip archive nor a pickle)')


def select_state(content: object, keys: Sequence[str], source: str, tensor_types: tuple,
                 ) -> Tuple[Dict[str, object], Optional[str]]:
    """The state dict in ``content`` (the first of ``keys`` holding one, else ``content`` itself), with a
    leading ``module.`` dropped from its keys: ``(state, key used)``."""
    if not isinstance(content, Mapping):
        kind = 'Tensor' if isinstance(content, tensor_types) else type(content).__name__
        raise PretrainedWeightsError(f'{source} holds a {kind}, not a state dict')
    used = None
    for key in list(keys) + ['params']:
        if isinstance(content.get(key), Mapping) and content[key]:
            content, used = content[key], key
            break
    if not content or not all(isinstance(k, str) and isinstance(v, tensor_types) for k, v in content.items()):
        raise PretrainedWeightsError(f'{source} is not a state dict of tensors (top-level keys: '
                                     f'{[str(k)[:40] for k in list(content)[:5]]})')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in content.items()}, used


def view_of(tensor: Tensor) -> Union[View, Unusable]:
    """A loaded tensor's metadata (nothing of its elements is read)."""
    if tensor.layout != torch.strided:
        return Unusable('sparse')
    if tensor.is_quantized:
        return Unusable('quantized')
    if tensor.device.type == 'meta':
        return Unusable('meta')
    if tensor.is_complex():
        return Unusable('complex')
    if getattr(tensor, 'is_nested', False) or type(tensor) not in (Tensor, torch.nn.Parameter):
        return Unusable('other')
    return View(str(tensor.dtype).replace('torch.', ''), tensor.element_size(), tuple(tensor.shape), tensor.stride(),
                tensor.storage_offset(), tensor.untyped_storage().nbytes())


def _view_problem(view: View) -> Optional[str]:
    """Why touching the elements of ``view`` would be wrong: outside its storage, or elements that overlap
    (a zero stride: millions of elements on one stored value). None when it is a plain view."""
    dims, stride = view.shape, view.stride
    if not (isinstance(dims, tuple) and isinstance(stride, tuple) and len(dims) == len(stride) <= MAX_TENSOR_DIMS
            and all(_is_count(v) for v in (*dims, *stride, view.offset))):
        return 'has a malformed shape, stride or offset'
    numel = math.prod(dims)
    if numel == 0:
        return None
    if view.dtype.startswith('complex'):
        return None  # reported as a complex tensor
    extent = (view.offset + sum((n - 1) * s for n, s in zip(dims, stride)) + 1) * view.itemsize
    if extent > view.storage_bytes:
        return f'reaches byte {extent} of a storage of {view.storage_bytes} bytes'
    reach = 0  # with dimensions sorted by stride, each step must clear the span of the smaller ones
    for step, n in sorted((s, n) for n, s in zip(dims, stride) if n > 1):
        if step <= reach:
            return (f'declares {numel} elements {dims} on {extent // view.itemsize} stored values (strides {stride}: '
                    'elements that overlap)')
        reach += (n - 1) * step
    return None


def check_views(state: Mapping[str, object], source: str, held_bytes: int) -> None:
    """Refuse unusable tensor kinds, views beyond or overlapping their storage, and tensors that together
    declare more bytes than ``held_bytes`` (many views on one storage), naming the keys."""
    unusable: Dict[str, List[str]] = {}
    for key, value in state.items():
        if isinstance(value, View) and (value.dtype.startswith('complex') or value.dtype.startswith('q')):
            value = Unusable('complex' if value.dtype.startswith('complex') else 'quantized')
        if isinstance(value, Unusable):
            unusable.setdefault(value.kind, []).append(key)
    for kind, keys in unusable.items():
        what, advice = UNUSABLE_TENSORS[kind]
        raise PretrainedWeightsError(f'{source} holds {what} ({key_list(keys)}): {advice}')
    total = 0
    for key, view in state.items():
        problem = _view_problem(view)
        if problem:
            raise PretrainedWeightsError(f'{source}: {key} {problem}: a damaged or forged file')
        total += math.prod(view.shape) * view.itemsize
    if total > held_bytes:
        raise PretrainedWeightsError(f'{source}: its tensors declare {total} bytes, more than the {held_bytes} bytes '
                                     'it holds (views sharing storage): a damaged or forged file')


def key_list(keys: Sequence[str]) -> str:
    keys = sorted(keys)
    more = f' and {len(keys) - MAX_KEYS_LISTED} more' if len(keys) > MAX_KEYS_LISTED else ''
    return ', '.join(keys[:MAX_KEYS_LISTED]) + more
