"""The sandbox benchmark, small: one case at a time under each runner. Its figures are the
benchmark's to report; here only that each runner's first task was measured."""

from benchmarks.sandbox_first_task import RUNNERS, report, run


async def test_each_runner_s_first_workflow_task_is_measured():
    figures = await run(cases=1, rounds=1)
    assert list(figures["runners"]) == list(RUNNERS)
    for row in figures["runners"].values():
        assert 0 < row["median_ms"] <= row["max_ms"]
    text = report(figures)
    assert all(label in text for label in RUNNERS)
