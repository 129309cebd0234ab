"""Hostile weights files and the ONNX export: what a file declares is checked against what it holds
before any element is touched; user mistakes are one line and exit 2; the exported graph takes every size."""
from __future__ import annotations

import codecs
import collections
import contextlib
import io
import json
import os
import pickle
import stat
import struct
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import cv2
import pytest
import torch

from asid_arch import ASID
from asid_arch.cli.sr import main as asid_sr
from asid_arch.from_weights import network_from_file, state_dict_from_file
from asid_arch.utils import asid_errors
from asid_arch.utils.asid_errors import PretrainedWeightsError

from helpers import REPO, make_tiny_data, run_module, synthetic_image, tiny_train_options

LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
HUGE = {'2^31': 2**31, '2^40': 2**40}
LARGEST_TOUCH = 10**6  # elements: more than any tiny test network's tensor, far less than a forged one


def tiny_net(scale: int = 2, seed: int = 0) -> ASID:
    torch.manual_seed(seed)
    return ASID(upscale=scale, num_feat=16, num_blocks=1).eval()


# ----------------------------------------------------------------------------------------------
# Writing checkpoints by hand: torch.save's format with what each record declares under our control
# ----------------------------------------------------------------------------------------------
class Stored:
    """A storage record: its bytes, and the element count the pickle declares (the true one unless forged)."""

    def __init__(self, data: bytes, declared: int = None, kind=torch.FloatStorage, itemsize: int = 4) -> None:
        self.data, self.kind, self.itemsize = data, kind, itemsize
        self.declared = len(data) // itemsize if declared is None else declared


