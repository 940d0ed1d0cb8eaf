"""`python -m dlbc_ops ARGS` is `dlbc ARGS` (for a checkout without the console script)."""

import sys

from dlbc_ops.cli.main import main

sys.exit(main())
