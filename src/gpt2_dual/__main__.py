"""``python -m gpt2_dual``: the ``gpt2-dual`` command line."""

import sys

from gpt2_dual.cli import main

sys.exit(main())
