"""asid-prepare and the package's writes against what a user keeps beside the outputs (issue 26, items 1, 2, 8 and
the name-length message): foreign temporaries, FIFOs and links where outputs go, sources and outputs changed
behind the record's back, names longer than the file system takes."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from asid_arch.cli import prepare as prepare_command
from asid_arch.data import prepare
from asid_arch.data.record import RECORD_NAME
from asid_arch.utils import asid_files

from helpers import synthetic_image, write_images


def run(args, capsys):
    """``asid-prepare args`` in this process: (exit status, stdout, stderr)."""
    try:
        code = prepare_command.main([str(a) for a in args])
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err


def bench(hr: Path, out: Path, capsys, *extra):
    return run(['bench', '--hr', hr, '--out', out, '--scales', '2', *extra], capsys)


def test_only_the_package_temporaries_are_cleaned_up(tmp_path, capsys):
    """A user's ``.thesis.docx.tmp`` anywhere under --out (top, a subfolder, an output folder) survives; a
    temporary of a killed write of this package in an output folder goes."""
    write_images(tmp_path / 'set1', 1, size=(32, 32))
    out = tmp_path / 'X'
    users = [out / '.top.tmp', out / 'Documents' / '.thesis.docx.tmp', out / 'set1' / 'GTmod2' / '.notes.tmp',
             out / 'set1' / 'GTmod2' / '.img00.png.abcdefgh.tmp', out / 'Documents' / '.a.png.abcdefgh.asid.tmp']
    for path in users:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('mine')
    stale = out / 'set1' / 'GTmod2' / '.img00.png.k1ll3d_x.asid.tmp'
    stale.write_bytes(b'half an image')
    assert bench(tmp_path / 'set1', out, capsys)[0] == 0
    assert all(path.read_text() == 'mine' for path in users)  # (Documents/ is not an output folder: not searched)
    assert not stale.exists() and (out / 'set1' / 'GTmod2' / 'img00.png').is_file()


def test_atomic_write_names_its_temporaries_and_replaces_regular_files_only(tmp_path):
    seen = []

    def write(f):
        seen.extend(name for name in os.listdir(tmp_path) if name.startswith('.') and name not in seen)
        f.write(b'x')

    asid_files.atomic_write(tmp_path / 'a.png', write)
    assert asid_files.is_temporary(seen[0]) and seen[0].startswith('.a.png.') and seen[0].endswith('.asid.tmp')
    long_name = 'n' * (asid_files.name_max(tmp_path) - 4) + '.png'  # the longest name the folder takes
    asid_files.atomic_write(tmp_path / long_name, write)  # its temporary name is shortened to fit
    assert (tmp_path / long_name).read_bytes() == b'x' and asid_files.is_temporary(seen[1])
    os.mkfifo(tmp_path / 'fifo.png')
    (tmp_path / 'link.png').symlink_to(tmp_path / 'a.png')
    for name, kind in (('fifo.png', 'FIFO'), ('link.png', 'symbolic link')):
        with pytest.raises(asid_files.NotARegularFile, match=f'{name} is a {kind}: only a regular file is ever'):
            asid_files.atomic_write(tmp_path / name, write)
    assert asid_files.path_kind(tmp_path / 'fifo.png') == 'FIFO' and (tmp_path / 'link.png').is_symlink()
    with pytest.raises(asid_files.NotARegularFile, match='/dev/null is a character device'):
        asid_files.check_replaceable('/dev/null')  # (the check alone: nothing is written near /dev/null)
    assert sorted(os.listdir(tmp_path)) == sorted(['a.png', long_name, 'fifo.png', 'link.png'])


def test_what_is_not_a_regular_file_where_an_output_goes_is_refused_before_any_work(tmp_path, capsys):
    write_images(tmp_path / 'set1', 2, size=(32, 32))
    out = tmp_path / 'out'
    (out / 'set1' / 'GTmod2').mkdir(parents=True)
    os.mkfifo(out / 'set1' / 'GTmod2' / 'img01.png')
    code, _, err = bench(tmp_path / 'set1', out, capsys)
    assert code == 2 and f'{out}/set1/GTmod2/img01.png is a FIFO where an output image goes' in err
    assert asid_files.path_kind(out / 'set1' / 'GTmod2' / 'img01.png') == 'FIFO'
    assert not (out / 'set1' / 'GTmod2' / 'img00.png').exists() and not (out / RECORD_NAME).exists()
    # an LMDB folder is replaced whole: anything but an LMDB's files in it is in the way, and so is a link there
    write_images(tmp_path / 'hr', 1, size=(48, 48))
    lmdb_path = tmp_path / 't' / 't_HR_sub.lmdb'
    lmdb_path.mkdir(parents=True)
    (lmdb_path / 'my_notes.txt').write_text('mine')
    args = ['train', '--hr', tmp_path / 'hr', '--out', tmp_path / 't', '--name', 't', '--scales', '2',
            '--crop-size', '16', '--step', '16']
    code, _, err = run(args, capsys)
    assert code == 2 and 'my_notes.txt is in the way' in err and (lmdb_path / 'my_notes.txt').is_file()
    (lmdb_path / 'my_notes.txt').unlink()
    lmdb_path.rmdir()
    lmdb_path.symlink_to(tmp_path / 'set1')
    code, _, err = run(args, capsys)
    assert code == 2 and 't_HR_sub.lmdb is in the way' in err and lmdb_path.is_symlink()


def test_a_source_swapped_while_the_run_reads_it_gives_no_output(tmp_path, capsys, monkeypatch):
    """The hash that decides is that of the bytes decoded: a source swapped between the listing and the reading
    is a named failure, nothing made from it; once restored, a run makes it from the right image."""
    hr, out = tmp_path / 'set1', tmp_path / 'out'
    write_images(hr, 2, size=(32, 32))
    original = (hr / 'img01.png').read_bytes()
    listed = prepare.collect_sources

    def swap_after_listing(*args, **kwargs):
        sources = listed(*args, **kwargs)
        cv2.imwrite(str(hr / 'img01.png'), synthetic_image(32, 32, 99))
        return sources

    monkeypatch.setattr(prepare, 'collect_sources', swap_after_listing)
    code, _, err = bench(hr, out, capsys)
    assert code == 1 and 'img01.png: it changed while this run was reading it' in err
    assert not (out / 'set1' / 'GTmod2' / 'img01.png').exists() and (out / 'set1' / 'GTmod2' / 'img00.png').exists()
    monkeypatch.setattr(prepare, 'collect_sources', listed)
    (hr / 'img01.png').write_bytes(original)
    assert bench(hr, out, capsys)[0] == 0
    made = cv2.imread(str(out / 'set1' / 'GTmod2' / 'img01.png'))
    assert np.array_equal(made, cv2.imread(str(hr / 'img01.png')))


def rewrite_record(out: Path, rel: str, sha: str, record_mtime_ns: int) -> None:
    """The record with ``sha`` as the hash of ``rel`` (its size and times kept), written at ``record_mtime_ns``."""
    lines = []
    for line in (out / RECORD_NAME).read_text().splitlines():
        entry = json.loads(line)
        if rel in entry.get('files', {}):
            entry['files'][rel][2] = sha
        lines.append(json.dumps(entry, sort_keys=True))
    (out / RECORD_NAME).write_text(''.join(f'{line}\n' for line in lines))
    os.utime(out / RECORD_NAME, ns=(record_mtime_ns, record_mtime_ns))


def test_outputs_are_compared_by_content_where_size_and_time_cannot_tell(tmp_path, capsys):
    hr, out = tmp_path / 'set1', tmp_path / 'out'
    write_images(hr, 2, size=(32, 32))
    assert bench(hr, out, capsys)[0] == 0
    lr = out / 'set1' / 'LRbicx2' / 'img00.png'
    good = lr.read_bytes()
    # damaged, then its modification time set back: the inode's change time tells
    st = lr.stat()
    damaged = bytearray(good)
    damaged[-20] ^= 0xff
    lr.write_bytes(bytes(damaged))
    os.utime(lr, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert lr.stat().st_size == st.st_size and lr.stat().st_mtime_ns == st.st_mtime_ns
    code, stdout, err = bench(hr, out, capsys)
    assert code == 0 and '1 output edited or deleted' in stdout and lr.read_bytes() == good
    # the record says other content, the file's size and times are as recorded: only --verify reads it ...
    st = lr.stat()
    rel = 'set1/LRbicx2/img00.png'
    rewrite_record(out, rel, '0' * 64, st.st_mtime_ns + 60 * 10**9)
    code, stdout, _ = bench(hr, out, capsys)
    assert code == 0 and '0 written, 2 already done' in stdout
    code, stdout, err = bench(hr, out, capsys, '--verify')
    assert code == 0 and '1 output edited or deleted' in stdout and f'{rel} was edited or deleted' in err
    # ... and so does a plain run when the file was written too shortly before the record (a later write
    # within the file system's time step would have kept its modification time)
    st = lr.stat()
    rewrite_record(out, rel, '0' * 64, st.st_mtime_ns + 10**9)
    code, stdout, _ = bench(hr, out, capsys)
    assert code == 0 and '1 output edited or deleted' in stdout


def test_names_longer_than_the_file_system_takes_are_refused_before_any_work(tmp_path, capsys):
    write_images(tmp_path / 'hr', 1, size=(48, 48))
    out = tmp_path / 'out'
    name = 'n' * 245  # {name}_HR fits, {name}_LR_bicubic_X2_sub.lmdb does not
    start = time.time()
    code, _, err = run(['train', '--hr', tmp_path / 'hr', '--out', out, '--name', name, '--scales', '2',
                        '--crop-size', '16', '--step', '16'], capsys)
    assert code == 2 and 'choose a shorter --name' in err and 'bytes long, above the 255' in err
    assert not out.exists() or not any(out.iterdir())
    assert time.time() - start < 30
    long_stem = 's' * 248  # the source's name fits, and so does its HR output; its sub-images' names do not
    (tmp_path / 'hr2').mkdir()
    cv2.imwrite(str(tmp_path / 'hr2' / f'{long_stem}.png'), synthetic_image(48, 48, 0))
    code, _, err = run(['train', '--hr', tmp_path / 'hr2', '--out', out, '--name', 't', '--scales', '2',
                        '--crop-size', '16', '--step', '16'], capsys)
    assert code == 2 and f'{long_stem}_s000.png: this output name is 257 bytes long' in err
    assert 'rename that source image' in err and not out.exists()


def test_an_lmdb_damaged_in_place_is_built_again(tmp_path, capsys):
    write_images(tmp_path / 'hr', 1, size=(48, 48))
    out = tmp_path / 'out'
    args = ['train', '--hr', tmp_path / 'hr', '--out', out, '--name', 't', '--scales', '2', '--crop-size', '16',
            '--step', '16']
    assert run(args, capsys)[0] == 0
    data = out / 't_HR_sub.lmdb' / 'data.mdb'
    st = data.stat()
    with open(data, 'r+b') as f:  # same size, a few bytes of a value changed, the time set back
        f.seek(st.st_size // 2)
        f.write(b'\xff' * 16)
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
    code, _, err = run(args, capsys)
    assert code == 0 and 't_HR_sub.lmdb: built again (t_HR_sub.lmdb/data.mdb was edited or deleted' in err


def test_an_input_named_like_an_image_that_is_no_regular_file_is_named_before_any_work(tmp_path, capsys):
    """A FIFO (it would block the read), a folder or a link loop called ``*.png`` among the sources: exit 2, each
    named by its kind, nothing written (never skipped without a word)."""
    write_images(tmp_path / 'set1', 2, size=(32, 32))
    os.mkfifo(tmp_path / 'set1' / 'a.png')
    (tmp_path / 'set1' / 'b.png').mkdir()
    os.symlink('c.png', tmp_path / 'set1' / 'c.png')
    code, _, err = bench(tmp_path / 'set1', tmp_path / 'out', capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert 'a.png is a FIFO, b.png is a folder, c.png is a symbolic link loop, not an image file' in err
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('linked', ['set1', 'set1/GTmod2', 'set1/LRbicx2', 't_LR_bicubic', 't_LR_bicubic/X2_sub',
                                    't_HR_sub'])
def test_an_output_folder_that_is_a_symbolic_link_is_refused_before_any_work(tmp_path, capsys, linked):
    """An output folder (or a folder on the way to one) under --out that is a link to a folder elsewhere: exit 2
    naming it, before anything is written or removed there; --out itself may be a link (the user named it)."""
    write_images(tmp_path / 'hr' / 'set1', 1, size=(48, 48))
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    (elsewhere / 'mine.png').write_bytes(b'kept')
    out = tmp_path / 'out'
    (out / linked).parent.mkdir(parents=True, exist_ok=True)
    (out / linked).symlink_to(elsewhere, target_is_directory=True)
    if linked.startswith('set1'):
        code, _, err = bench(tmp_path / 'hr' / 'set1', out, capsys)
    else:
        code, _, err = run(['train', '--hr', tmp_path / 'hr' / 'set1', '--out', out, '--name', 't', '--scales', '2',
                            '--crop-size', '16', '--step', '16', '--no-lmdb'], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f'{out / linked} is in the way: it is a symbolic link (to {elsewhere})' in err
    assert sorted(os.listdir(elsewhere)) == ['mine.png'] and (elsewhere / 'mine.png').read_bytes() == b'kept'
    (out / linked).unlink()
    real_out = tmp_path / 'real_out'
    real_out.mkdir()
    linked_out = tmp_path / 'linked_out'
    linked_out.symlink_to(real_out, target_is_directory=True)
    code, _, err = bench(tmp_path / 'hr' / 'set1', linked_out, capsys)
    assert code == 0 and (real_out / 'set1' / 'GTmod2' / 'img00.png').is_file(), err
