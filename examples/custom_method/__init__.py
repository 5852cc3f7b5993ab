"""A method and a reward written outside ugrad, and a config that uses them.

Importing these modules registers nothing: `config.py`'s get_config calls
each one's `register()`.
"""
