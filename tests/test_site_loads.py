"""Rack loads from the real data: racks differ yet correlate, stay within their rating,
follow the daily rhythm; jobs, load steps and bursts; generated deterministically."""

from __future__ import annotations

import numpy as np
import pytest

from host.sim.site.loads import Job, LoadConfig, LoadStep, RackLoads, real_series

DAY = 86_400.0


def _matrix(loads: RackLoads, steps: int) -> np.ndarray:
    return np.stack([loads.row(k).copy() for k in range(steps)])


def test_the_real_series_are_read_and_normalised() -> None:
    taylor, hourly = real_series()
    assert (len(taylor.shape), taylor.period_s, taylor.days) == (4032, 1800.0, 84)
    assert (len(hourly.shape), hourly.period_s) == (26304, 3600.0)
    for series in (taylor, hourly):
        assert series.shape.mean() == pytest.approx(1.0, abs=0.05)
        assert series.shape.min() >= 0.2 and series.shape.max() <= 3.0


def test_racks_differ_but_correlate_like_real_ones() -> None:
    rated = np.linspace(2.0, 40.0, 60)
    step = 300.0
    loads = _matrix(RackLoads(rated, LoadConfig(), step, seed=4), int(14 * DAY / step))
    assert (loads >= 0).all() and (loads <= rated).all()
    hourly = loads.reshape(-1, 12, len(rated)).mean(axis=1)  # hourly means, as metering would see them
    corr = np.corrcoef(hourly.T)
    pairs = corr[np.triu_indices(len(rated), 1)]
    assert 0.3 < pairs.mean() < 0.95, pairs.mean()  # correlated, not copies
    assert pairs.max() < 0.999
    utilisation = loads.mean(axis=0) / rated
    assert utilisation.std() > 0.03  # racks differ in level
    site = hourly.sum(axis=1)
    daily = np.corrcoef(site[:-24], site[24:])[0, 1]
    assert daily > 0.5, daily  # the daily rhythm of the real data


def test_the_load_is_smooth_between_knots_at_a_fine_step() -> None:
    quiet = LoadConfig(noise=0.0, common_noise=0.0, bursts_per_day=0.0)
    fine = _matrix(RackLoads(np.full(5, 10.0), quiet, 1.0, seed=2), 3600)
    coarse = _matrix(RackLoads(np.full(5, 10.0), quiet, 60.0, seed=2), 60)
    assert np.allclose(fine[::60], coarse, rtol=0.01)  # the same profile at either step (knots differ)
    assert np.abs(np.diff(fine, axis=0)).max() < 0.01  # no jumps at the knots


def test_same_seed_same_loads_other_seed_other_loads() -> None:
    rated = np.full(30, 10.0)
    one = _matrix(RackLoads(rated, LoadConfig(), 60.0, seed=9), 2000)
    two = _matrix(RackLoads(rated, LoadConfig(), 60.0, seed=9), 2000)
    three = _matrix(RackLoads(rated, LoadConfig(), 60.0, seed=10), 2000)
    assert np.array_equal(one, two) and not np.allclose(one, three)


def test_loads_are_generated_forward_only() -> None:
    loads = RackLoads(np.full(3, 10.0), LoadConfig(), 60.0, seed=1)
    loads.row(loads.block_steps * 2)
    with pytest.raises(ValueError, match="forward only"):
        loads.row(0)


FLAT = LoadConfig(profile="flat", utilisation=(0.5, 0.5), noise=0.0, common_noise=0.0, bursts_per_day=0.0)


def test_jobs_add_their_fraction_of_rated_while_they_run() -> None:
    rated = np.array([10.0, 20.0, 40.0])
    job = Job(np.array([1, 2]), start_s=600.0, duration_s=300.0, fraction=0.25, every_s=1800.0, until_s=4000.0)
    loads = _matrix(RackLoads(rated, FLAT, 60.0, seed=0, jobs=[job]), 100)
    t = np.arange(100) * 60.0
    on = (t >= 600) & ((t - 600) % 1800 < 300) & (t < 4000)
    assert np.allclose(loads[:, 0], 5.0)
    assert np.allclose(loads[:, 1], np.where(on, 10.0 + 5.0, 10.0))
    assert np.allclose(loads[:, 2], np.where(on, 20.0 + 10.0, 20.0))


def test_load_steps_scale_and_the_rating_caps() -> None:
    rated = np.array([10.0, 10.0])
    step = LoadStep(np.array([0]), start_s=120.0, factor=3.0, end_s=300.0)
    loads = _matrix(RackLoads(rated, FLAT, 60.0, seed=0, steps=[step]), 8)
    assert list(loads[:, 0]) == [5.0, 5.0, 10.0, 10.0, 10.0, 5.0, 5.0, 5.0]  # 15 kW capped at the 10 kW rating
    assert np.allclose(loads[:, 1], 5.0)


def test_bursts_last_their_duration_across_blocks() -> None:
    config = LoadConfig(profile="flat", utilisation=(0.2, 0.2), noise=0.0, common_noise=0.0, bursts_per_day=24.0,
                        burst_s=600.0, burst_fraction=0.2)
    loads = RackLoads(np.full(200, 10.0), config, 60.0, seed=3)
    matrix = _matrix(loads, loads.block_steps * 3)
    extra = matrix - 2.0
    assert (extra >= -1e-12).all() and (extra > 0).mean() == pytest.approx(24 * 600 / DAY, rel=0.25)
    runs = []
    for column in (extra > 0).T:
        edges = np.flatnonzero(np.diff(np.r_[0, column.astype(int), 0]))
        runs += list(edges[1::2] - edges[::2])
    assert np.median(runs) == 10  # 600 s at 60 s steps


@pytest.mark.parametrize(
    "job",
    [
        Job(np.arange(2), 7200.0, 3600.0, 0.3),
        Job(np.arange(2), 7200.0, 7200.0, 0.3, every_s=86_400.0),
        Job(np.arange(2), 1000.0, 5000.0, 0.3, every_s=20_000.0, until_s=64_000.0),
    ],
)
def test_a_jobs_windows_are_where_it_runs(job: Job) -> None:
    t = np.arange(0.0, 200_000.0, 60.0)
    inside = np.zeros(len(t), dtype=bool)
    for start, stop in job.windows(30_000.0, 150_000.0):
        inside |= (t >= start) & (t < stop)
    span = (t >= 30_000.0) & (t < 150_000.0)
    assert np.array_equal(inside[span], job.running(t)[span])
    assert np.array_equal(job.extra_kw(np.array([10.0, 20.0, 30.0])), [3.0, 6.0, 0.0])
