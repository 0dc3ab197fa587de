"""python -m backprop ...: see backprop/apps/cli.py."""

import sys

from backprop.apps.cli import main

sys.exit(main())
