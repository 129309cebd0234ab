"""``asid-prepare``: HR images -> bicubic LR -> sub-images -> LMDB, and benchmark sets, the BasicSR way.

BasicSR's own data scripts are not in its pip package; this command does the same steps with
BasicSR's library functions:

* ``train``: a folder of HR images (e.g. DIV2K_train_HR) -> ``{name}_HR`` mod-cropped to the
  least common multiple of the scales, ``{name}_LR_bicubic/X{s}`` by MATLAB-compatible bicubic
  (``basicsr.utils.matlab_functions.imresize``, rounded to uint8) -> sub-images (480 px crops,
  step 240, thresh 0; divided by s for LR) -> LMDB with ``meta_info.txt``
  (``basicsr.utils.lmdb_util.make_lmdb_from_imgs``).
* ``bench``: benchmark HR folders -> ``{set}/GTmod{s}`` and ``{set}/LRbicx{s}``.
* ``demo``: the embedded default data set (scikit-image's bundled sample images) for the CPU demo.

Every step is resumable and knows what it made. ``{out}/.asid-prepare-record.jsonl`` holds, for
every output, what it was made from (the content hash of its source image, or of the image it was
cut from, or of every sub-image an LMDB holds), with which settings, and the size, modification
time and hash of what was written. A re-run skips an output only when all of these still hold (the
content hash is compared where size and time cannot tell, and for every output with ``--verify``);
otherwise it makes it again and says why (source changed, settings changed, output edited or
deleted, not in the record). Outputs of sources or scales no longer asked for are removed; other
files found in the output folders are reported (exit 1), never used silently. The record is checked
against the files, never trusted alone: a damaged or edited record only makes work be done again.
Images are written atomically and an LMDB is built under a temporary name, renamed when complete.
Only regular files are ever replaced; the temporaries of killed writes are removed from the output
folders (files named ``.*.XXXXXXXX.asid.tmp`` only: nothing else of yours under ``--out`` is touched).

Output names are the source's stem with every character other than ASCII letters, digits, '_' and
'-' replaced by '_' (BasicSR's LMDB keys are ASCII, its meta_info.txt readers cut names at '.' and
' ', and OpenCV crashes on names that are not UTF-8); two sources with the same output name are an
error for the second. Unreadable images are reported by name and skipped; images too small for one
sub-image are reported by name. Exit status: 0 complete, 1 some images failed (each named), 2 unusable
arguments, 128 + N stopped by signal N (a one-line summary; a re-run finishes the work).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..console import EXIT_FAILED, EXIT_OK, EXIT_USAGE, command, interrupt_exit_status, interrupt_name, stop_on_signals
from ..data.prepare import (CROP_SIZE, DEMO_CROP, DEMO_STEP, LOCK_NAME, PARTIAL_PREFIX, STEP, THRESH, FolderBusy,
                            exclusive_folder, output_key, prepare_bench, prepare_demo, prepare_train)
from ..data.prepare_arguments import (bench_folders, bench_sets, check_crop, check_name, check_name_lengths, check_out,
                                      check_scales, check_sources_apart, train_folders, user_images)
from ..data.record import RECORD_NAME, Report, WriteError
from .usage import command_parser


def add_verify_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--verify', action='store_true',
                        help='compare the content hash of every recorded output, not only where its size and '
                        'modification time cannot tell (reads every output once)')


@command('asid-prepare', '; what was finished is kept: run the same command again to finish')
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = command_parser('asid-prepare', __doc__)
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('train', help='training set: HR folder -> HR/LR, sub-images, LMDB (BasicSR DIV2K layout)')
    p.add_argument('--hr', type=Path, required=True, help='folder of HR images (e.g. DIV2K/DIV2K_train_HR)')
    p.add_argument('--out', type=Path, required=True, help='output folder (e.g. datasets/DIV2K)')
    p.add_argument('--name', default='DIV2K_train', help='prefix of the outputs (default: DIV2K_train)')
    p.add_argument('--scales', type=int, nargs='+', default=[2, 3, 4])
    p.add_argument('--crop-size', type=int, default=CROP_SIZE, help='HR sub-image size (default 480)')
    p.add_argument('--step', type=int, default=STEP, help='HR sub-image step (default 240)')
    p.add_argument('--thresh', type=int, default=THRESH, help='keep a last crop if this many px remain (default 0)')
    p.add_argument('--no-lmdb', action='store_true', help='stop after the sub-images (disk-folder training)')
    add_verify_argument(p)
    p = sub.add_parser('bench', help='benchmark sets: HR folders -> {set}/GTmod{s} + {set}/LRbicx{s}')
    p.add_argument('--hr', type=Path, nargs='+', required=True, help='HR folders, e.g. Set5/HR Set14/HR')
    p.add_argument('--out', type=Path, default=Path('datasets'), help='output root (default: datasets)')
    p.add_argument('--scales', type=int, nargs='+', default=[2, 3, 4])
    add_verify_argument(p)
    p = sub.add_parser('demo', help="the CPU demo's data from scikit-image's bundled sample images")
    p.add_argument('--out', type=Path, default=Path('datasets/demo'))
    p.add_argument('--scales', type=int, nargs='+', default=[2])
    add_verify_argument(p)
    args = parser.parse_args(argv)

    # every argument is checked before anything is written
    own_files = [args.out / RECORD_NAME, args.out / LOCK_NAME]
    if args.command == 'train':
        check_crop(args.scales, args.crop_size, args.step, args.thresh)
        check_name(args.name)
        folders = train_folders(args.out, args.name, args.scales)
        check_out(args.out, folders, own_files)
        sources = user_images(args.hr, '--hr')
        check_sources_apart(args.hr, folders)
        check_name_lengths(args.out, [f'{PARTIAL_PREFIX}{f.name}' if f.suffix == '.lmdb' else f.name
                                      for f in folders if f.parent == args.out], 'choose a shorter --name')
        check_name_lengths(args.out / f'{args.name}_HR_sub', [f'{output_key(p.stem)}_s000.png' for p in sources],
                           'rename that source image')
    elif args.command == 'bench':
        check_scales(args.scales)
        sets = bench_sets(args.hr)
        folders = [f for name, _ in sets for f in bench_folders(args.out, name, args.scales)]
        check_out(args.out, folders, own_files)
        for name, folder in sets:
            sources = user_images(folder, '--hr')
            check_sources_apart(folder, bench_folders(args.out, name, args.scales)[1:])
            check_name_lengths(args.out / name / f'GTmod{args.scales[0]}',
                               [f'{output_key(p.stem)}.png' for p in sources], 'rename that source image')
    else:
        check_crop(args.scales, DEMO_CROP, DEMO_STEP, THRESH)
        folders = ([args.out / 'source', args.out / 'source' / 'train', args.out / 'source' / 'val']
                   + train_folders(args.out, 'demo_train', args.scales) + bench_folders(args.out, 'val', args.scales))
        check_out(args.out, folders, own_files)

    report = Report()
    try:
        with stop_on_signals(), exclusive_folder(args.out, folders):
            if args.command == 'train':
                prepare_train(args.hr, args.out, args.name, args.scales, args.crop_size, args.step, args.thresh,
                              lmdb=not args.no_lmdb, report=report, verify=args.verify)
            elif args.command == 'bench':
                prepare_bench(args.hr, args.out, args.scales, report=report, verify=args.verify)
            else:
                prepare_demo(args.out, args.scales, report=report, verify=args.verify)
    except FolderBusy as err:
        print(f'asid-prepare: {err}', file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as err:
        print(f'asid-prepare {args.command}: stopped by {interrupt_name(err)} ({report.counts()}); what was '
              'finished is kept and nothing half-written is left: run the same command again to finish',
              file=sys.stderr)
        return interrupt_exit_status(err)
    except (WriteError, OSError) as err:
        print(f'asid-prepare: {err}', file=sys.stderr)
        print(f'asid-prepare {args.command}: stopped ({report.counts()}); run it again once this is fixed',
              file=sys.stderr)
        return EXIT_FAILED
    print(f'asid-prepare {args.command}: {report.counts()}')
    for path, reason in report.failed.items():
        print(f'  failed: {path}: {reason}', file=sys.stderr)
    return EXIT_FAILED if report.failed else EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
