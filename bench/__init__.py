"""The benchmark for the login log (issue 4): ``python bench/run.py``; see bench/README.md."""
