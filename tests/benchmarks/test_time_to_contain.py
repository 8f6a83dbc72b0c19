"""The time-to-contain benchmark, small: one case of each kind and the floor, on a fresh
embedded stack. Its figures are the benchmark's to report; here only that it measured
what it says, and that each case kept what containment changes before the cut-off."""

from benchmarks.time_to_contain import report, run


async def test_one_case_of_each_kind_is_timed_to_its_cut_off_against_the_floor():
    figures = await run([1], ("role", "user-key"), warm_up=False)
    floor, role, user_key = figures["rounds"]
    assert [r["path"] for r in (floor, role, user_key)] == ["floor", "role", "user-key"]
    milestones = {
        "floor": ("policy",),
        "role": ("policy", "running", "verified"),
        "user-key": ("policy", "inactive", "both"),
    }
    for row in (floor, role, user_key):
        for milestone in milestones[row["path"]]:
            spread = row[milestone]
            assert spread["missing"] == 0, (row["path"], milestone)
            assert 0 < spread["p50_ms"] <= spread["p99_ms"]
    # An instance runs again only after its role's sessions are revoked, and its new key
    # is verified after it runs.
    assert role["policy"]["p50_ms"] < role["running"]["p50_ms"] < role["verified"]["p50_ms"]
    # What containment changes is kept before the cut-off; the rest after it.
    order = role["evidence_order"]
    cut_off = order.index("cut-off")
    before = {name.split(" ", 1)[1].rsplit("-", 1)[0] for name in order[:cut_off]}
    assert {"iam-role-r0-1-app", "ec2-instance-i"} <= before
    after = " ".join(order[cut_off:])
    assert "evidence finding-" in after and "evidence cloudtrail-" in after
    user_order = user_key["evidence_order"]
    assert user_order[0].startswith("evidence iam-user-") and "cut-off" in user_order
    # Where the first case's time went is kept, from its history.
    assert any("revoke_role_sessions" in line for line in role["first_case_history"])
    text = report(figures)
    assert "floor x1" in text and "role x1" in text and "user-key x1" in text
