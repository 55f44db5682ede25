"""How far a live input may be from what the site says before commissioning refuses its
wiring or a switch refuses it as a target: one table for both (host/ops/commission.py,
host/ops/switching.py)."""

VOLTAGE_TOLERANCE = 0.10  # of the nominal phase voltage
FREQUENCY_TOLERANCE_HZ = 0.5
PHASE_TOLERANCE_DEG = 15.0
SLIP_TOLERANCE_HZ = 0.2  # a target whose frequency differs more from the active input's is not in phase
