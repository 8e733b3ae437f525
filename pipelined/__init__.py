"""pipelined: keeps a folder of markdown stories live in a pycrdt document and SQLite."""

__version__ = "0.1.0"
__all__ = ["__version__"]
