"""CPython-only tools about the protocol; never deployed to a tap."""
