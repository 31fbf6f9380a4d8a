"""Params: the schema of a params file, its loader, and the README table rendered from it."""
