"""``python -m asid_arch.cli.train -opt options/train/ASID/train_ASID_SRx2_scratch.yml``

BasicSR's training pipeline with ASID registered. Same flags as BasicSR's ``train.py``:
``--launcher pytorch`` (with ``torchrun``; gloo on CPU), ``--auto_resume``, ``--debug``,
``--force_yml``. Experiments go to ``./experiments/<name>``. The options are checked first.
"""
from __future__ import annotations

from typing import Optional, Sequence

from asid_arch.console import command
from asid_arch.pipeline.arguments import exit_if_help


@command('asid-train', '; run it again with --auto_resume to continue from the last saved checkpoint')
def main(argv: Optional[Sequence[str]] = None) -> None:
    exit_if_help(argv, 'asid-train',
                 "BasicSR's training pipeline with ASID registered; experiments go to ./experiments/<name>.")
    from asid_arch.cpu_settings import tune_cpu

    tune_cpu()  # before torch is imported
    from asid_arch.pipeline.launch import run_pipeline  # registers ASID, Omni-SR and ASIDModel

    run_pipeline('train', argv, 'asid-train')


if __name__ == '__main__':
    main()
