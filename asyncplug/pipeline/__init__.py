"""Pipelines: backup (read -> compress -> upload) and restore (fetch -> decompress -> write)."""
