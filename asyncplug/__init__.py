"""asyncplug: an asyncio storage plugin for gpbackup / gprestore (S3 or a directory)."""

__version__ = "0.1.0"
API_VERSION = "0.5.0"

__all__ = ["API_VERSION", "__version__"]
