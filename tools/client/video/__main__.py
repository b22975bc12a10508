"""`python -m tools.client.video SOURCE...`: see tools/client/video/cli.py."""

import sys

from tools.client.video.cli import main

sys.exit(main())
