"""``python -m experiments``: see experiments/cli.py."""

import sys

from experiments.cli import main

if __name__ == "__main__":
    sys.argv[0] = "python -m experiments"  # so usage lines name the command people type
    main()
