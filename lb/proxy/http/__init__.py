"""The HTTP/1.1 reverse proxy: client connections, exchanges, the pipeline, upstream calls."""
