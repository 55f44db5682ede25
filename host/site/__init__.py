"""The site: its model, the fleet interface the controller uses, source adapters, and a
fast site simulator that implements the fleet interface.

- model.py: sources, racks, taps, feeds; validated frozen data
- fleet.py: the fleet interface (one definition), its data, result and event types
- adapters.py: the source adapter interface (reserve capacity, health status)
- simulator.py: the site simulator, a Fleet, built on sources.py (state, overload,
  energy), overload.py (the IEC 60255-151 element), loads.py (rack loads from real
  data), health.py and conditions.py (health signals, scenario families),
  electrical.py (what the taps measure) and events.py (the event log)
- scenario.py: scenarios in TOML, validated (toml_lines.py finds the lines);
  build.py turns rack groups into a site
"""