class View:
    """A tensor as torch.save pickles it: a view (offset, shape, stride) of a :class:`Stored`."""

    def __init__(self, stored: Stored, offset: int, shape, stride) -> None:
        self.args = (stored, offset, tuple(shape), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, self.args


def view_of(tensor: torch.Tensor) -> View:
    tensor = tensor.detach().contiguous()
    return View(Stored(tensor.numpy().tobytes()), 0, tensor.shape, tensor.stride())


def plain(net: torch.nn.Module, **replaced) -> dict:
    """``{'params': net's state dict as Views}`` with some keys replaced (by Views or anything)."""
    state = {k: view_of(v) for k, v in net.state_dict().items()}
    state.update(replaced)
    return {'params': state}


def pickled(obj: object, legacy: bool) -> tuple:
    stored = []

    class Pickler(pickle.Pickler):
        def persistent_id(self, value):
            if not isinstance(value, Stored):
                return None
            if value not in stored:
                stored.append(value)
            key = str(stored.index(value))
            return ('storage', value.kind, key, 'cpu', value.declared) + ((None, ) if legacy else ())

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue(), stored


def write_zip(path: Path, obj: object, compression: int = zipfile.ZIP_STORED) -> Path:
    """The zip format of torch.save (PyTorch >= 1.6)."""
    data, stored = pickled(obj, legacy=False)
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('archive/data.pkl', data)
        archive.writestr('archive/byteorder', 'little')
        for key, record in enumerate(stored):
            archive.writestr(f'archive/data/{key}', record.data, compress_type=compression)
        archive.writestr('archive/version', '3\n')
    return path


def write_legacy(path: Path, obj: object) -> Path:
    """The legacy format (PyTorch < 1.6): header pickles, the pickle, the storage keys, then (count, bytes) each."""
    data, stored = pickled(obj, legacy=True)
    with open(path, 'wb') as f:
        system = {'protocol_version': 1001, 'little_endian': True, 'type_sizes': {'short': 2, 'int': 4, 'long': 4}}
        for header in (LEGACY_MAGIC_NUMBER, 1001, system):
            pickle.dump(header, f, protocol=2)
        f.write(data)
        pickle.dump([str(i) for i in range(len(stored))], f, protocol=2)
        for record in stored:
            f.write(struct.pack('<q', len(record.data) // record.itemsize) + record.data)
    return path


def save_zero_stride(path: Path, numel: int) -> Path:
    """A real torch.save: one stored value viewed as ``numel`` elements (stride 0) among tiny weights."""
    state = tiny_net().state_dict()
    state['blocks.0.lm1.conv_in.bias'] = torch.zeros(1).expand(numel)
    torch.save({'params': state}, path)
    return path


@pytest.fixture()
def small_scans(monkeypatch):
    """Fails a test where more than LARGEST_TOUCH elements of one tensor are scanned."""
    real_isfinite = torch.isfinite

    def small_isfinite(tensor):
        assert tensor.numel() <= LARGEST_TOUCH, f'{tensor.numel()} elements touched'
        return real_isfinite(tensor)

    monkeypatch.setattr(torch, 'isfinite', small_isfinite)


@contextlib.contextmanager
def forbidden_torch_load():
    """Inside: torch.load fails the test (the refusal must come from what the file declares)."""
    real_load = torch.load

    def no_load(*args, **kwargs):
        raise AssertionError('torch.load reached: the file was not refused from what it declares')

    torch.load = no_load
    try:
        yield
    finally:
        torch.load = real_load


@pytest.fixture()
def untouched(small_scans):
    """Fails a test where torch.load is reached: a refusal must come from the file's declarations alone."""
    with forbidden_torch_load():
        yield


def refused(path: Path) -> str:
    with pytest.raises(PretrainedWeightsError) as info:
        state_dict_from_file(path)
    message = str(info.value)
    assert str(path) in message and '\n' not in message, message
    return message


# ----------------------------------------------------------------------------------------------
# 1. What a file declares against what it holds
# ----------------------------------------------------------------------------------------------
def test_hand_written_checkpoints_load_like_torch_save(tmp_path):
    """The writers above make files torch reads: the forgeries below differ from valid files only where stated."""
    net = tiny_net()
    odd = Path(os.fsdecode(bytes(tmp_path) + b'/n\xff.pth'))  # torch's memory mapping wants UTF-8 names
    torch.save(net.state_dict(), odd)
    for path in (write_zip(tmp_path / 'zip.pth', plain(net)), write_legacy(tmp_path / 'legacy.pth', plain(net)), odd):
        state = state_dict_from_file(path)
        assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize('numel', list(HUGE.values()), ids=list(HUGE))
def test_zero_stride_tensor_is_refused_before_any_element(tmp_path, untouched, numel):
    message = refused(save_zero_stride(tmp_path / 'huge.pth', numel))
    assert f'blocks.0.lm1.conv_in.bias declares {numel} elements' in message and 'overlap' in message


def test_storage_declared_larger_than_its_record(tmp_path, untouched):
    forged = View(Stored(bytes(16), declared=2**30), 0, (4, ), (1, ))
    message = refused(write_zip(tmp_path / 'f.pth', plain(tiny_net(), **{'conv_first.bias': forged})))
    assert 'declares 4294967296 bytes (1073741824 x float32), its record holds 16' in message


@pytest.mark.parametrize('offset, shape, stride', [(4, (1, ), (1, )), (0, (2**20, ), (1, )), (0, (2, 2), (4, 1))])
def test_view_beyond_its_storage(tmp_path, untouched, offset, shape, stride):
    forged = View(Stored(bytes(16)), offset, shape, stride)
    message = refused(write_zip(tmp_path / 'f.pth', plain(tiny_net(), **{'conv_first.bias': forged})))
    assert 'conv_first.bias reaches byte' in message and 'of a storage of 16 bytes' in message


def test_overlapping_strides(tmp_path, untouched):
    forged = View(Stored(bytes(4 * 8191)), 0, (4096, 4096), (1, 1))  # 16M elements on 8191 stored values
    message = refused(write_zip(tmp_path / 'f.pth', plain(tiny_net(), **{'conv_first.bias': forged})))
    assert 'conv_first.bias declares 16777216 elements' in message and 'overlap' in message


def test_many_views_of_one_storage(tmp_path, untouched):
    shared = Stored(bytes(4 * 4096))
    views = {f'extra.{i}': View(shared, 0, (4096, ), (1, )) for i in range(1000)}  # 16 MB declared, ~0.1 MB held
    path = write_zip(tmp_path / 'f.pth', plain(tiny_net(), **views))
    message = refused(path)
    assert 'its tensors declare' in message and f'more than the {path.stat().st_size} bytes it holds' in message


def test_compressed_record_is_refused(tmp_path, untouched):
    """A deflated record can unpack to far more than the file holds (a zip bomb); torch.save never compresses."""
    bomb = View(Stored(bytes(4 * 2**22)), 0, (2**22, ), (1, ))  # 16 MB of zeros, 16 KB deflated
    path = write_zip(tmp_path / 'f.pth', plain(tiny_net(), **{'extra': bomb}), compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 2**20
    assert 'is compressed or encrypted' in refused(path)


def test_record_sizes_beyond_the_file(tmp_path, untouched):
    path = write_zip(tmp_path / 'f.pth', plain(tiny_net()))
    data = bytearray(path.read_bytes())
    name = b'archive/data/0'
    central = data.index(b'PK\x01\x02')  # the central directory entries: name at +46, sizes at +20
    while data[central + 46:central + 46 + len(name)] != name:
        central = data.index(b'PK\x01\x02', central + 4)
    data[central + 20:central + 28] = struct.pack('<II', 2**31, 2**31)  # compressed, uncompressed size
    path.write_bytes(bytes(data))
    assert 'record data/0 declares 2147483648 bytes, more than the file holds' in refused(path)


def test_legacy_format_declaring_more_than_it_holds(tmp_path, untouched):
    forged = View(Stored(bytes(16), declared=2**40), 0, (4, ), (1, ))
    path = write_legacy(tmp_path / 'legacy.pth', plain(tiny_net(), **{'conv_first.bias': forged}))
    assert 'storage 1 declares 1099511627776 x float32, the file does not hold them' in refused(path)


def test_safetensors_declaring_more_than_it_holds(tmp_path, small_scans):
    """torch.load reads ``.safetensors`` files (through the safetensors package): their JSON header is checked."""
    safetensors_torch = pytest.importorskip('safetensors.torch')
    net = tiny_net()
    safetensors_torch.save_file(net.state_dict(), tmp_path / 'good.safetensors')
    state = state_dict_from_file(tmp_path / 'good.safetensors')
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    header = {'conv_first.weight': {'dtype': 'F32', 'shape': [2**20, 2**20], 'data_offsets': [0, 16]}}
    text = json.dumps(header).encode()
    (tmp_path / 'forged.safetensors').write_bytes(struct.pack('<Q', len(text)) + text + bytes(16))
    with forbidden_torch_load():
        assert 'conv_first.weight declares (1048576, 1048576) x float32 at bytes 0 to 16' in refused(
            tmp_path / 'forged.safetensors')


class Call:
    """A pickled call ``func(*args)``, as a hostile pickle may write one with an allowed global."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


ALLOCATING_CALLS = {'torch.Tensor(2^40)': Call(torch.Tensor, 2**40), 'bytearray(2^40)': Call(bytearray, 2**40),
                    'encode(rot13)': Call(codecs.encode, 'ab', 'rot13')}


@pytest.mark.parametrize('call', list(ALLOCATING_CALLS.values()), ids=list(ALLOCATING_CALLS))
def test_allowed_globals_cannot_allocate(tmp_path, untouched, call):
    """Globals torch's weights_only loader allows, called with arguments that would allocate terabytes (or,
    chained, multiply a small pickle) are refused while the file is read as declarations."""
    message = refused(write_zip(tmp_path / 'f.pth', plain(tiny_net(), extra=call)))
    assert 'is not a readable PyTorch checkpoint' in message


def test_network_described_by_the_weights_is_checked_before_it_is_built(tmp_path, monkeypatch):
    """Shapes against the architecture: weights naming a huge network are refused before it exists."""
    from asid_arch.from_weights import NetworkConfig

    devices = []
    real_build = NetworkConfig.build
    monkeypatch.setattr(NetworkConfig, 'build', lambda self: devices.append(torch.empty(0).device.type) or
                        real_build(self))
    state = tiny_net().state_dict()
    wide = dict(state, **{'conv_first.weight': torch.zeros(4096, 3, 3, 3)})  # 4096 channels: a ~1 GB network
    torch.save(wide, tmp_path / 'wide.pth')
    with pytest.raises(PretrainedWeightsError, match=r'shape mismatch: blocks\.0\.\S+ \(16, 16, 1, 1\) vs \(4096, '):
        network_from_file(tmp_path / 'wide.pth')
    many = dict(state, **{f'blocks.{i}.x': torch.zeros(1) for i in range(1, 300)})  # 300 IDBs named
    torch.save(many, tmp_path / 'many.pth')
    with pytest.raises(PretrainedWeightsError, match='the weights name 300 IDBs but hold only 429 tensors'):
        network_from_file(tmp_path / 'many.pth')
    torch.manual_seed(0)
    window = ASID(upscale=2, num_feat=16, num_blocks=1, window_size=48).state_dict()  # 6 x 42 MB of index tables
    torch.save(window, tmp_path / 'window.pth')
    with pytest.raises(PretrainedWeightsError, match='window size 48 would need'):
        network_from_file(tmp_path / 'window.pth')
    assert set(devices) == {'meta'}


def test_every_route_refuses_the_forged_file_without_touching_it(tmp_path, untouched, capsys):
    """asid-sr, asid-export, the training option check and ASIDModel.load_network (asid-bench zoo reads through
    state_dict_from_file, the function the other tests call)."""
    from basicsr.models import build_model

    from asid_arch.cli.export import main as asid_export
    from asid_arch.pipeline.options_files import validate_options

    path = save_zero_stride(tmp_path / 'huge.pth', 2**31)
    cv2.imwrite(str(tmp_path / 'a.png'), synthetic_image(12, 12, 0))
    for command in (lambda: asid_sr([str(tmp_path / 'a.png'), '-o', str(tmp_path / 'out'), '-m', str(path)]),
                    lambda: asid_export(['-m', str(path), '-o', str(tmp_path / 'm.onnx')])):
        assert command() == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and str(path) in err and 'overlap' in err, err
    data = make_tiny_data(tmp_path / 'data', train_images=1, val_images=1)
    opt = tiny_train_options('h', data / 'train', data / 'valsrc', **{'path.pretrain_network_g': str(path)})
    for phase, ds in opt['datasets'].items():
        ds['phase'] = phase
    assert any('overlap' in p and str(path) in p for p in validate_options(opt))
    opt.update(is_train=False, dist=False, rank=0, world_size=1)
    with pytest.raises(asid_errors.PretrainedWeightsError, match='overlap'):
        build_model(opt)


def test_spandrel_route_checks_the_tensors_it_is_given(tmp_path, small_scans):
    """spandrel reads the file itself (torch.load); ASIDArch.load checks the tensors before touching them."""
    pytest.importorskip('spandrel')
    from spandrel import ModelLoader

    import asid_arch.integrations.spandrel

    asid_arch.integrations.spandrel.install()
    path = save_zero_stride(tmp_path / 'huge.pth', 2**31)
    with pytest.raises(PretrainedWeightsError, match='blocks.0.lm1.conv_in.bias declares 2147483648 elements'):
        ModelLoader().load_from_file(path)


# ----------------------------------------------------------------------------------------------
# 2. User mistakes: one line naming the file, exit 2
# ----------------------------------------------------------------------------------------------
def sr_error(tmp_path: Path, model: Path, capsys) -> str:
    """asid-sr's exit status must be 2 with one line of error (no traceback) naming the file."""
    image = tmp_path / 'a.png'
    if not image.exists():
        cv2.imwrite(str(image), synthetic_image(12, 12, 0))
    assert asid_sr([str(image), '-o', str(tmp_path / 'out'), '-m', str(model)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(model) in err, err
    return err


def unusable(kind: str) -> torch.Tensor:
    weight = tiny_net().conv_first.weight.detach()
    if kind == 'meta':
        return torch.empty(weight.shape, device='meta')
    if kind == 'sparse':
        return weight.to_sparse()
    if kind == 'quantized':
        with warnings.catch_warnings():  # quantized tensors are deprecated: they still exist in files
            warnings.simplefilter('ignore')
            return torch.quantize_per_tensor(weight, 0.1, 0, torch.qint8)
    return weight.to(torch.complex64)


@pytest.mark.parametrize('kind, named', [('meta', 'meta-device tensors'), ('sparse', 'sparse tensors'),
                                         ('quantized', 'quantized tensors'), ('complex', 'complex tensors')])
def test_unusable_tensor_kinds_are_named(tmp_path, capsys, kind, named):
    state = tiny_net().state_dict()
    state['conv_first.weight'] = unusable(kind)
    torch.save({'params': state}, tmp_path / f'{kind}.pth')
    assert f'holds {named}' in sr_error(tmp_path, tmp_path / f'{kind}.pth', capsys)


@pytest.mark.parametrize('dtype', [torch.int64, torch.bool])
def test_integer_weights_are_named(tmp_path, capsys, dtype):
    from basicsr.models import build_model

    state = tiny_net().state_dict()
    state['conv_first.weight'] = torch.ones(state['conv_first.weight'].shape, dtype=dtype)
    path = tmp_path / 'int.pth'
    torch.save({'params': state}, path)
    expected = f'wrong number type: conv_first.weight is {str(dtype)[6:]}, where the network has floating-point'
    assert expected in sr_error(tmp_path, path, capsys)
    data = make_tiny_data(tmp_path / 'data', train_images=1, val_images=1)
    for strict in (True, False):  # BasicSR's strict_load_g: false would convert them silently
        weights = {'path.pretrain_network_g': str(path), 'path.strict_load_g': strict}
        opt = tiny_train_options('i', data / 'train', data / 'valsrc', **weights)
        opt.update(is_train=False, dist=False, rank=0, world_size=1)
        with pytest.raises(asid_errors.PretrainedWeightsError, match=expected):
            build_model(opt)


@pytest.mark.slow
def test_torchscript_archive_is_named(tmp_path, capsys):
    torch.jit.save(torch.jit.trace(tiny_net(), torch.rand(1, 3, 16, 16)), tmp_path / 'scripted.pt')
    err = sr_error(tmp_path, tmp_path / 'scripted.pt', capsys)
    assert 'is a TorchScript archive (torch.jit.save), not a state dict of weights' in err
    assert err.endswith('with torch.save')  # the whole sentence


@pytest.mark.parametrize('kind', ['folder', 'fifo', 'device'])
def test_what_is_not_a_regular_file(tmp_path, capsys, kind):
    """A folder, /dev/null, a FIFO (which must not block: nobody writes to it) are named as what they are."""
    from asid_arch.archs.asid_layouts import resolve_variant_options

    path = {'folder': tmp_path / 'w.pth', 'fifo': tmp_path / 'w.pth', 'device': Path(os.devnull)}[kind]
    if kind == 'folder':
        path.mkdir()
    elif kind == 'fifo':
        if not hasattr(os, 'mkfifo'):
            pytest.skip('no FIFOs on this system')
        os.mkfifo(path)
    expected = {'folder': 'is a folder, not a weights file', 'fifo': 'is a named pipe, not a weights file',
                'device': 'is a character device, not a weights file'}[kind]
    assert expected in sr_error(tmp_path, path, capsys)
    opt = {'network_g': {'type': 'ASID', 'position_bias': 'auto'}, 'path': {'pretrain_network_g': str(path)}}
    assert 'the paper' in resolve_variant_options(opt)  # read, refused, the paper's values kept; nothing waits


def test_unreadable_file(tmp_path, capsys, monkeypatch):
    path = tmp_path / 'locked.pth'
    torch.save({'params': tiny_net().state_dict()}, path)
    path.chmod(0)
    real_open = os.open

    def denied(name, *args, **kwargs):  # root reads files whatever their permissions: deny as the OS would
        if Path(name) == path:
            raise PermissionError(13, 'Permission denied', str(name))
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(os, 'open', denied)
    assert 'cannot be read (Permission denied)' in sr_error(tmp_path, path, capsys)
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)


# ----------------------------------------------------------------------------------------------
# 3. The exported graph takes every size >= 1 (one real export, onnxruntime in child processes)
# ----------------------------------------------------------------------------------------------
SMALL_SIZES = ((8, 8), (5, 7), (1, 1), (8, 40), (40, 3), (9, 9), (12, 21), (24, 40), (37, 61))
# the model exported: neosr's default variant (no position bias, SDPA channel attention, whose grid scale
# 1/sqrt(tokens) follows the input size: 24x40 and 37x61 give 15 and 40 grid tokens per group)
NEOSR_DEFAULT_NET = '''
import torch
from asid_arch import ASID
torch.manual_seed(0)
net = ASID(upscale=2, num_feat=16, num_blocks=1, position_bias=False, channel_attention='sdpa').eval()
with torch.no_grad():  # non-trivial weights for the SAMs and CAM, temperatures left at 1.0 (as neosr trains them)
    for name, p in net.named_parameters():
        if not name.endswith('temperature'):
            p.add_(0.05 * torch.randn_like(p))
'''
ORT_SCRIPT = NEOSR_DEFAULT_NET + '''
import sys, numpy as np, onnxruntime
session = onnxruntime.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])
for size in {sizes}:
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        expected = net(x).numpy()
    got = session.run(None, {{'lr': x.numpy()}})[0]
    print(size, got.shape == expected.shape and float(np.abs(got - expected).max()), flush=True)
'''


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """``asid-export`` of a tiny model in neosr's default variant, saved as neosr saves it, checked on a 1x1
    image, in a child process: ``(folder, result)``."""
    pytest.importorskip('onnxruntime', reason="the optional extra asid_arch[onnx] is not installed")
    pytest.importorskip('onnxscript', reason="the optional extra asid_arch[onnx] is not installed")
    from asid_arch.archs.asid_layouts import state_dict_to_reference

    folder = tmp_path_factory.mktemp('onnx')
    scope = {}
    exec(NEOSR_DEFAULT_NET, scope)
    torch.save({'params': state_dict_to_reference(scope['net'].state_dict())}, folder / 'm.pth')
    cv2.imwrite(str(folder / 'one.png'), synthetic_image(1, 1, 0))
    result = run_module('asid_arch.cli.export', ['-m', 'm.pth', '-o', 'm.onnx', '--check-image', 'one.png'], folder)
    return folder, result


@pytest.mark.slow
def test_export_checks_a_one_pixel_image(exported):
    folder, result = exported
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert 'image 1x1: max abs diff' in result.stdout
    assert 'onnxruntime vs PyTorch, random 37x45 (batch 2), 5x7, 1x1, 16x40: max abs diff' in result.stdout
    assert 'neosr defaults' in result.stdout  # the variant read off the weights
    assert 'Traceback' not in result.stdout + result.stderr and result.stderr.strip() == '', result.stderr[-2000:]
    assert sorted(p.name for p in folder.iterdir()) == ['m.onnx', 'm.pth', 'one.png']


@pytest.mark.slow
def test_exported_graph_takes_every_size(exported):
    """onnxruntime used to die of SIGFPE (exit 136) on sides of 8 px and less: here in a child process, so a
    regression fails this test instead of killing pytest. The sizes include two whose SDPA grid scales differ:
    the exported graph computes that scale from the input instead of keeping the example's."""
    folder, result = exported
    assert result.returncode == 0, result.stderr[-2000:]
    run = subprocess.run([sys.executable, '-c', ORT_SCRIPT.format(sizes=SMALL_SIZES), str(folder / 'm.onnx')],
                         env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (run.returncode, run.stdout, run.stderr[-2000:])
    diffs = [float(line.rsplit(' ', 1)[1]) for line in run.stdout.splitlines()]
    assert len(diffs) == len(SMALL_SIZES) and max(diffs) < 1e-4, run.stdout


# ----------------------------------------------------------------------------------------------
# 4. asid-export: nothing overwritten unless asked, nothing failed or partial left behind
# ----------------------------------------------------------------------------------------------
@pytest.fixture()
def export_parts(monkeypatch, tmp_path):
    """asid-export with the exporter and onnxruntime replaced (the command's own logic in milliseconds):
    ``parts['diff']`` sets the difference the check finds; ``parts['inputs']`` receives the checked inputs."""
    from asid_arch.cli import export

    parts = {'diff': 0.0, 'inputs': None}

    def build(net, args, inputs):
        parts['inputs'] = inputs
        return b'model bytes', [], {'onnxruntime': {name: parts['diff'] for name in inputs}}

    monkeypatch.setattr(export, 'build_onnx', build)
    torch.save({'params': tiny_net().state_dict()}, tmp_path / 'm.pth')
    return parts


@pytest.fixture()
def no_work(monkeypatch):
    """Fails a test where asid-export starts reading the model: its arguments must be refused first."""
    import asid_arch.from_weights

    def started(*args, **kwargs):
        raise AssertionError('the model was read: the argument was not refused before any work')

    monkeypatch.setattr(asid_arch.from_weights, 'network_from_file', started)


def export_error(argv: list, capsys, code: int = 2) -> str:
    from asid_arch.cli.export import main as asid_export

    assert asid_export(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'Traceback' not in err, err
    return err


def test_existing_output_needs_overwrite(tmp_path, capsys, no_work):
    target = tmp_path / 'm.onnx'
    target.write_bytes(b'old')
    err = export_error(['-m', str(tmp_path / 'm.pth'), '-o', str(target)], capsys)
    assert f'-o {target} exists: add --overwrite to replace it' in err and target.read_bytes() == b'old'


def test_overwrite_replaces_only_after_a_passing_check(tmp_path, capsys, export_parts):
    from asid_arch.cli.export import main as asid_export

    target = tmp_path / 'm.onnx'
    target.write_bytes(b'old')
    argv = ['-m', str(tmp_path / 'm.pth'), '-o', str(target), '--overwrite']
    export_parts['diff'] = 1.0  # the check fails: the old file stays, nothing else is written
    assert asid_export(argv) == 1
    assert target.read_bytes() == b'old' and sorted(p.name for p in tmp_path.iterdir()) == ['m.onnx', 'm.pth']
    export_parts['diff'] = 0.0
    assert asid_export(argv) == 0
    assert target.read_bytes() == b'model bytes' and sorted(p.name for p in tmp_path.iterdir()) == ['m.onnx', 'm.pth']


def test_failed_check_writes_nothing(tmp_path, capsys, export_parts):
    export_parts['diff'] = 1e-3
    err = export_error(['-m', str(tmp_path / 'm.pth'), '-o', str(tmp_path / 'new.onnx')], capsys, code=1)
    assert 'difference above the tolerance 0.0001' in err and 'not written' in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.pth']


@pytest.mark.parametrize('args, message', [
    (['--opset', '5'], '--opset 5: the exporter writes opsets 18 to'),
    (['--opset', '1000'], '--opset 1000: the exporter writes opsets 18 to'),
    (['--tolerance', '-1'], '--tolerance must be a finite number >= 0, got -1'),
    (['--tolerance', 'nan'], '--tolerance must be a finite number >= 0, got nan'),
    (['--tolerance', 'inf'], '--tolerance must be a finite number >= 0, got inf'),
])
def test_arguments_refused_before_any_work(tmp_path, capsys, no_work, args, message):
    pytest.importorskip('onnx')
    assert message in export_error(['-m', str(tmp_path / 'm.pth'), '-o', str(tmp_path / 'm.onnx'), *args], capsys)
    assert not (tmp_path / 'm.onnx').exists()


def test_unwritable_folder_found_before_any_work(tmp_path, capsys, no_work, monkeypatch):
    """A read-only folder (or file system) used to be found after the export; root ignores permissions, so
    the refusal the OS gives is played by the probe's mkstemp."""
    import tempfile

    folder = tmp_path / 'ro'
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    real_mkstemp = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):
        if Path(dir) == folder:
            raise OSError(30, 'Read-only file system')
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, 'mkstemp', read_only)
    err = export_error(['-m', str(tmp_path / 'm.pth'), '-o', str(folder / 'sub' / 'm.onnx')], capsys)
    assert f'cannot write in {folder} (Read-only file system)' in err
    folder.chmod(stat.S_IRWXU)


def test_check_image_that_is_no_image_file(tmp_path, capsys, export_parts):
    """--check-image: a folder, whatever its name (not UTF-8 here), is one line and exit 2; a 1x1 image is checked."""
    odd = Path(os.fsdecode(bytes(tmp_path) + b'/d\xff'))
    odd.mkdir()
    err = export_error(['-m', str(tmp_path / 'm.pth'), '-o', str(tmp_path / 'm.onnx'), '--check-image', str(odd)],
                       capsys)
    assert err.endswith('d\\xff is a folder, not a regular file')
    cv2.imwrite(str(tmp_path / 'one.png'), synthetic_image(1, 1, 0))
    from asid_arch.cli.export import main as asid_export

    assert asid_export(['-m', str(tmp_path / 'm.pth'), '-o', str(tmp_path / 'm.onnx'), '--check-image',
                        str(tmp_path / 'one.png')]) == 0
    assert export_parts['inputs']['image 1x1'].shape == (1, 3, 1, 1) and '5x7' in export_parts['inputs']


SIGNAL_SCRIPT = '''
import os, signal, sys
from asid_arch.cli import export
export.build_onnx = lambda net, args, inputs: (b'model bytes', [], {'onnxruntime': {n: 0.0 for n in inputs}})
os.fsync = lambda fd: os.kill(os.getpid(), getattr(signal, sys.argv[1]))  # stopped while the file is written
sys.exit(export.main(['-m', 'm.pth', '-o', 'm.onnx']))
'''


@pytest.mark.slow
@pytest.mark.parametrize('name, status', [('SIGINT', 130), ('SIGTERM', 143)])
def test_signal_during_export_leaves_no_temporary_file(tmp_path, name, status):
    torch.save({'params': tiny_net().state_dict()}, tmp_path / 'm.pth')
    run = subprocess.run([sys.executable, '-c', SIGNAL_SCRIPT, name], cwd=tmp_path, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=600)
    assert run.returncode == status, (run.returncode, run.stderr[-2000:])
    assert f'stopped by {"Ctrl-C" if name == "SIGINT" else name}: m.onnx not written' in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.pth']
