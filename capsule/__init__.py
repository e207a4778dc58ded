"""Capsule: see, and limit, what autonomous software does on Linux."""

__version__ = "0.1.0"
