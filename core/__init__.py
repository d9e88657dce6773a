"""The ground floor: what the lessons and the command share. ``modules/`` and ``datamodules/`` import
from here and never from ``experiments/`` (the command, on top) nor from each other; nothing here imports
any of them. See docs/architecture.md."""
