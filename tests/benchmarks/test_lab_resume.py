"""The lab-resume benchmark, small: two short histories, one start each way. Its figures
are the benchmark's to report; here only what it measured is checked."""

from benchmarks.lab_resume import report, run


def test_the_benchmark_starts_each_history_by_full_replay_and_from_its_checkpoint(tmp_path):
    figures = run([1, 80], rounds=1, root=tmp_path)
    small, large = figures["rows"]
    # The lab's seed world is recorded first; then cases until the size asked for.
    assert 0 < small["entries"] < large["entries"] and large["entries"] >= 80
    for row in (small, large):
        # A full replay sends every recorded request again; the checkpoint none.
        assert row["replayed"] == {"full replay": [row["entries"]], "checkpoint": [0]}
        assert 0 < row["checkpoint_mib"] < 50
        assert row["full_replay_s"] > 0 and row["checkpoint_s"] > 0
    assert figures["fresh_s"] > 0
    table = report(figures)
    assert table.count("\n| ") == 3 and "| full replay | checkpoint |" in table
