"""``python -m asid_arch.bench``: the same as the ``asid-bench`` command."""
import sys

from .main import main

sys.exit(main())
