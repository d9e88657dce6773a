"""The trainer presets (``*.yaml``) stacked after a lesson config: ``--config trainer/gpu``."""
