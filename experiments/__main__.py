"""``python -m experiments``: see experiments/main.py."""

import sys

from experiments.main import main

if __name__ == "__main__":
    sys.argv[0] = "python -m experiments"  # so usage lines name the command people type
    main()
