"""The package version, in one place: ``streamkit.__version__`` and the ``User-Agent`` header."""

__version__ = "0.1.0"
