"""Pools at run time: servers, waiting for a slot, name discovery."""
