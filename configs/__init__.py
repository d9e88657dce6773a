"""The lesson configs (``*.yaml``) and trainer presets (``trainer/*.yaml``), shipped as package data."""
