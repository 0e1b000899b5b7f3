"""Checkpoint conversion and the ``gpt2-dual`` command line. Imports no framework."""
