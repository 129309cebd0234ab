"""``python -m asid_arch.train -opt options/train/ASID/train_ASID_SRx2_scratch.yml``

BasicSR's training pipeline with ASID registered. Same flags as BasicSR's ``train.py``:
``--launcher pytorch`` (with ``torchrun``; gloo on CPU), ``--auto_resume``, ``--debug``,
``--force_yml``. Experiments go to ``./experiments/<name>``.
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
    from basicsr.train import train_pipeline

    train_pipeline(os.getcwd())


if __name__ == '__main__':
    main()
