"""EC2: the instance's evidence, snapshots of its volumes, and the stop+start that rotates
its role credentials (a reboot does not: the instance keeps its metadata credentials)."""

import time
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws import ERROR_INVALID_REQUEST, AwsClients, at_once, aws_errors
from activities.evidence import EvidenceStore
from activities.hands_off import refuse_if_hands_off
from activities.liveness import beat, heartbeating
from config.names import CASE_TAG_KEY
from models.activities import (
    CaptureInstanceInput,
    CaptureInstanceResult,
    InstanceInput,
    InstanceStateResult,
    ListCaseSnapshotsInput,
    ListCaseSnapshotsResult,
    SnapshotVolumesInput,
    SnapshotVolumesResult,
)
from models.case import CaseSnapshot


class Ec2Activities:
    def __init__(
        self, clients: AwsClients, evidence: EvidenceStore, poll_seconds: float = 5.0
    ) -> None:
        self._clients = clients
        self._evidence = evidence
        self._poll_seconds = poll_seconds

    @property
    def _ec2(self) -> Any:
        return self._clients.client("ec2")

    def _describe(self, instance_id: str) -> dict[str, Any]:
        with aws_errors(f"describe instance {instance_id}"):
            reservations = self._ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        return dict(reservations[0]["Instances"][0])

    def _state(self, instance_id: str) -> str:
        return str(self._describe(instance_id)["State"]["Name"])

    @activity.defn
    @heartbeating
    def capture_instance_state(self, input: CaptureInstanceInput) -> CaptureInstanceResult:
        """Evidence: the instance description, its volumes and its profile association."""
        instance = self._describe(input.instance_id)
        volume_ids = [
            m["Ebs"]["VolumeId"] for m in instance.get("BlockDeviceMappings", []) if "Ebs" in m
        ]
        name = f"ec2-instance-{input.instance_id}"
        ec2 = self._ec2
        # A retry finds the evidence kept, and the state it recorded.
        found = self._evidence.existing(self._evidence.key_for(input.case_id, name))
        if found is not None:
            return CaptureInstanceResult(
                evidence=found, volume_ids=volume_ids, state=self._state_at_capture(found.key)
            )
        with aws_errors(f"capture instance {input.instance_id}"):
            # At once (containment waits for them).
            volumes, associations = at_once(
                lambda: ec2.describe_volumes(VolumeIds=volume_ids)["Volumes"] if volume_ids else [],
                lambda: ec2.describe_iam_instance_profile_associations(
                    Filters=[{"Name": "instance-id", "Values": [input.instance_id]}]
                )["IamInstanceProfileAssociations"],
            )
        document = {
            "instance": instance,
            "volumes": volumes,
            "iam_instance_profile_associations": associations,
        }
        return CaptureInstanceResult(
            evidence=self._evidence.put_json(input.case_id, name, document),
            volume_ids=volume_ids,
            state=instance["State"]["Name"],
        )

    def _state_at_capture(self, key: str) -> str:
        """The state recorded in evidence: a retry must not see the instance it stopped."""
        document = self._evidence.read_json(key)
        return str(document["instance"]["State"]["Name"])

    @activity.defn
    @heartbeating
    def snapshot_volumes(self, input: SnapshotVolumesInput) -> SnapshotVolumesResult:
        """Snapshot every volume, tagged with the case; a volume already snapshotted for
        this case is not snapshotted again. Snapshots are point-in-time at creation, so
        the instance may be stopped while they complete."""
        snapshots: dict[str, str] = {}
        described = []
        for volume_id in input.volume_ids:
            with aws_errors(f"snapshot volume {volume_id}"):
                existing = self._ec2.describe_snapshots(
                    OwnerIds=["self"],
                    # The volume first: the same answer, and an emulator that reads every
                    # snapshot's tags (moto does) reads only this volume's.
                    Filters=[
                        {"Name": "volume-id", "Values": [volume_id]},
                        {"Name": f"tag:{CASE_TAG_KEY}", "Values": [input.case_id]},
                    ],
                )["Snapshots"]
                if existing:
                    snapshot = existing[0]
                else:
                    snapshot = self._ec2.create_snapshot(
                        VolumeId=volume_id,
                        Description=f"Quench evidence for {input.case_id} ({input.instance_id})",
                        TagSpecifications=[
                            {
                                "ResourceType": "snapshot",
                                "Tags": [
                                    {"Key": CASE_TAG_KEY, "Value": input.case_id},
                                    {"Key": "quench:instance-id", "Value": input.instance_id},
                                    {"Key": "Name", "Value": f"quench-{input.case_id}"},
                                ],
                            }
                        ],
                    )
            snapshots[volume_id] = snapshot["SnapshotId"]
            described.append(snapshot)
            beat(volume_id)
        evidence = self._evidence.put_json(
            input.case_id,
            f"ebs-snapshots-{input.instance_id}",
            {"instance_id": input.instance_id, "snapshots": described},
        )
        return SnapshotVolumesResult(snapshot_ids=snapshots, evidence=evidence)

    @activity.defn
    @heartbeating
    def list_case_snapshots(self, input: ListCaseSnapshotsInput) -> ListCaseSnapshotsResult:
        """The EBS snapshots tagged with the case, oldest first: the report names them."""
        with aws_errors(f"list the EBS snapshots of {input.case_id}"):
            pages = self._ec2.get_paginator("describe_snapshots").paginate(
                OwnerIds=["self"],
                Filters=[{"Name": f"tag:{CASE_TAG_KEY}", "Values": [input.case_id]}],
            )
            found = [snapshot for page in pages for snapshot in page["Snapshots"]]
        snapshots = [
            CaseSnapshot(
                snapshot_id=s["SnapshotId"],
                volume_id=s.get("VolumeId", ""),
                instance_id=next(
                    (t["Value"] for t in s.get("Tags", []) if t["Key"] == "quench:instance-id"),
                    None,
                ),
                started_at=s.get("StartTime"),
            )
            for s in found
        ]
        snapshots.sort(key=lambda s: (s.started_at is None, s.started_at, s.snapshot_id))
        return ListCaseSnapshotsResult(snapshots=snapshots)

    def _wait_for(self, instance_id: str, wanted: str) -> str:
        while True:
            state = self._state(instance_id)
            beat(state)
            if state == wanted:
                return state
            if state in {"terminated", "shutting-down"}:
                raise ApplicationError(
                    f"instance {instance_id} is {state}",
                    type=ERROR_INVALID_REQUEST,
                    non_retryable=True,
                )
            time.sleep(self._poll_seconds)

    @activity.defn
    @heartbeating
    def stop_instance(self, input: InstanceInput) -> InstanceStateResult:
        """Stop the instance and wait until it is stopped; already stopped is done."""
        refuse_if_hands_off(
            self._clients, input, "ec2:StopInstances", instance_id=input.instance_id
        )
        state = self._state(input.instance_id)
        changed = False
        if state in {"pending", "running"}:
            with aws_errors(f"stop instance {input.instance_id}"):
                self._ec2.stop_instances(InstanceIds=[input.instance_id])
            changed = True
        final = self._wait_for(input.instance_id, "stopped")
        return InstanceStateResult(instance_id=input.instance_id, state=final, changed=changed)

    @activity.defn
    @heartbeating
    def start_instance(self, input: InstanceInput) -> InstanceStateResult:
        """Start the instance and wait until it runs; already running is done."""
        refuse_if_hands_off(
            self._clients, input, "ec2:StartInstances", instance_id=input.instance_id
        )
        state = self._state(input.instance_id)
        changed = False
        if state == "stopping":
            state = self._wait_for(input.instance_id, "stopped")
        if state == "stopped":
            with aws_errors(f"start instance {input.instance_id}"):
                self._ec2.start_instances(InstanceIds=[input.instance_id])
            changed = True
        final = self._wait_for(input.instance_id, "running")
        return InstanceStateResult(instance_id=input.instance_id, state=final, changed=changed)
