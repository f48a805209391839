"""``gad demo``: placeholder replaced below."""
