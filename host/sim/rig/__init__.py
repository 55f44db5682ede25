"""The virtual rig: a plant simulator the sim board runs against in lockstep, waveform
playback, virtual RS-485 buses on pseudo-terminals, and the rig that starts a
MicroPython process per tap."""
