"""``python -m asid_arch.train -opt options/train/ASID/train_ASID_SRx2_scratch.yml``

BasicSR's training pipeline with ASID registered. Same flags as BasicSR's ``train.py``:
``--launcher pytorch`` (with ``torchrun``; gloo on CPU), ``--auto_resume``, ``--debug``,
``--force_yml``. Experiments go to ``./experiments/<name>``. The options are checked first.
"""
from __future__ import annotations

from typing import Optional, Sequence

import asid_arch  # noqa: F401  (alias for basicsr, registers archs/models/metrics)
from asid_arch.pipeline_args import exit_if_help


def main(argv: Optional[Sequence[str]] = None) -> None:
    exit_if_help(argv, 'asid-train',
                 "BasicSR's training pipeline with ASID registered; experiments go to ./experiments/<name>.")
    from asid_arch.launch import run_pipeline

    run_pipeline('train', argv, 'asid-train')


if __name__ == '__main__':
    main()
