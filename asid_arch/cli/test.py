"""``python -m asid_arch.cli.test -opt options/test/ASID/test_ASID_SRx2.yml``

BasicSR's test pipeline with ASID registered; results go to ``./results/<name>``.
"""
from __future__ import annotations

from typing import Optional, Sequence

from asid_arch.console import command
from asid_arch.pipeline.arguments import exit_if_help


@command('asid-test', ': results written so far are kept')
def main(argv: Optional[Sequence[str]] = None) -> None:
    exit_if_help(argv, 'asid-test', "BasicSR's test pipeline with ASID registered; results go to ./results/<name>.")
    from asid_arch.cpu_settings import tune_cpu

    tune_cpu()  # before torch is imported
    from asid_arch.pipeline.launch import run_pipeline  # registers ASID, Omni-SR and ASIDModel

    run_pipeline('test', argv, 'asid-test')


if __name__ == '__main__':
    main()
