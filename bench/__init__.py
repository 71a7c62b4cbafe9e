"""The benchmark of the login log: ``python -m bench`` (``make bench``); see bench/README.md."""
