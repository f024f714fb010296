"""`python -m mailgw`: the same entry point as the `mailgw` command."""

import sys

from mailgw.cli import main

sys.exit(main())
