"""The site simulator: a `Fleet` on a simulated clock (sources with state, overload and
energy; rack loads from real series; health signals and fault families), scenario
files, and randomised fault cases for the benchmarks."""
