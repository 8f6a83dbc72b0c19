"""The lab-resume benchmark, small: one short history, one start each way. Its figures
are the benchmark's to report; here only what it measured is checked."""

from benchmarks.lab_resume import report, run


def test_the_benchmark_starts_a_history_by_full_replay_and_from_its_checkpoint(tmp_path):
    figures = run([1], rounds=1, root=tmp_path)
    (row,) = figures["rows"]
    # The lab's seed world is recorded first: a history of more than the one asked for.
    assert row["entries"] > 1
    # A full replay sends every recorded request again; the checkpoint none.
    assert row["replayed"] == {"full replay": [row["entries"]], "checkpoint": [0]}
    assert 0 < row["checkpoint_mib"] < 50
    assert row["full_replay_s"] > 0 and row["checkpoint_s"] > 0
    assert figures["fresh_s"] > 0
    table = report(figures)
    assert table.count("\n| ") == 2 and "| full replay | checkpoint |" in table
