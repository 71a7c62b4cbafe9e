"""What the tests share, one job per module; test files import from here, never from each other.

conftest.py holds the fixtures only, and registers this package for pytest's
assertion rewriting, so an ``assert`` in a helper explains itself as one in a test does.
"""
