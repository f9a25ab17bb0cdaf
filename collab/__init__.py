"""collab: real-time collaborative annotation server for digital pathology."""

__version__ = "0.1.0"
