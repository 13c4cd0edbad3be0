"""Tests of the tiny test guest (built and driven by ``stack/guest``)."""
