"""The command line that runs every lesson: its entry point (main.py), its CLI (cli.py), the parts every
run carries (parts.py and their callbacks) and the sweep command (sweep/)."""
