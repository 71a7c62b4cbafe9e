"""Straightforward ways to log a login, served by the same hypercorn.toml, to compare against.

Each module builds the same routes as ``quart_app`` (same username parsing, same
``login_signal``, same text line) and differs only in how the receiver writes
the line, so the benchmark measures the logging approach and nothing else.
"""
