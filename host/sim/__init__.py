"""The two test worlds: `site` (the fast site simulator, numpy on a simulated clock, and its
scenarios) and `rig` (the real-time virtual rig: plant, virtual RS-485 buses and taps
running the real firmware). Only cli, reports, tests and benchmarks import them."""
