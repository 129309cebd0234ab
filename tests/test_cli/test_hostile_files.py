"""The commands against what stands where they read and write (issue 26, items 2, 3, 14 and the messages):
FIFOs, devices and link loops as inputs and outputs, a kit folder linked out of the checkout, names longer
than the file system takes, a reader that closes the pipe, and Ctrl-C at any point of any command."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from asid_arch.bench import common as bench_common
from asid_arch.cli.kit import main as asid_kit
from asid_arch.cli.sr import main as asid_sr
from asid_arch.utils.asid_files import NotARegularFile, name_max, path_kind

from helpers import REPO, synthetic_image


def sr(*args) -> int:
    return asid_sr([str(a) for a in args])


@pytest.mark.slow
def test_inputs_that_are_not_regular_files_are_named_by_kind(tmp_path, model_file, capsys):
    cv2.imwrite(str(tmp_path / 'good.png'), synthetic_image(16, 16, 0))
    os.mkfifo(tmp_path / 'fifo.png')
    (tmp_path / 'loop.png').symlink_to('loop.png')
    (tmp_path / 'broken.png').symlink_to('nowhere.png')
    inputs = [tmp_path / 'fifo.png', '/dev/zero', tmp_path / 'loop.png', tmp_path / 'broken.png', tmp_path / 'no.png']
    assert sr(*inputs, '-o', tmp_path / 'o', '-m', model_file) == 1  # (a FIFO is never opened: no hang)
    err = capsys.readouterr().err
    for expected in ('fifo.png: a FIFO, not an image file', '/dev/zero: a character device, not an image file',
                     'loop.png: a symbolic link loop, not an image file',
                     'broken.png: a broken symbolic link, not an image file', 'no.png: no such file or folder'):
        assert expected in err
    # inside a folder: the same, each named, the images done
    assert sr(tmp_path, '-o', tmp_path / 'o2', '-m', model_file) == 1
    err = capsys.readouterr().err
    assert 'fifo.png: a FIFO, not an image file: skipped' in err and 'loop.png: a symbolic link loop' in err
    assert sorted(os.listdir(tmp_path / 'o2')) == ['good_x2.png']


def test_overwrite_replaces_regular_files_only(tmp_path, model_file, capsys):
    cv2.imwrite(str(tmp_path / 'a.png'), synthetic_image(16, 16, 0))
    out = tmp_path / 'o'
    out.mkdir()
    os.mkfifo(out / 'a_x2.png')
    assert sr(tmp_path / 'a.png', '-o', out, '-m', model_file) == 0  # kept and skipped, as any existing output
    assert sr(tmp_path / 'a.png', '-o', out, '-m', model_file, '--overwrite') == 2
    assert 'a_x2.png is a FIFO: only a regular file is ever replaced' in capsys.readouterr().err
    assert path_kind(out / 'a_x2.png') == 'FIFO' and os.listdir(out) == ['a_x2.png']


def test_output_names_too_long_are_refused_before_any_work(tmp_path, model_file, capsys):
    limit = name_max(tmp_path)
    long_input = tmp_path / ('l' * (limit - 6) + '.png')  # fits; its output {stem}_x2.png is one byte too long
    cv2.imwrite(str(tmp_path / 'a.png'), synthetic_image(16, 16, 0))
    cv2.imwrite(str(long_input), synthetic_image(16, 16, 1))
    assert sr(tmp_path / 'a.png', long_input, '-o', tmp_path / 'o', '-m', model_file) == 2
    assert f'({limit + 1} bytes) is longer than the {limit} bytes a file name may have' in capsys.readouterr().err
    assert not os.listdir(tmp_path / 'o')  # not even the first image


def test_export_overwrite_refuses_devices_and_fifos(tmp_path):
    from asid_arch.cli.export import UsageError, check_output

    os.mkfifo(tmp_path / 'x.onnx')
    for path, kind in ((Path('/dev/null'), 'character device'), (tmp_path / 'x.onnx', 'FIFO')):
        with pytest.raises(UsageError, match=f'is a {kind}: only a regular file is ever replaced'):
            check_output(path, overwrite=True)
    assert path_kind('/dev/null') == 'character device' and path_kind(tmp_path / 'x.onnx') == 'FIFO'


def test_bench_outputs_refused_when_not_regular_files(tmp_path):
    os.mkfifo(tmp_path / 'results.md')
    assert 'results.md is a FIFO' in bench_common.outputs_problem(tmp_path, ['results.json', 'results.md'])
    assert bench_common.outputs_problem(tmp_path, ['results.json']) == ''
    with pytest.raises(NotARegularFile):
        bench_common.write_output(tmp_path / 'results.md', 'text')  # (atomic: never blocks on the FIFO)
    bench_common.write_output(tmp_path / 'results.json', '{}')
    assert (tmp_path / 'results.json').read_text() == '{}'


def test_kit_refuses_a_folder_linked_out_of_the_checkout(tmp_path, capsys):
    checkout, elsewhere = tmp_path / 'BasicSR', tmp_path / 'elsewhere'
    for sub in ('metrics', 'models', 'utils'):
        (checkout / 'basicsr' / sub).mkdir(parents=True)
        (checkout / 'basicsr' / sub / '__init__.py').write_text('')
    elsewhere.mkdir()
    (elsewhere / '__init__.py').write_text('')
    (checkout / 'basicsr' / 'archs').symlink_to(elsewhere)
    assert asid_kit(['install', str(checkout)]) == 2
    err = capsys.readouterr().err
    assert f'its folder {checkout}/basicsr/archs is {elsewhere} (a symbolic link on the way), outside' in err
    assert os.listdir(elsewhere) == ['__init__.py'] and not list(checkout.rglob('asid_*.py'))
    assert asid_kit(['check', str(checkout)]) == 1
    assert 'unusable' in capsys.readouterr().out


@pytest.mark.slow
def test_a_closed_pipe_never_stops_the_work(tmp_path, model_file):
    """``asid-sr dir/ 2>&1 | head -c 10``: every image is written and the exit status is the work's."""
    for k in range(4):
        cv2.imwrite(str(tmp_path / f'{k}.png'), synthetic_image(16, 16, k))
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    proc = subprocess.Popen([sys.executable, '-m', 'asid_arch.cli.sr', str(tmp_path), '-o', str(tmp_path / 'o'), '-m',
                             str(model_file)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    proc.stdout.read(10)
    proc.stdout.close()  # the reader goes away before the first image
    assert proc.wait(timeout=300) == 0
    assert sorted(os.listdir(tmp_path / 'o')) == [f'{k}_x2.png' for k in range(4)]


COMMANDS = {  # command -> (module, arguments, what to interrupt: module attribute called early in its main)
    'asid-sr': ('asid_arch.cli.sr', ['a.png', '-o', 'o', '-m', 'm.pth'], 'asid_arch.cpu_settings.tune_cpu'),
    'asid-export': ('asid_arch.cli.export', ['-m', 'm.pth', '-o', 'x.onnx'], 'asid_arch.cpu_settings.tune_cpu'),
    'asid-bench': ('asid_arch.bench.main', ['seams', '-m', 'm.pth'], 'asid_arch.cpu_settings.tune_cpu'),
    'asid-train': ('asid_arch.cli.train', ['-opt', 'x.yml'], 'asid_arch.pipeline.launch.run_pipeline'),
    'asid-test': ('asid_arch.cli.test', ['-opt', 'x.yml'], 'asid_arch.pipeline.launch.run_pipeline'),
    'asid-prepare': ('asid_arch.cli.prepare', ['bench', '--hr', 'hr', '--out', 'out'],
                     'asid_arch.data.prepare_arguments.bench_sets'),
    'asid-kit': ('asid_arch.cli.kit', ['install', 'checkout'], 'asid_arch.cli.kit.install_kit'),
    '[demo]': ('asid_arch.cli.demo', [], 'asid_arch.cpu_settings.tune_cpu'),
}


@pytest.mark.slow
@pytest.mark.parametrize('prog', list(COMMANDS))
def test_ctrl_c_anywhere_is_one_line_and_130(tmp_path, prog):
    """A real SIGINT (Ctrl-C) in each command where no inner summary catches it: one line, exit 130."""
    module, args, target = COMMANDS[prog]
    owner, name = target.rsplit('.', 1)
    code = (f'import importlib, os, signal, sys; owner = importlib.import_module({owner!r}); '
            f'setattr(owner, {name!r}, lambda *a, **k: signal.raise_signal(signal.SIGINT)); '
            f'sys.exit(importlib.import_module({module!r}).main({args!r}))')
    if prog == 'asid-prepare':
        (tmp_path / 'hr').mkdir()
        cv2.imwrite(str(tmp_path / 'hr' / 'a.png'), synthetic_image(16, 16, 0))
    if prog == 'asid-kit':
        for sub in ('archs', 'metrics', 'models', 'utils'):
            (tmp_path / 'checkout' / 'basicsr' / sub).mkdir(parents=True)
            (tmp_path / 'checkout' / 'basicsr' / sub / '__init__.py').write_text('')
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    done = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 130 and len(lines) == 1, (done.returncode, lines)
    assert lines[0].startswith(f'{prog}: stopped by Ctrl-C') and signal.SIGINT == 2
