"""The `Fleet` interface (host/model/fleet.py) over the real or virtual buses: what the
controller reads of, and does to, a site of taps."""
