"""Coverage-guided fuzz harnesses for the tsr codec and the reference worker.

Run one with ``python -m fuzz <harness> [libFuzzer options] [corpus dirs]`` from the
repository root (see ``fuzz/README.md``). The harness functions (``TestOneInput``) are plain
Python and are also driven directly by the test suite (``tests/robustness``).
"""
