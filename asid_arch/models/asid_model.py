"""``ASIDModel``: BasicSR's ``SRModel`` plus what ASID's protocol and reliable training need.

Kit file: it imports only torch, numpy, basicsr and its sibling ``archs/asid_arch.py``, so it can be
copied into ``basicsr/models/`` of a BasicSR checkout (``asid-kit install``), where BasicSR's model
scanner imports it. The ``asid_arch`` package is built from this same file.

* tiled validation/testing (``val: {tile: {size: 64, overlap: 24}}``), the reference protocol;
  without ``tile``, whole-image inference as SRModel's;
* DistributedDataParallel on CPU (gloo) as well as on CUDA;
* every ``torch.optim`` optimizer by name (BasicSR knows a fixed list; the released recipe uses
  ``AdamW``);
* checkpoints written atomically (a temporary file renamed into place: a run killed while saving
  never leaves a truncated file for ``--auto_resume``), with the permissions a plain write gives; a
  checkpoint that cannot be written stops the run with :class:`CheckpointSaveError` (BasicSR logs
  "Just ignore it." and trains on without checkpoints);
* ``pretrain_network_g`` loaded safely: what the file declares is checked against what it holds
  before torch reads it (no forged size, stride or record makes a small file cost more memory or
  time than its size), then ``weights_only``; any key layout the network knows (released
  checkpoints included) converted *before* the key comparison, and every problem (not a regular
  file, not a checkpoint, code inside, TorchScript, sparse/meta/quantized/complex or integer
  tensors, missing/extra keys, wrong scale, non-finite weights) reported as one
  :class:`PretrainedWeightsError` naming the file;
* a loss that becomes NaN or infinite stops the run before the optimizer step (the weights and
  the last checkpoint stay as they were) with :class:`TrainingDiverged`;
* mixed precision (``train: amp: bf16 | fp16``): autocast for the network's forward pass in training
  and validation; the loss, the gradients and the optimizer state stay float32; fp16 (CUDA only)
  scales the loss with a ``GradScaler`` whose state is saved with the training state and resumed;
* ``train: compile: true`` (or a dict of ``torch.compile`` arguments): the training forward pass
  runs compiled; validation and testing run the eager network (their image sizes vary, and each
  new size would recompile);
* the metric ``calculate_psnr_matlab`` (BasicSR does not scan a metrics folder, so it is registered
  here): Y-channel PSNR with Y rounded to uint8 as MATLAB does, the convention of published tables.
"""
from __future__ import annotations

import contextlib
import errno
import inspect
import io
import json
import math
import mmap
import os
import pickle
import re
import stat
import struct
import tempfile
import time
import zipfile
from collections import Counter, OrderedDict
from pathlib import Path
from typing import BinaryIO, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.nn.parallel import DataParallel, DistributedDataParallel

# first: the arch file installs the torchvision alias BasicSR 1.4.2 needs
from ..archs.asid_arch import POSITION_BIAS_KEY, detect_variant, register_once

from basicsr.metrics.metric_util import reorder_image  # noqa: E402
from basicsr.models.sr_model import SRModel  # noqa: E402
from basicsr.utils import get_root_logger  # noqa: E402
from basicsr.utils.color_util import bgr2ycbcr  # noqa: E402
from basicsr.utils.dist_util import master_only  # noqa: E402
from basicsr.utils.registry import METRIC_REGISTRY, MODEL_REGISTRY  # noqa: E402

