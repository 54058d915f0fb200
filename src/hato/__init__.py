"""Hato: a complete mail server for your own domains, in one Python package."""

__version__ = "0.1.0"
