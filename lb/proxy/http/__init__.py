"""The HTTP/1.1 reverse proxy: client connections, exchanges, the request pipeline, upstream calls."""
