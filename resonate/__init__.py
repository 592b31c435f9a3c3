"""Resonate: restore audience and phone recordings of concerts into studio-like masters."""

__version__ = "0.1.0"
