"""``python -m retinaseg``: the command line, also the entry that torchrun launches
(``torchrun --nproc-per-node N -m retinaseg train CONFIG``, see
:mod:`retinaseg.training.distributed`)."""

from __future__ import annotations

import sys

from retinaseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
