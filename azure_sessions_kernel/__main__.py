"""``python -m azure_sessions_kernel`` is the ``azure-sessions-kernel`` command."""

import sys

from .cli import main

sys.exit(main())
