"""The one-line error reports every module shares."""

from __future__ import annotations

from pruning.errors import first_line


def test_first_line_keeps_the_first_line_of_a_message_and_names_a_silent_error():
    assert first_line(ValueError("  bad value\n  Traceback-ish detail\n")) == "bad value"
    assert first_line(OSError("disk full")) == "disk full"
    assert first_line(KeyError()) == "KeyError"  # nothing to show but its type
    assert first_line(RuntimeError("   ")) == "RuntimeError"
