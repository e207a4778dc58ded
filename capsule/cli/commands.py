"""Imports every command module so that each registers itself on the app."""

# Keep one line per module; each module does `from capsule.cli.main import app`.
from capsule.cli import trace  # noqa: F401
from capsule.cli import check  # noqa: F401
from capsule.cli import analysis  # noqa: F401
from capsule.cli import compile  # noqa: F401
from capsule.cli import enforce  # noqa: F401
from capsule.cli import ml  # noqa: F401
from capsule.cli import doctor  # noqa: F401
