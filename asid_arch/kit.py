"""``asid-kit``: put ASID into a BasicSR checkout, so that BasicSR's own ``basicsr/train.py`` and
``basicsr/test.py`` run every option file of this project.

    asid-kit install /path/to/BasicSR      # copies the kit files, says what it did
    asid-kit check /path/to/BasicSR        # says whether the checkout's copies match this package

The kit is three files of this package, each importing only torch, numpy and basicsr (and each
other): ``archs/asid_arch.py`` (ASID, ASID-D8; it also installs the torchvision alias that the
1.4.2 release of BasicSR needs), ``archs/omnisr_arch.py`` (Omni-SR) and ``models/asid_model.py``
(``ASIDModel`` with the tiled protocol, AdamW and every torch.optim optimizer, safe weight loading,
atomic checkpoints that stop the run when they cannot be written, the NaN stop, and the
``calculate_psnr_matlab`` metric). BasicSR imports every ``*_arch.py`` and ``*_model.py`` it finds.
Exit status: 0 done (or, for ``check``, all copies current), 1 copies missing or different, 2 not a
BasicSR checkout.
"""
from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

PACKAGE = Path(__file__).resolve().parent
KIT_FILES: Dict[str, str] = {  # file in this package -> where it goes in the basicsr package folder
    'archs/asid_arch.py': 'archs/asid_arch.py',
    'archs/omnisr_arch.py': 'archs/omnisr_arch.py',
    'models/asid_model.py': 'models/asid_model.py',
}


class NotBasicSR(Exception):
    """The target folder is not a BasicSR checkout."""


def basicsr_package(target: Path) -> Path:
    """The ``basicsr`` package folder of a checkout (its root, or the package folder itself)."""
    for candidate in (target / 'basicsr', target):
        if (candidate / 'archs' / '__init__.py').is_file() and (candidate / 'models' / '__init__.py').is_file():
            return candidate
    raise NotBasicSR(f'{target} is not a BasicSR checkout (no basicsr/archs/ and basicsr/models/ in it)')


def kit_status(package: Path) -> List[tuple]:
    """``(source, destination, state)`` per kit file; state is 'missing', 'different' or 'current'."""
    rows = []
    for src_rel, dst_rel in KIT_FILES.items():
        src, dst = PACKAGE / src_rel, package / dst_rel
        state = 'missing' if not dst.exists() else 'current' if filecmp.cmp(src, dst, shallow=False) else 'different'
        rows.append((src, dst, state))
    return rows


def install(target: Path, dry_run: bool = False) -> List[str]:
    """Copy the kit into the checkout at ``target``; returns one line per file saying what happened."""
    lines = []
    for src, dst, state in kit_status(basicsr_package(target)):
        if state == 'current':
            lines.append(f'unchanged {dst} (already current)')
            continue
        if not dry_run:
            shutil.copyfile(src, dst)
        verb = 'would copy' if dry_run else 'copied'
        lines.append(f'{verb} {src} -> {dst}' + (' (replacing a different copy)' if state == 'different' else ''))
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='asid-kit', description=__doc__.split('\n\n')[0].replace('``', "'"),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('install', help='copy the kit files into a BasicSR checkout')
    p.add_argument('checkout', type=Path, help='BasicSR checkout (the folder holding basicsr/)')
    p.add_argument('--dry-run', action='store_true', help='only say what would be copied')
    p = sub.add_parser('check', help="compare a checkout's kit copies with this package")
    p.add_argument('checkout', type=Path, help='BasicSR checkout (the folder holding basicsr/)')
    args = parser.parse_args(argv)
    try:
        if args.command == 'install':
            for line in install(args.checkout, args.dry_run):
                print(f'asid-kit: {line}')
            print('asid-kit: now run, from the checkout: PYTHONPATH=. python basicsr/train.py -opt <option file>')
            return 0
        rows = kit_status(basicsr_package(args.checkout))
    except NotBasicSR as err:
        print(f'asid-kit: error: {err}', file=sys.stderr)
        return 2
    except OSError as err:
        print(f'asid-kit: error: {err}', file=sys.stderr)
        return 1
    for _, dst, state in rows:
        print(f'asid-kit: {state:9s} {dst}')
    return 0 if all(state == 'current' for _, _, state in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
