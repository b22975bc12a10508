"""`python -m tools.server` (what `make serve` runs): see tools/server/serve.py."""

import sys

from tools.server.serve import main

sys.exit(main())
