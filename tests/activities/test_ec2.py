"""EC2 activities against moto: instance evidence, volume snapshots and the list of them,
stop and start."""

import json
from collections.abc import Callable
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws import ERROR_INVALID_REQUEST, ERROR_NOT_FOUND, AwsClients
from activities.ec2 import Ec2Activities
from activities.evidence import EvidenceStore
from config.names import CASE_TAG_KEY
from models.activities import (
    CaptureInstanceInput,
    InstanceInput,
    ListCaseSnapshotsInput,
    SnapshotVolumesInput,
)

CASE = "case-123456789012-ASIAXCSEC6TNGZ6EZUUO"


@pytest.fixture
def ec2_activities(clients: AwsClients, evidence: EvidenceStore) -> Ec2Activities:
    return Ec2Activities(clients, evidence, poll_seconds=0)


@pytest.fixture
def instance_id(launch_instance: Callable[..., str]) -> str:
    return launch_instance()


def instance_state(ec2: Any, instance_id: str) -> str:
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return str(reservations[0]["Instances"][0]["State"]["Name"])


def volume_ids_of(ec2: Any, instance_id: str) -> list[str]:
    volumes = ec2.describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
    )["Volumes"]
    return sorted(v["VolumeId"] for v in volumes)


def case_snapshots(ec2: Any, case_id: str = CASE) -> list[dict[str, Any]]:
    return list(
        ec2.describe_snapshots(
            OwnerIds=["self"], Filters=[{"Name": f"tag:{CASE_TAG_KEY}", "Values": [case_id]}]
        )["Snapshots"]
    )


# capture_instance_state


def test_capture_instance_state_returns_volumes_and_state_and_stores_evidence(
    ec2: Any,
    s3: Any,
    instance_id: str,
    ec2_activities: Ec2Activities,
    activity_env: ActivityEnvironment,
) -> None:
    result = activity_env.run(
        ec2_activities.capture_instance_state,
        CaptureInstanceInput(case_id=CASE, instance_id=instance_id),
    )

    assert result.state == "running"
    assert result.volume_ids
    assert sorted(result.volume_ids) == volume_ids_of(ec2, instance_id)
    assert result.evidence.key == f"cases/{CASE}/evidence/ec2-instance-{instance_id}.json"
    body = s3.get_object(Bucket=result.evidence.bucket, Key=result.evidence.key)["Body"]
    document = json.loads(body.read())
    assert document["instance"]["InstanceId"] == instance_id
    assert sorted(v["VolumeId"] for v in document["volumes"]) == sorted(result.volume_ids)
    assert "iam_instance_profile_associations" in document


def test_capture_instance_state_on_retry_reports_the_state_at_capture(
    ec2: Any,
    instance_id: str,
    ec2_activities: Ec2Activities,
    activity_env: ActivityEnvironment,
    evidence_keys: Callable[[], list[str]],
) -> None:
    request = CaptureInstanceInput(case_id=CASE, instance_id=instance_id)
    first = activity_env.run(ec2_activities.capture_instance_state, request)
    ec2.stop_instances(InstanceIds=[instance_id])
    assert instance_state(ec2, instance_id) == "stopped"

    again = activity_env.run(ec2_activities.capture_instance_state, request)

    assert again == first
    assert again.state == "running"
    assert evidence_keys() == [first.evidence.key]


def test_capture_instance_state_of_a_missing_instance_is_not_found(
    ec2: Any, ec2_activities: Ec2Activities, activity_env: ActivityEnvironment
) -> None:
    with pytest.raises(ApplicationError) as raised:
        activity_env.run(
            ec2_activities.capture_instance_state,
            CaptureInstanceInput(case_id=CASE, instance_id="i-0123456789abcdef0"),
        )
    assert raised.value.type == ERROR_NOT_FOUND
    assert raised.value.non_retryable is True


# snapshot_volumes


def test_snapshot_volumes_tags_each_snapshot_with_the_case(
    ec2: Any, instance_id: str, ec2_activities: Ec2Activities
) -> None:
    volume_ids = volume_ids_of(ec2, instance_id)
    beats: list[tuple[Any, ...]] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)

    result = env.run(
        ec2_activities.snapshot_volumes,
        SnapshotVolumesInput(case_id=CASE, instance_id=instance_id, volume_ids=volume_ids),
    )

    assert sorted(result.snapshot_ids) == volume_ids
    snapshots = case_snapshots(ec2)
    assert {s["SnapshotId"] for s in snapshots} == set(result.snapshot_ids.values())
    for snapshot in snapshots:
        tags = {t["Key"]: t["Value"] for t in snapshot["Tags"]}
        assert tags[CASE_TAG_KEY] == CASE
        assert tags["quench:instance-id"] == instance_id
        assert result.snapshot_ids[snapshot["VolumeId"]] == snapshot["SnapshotId"]
    assert beats == [(v,) for v in volume_ids]
    assert result.evidence.key == f"cases/{CASE}/evidence/ebs-snapshots-{instance_id}.json"


def test_snapshot_volumes_twice_creates_no_new_snapshot(
    ec2: Any,
    instance_id: str,
    ec2_activities: Ec2Activities,
    activity_env: ActivityEnvironment,
) -> None:
    request = SnapshotVolumesInput(
        case_id=CASE, instance_id=instance_id, volume_ids=volume_ids_of(ec2, instance_id)
    )
    first = activity_env.run(ec2_activities.snapshot_volumes, request)

    again = activity_env.run(ec2_activities.snapshot_volumes, request)

    assert again.snapshot_ids == first.snapshot_ids
    assert again.evidence == first.evidence
    assert len(case_snapshots(ec2)) == len(first.snapshot_ids)
    all_snapshots = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    assert len(all_snapshots) == len(first.snapshot_ids)


