"""Transcriptions of the published reference code, for parity tests and `benchmarks/parity.py`.

Slow, plainly written, in our own words, computing what the reference code we read computes
(each module names the repository, file and function). They share no code with `pruning/` but
the model they run on, so a test that compares the two compares two independent implementations.
"""
