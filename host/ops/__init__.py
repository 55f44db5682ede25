"""What an operator does to taps: open a session on the buses, flash, commission, read
status and events, set limits and alternates, switch, calibrate, capture."""
