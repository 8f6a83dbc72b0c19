"""The investigation-history benchmark, small: one read a region's day, so the history
grows with the regions the account logs; the figures are the benchmark's to report."""

from benchmarks.investigation_history import measure, report


async def test_each_region_adds_its_days_of_reads_to_the_investigation_s_history():
    one, two = await measure([1, 2])
    # 46 days of baseline and 2 of window a region, three events an activity at least.
    assert one["first_events"] >= 3 * 48
    assert two["first_events"] - one["first_events"] >= 3 * 48, report([one, two])
    # The second investigation reuses the baseline: it reads the window only.
    assert one["again_events"] < one["first_events"] / 4
    assert two["bytes"] > one["bytes"]
