"""``python -m asid_arch.test -opt options/test/ASID/test_ASID_SRx2.yml``

BasicSR's test pipeline with ASID registered; results go to ``./results/<name>``.
"""
from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

import asid_arch  # noqa: F401  (alias for basicsr, registers archs/models/metrics)
from asid_arch.launch import prepare_basicsr


def main(argv: Optional[Sequence[str]] = None) -> None:
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    prepare_basicsr()
    from basicsr.test import test_pipeline

    test_pipeline(os.getcwd())


if __name__ == '__main__':
    main()
