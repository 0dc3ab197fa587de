"""python -m backprop ...: see backprop/cli.py."""

import sys

from backprop.cli import main

sys.exit(main())
