"""``python -m hf_cai``: the ``hf-cai`` command line."""

import sys

from hf_cai.cli import main

sys.exit(main())
