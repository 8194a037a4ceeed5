"""`python -m dsl.cli ...` runs the command line."""

import sys

from dsl.cli.main import main

sys.exit(main())
