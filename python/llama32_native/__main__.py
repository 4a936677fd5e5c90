"""`python -m llama32_native ...`: the same command line as the `llama32-native` script."""

import sys

from .cli import main

sys.exit(main())
