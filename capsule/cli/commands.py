"""Imports every command module so that each registers itself on the app."""

# Keep one line per module; each module does `from capsule.cli.main import app`.
