"""`python -m tools.client IMAGE...`: see tools/client/images.py."""

import sys

from tools.client.images import main

sys.exit(main())
