"""Tests of the reference worker (tsr_worker)."""
