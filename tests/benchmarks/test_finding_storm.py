"""The finding-storm benchmark, small: the real dev server, webhook and case worker; every
finding sent is in its case at the end and there is exactly one case per credential,
through the webhook and straight through the SDK. Speed is the benchmark's to report, not
a test's to assert."""

from benchmarks.finding_storm import report, run


async def test_a_small_storm_loses_nothing_and_opens_one_case_per_credential():
    figures = await run(findings=150, credentials=15, concurrency=8, warmup=10)
    for path in ("webhook", "sdk"):
        burst = figures[path]
        assert burst["lost"] == 0, report(figures)
        assert burst["cases_created"] == burst["distinct_cases"] == 15, report(figures)
        assert burst["accepted"] == 150
        assert burst["refused"] == 0
        assert sum(burst["outcomes"].values()) == 150
        assert set(burst["outcomes"]) <= {"new_case", "joined", "duplicate"}
