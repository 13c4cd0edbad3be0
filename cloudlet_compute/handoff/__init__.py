"""VM handoff (``doc/handoff.md``): what moves, ``source`` stages (``send``) and
``destination`` stages (``receive``), sharing ``protocol`` (header version, memory digest),
over ``wire`` (the channel: mutual authentication and encrypted frames)."""
