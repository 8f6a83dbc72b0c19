"""The case command line: start a case from a finding file, list, show and steer cases.

`starter.py` is its entry point (and the `quench` console script); the commands build on
the same intake, queries and updates as the webhook and the Web UI.
"""