def test_snapshot_volumes_for_another_case_takes_its_own_snapshots(
    ec2: Any,
    instance_id: str,
    ec2_activities: Ec2Activities,
    activity_env: ActivityEnvironment,
) -> None:
    volume_ids = volume_ids_of(ec2, instance_id)
    first = activity_env.run(
        ec2_activities.snapshot_volumes,
        SnapshotVolumesInput(case_id=CASE, instance_id=instance_id, volume_ids=volume_ids),
    )

    other = activity_env.run(
        ec2_activities.snapshot_volumes,
        SnapshotVolumesInput(case_id="case-other", instance_id=instance_id, volume_ids=volume_ids),
    )

    assert set(other.snapshot_ids.values()).isdisjoint(first.snapshot_ids.values())
    assert len(case_snapshots(ec2, "case-other")) == len(volume_ids)


# stop_instance and start_instance


def test_stop_instance_stops_a_running_instance(
    ec2: Any, instance_id: str, ec2_activities: Ec2Activities, activity_env: ActivityEnvironment
) -> None:
    result = activity_env.run(ec2_activities.stop_instance, InstanceInput(instance_id=instance_id))

    assert result.instance_id == instance_id
    assert result.state == "stopped"
    assert result.changed is True
    assert instance_state(ec2, instance_id) == "stopped"


def test_stop_instance_of_a_stopped_instance_changes_nothing(
    ec2: Any, instance_id: str, ec2_activities: Ec2Activities, activity_env: ActivityEnvironment
) -> None:
    ec2.stop_instances(InstanceIds=[instance_id])

    result = activity_env.run(ec2_activities.stop_instance, InstanceInput(instance_id=instance_id))

    assert result.state == "stopped"
    assert result.changed is False


def test_start_instance_starts_a_stopped_instance(
    ec2: Any, instance_id: str, ec2_activities: Ec2Activities, activity_env: ActivityEnvironment
) -> None:
    ec2.stop_instances(InstanceIds=[instance_id])

    result = activity_env.run(ec2_activities.start_instance, InstanceInput(instance_id=instance_id))

    assert result.state == "running"
    assert result.changed is True
    assert instance_state(ec2, instance_id) == "running"


def test_start_instance_of_a_running_instance_changes_nothing(
    ec2: Any, instance_id: str, ec2_activities: Ec2Activities, activity_env: ActivityEnvironment
) -> None:
    result = activity_env.run(ec2_activities.start_instance, InstanceInput(instance_id=instance_id))

    assert result.state == "running"
    assert result.changed is False


def test_stop_then_start_twice_leaves_the_instance_running(
    ec2: Any, instance_id: str, ec2_activities: Ec2Activities, activity_env: ActivityEnvironment
) -> None:
    request = InstanceInput(instance_id=instance_id)
    changes = [
        activity_env.run(ec2_activities.stop_instance, request).changed,
        activity_env.run(ec2_activities.stop_instance, request).changed,
        activity_env.run(ec2_activities.start_instance, request).changed,
        activity_env.run(ec2_activities.start_instance, request).changed,
    ]

    assert changes == [True, False, True, False]
    assert instance_state(ec2, instance_id) == "running"


@pytest.mark.parametrize("action", ["stop_instance", "start_instance"])
def test_a_terminated_instance_is_a_non_retryable_error(
    ec2: Any,
    instance_id: str,
    ec2_activities: Ec2Activities,
    activity_env: ActivityEnvironment,
    action: str,
) -> None:
    ec2.terminate_instances(InstanceIds=[instance_id])
    assert instance_state(ec2, instance_id) == "terminated"

    with pytest.raises(ApplicationError) as raised:
        activity_env.run(getattr(ec2_activities, action), InstanceInput(instance_id=instance_id))

    assert raised.value.type == ERROR_INVALID_REQUEST
    assert raised.value.non_retryable is True
    assert "terminated" in raised.value.message
    assert instance_state(ec2, instance_id) == "terminated"


# list_case_snapshots


def test_list_case_snapshots_names_the_case_s_snapshots_and_no_other(
    ec2: Any,
    instance_id: str,
    ec2_activities: Ec2Activities,
    activity_env: ActivityEnvironment,
) -> None:
    volume_ids = volume_ids_of(ec2, instance_id)
    taken, _ = (
        activity_env.run(
            ec2_activities.snapshot_volumes,
            SnapshotVolumesInput(case_id=case, instance_id=instance_id, volume_ids=volume_ids),
        )
        for case in (CASE, "another-case")
    )
    ec2.create_snapshot(VolumeId=volume_ids[0], Description="someone else's backup")

    result = activity_env.run(
        ec2_activities.list_case_snapshots, ListCaseSnapshotsInput(case_id=CASE)
    )

    assert {(s.volume_id, s.snapshot_id) for s in result.snapshots} == set(
        taken.snapshot_ids.items()
    )
    assert all(s.instance_id == instance_id and s.started_at for s in result.snapshots)


def test_list_case_snapshots_of_a_case_without_any_is_empty(
    ec2_activities: Ec2Activities, activity_env: ActivityEnvironment
) -> None:
    result = activity_env.run(
        ec2_activities.list_case_snapshots, ListCaseSnapshotsInput(case_id=CASE)
    )
    assert result.snapshots == []
