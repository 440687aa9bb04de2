"""Ending a 2-process test script without the interpreter's teardown of the process group."""

from __future__ import annotations

import os
import sys


def exit_together() -> None:
    """Wait until every rank has finished its work, then end this process at once.

    Tearing gloo down at interpreter exit can abort a rank after its work or, when the other rank is already gone,
    hang it until the test's timeout. Past the barrier no rank needs another, so each leaves without that teardown.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
