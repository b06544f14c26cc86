"""Machinery both sides use: a source and a sink of the same system share it, neither owns it."""
