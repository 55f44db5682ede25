"""Prediction on plain data: load forecasts with calibrated P95 intervals, fault prediction
per source, and a site's fault monitor. Knows nothing of buses or the simulator."""
