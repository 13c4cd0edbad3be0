"""VM handoff (``doc/handoff.md``): ``transfer`` (what moves, source and destination stages)
over ``wire`` (the channel: mutual authentication and encrypted frames)."""
