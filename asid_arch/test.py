"""``python -m asid_arch.test -opt options/test/ASID/test_ASID_SRx2.yml``

BasicSR's test pipeline with ASID registered; results go to ``./results/<name>``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import asid_arch  # noqa: F401  (alias for basicsr, registers archs/models/metrics)
from asid_arch.pipeline_args import exit_if_help


def main(argv: Optional[Sequence[str]] = None) -> None:
    exit_if_help(argv, 'asid-test', "BasicSR's test pipeline with ASID registered; results go to ./results/<name>.")
    from asid_arch.launch import run_pipeline

    run_pipeline('test', argv, 'asid-test')


if __name__ == '__main__':
    main()
