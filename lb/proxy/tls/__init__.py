"""TLS: contexts, certificates by SNI, and the terminating listener."""
