"""``python -m slimkit`` (and ``torchrun ... -m slimkit``): the slimkit command line."""
import sys

from slimkit.cli import main

sys.exit(main())
