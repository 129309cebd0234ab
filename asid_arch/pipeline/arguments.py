"""The arguments of BasicSR's train/test pipelines (``basicsr.utils.options.parse_options``), mirrored.

``asid-train``/``asid-test`` answer ``-h``/``--help`` from this parser without importing torch or
BasicSR (slow to import, only to print a usage line), and
:func:`asid_arch.pipeline.launch.parse_options_safely`, which replaces BasicSR's ``parse_options`` in our
entry points, parses the arguments with it.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def basicsr_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The flags of BasicSR's ``parse_options`` (1.4.2 and master), documented."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument('-opt', type=str, required=True, metavar='OPTION_FILE', help='option YAML file')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='distributed launcher (pytorch: with torchrun; gloo on a machine without a GPU)')
    parser.add_argument('--auto_resume', action='store_true',
                        help='continue from the newest training state that loads')
    parser.add_argument('--debug', action='store_true', help="BasicSR's debug mode (name prefixed with debug_)")
    parser.add_argument('--local_rank', type=int, default=0, help='set by older distributed launchers')
    parser.add_argument('--force_yml', nargs='+', default=None, metavar='KEY:VALUE',
                        help='override option entries, e.g. train:ema_decay=0.999')
    return parser


def exit_if_help(argv: Optional[Sequence[str]], prog: str, description: str) -> None:
    """Print the help and exit 0 when ``-h``/``--help`` is among the arguments; otherwise return."""
    args = list(sys.argv[1:] if argv is None else argv)
    if '-h' in args or '--help' in args:
        basicsr_parser(prog, description).print_help()
        sys.exit(0)