LOSS_ATTRIBUTES = ('cri_pix', 'cri_perceptual')  # SRModel's loss modules
BASICSR_PARAM_KEYS = ('params_ema', 'params')  # BasicSR's checkpoint wrappers, EMA weights preferred
SAVE_ATTEMPTS = 3  # as BasicSR: a transient write error is retried ...
SAVE_RETRY_DELAY_S = 1.0  # ... after this pause
TEMP_SUFFIX = '.tmp'  # atomic writes go to '.{name}.XXXX.tmp' beside the target
DEFAULT_TILE = 64  # the reference evaluation protocol: 64 px LR tiles ...
DEFAULT_OVERLAP = 24  # ... overlapping by 24 px, averaged
MAX_KEYS_LISTED = 8  # key names shown in an error message
# what torch.load(weights_only=True) says of a pickle that names Python objects (code) besides tensors;
# other unpickling errors ("invalid load key", ...) mean the file is not a checkpoint at all
UNSAFE_PICKLE_MARKERS = ('Unsupported global', )
PIXEL_MAX = 255.0
AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}  # train: amp: values
FP16_DEVICE_TYPES = ('cuda', )  # where fp16 autocast + GradScaler is offered
# training-step time of ASID x2 (batch 16, 64x64 LR) with bf16 autocast on a CPU without bf16
# instructions, 2-core AMD EPYC (README, "Mixed precision"): quoted in the warning below
EMULATED_BF16_STEP_S, FP32_STEP_S = 75.5, 5.1
COMPILED_CPU_STEP_S, EAGER_CPU_STEP_S = 4.85, 3.76  # the same step, inductor vs eager, same machine


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite."""


class CheckpointSaveError(OSError):
    """A checkpoint could not be written: the run stops instead of training on without one."""


class PretrainedWeightsError(ValueError):
    """A weights file that cannot be used, with a message meant for the user."""


# ----------------------------------------------------------------------------------------------
# Files: atomic writes with normal permissions, safe reads
# ----------------------------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _rename_new(tmp: str, path: Path) -> None:
    """Give ``tmp`` the name ``path`` only where nothing has that name (FileExistsError otherwise): atomic
    where the file system has hard links, checked just before the rename where it has not."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links (FAT, some network file systems)
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def atomic_write(path: Union[str, Path], write: Callable[[object], None], overwrite: bool = True) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``.

    A reader (or a resumed run) sees the old file or the complete new one. The temporary name
    starts with '.' and ends with '.tmp', so scanners looking for ``*.png``, ``*.pth`` or ``*.state``
    never pick up a half-written file. The result gets the permissions a plain ``open(path, 'wb')``
    would give (0666 less the umask), not the temporary file's 0600. ``overwrite=False``: a file that
    exists at ``path`` (also one that appeared during the write) is kept, and FileExistsError raised.
    Whatever happens (an error, Ctrl-C, SIGTERM as ``Interrupted``), no temporary file stays behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        if overwrite:
            os.replace(tmp, path)
        else:
            _rename_new(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(folder: Union[str, Path]) -> List[Path]:
    """Delete the temporary files that writes killed mid-way (``kill -9``, power loss) left in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.name.startswith('.') and p.name.endswith(TEMP_SUFFIX) and p.is_file()]
    for path in stale:
        with contextlib.suppress(OSError):
            path.unlink()
    return stale


def save_checkpoint(obj: object, path: Union[str, Path], attempts: int = SAVE_ATTEMPTS,
                    delay: float = SAVE_RETRY_DELAY_S) -> None:
    """``torch.save`` atomically, retried like BasicSR's save; raises :class:`CheckpointSaveError` at the end."""
    for attempt in range(1, attempts + 1):
        try:
            atomic_write(path, lambda f: torch.save(obj, f))
            return
        except OSError as err:
            if attempt == attempts:
                raise CheckpointSaveError(
                    f'cannot write the checkpoint {path} ({err.strerror or err}; tried {attempts} times). Training '
                    'stopped: going on without checkpoints would lose the work. Free space or fix the '
                    'permissions of that folder, then resume with --auto_resume.') from None
            get_root_logger().warning(f'Save error for {path}: {err}; retrying ({attempts - attempt} left)')
            time.sleep(delay)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _printable(path: Union[str, Path]) -> str:
    """``path`` for a message, also when its name is not valid UTF-8 (as ``asid_arch.console.shown``, which
    this kit file cannot import)."""
    return os.fsencode(path).decode('utf-8', 'backslashreplace')


# ----------------------------------------------------------------------------------------------
# Weights files: what a file declares is checked against what it holds before torch reads it
# ----------------------------------------------------------------------------------------------
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


class _View(NamedTuple):
    """A strided tensor as described by its metadata: what touching its elements would read."""
    dtype: str
    itemsize: int
    shape: tuple
    stride: tuple
    offset: int
    storage_bytes: int


class _Unusable(NamedTuple):
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


def _declared_view(storage: object, offset: object, shape: object, stride: object, dtype: object = None) -> _View:
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError('a tensor without a storage')
    if dtype is None:
        return _View(storage.dtype, storage.itemsize, shape, stride, offset, storage.numel * storage.itemsize)
    if not isinstance(dtype, _StorageType):
        raise pickle.UnpicklingError(f'unknown tensor dtype {dtype!r}')
    return _View(dtype.dtype, dtype.itemsize, shape, stride, offset, storage.numel * storage.itemsize)


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
    '_rebuild_sparse_tensor': lambda *args: _Unusable('sparse'),
    '_rebuild_meta_tensor_no_storage': lambda *args: _Unusable('meta'),
    '_rebuild_qtensor': lambda *args: _Unusable('quantized'),
    '_rebuild_nested_tensor': lambda *args: _Unusable('other'),
    '_rebuild_wrapper_subclass': lambda *args: _Unusable('other'),
    '_rebuild_device_tensor_from_numpy': lambda *args: _Unusable('other'),
    '_rebuild_device_tensor_from_cpu_tensor': lambda *args: _Unusable('other'),
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
    """Reads a checkpoint's pickle into what it *declares*: containers of :class:`_View` (and
    :class:`_Unusable`), building no tensor and reading no storage. Globals are limited to those a
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
                                         f'{prefix}: {_printable(info.filename)})')
        name = info.filename[len(prefix):]
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1 or info.compress_size != info.file_size:
            raise PretrainedWeightsError(
                f'{source}: record {_printable(name)} is compressed or encrypted; torch.save stores records as they '
                'are (a compressed record can unpack to far more than the file holds): re-save them with torch.save')
        file.seek(info.header_offset)
        header = file.read(ZIP_LOCAL_HEADER.size)
        if len(header) < ZIP_LOCAL_HEADER.size or not header.startswith(ZIP_SIGNATURE):
            raise PretrainedWeightsError(f'{source} is not a readable PyTorch checkpoint: truncated or another format '
                                         f'(record {_printable(name)} has no header)')
        _, name_length, extra_length = ZIP_LOCAL_HEADER.unpack(header)
        start = info.header_offset + ZIP_LOCAL_HEADER.size + name_length + extra_length
        if start + info.file_size > size:
            raise PretrainedWeightsError(f'{source}: record {_printable(name)} declares {info.file_size} bytes, more '
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


def _safetensors_declarations(file: BinaryIO, size: int, source: str) -> Dict[str, _View]:
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
        views[key] = _View(dtype, itemsize, shape, stride, 0, end - begin)
    return views


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, 'a named pipe'), (stat.S_ISCHR, 'a character device'), (stat.S_ISBLK, 'a block device'),
             (stat.S_ISSOCK, 'a socket'))
    return next((name for test, name in kinds if test(mode)), 'not a regular file')


def _declared_content(path: Path, source: str) -> Tuple[object, int, bool]:
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
                                         f'({type(err).__name__}: {_first_line(err)})') from None
    raise PretrainedWeightsError(f'{source} is not a PyTorch checkpoint (neither a zip archive nor a pickle)')


def _select_state(content: object, keys: Sequence[str], source: str, tensor_types: tuple,
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


def _view_of(tensor: Tensor) -> Union[_View, _Unusable]:
    """A loaded tensor's metadata (nothing of its elements is read)."""
    if tensor.layout != torch.strided:
        return _Unusable('sparse')
    if tensor.is_quantized:
        return _Unusable('quantized')
    if tensor.device.type == 'meta':
        return _Unusable('meta')
    if tensor.is_complex():
        return _Unusable('complex')
    if getattr(tensor, 'is_nested', False) or type(tensor) not in (Tensor, torch.nn.Parameter):
        return _Unusable('other')
    return _View(str(tensor.dtype).replace('torch.', ''), tensor.element_size(), tuple(tensor.shape), tensor.stride(),
                 tensor.storage_offset(), tensor.untyped_storage().nbytes())


def _view_problem(view: _View) -> Optional[str]:
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


def _check_views(state: Mapping[str, object], source: str, held_bytes: int) -> None:
    """Refuse unusable tensor kinds, views beyond or overlapping their storage, and tensors that together
    declare more bytes than ``held_bytes`` (many views on one storage), naming the keys."""
    unusable: Dict[str, List[str]] = {}
    for key, value in state.items():
        if isinstance(value, _View) and (value.dtype.startswith('complex') or value.dtype.startswith('q')):
            value = _Unusable('complex' if value.dtype.startswith('complex') else 'quantized')
        if isinstance(value, _Unusable):
            unusable.setdefault(value.kind, []).append(key)
    for kind, keys in unusable.items():
        what, advice = UNUSABLE_TENSORS[kind]
        raise PretrainedWeightsError(f'{source} holds {what} ({_key_list(keys)}): {advice}')
    total = 0
    for key, view in state.items():
        problem = _view_problem(view)
        if problem:
            raise PretrainedWeightsError(f'{source}: {key} {problem}: a damaged or forged file')
        total += math.prod(view.shape) * view.itemsize
    if total > held_bytes:
        raise PretrainedWeightsError(f'{source}: its tensors declare {total} bytes, more than the {held_bytes} bytes '
                                     'it holds (views sharing storage): a damaged or forged file')


def check_tensors(state: Mapping[str, Tensor], source: str, held_bytes: Optional[int] = None) -> None:
    """Check a state dict's tensors from their metadata alone, before any element is touched: dense,
    real, not on the meta device, each view inside its storage without overlapping elements, and
    together no more bytes than ``held_bytes`` (default: what their distinct storages hold).
    Raises :class:`PretrainedWeightsError` naming ``source`` and the keys."""
    strays = [str(key) for key, value in state.items() if not isinstance(value, Tensor)]
    if strays:
        raise PretrainedWeightsError(f'{source} is not a state dict of tensors ({_key_list(strays)} are not tensors)')
    views = {key: _view_of(value) for key, value in state.items()}
    if held_bytes is None:
        storages = {(value.untyped_storage().data_ptr(), value.untyped_storage().nbytes())
                    for key, value in state.items() if isinstance(views[key], _View)}
        held_bytes = sum(nbytes for _, nbytes in storages)
    _check_views(views, source, held_bytes)


def read_weights(path: Union[str, Path], param_key: Union[None, str, Sequence[str]] = BASICSR_PARAM_KEYS,
                 ) -> Tuple[Dict[str, Tensor], Optional[str]]:
    """The tensors of a weights file, safely: ``(state, key used)``.

    ``param_key``: the wrapper key(s) to look for, in order of preference (``params_ema``, ``params``
    for BasicSR checkpoints). A plain state dict has none and is used as it is; so is BasicSR's
    fallback to ``params`` when the asked key is absent. A leading ``module.`` is dropped.

    Before torch reads the file, what it declares is checked against what it holds (records within
    the file and not compressed, storages the size of their records, tensor views inside their
    storages without overlapping elements, all tensors together no larger than the file), so a small
    forged file cannot make the reader allocate or scan more than its own size. It is then loaded
    with ``torch.load(weights_only=True)``, memory-mapped where torch can, and checked again; last,
    floating-point weights are checked for NaN and Inf. Raises :class:`PretrainedWeightsError` with
    a one-line reason naming the file.
    """
    path = Path(path)
    source = _printable(path)
    keys = [param_key] if isinstance(param_key, str) else list(param_key or [])
    declared, size, zipped = _declared_content(path, source)
    _check_views(_select_state(declared, keys, source, (_View, _Unusable))[0], source, size)
    mapped = {'mmap': True} if zipped and 'mmap' in inspect.signature(torch.load).parameters else {}
    try:
        try:
            content = torch.load(path, map_location='cpu', weights_only=True, **mapped)
        except (RuntimeError, OSError, UnicodeError):
            if not mapped:
                raise
            # a file system without mmap, or a file name torch's mapping cannot pass on (not UTF-8)
            content = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        if any(marker in str(err) for marker in UNSAFE_PICKLE_MARKERS):
            raise PretrainedWeightsError(
                f'refused to load {source}: besides tensors it holds Python objects, which could run code when '
                'loaded; only plain weights files are accepted (re-save the state dict with torch.save)') from None
        raise PretrainedWeightsError(f'{source} is not a PyTorch checkpoint (unreadable: {_first_line(err)})') from None
    except (EOFError, RuntimeError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise PretrainedWeightsError(f'{source} is not a readable PyTorch checkpoint: truncated or another format '
                                     f'({type(err).__name__}: {_first_line(err)})') from None
    state, used = _select_state(content, keys, source, (Tensor, ))
    check_tensors(state, source, size)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise PretrainedWeightsError(f'{source} holds non-finite weights (NaN or Inf) in {len(bad)} tensor(s): '
                                     f'{", ".join(bad[:MAX_KEYS_LISTED])}')
    return state, used


def weights_for(net: torch.nn.Module, path: Union[str, Path], param_key: Optional[str] = 'params',
                ) -> Tuple[Dict[str, Tensor], Optional[str]]:
    """:func:`read_weights`, then converted to ``net``'s key layout by its ``convert_state_dict`` (if it has
    one): what ``pretrain_network_g`` loads, before any key comparison."""
    state, used = read_weights(path, param_key)
    convert = getattr(net, 'convert_state_dict', None)
    return (convert(state) if convert is not None else state), used


def _key_list(keys: Sequence[str]) -> str:
    keys = sorted(keys)
    more = f' and {len(keys) - MAX_KEYS_LISTED} more' if len(keys) > MAX_KEYS_LISTED else ''
    return ', '.join(keys[:MAX_KEYS_LISTED]) + more


def _number_kind(tensor: Tensor) -> str:
    if tensor.is_floating_point():
        return 'floating-point'
    return 'bool' if tensor.dtype == torch.bool else 'complex' if tensor.is_complex() else 'integer'


def _number_type_problem(own: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> Optional[str]:
    wrong = sorted(k for k in set(own) & set(state) if _number_kind(own[k]) != _number_kind(state[k]))
    if not wrong:
        return None
    listed = ', '.join(f'{k} is {str(state[k].dtype).replace("torch.", "")}' for k in wrong[:MAX_KEYS_LISTED])
    more = f' and {len(wrong) - MAX_KEYS_LISTED} more' if len(wrong) > MAX_KEYS_LISTED else ''
    kinds = ' and '.join(sorted({_number_kind(own[k]) for k in wrong}))
    return f'wrong number type: {listed}{more}, where the network has {kinds} tensors'


def dtype_mismatches(net: torch.nn.Module, state: Mapping[str, Tensor], source: str) -> List[str]:
    """A line naming the tensors of ``state`` whose kind of number differs from ``net``'s (integer or bool
    weights where the network has floating-point ones: loading would convert them silently), or none."""
    problem = _number_type_problem(net.state_dict(), state)
    return [f'{source}: {problem}'] if problem else []


def match_weights(net: torch.nn.Module, state: Mapping[str, Tensor], source: str) -> List[str]:
    """Why ``state`` does not fit ``net`` strictly: lines naming missing/unexpected keys, shape mismatches and
    tensors of another kind of number, with a hint where the weights tell what they are (another scale,
    another architecture). Only shapes and dtypes are read, no element."""
    own = net.state_dict()
    missing, unexpected = set(own) - set(state), set(state) - set(own)
    shapes = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    problems = []
    if missing:
        problems.append(f'missing keys: {_key_list(missing)}')
    if unexpected:
        problems.append(f'unexpected keys: {_key_list(unexpected)}')
    if shapes:
        problems.append('shape mismatch: ' + ', '.join(f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)} '
                                                       'in the network' for k in sorted(shapes)[:MAX_KEYS_LISTED]))
    number_type = _number_type_problem(own, state)
    if number_type:
        problems.append(number_type)
    hints = []
    if any(re.match(r'(groups\.\d+\.block\.|residual_layer\.\d+\.residual_layer\.0\.layer\.)', k) for k in state):
        hints.append('these look like Omni-SR weights')
    elif any(re.match(r'(blocks\.\d+\.|block\d+\.residual_layer)', k) for k in state) and 'ASID' not in type(
            net).__name__:
        hints.append('these look like ASID weights')
    if missing and all(POSITION_BIAS_KEY.match(k) for k in missing):
        sdpa = detect_variant(state)['channel_attention'] == 'sdpa'
        also = ", channel_attention: sdpa (temperatures all 1.0: neosr's flash_attn=True)" if sdpa else ''
        hints.append('the weights have no position-bias tables: a neosr model trained with pe=False (its default); '
                     f'set network_g: position_bias: false{also}')
    elif unexpected and all(POSITION_BIAS_KEY.match(k) for k in unexpected):
        hints.append('the weights have position-bias tables: set network_g: position_bias: true')
    up = 'upsampler.0.weight'
    if up in own and up in state and own[up].shape[1:] == state[up].shape[1:] and own[up].shape[0] != state[up].shape[0]:
        out_channels = own[up].shape[0] // getattr(net, 'upscale', 1)**2
        scale = math.isqrt(max(state[up].shape[0] // max(out_channels, 1), 1))
        hints.append(f'the weights are for x{scale}, the network is x{getattr(net, "upscale", "?")}: set '
                     'network_g: upscale and scale to match, or strict_load_g: false to fine-tune all but the upsampler')
    if problems and hints:
        problems.append('; '.join(hints))
    return [f'{source}: {p}' for p in problems]


AUTO = 'auto'
VARIANT_OPTIONS = ('position_bias', 'channel_attention')  # ASID options that neosr's checkpoints decide


def resolve_variant_options(opt: dict) -> Optional[str]:
    """``network_g: {type: ASID, position_bias: auto, channel_attention: auto}``: each ``auto`` replaced,
    in ``opt``, by what ``path: pretrain_network_g``'s weights tell (neosr's variants are recognised;
    see :func:`detect_variant`), or the paper's value without pretrained weights. Returns a line for
    the log (None when nothing was ``auto``). A file that cannot be read leaves the paper's values;
    loading it later reports why."""
    net_opt = opt.get('network_g') or {}
    autos = [k for k in VARIANT_OPTIONS if net_opt.get(k) == AUTO]
    if net_opt.get('type') != 'ASID' or not autos:
        return None
    found: Dict[str, object] = {'position_bias': True, 'channel_attention': 'temperature'}
    path = (opt.get('path') or {}).get('pretrain_network_g')
    source = 'no pretrain_network_g: the paper\'s'
    if path:
        try:
            found = detect_variant(read_weights(path, (opt['path'].get('param_key_g') or 'params'))[0])
            source = f'read off {path}'
        except PretrainedWeightsError:
            pass
    for key in autos:
        net_opt[key] = found[key]
    return 'network_g: ' + ', '.join(f'{k}: {net_opt[k]}' for k in autos) + f' ({source})'


# ----------------------------------------------------------------------------------------------
# Tiled inference: the reference evaluation protocol
# ----------------------------------------------------------------------------------------------
def tile_origins(size: int, tile: int, overlap: int) -> List[int]:
    """Tile start positions along one axis: ``range(0, size - tile, tile - overlap) + [size - tile]``.

    This is the reference protocol. Where ``tile <= overlap`` (a step the reference cannot take),
    tiles are laid edge to edge instead, so that every pixel is still covered.
    """
    stride = tile - overlap if tile > overlap else tile
    return list(range(0, size - tile, stride)) + [size - tile]


def tile_forward(net: Callable[[Tensor], Tensor], lr: Tensor, scale: int, tile: int = DEFAULT_TILE,
                 overlap: int = DEFAULT_OVERLAP) -> Tensor:
    """Super-resolve ``lr`` (B, C, H, W) tile by tile; returns (B, C', H*scale, W*scale).

    LR tiles are ``t = min(tile, H, W)`` pixels square; overlapping outputs are averaged (the
    reference protocol: what published tables measure). Gradients flow if enabled.
    """
    if lr.dim() != 4:
        raise ValueError(f'tile_forward expects a (B, C, H, W) tensor, got shape {tuple(lr.shape)}')
    if tile < 1 or overlap < 0:
        raise ValueError(f'tile must be >= 1 and overlap >= 0, got tile={tile}, overlap={overlap}')
    b, _, h, w = lr.shape
    t = min(tile, h, w)
    rows, cols = tile_origins(h, t, overlap), tile_origins(w, t, overlap)
    out = None
    weight = lr.new_zeros(1, 1, h * scale, w * scale)
    for y in rows:
        for x in cols:
            sr = net(lr[..., y:y + t, x:x + t])
            if out is None:
                out = sr.new_zeros(b, sr.shape[1], h * scale, w * scale)
            region = (..., slice(y * scale, (y + t) * scale), slice(x * scale, (x + t) * scale))
            out[region] += sr
            weight[region] += 1
    return out / weight


# ----------------------------------------------------------------------------------------------
# Metric
# ----------------------------------------------------------------------------------------------
def y_channel_uint8(img: np.ndarray) -> np.ndarray:
    """Y of a BGR uint8-range image, rounded to integers as MATLAB's ``rgb2ycbcr`` does on uint8."""
    return np.round(bgr2ycbcr(img.astype(np.float32) / PIXEL_MAX, y_only=True) * PIXEL_MAX).astype(np.float64)


def calculate_psnr_matlab(img: np.ndarray, img2: np.ndarray, crop_border: int, input_order: str = 'HWC',
                          **kwargs) -> float:
    """Y-channel PSNR with MATLAB's conventions (Y rounded to uint8), as the published SR tables.

    BasicSR's ``calculate_psnr(test_y_channel=True)`` keeps Y in floating point and reads about
    0.01-0.03 dB higher (e.g. bicubic Set5 x2: 33.68 vs the published 33.66).
    """
    if img.shape != img2.shape:
        raise ValueError(f'image shapes differ: {img.shape} vs {img2.shape}')
    y1 = y_channel_uint8(reorder_image(img, input_order=input_order))
    y2 = y_channel_uint8(reorder_image(img2, input_order=input_order))
    if crop_border:
        y1, y2 = y1[crop_border:-crop_border, crop_border:-crop_border], y2[crop_border:-crop_border,
                                                                            crop_border:-crop_border]
    mse = np.mean((y1 - y2)**2)
    return float('inf') if mse == 0 else float(10.0 * np.log10(PIXEL_MAX**2 / mse))


register_once(METRIC_REGISTRY, calculate_psnr_matlab, __file__)


# ----------------------------------------------------------------------------------------------
# Mixed precision and compilation
# ----------------------------------------------------------------------------------------------
def cpu_has_bf16() -> bool:
    """True where the CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere PyTorch emulates it."""
    checks = ('_is_avx512_bf16_supported', '_is_amx_tile_supported')
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def autocast_dtype(amp: object, device: torch.device, warn: bool = True) -> Optional[torch.dtype]:
    """The autocast dtype for ``train: amp:`` on ``device`` (None: full precision). Raises ValueError
    for values and devices that cannot work; warns where bf16 would be emulated (much slower)."""
    if amp in (None, False, 'none', 'fp32', '~'):
        return None
    if amp not in AMP_DTYPES:
        raise ValueError(f'train: amp: {amp!r} is not one of bf16, fp16 or ~ (off)')
    if amp == 'fp16' and device.type not in FP16_DEVICE_TYPES:
        raise ValueError(f'train: amp: fp16 needs a CUDA GPU (it scales the loss against fp16 underflow); this run '
                         f'is on {device.type}. Use amp: bf16 (CPUs with bf16 instructions, recent GPUs) or remove amp.')
    if amp == 'bf16' and device.type == 'cuda' and not torch.cuda.is_bf16_supported():
        raise ValueError('train: amp: bf16 is not supported by this GPU; use amp: fp16')
    if warn and amp == 'bf16' and device.type == 'cpu' and not cpu_has_bf16():
        get_root_logger().warning(
            'train: amp: bf16 on a CPU without bf16 instructions (AVX512-BF16/AMX): PyTorch emulates it, which is '
            f'far slower than float32 (ASID x2 training step on a 2-core AMD EPYC: {EMULATED_BF16_STEP_S:.0f} s '
            f'instead of {FP32_STEP_S} s). Remove amp on this machine.')
    return AMP_DTYPES[amp]


def compile_arguments(option: object) -> Optional[dict]:
    """``train: compile:`` -> keyword arguments of ``torch.compile`` (None: eager). ``true`` means
    ``{'dynamic': False}``: training patches have one size."""
    if option in (None, False):
        return None
    if option is True:
        return {'dynamic': False}
    if isinstance(option, Mapping):
        allowed = set(inspect.signature(torch.compile).parameters) - {'model'}
        unknown = set(option) - allowed
        if unknown:
            raise ValueError(f'train: compile: unknown torch.compile argument(s) {sorted(unknown)}; '
                             f'known: {sorted(allowed)}')
        return {'dynamic': False, **option}
    raise ValueError(f'train: compile: must be true, false or a dict of torch.compile arguments, got {option!r}')


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------
class ASIDModel(SRModel):
    """SRModel with tiled inference, safe weight loading, checkpoints that never fail silently and
    CPU-capable distributed training."""

    def __init__(self, opt: dict) -> None:
        if opt.get('is_train') and opt.get('rank', 0) == 0:
            for key in ('models', 'training_states'):
                if opt['path'].get(key):
                    remove_stale_temporaries(opt['path'][key])
        resolved = resolve_variant_options(opt)
        if resolved:
            get_root_logger().info(resolved)
        super().__init__(opt)

    # -- training -------------------------------------------------------------------------------
    def init_training_settings(self) -> None:
        super().init_training_settings()
        self._iter = 0
        for name in LOSS_ATTRIBUTES:
            loss = getattr(self, name, None)
            if isinstance(loss, torch.nn.Module):
                loss.register_forward_hook(self._make_finite_check(name))
        train_opt = self.opt['train']
        self.amp_dtype = autocast_dtype(train_opt.get('amp'), self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        kwargs = compile_arguments(train_opt.get('compile'))
        self._compile_pending = kwargs is not None
        self.net_g_train = torch.compile(self.net_g, **kwargs) if kwargs is not None else self.net_g
        if kwargs is not None and self.device.type == 'cpu':
            get_root_logger().warning(
                f'train: compile on a CPU: the ASID x2 training step measured slower compiled than eager on a 2-core '
                f'AMD EPYC ({COMPILED_CPU_STEP_S} s vs {EAGER_CPU_STEP_S} s; eager uses oneDNN kernels that step '
                'aside under compile), after minutes of compilation. Remove compile on CPUs.')
        if self.amp_dtype is not None or kwargs is not None:
            get_root_logger().info(f'Training with amp: {train_opt.get("amp") or "off"}'
                                   f'{", grad scaler" if self.scaler.is_enabled() else ""}; compile: {kwargs}')

    def autocast(self):
        """Autocast to ``train: amp:``'s dtype (a no-op without it; validation uses it too)."""
        dtype = getattr(self, 'amp_dtype', None)
        return torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def _make_finite_check(self, name: str):
        def check(module, args, output):
            values = output if isinstance(output, (tuple, list)) else (output, )
            for value in values:
                if isinstance(value, torch.Tensor) and not torch.isfinite(value).all():
                    raise TrainingDiverged(
                        f'{name} became {value.detach().float().sum().item()} at iteration {self._iter}: training '
                        f'stopped before the optimizer step. The checkpoints in {self.opt["path"]["models"]} are '
                        'intact; lower the learning rate or check the data, then resume with --auto_resume.')
        return check

    def optimize_parameters(self, current_iter: int) -> None:
        """SRModel's step with the network's forward pass under autocast (losses in float32) and, for
        fp16, the loss scaled by the grad scaler."""
        self._iter = current_iter
        start = time.perf_counter()
        self.optimizer_g.zero_grad()
        with self.autocast():
            output = self.net_g_train(self.lq)
        self.output = output.float()
        l_total = 0
        loss_dict = OrderedDict()
        if self.cri_pix:
            l_pix = self.cri_pix(self.output, self.gt)
            l_total += l_pix
            loss_dict['l_pix'] = l_pix
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(self.output, self.gt)
            for name, value in (('l_percep', l_percep), ('l_style', l_style)):
                if value is not None:
                    l_total += value
                    loss_dict[name] = value
        self.scaler.scale(l_total).backward()
        self.scaler.step(self.optimizer_g)
        self.scaler.update()
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
        if self._compile_pending:
            self._compile_pending = False
            get_root_logger().info(f'torch.compile: the first training iteration, compilation included, took '
                                   f'{time.perf_counter() - start:.1f} s')

    def resume_training(self, resume_state: dict) -> None:
        """Optimizers and schedulers (BasicSR), plus the fp16 grad scaler's state."""
        super().resume_training(resume_state)
        if self.scaler.is_enabled() and resume_state.get('scaler'):
            self.scaler.load_state_dict(resume_state['scaler'])

    def model_to_device(self, net: torch.nn.Module) -> torch.nn.Module:
        net = net.to(self.device)
        if self.opt['dist']:
            find_unused = self.opt.get('find_unused_parameters', False)
            device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
            net = DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused)
        elif self.opt['num_gpu'] > 1:
            net = DataParallel(net)
        return net

    def get_optimizer(self, optim_type: str, params, lr: float, **kwargs) -> torch.optim.Optimizer:
        optimizer_cls = getattr(torch.optim, optim_type, None)
        if not (isinstance(optimizer_cls, type) and issubclass(optimizer_cls, torch.optim.Optimizer)):
            raise ValueError(f'train: optim_g: type: {optim_type!r} is not an optimizer of torch.optim '
                             '(e.g. Adam, AdamW, SGD)')
        return optimizer_cls(params, lr, **kwargs)

    # -- checkpoints ----------------------------------------------------------------------------
    @master_only
    def save_network(self, net, net_label: str, current_iter: int, param_key='params') -> None:
        """BasicSR's ``net_g_{iter}.pth`` (``{param_key: state_dict}``), written atomically; raises
        :class:`CheckpointSaveError` when it cannot be written."""
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(keys):
            raise ValueError('save_network: one param_key per network is needed')
        save_dict = {}
        for net_, key in zip(nets, keys):
            state = self.get_bare_model(net_).state_dict()
            save_dict[key] = {(k[len('module.'):] if k.startswith('module.') else k): v.cpu() for k, v in state.items()}
        label = 'latest' if current_iter == -1 else current_iter
        save_checkpoint(save_dict, os.path.join(self.opt['path']['models'], f'{net_label}_{label}.pth'))

    @master_only
    def save_training_state(self, epoch: int, current_iter: int) -> None:
        """BasicSR's ``{iter}.state`` for resuming, written atomically; raises :class:`CheckpointSaveError`."""
        if current_iter == -1:
            return
        state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers]}
        scaler = getattr(self, 'scaler', None)
        if scaler is not None and scaler.is_enabled():
            state['scaler'] = scaler.state_dict()
        save_checkpoint(state, os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'))

    def load_network(self, net: torch.nn.Module, load_path: str, strict: bool = True, param_key='params') -> None:
        """Load weights safely; the layout is converted by the network's ``convert_state_dict`` (released
        checkpoints, ...) before keys are compared, so a released file loads without key warnings."""
        logger = get_root_logger()
        bare = self.get_bare_model(net)
        state, used = weights_for(bare, load_path, param_key)
        logger.info(f'Loading {type(bare).__name__} model from {load_path}, with param key: [{used}].')
        problems = (match_weights if strict else dtype_mismatches)(bare, state, _printable(load_path))
        if problems:
            raise PretrainedWeightsError('; '.join(problems))
        if not strict:
            self._print_different_keys_loading(bare, state, strict)
        bare.load_state_dict(state, strict=strict)

    # -- inference ------------------------------------------------------------------------------
    def test(self) -> None:
        """Inference on ``self.lq``: whole image, or tiled when ``val: tile: {size, overlap}`` is set.

        Runs the bare, eager network (not its DDP wrapper, not the compiled one): BasicSR validates on
        rank 0 alone, and a DDP forward would broadcast buffers to ranks that are not there. Under
        ``train: amp:`` the network runs in autocast; outputs are float32 before tiles are averaged.
        """
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.get_bare_model(self.net_g)
        tile = (self.opt.get('val') or {}).get('tile')
        was_training = net.training
        net.eval()

        def run(x: Tensor) -> Tensor:
            with self.autocast():
                return net(x).float()

        with torch.no_grad():
            if tile:
                self.output = tile_forward(run, self.lq, self.opt['scale'], tile.get('size', DEFAULT_TILE),
                                           tile.get('overlap', DEFAULT_OVERLAP))
            else:
                self.output = run(self.lq)
        net.train(was_training)


register_once(MODEL_REGISTRY, ASIDModel, __file__)
