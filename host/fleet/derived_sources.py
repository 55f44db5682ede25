"""A source's status derived from the latest sweep of the racks' taps, for a source with
no adapter of its own (the virtual rig has no UPS controllers). It says so by what it
leaves unknown:

- load: the sum of the measured draws of the racks on it (racks whose tap did not
  answer are left out: their draw is unknown);
- capacity: the site model's; available: capacity less load while up, else 0;
- state: MAINTENANCE if the site model says so; UP when at least one answering tap
  wired to it measures it present and healthy; FAILED when taps wired to it answered
  and none vouches for it; when no tap wired to it answered, what it was last seen as
  (a gap in telemetry is not a loss), FAILED if it was never seen;
- alarms: OVERLOAD when the load is above capacity;
- overload progress NaN, state of charge and runtime None: only the source's own
  controller knows them.
"""

from __future__ import annotations

import math

import numpy as np

from host.model.fleet import FleetTelemetry, HealthSignals, SourceStatus
from host.model.site import Availability, Site
from host.model.sources import Alarm, SourceState


def derived_status(site: Site, source_id: str, telemetry: FleetTelemetry, signals: HealthSignals | None = None,
                   last_seen: SourceState | None = None) -> SourceStatus:
    """The source's status as the latest sweep shows it (module docstring); `last_seen`:
    its state at the previous read."""
    index = site.source_index[source_id]
    source = site.sources[index]
    on_it = telemetry.active == index
    load = float(np.nansum(telemetry.draw_kw[on_it]))
    vouched = bool((telemetry.input_healthy & telemetry.input_present & (telemetry.input_source == index)).any())
    answered = ~np.isnan(telemetry.draw_kw)
    heard = bool(((telemetry.input_source == index) & answered[:, None]).any())
    if source.availability == Availability.MAINTENANCE:
        state = SourceState.MAINTENANCE
    elif vouched:
        state = SourceState.UP
    elif not heard and last_seen is not None:
        state = last_seen
    else:
        state = SourceState.FAILED
    up = state == SourceState.UP
    alarms = frozenset({Alarm.OVERLOAD}) if up and load > source.capacity_kw else frozenset()
    return SourceStatus(
        source_id=source_id,
        kind=source.kind,
        time_s=telemetry.time_s,
        state=state,
        capacity_kw=source.capacity_kw,
        load_kw=load,
        available_kw=max(source.capacity_kw - load, 0.0) if up else 0.0,
        overload_progress=math.nan,
        state_of_charge=None,
        runtime_s=None,
        alarms=alarms,
        signals=signals,
    )
