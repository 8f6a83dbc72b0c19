"""Realistic CloudTrail log files, as a trail writes them to S3: gzip JSON `{"Records":[...]}`,
compact, AWS's key order, one file per region about every five minutes under
AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/. Deterministic by seed.

A stolen IAM user key is planted: its own calls (an app's routine use and an attacker's
burst across regions), records that only name it in requestParameters or responseElements
(CreateAccessKey, UpdateAccessKey, GetAccessKeyLastUsed, TagUser), and a near miss: another
user's key sharing its first 16 characters, busy in every file of the main region.
"""

import gzip
import json
import random
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ACCOUNT = "111122223333"
REGIONS = ("us-east-1", "eu-west-1", "us-west-2")
START = datetime(2026, 11, 20, tzinfo=UTC)
DELIVERY = timedelta(minutes=5)
TARGET_KEY = "AKIA4QSTOLENCIKEY7Q2"
NEAR_MISS_KEY = "AKIA4QSTOLENCIKEZ3M8"  # the same first 16 characters, another user's key
ATTACKER_IP = "198.51.100.77"
_ALNUM = string.ascii_letters + string.digits
_UPPER = string.ascii_uppercase + string.digits
# The share of a slot's records each region gets: one busy region, two quieter ones.
_REGION_WEIGHT = {"us-east-1": 0.7, "eu-west-1": 0.2, "us-west-2": 0.1}
RECORDS_PER_SLOT = 900

Record = dict[str, Any]


@dataclass
class TrailSet:
    """What `generate` wrote, and what it planted."""

    root: Path
    keys: list[str] = field(default_factory=list)  # file keys under root, in S3's layout
    records: int = 0
    target_key: str = TARGET_KEY
    near_miss_key: str = NEAR_MISS_KEY
    by_target: int = 0  # records whose userIdentity.accessKeyId is the target key
    naming_target: int = 0  # records that only name it in requestParameters/responseElements
    compressed_bytes: int = 0
    raw_bytes: int = 0

    def paths(self) -> list[Path]:
        return [self.root / key for key in self.keys]


def _time(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


class TrailFactory:
    """Builds records in AWS's shape from a seeded random source."""

    def __init__(self, seed: int, account: str = ACCOUNT) -> None:
        self.rnd = random.Random(seed)
        self.account = account
        rnd = self.rnd
        self.roles = [
            ("web-app-role", "ec2", lambda: f"i-0{rnd.getrandbits(64):016x}"),
            ("orders-api-task", "ecs-tasks", lambda: f"{rnd.getrandbits(128):032x}"),
            ("thumbnailer-lambda", "lambda", lambda: "thumbnailer"),
            ("etl-glue-role", "glue", lambda: f"GlueJobRunnerSession-{rnd.getrandbits(32)}"),
            (
                "AWSReservedSSO_AdministratorAccess_5d1c0a9e4f2b7a31",
                "sso",
                lambda: rnd.choice(["alice@example.com", "bob@example.com", "zoë@example.com"]),
            ),
        ]
        self.role_ids = {name: "AROA" + self._upper(17) for name, _, _ in self.roles}
        # The live sessions of each role: (access key, session name, issued at).
        self.sessions: dict[str, list[tuple[str, str, datetime]]] = {
            name: [] for name, _, _ in self.roles
        }
        self.users = {
            "ci-deploy": ("AIDA" + self._upper(17), TARGET_KEY),
            "backup-agent": ("AIDA" + self._upper(17), NEAR_MISS_KEY),
            "terraform": ("AIDA" + self._upper(17), "AKIA" + self._upper(16)),
        }
        self.buckets = [f"{name}-{account}" for name in ("orders-data", "app-logs", "backups")]
        self.tables = ["orders", "customers", "sessions"]
        self.kms_keys = [f"{rnd.getrandbits(128):032x}" for _ in range(4)]
        self.instances = [f"i-0{rnd.getrandbits(64):016x}" for _ in range(12)]
        self.private_ips = [f"10.0.{rnd.randrange(256)}.{rnd.randrange(1, 255)}" for _ in range(40)]
        self.agents = [
            "aws-sdk-java/1.12.701 Linux/5.10.219-208.866.amzn2.x86_64 "
            "OpenJDK_64-Bit_Server_VM/17.0.11+9-LTS java/17.0.11 vendor/Amazon.com_Inc.",
            "Boto3/1.34.103 md/Botocore#1.34.103 ua/2.0 os/linux#5.10.219 md/arch#x86_64 "
            "lang/python#3.11.9 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.34.103",
            "aws-sdk-go-v2/1.26.1 os/linux lang/go#1.22.2 md/GOOS#linux md/GOARCH#amd64 "
            "api/dynamodb#1.31.1",
            "[aws-sdk-nodejs/3.577.0 linux/v20.13.1 exec-env/AWS_Lambda_nodejs20.x]",
            "aws-cli/2.15.58 Python/3.11.8 Linux/5.10.219 exe/x86_64.amzn.2 prompt/off "
            "command/s3.cp",
        ]

    # -- small parts ----------------------------------------------------------------------

    def _upper(self, n: int) -> str:
        return "".join(self.rnd.choices(_UPPER, k=n))

    def _uuid(self) -> str:
        v = f"{self.rnd.getrandbits(128):032x}"
        return f"{v[:8]}-{v[8:12]}-{v[12:16]}-{v[16:20]}-{v[20:]}"

    def _mac(self) -> str:
        return "0e:" + ":".join(f"{self.rnd.randrange(256):02x}" for _ in range(5))

    def _request_id(self) -> str:
        return self._uuid() if self.rnd.random() < 0.7 else self._upper(16)

    def _tls(self, host: str) -> Record:
        return {
            "tlsVersion": "TLSv1.3" if self.rnd.random() < 0.6 else "TLSv1.2",
            "cipherSuite": "TLS_AES_128_GCM_SHA256",
            "clientProvidedHostHeader": host,
        }

    def assumed_role(self, at: datetime, role: str | None = None) -> Record:
        name, _service, session_name = (
            next(r for r in self.roles if r[0] == role) if role else self.rnd.choice(self.roles)
        )
        live = [s for s in self.sessions[name] if at - s[2] < timedelta(hours=1)]
        if not live or self.rnd.random() < 0.02:
            live.append(("ASIA" + self._upper(16), session_name(), at - timedelta(minutes=3)))
        self.sessions[name] = live[-4:]
        key, session, created = self.rnd.choice(live)
        role_id = self.role_ids[name]
        return {
            "type": "AssumedRole",
            "principalId": f"{role_id}:{session}",
            "arn": f"arn:aws:sts::{self.account}:assumed-role/{name}/{session}",
            "accountId": self.account,
            "accessKeyId": key,
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": role_id,
                    "arn": f"arn:aws:iam::{self.account}:role/{name}",
                    "accountId": self.account,
                    "userName": name,
                },
                "webIdFederationData": {},
                "attributes": {"creationDate": _time(created), "mfaAuthenticated": "false"},
            },
        }

    def iam_user(self, user: str) -> Record:
        principal, key = self.users[user]
        return {
            "type": "IAMUser",
            "principalId": principal,
            "arn": f"arn:aws:iam::{self.account}:user/{user}",
            "accountId": self.account,
            "accessKeyId": key,
            "userName": user,
        }

    def service(self, service: str) -> Record:
        return {"type": "AWSService", "invokedBy": service}

    # -- records --------------------------------------------------------------------------

    def record(
        self,
        at: datetime,
        region: str,
        identity: Record,
        source: str,
        name: str,
        request: Record | None,
        response: Record | None = None,
        *,
        ip: str | None = None,
        agent: str | None = None,
        error: tuple[str, str] | None = None,
        read_only: bool = True,
        extra: Record | None = None,
        resources: list[Record] | None = None,
        data_event: bool = False,
    ) -> Record:
        """One record, keys in the order CloudTrail writes them."""
        service_call = identity.get("type") == "AWSService"
        host = f"{source.split('.')[0]}.{region}.amazonaws.com"
        record: Record = {
            "eventVersion": "1.10" if data_event else "1.09",
            "userIdentity": identity,
            "eventTime": _time(at),
            "eventSource": source,
            "eventName": name,
            "awsRegion": region,
            "sourceIPAddress": identity["invokedBy"]
            if service_call
            else (ip or self.rnd.choice(self.private_ips)),
            "userAgent": identity["invokedBy"]
            if service_call
            else (agent or self.rnd.choice(self.agents)),
        }
        if error:
            record["errorCode"], record["errorMessage"] = error
        record["requestParameters"] = request
        record["responseElements"] = response
        if extra is not None:
            record["additionalEventData"] = extra
        record["requestID"] = self._request_id()
        record["eventID"] = self._uuid()
        record["readOnly"] = read_only
        if resources is not None:
            record["resources"] = resources
        record["eventType"] = "AwsServiceEvent" if service_call and not request else "AwsApiCall"
        record["managementEvent"] = not data_event
        record["recipientAccountId"] = self.account
        if service_call:
            record["sharedEventID"] = self._uuid()
        if not service_call and self.rnd.random() < 0.15:
            record["vpcEndpointId"] = f"vpce-0{self.rnd.getrandbits(60):015x}"
            record["vpcEndpointAccountId"] = self.account
        record["eventCategory"] = "Data" if data_event else "Management"
        if not service_call:
            record["tlsDetails"] = self._tls(host)
        return record

    def denied(self, identity: Record, action: str, resource: str) -> tuple[str, str]:
        return (
            "AccessDenied",
            f"User: {identity.get('arn')} is not authorized to perform: {action} on resource: "
            f"{resource} because no identity-based policy allows the {action} action",
        )

    def s3_object(self, at: datetime, region: str, identity: Record) -> Record:
        bucket = self.rnd.choice(self.buckets)
        name = self.rnd.choice(["GetObject", "GetObject", "PutObject", "HeadObject"])
        folder = self.rnd.choice(["orders", "exports", "thumbnails", "rapports/été", "logs"])
        key = f"{folder}/{at:%Y/%m/%d}/{self.rnd.getrandbits(48):012x}.json"
        host = f"{bucket}.s3.{region}.amazonaws.com"
        moved = self.rnd.randrange(200, 2_000_000)
        return self.record(
            at,
            region,
            identity,
            "s3.amazonaws.com",
            name,
            {"bucketName": bucket, "Host": host, "key": key},
            None,
            extra={
                "SignatureVersion": "SigV4",
                "CipherSuite": "TLS_AES_128_GCM_SHA256",
                "bytesTransferredIn": moved if name == "PutObject" else 0,
                "AuthenticationMethod": "AuthHeader",
                "x-amz-id-2": "".join(self.rnd.choices(_ALNUM + "+/", k=76)),
                "bytesTransferredOut": 0 if name == "PutObject" else moved,
            },
            resources=[
                {"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{bucket}/{key}"},
                {
                    "accountId": self.account,
                    "type": "AWS::S3::Bucket",
                    "ARN": f"arn:aws:s3:::{bucket}",
                },
            ],
            read_only=name != "PutObject",
            data_event=True,
        )

    def kms(self, at: datetime, region: str) -> Record:
        key = self.rnd.choice(self.kms_keys)
        arn = f"arn:aws:kms:{region}:{self.account}:key/{key}"
        invoker = self.rnd.choice(["s3.amazonaws.com", "secretsmanager.amazonaws.com"])
        if invoker.startswith("s3"):
            context = {"aws:s3:arn": f"arn:aws:s3:::{self.rnd.choice(self.buckets)}"}
        else:
            context = {"SecretARN": f"arn:aws:secretsmanager:{region}:{self.account}:secret:db"}
        return self.record(
            at,
            region,
            self.service(invoker),
            "kms.amazonaws.com",
            self.rnd.choice(["Decrypt", "GenerateDataKey"]),
            {
                "encryptionContext": context,
                "encryptionAlgorithm": "SYMMETRIC_DEFAULT",
                "keyId": arn,
            },
            None,
            resources=[{"accountId": self.account, "type": "AWS::KMS::Key", "ARN": arn}],
        )

    def assume_role(self, at: datetime, region: str) -> Record:
        role, service, session_name = self.rnd.choice(self.roles[:4])
        session = session_name()
        expires = at + timedelta(hours=1)
        return self.record(
            at,
            region,
            self.service(f"{service}.amazonaws.com"),
            "sts.amazonaws.com",
            "AssumeRole",
            {
                "roleArn": f"arn:aws:iam::{self.account}:role/{role}",
                "roleSessionName": session,
                "durationSeconds": 3600,
            },
            {
                "credentials": {
                    "accessKeyId": "ASIA" + self._upper(16),
                    "sessionToken": "IQoJb3JpZ2luX2VjE" + "".join(self.rnd.choices(_ALNUM, k=60)),
                    "expiration": expires.strftime("%b %-d, %Y, %-I:%M:%S %p"),
                },
                "assumedRoleUser": {
                    "assumedRoleId": f"{self.role_ids[role]}:{session}",
                    "arn": f"arn:aws:sts::{self.account}:assumed-role/{role}/{session}",
                },
            },
            resources=[
                {
                    "accountId": self.account,
                    "type": "AWS::IAM::Role",
                    "ARN": f"arn:aws:iam::{self.account}:role/{role}",
                }
            ],
        )

    def ec2_describe(self, at: datetime, region: str, identity: Record, **kw: Any) -> Record:
        name = self.rnd.choice(["DescribeInstances", "DescribeSecurityGroups", "DescribeVolumes"])
        if name == "DescribeInstances":
            request: Record = {
                "instancesSet": {"items": [{"instanceId": self.rnd.choice(self.instances)}]},
                "filterSet": {},
                "includeAllInstances": False,
            }
        elif name == "DescribeSecurityGroups":
            request = {"securityGroupSet": {}, "securityGroupIdSet": {}, "filterSet": {}}
        else:
            request = {
                "volumeSet": {},
                "filterSet": {
                    "items": [
                        {
                            "name": "attachment.instance-id",
                            "valueSet": {"items": [{"value": self.rnd.choice(self.instances)}]},
                        }
                    ]
                },
            }
        return self.record(at, region, identity, "ec2.amazonaws.com", name, request, None, **kw)

    def dynamodb(self, at: datetime, region: str, identity: Record) -> Record:
        table = self.rnd.choice(self.tables)
        name = self.rnd.choice(["GetItem", "GetItem", "PutItem", "Query"])
        request: Record = {"tableName": table}
        if name == "Query":
            request["keyConditionExpression"] = "pk = :pk AND begins_with(sk, :prefix)"
        else:
            request["key"] = {"pk": f"CUSTOMER#{self.rnd.getrandbits(40)}", "sk": "PROFILE"}
        return self.record(
            at,
            region,
            identity,
            "dynamodb.amazonaws.com",
            name,
            request,
            None,
            resources=[
                {
                    "accountId": self.account,
                    "type": "AWS::DynamoDB::Table",
                    "ARN": f"arn:aws:dynamodb:{region}:{self.account}:table/{table}",
                }
            ],
            read_only=name != "PutItem",
            data_event=True,
        )

    def small_call(self, at: datetime, region: str, identity: Record, **kw: Any) -> Record:
        source, name, request = self.rnd.choice(
            [
                ("sts.amazonaws.com", "GetCallerIdentity", None),
                ("ssm.amazonaws.com", "GetParameter", {"name": "/app/prod/db-host"}),
                (
                    "secretsmanager.amazonaws.com",
                    "GetSecretValue",
                    {"secretId": f"arn:aws:secretsmanager:{region}:{self.account}:secret:db"},
                ),
                ("ecr.amazonaws.com", "GetAuthorizationToken", None),
                ("logs.amazonaws.com", "CreateLogStream", {"logGroupName": "/ecs/orders-api"}),
                ("iam.amazonaws.com", "ListRoles", {"maxItems": 100}),
                ("iam.amazonaws.com", "GetUser", None),
                ("cloudtrail.amazonaws.com", "LookupEvents", {"maxResults": 50}),
            ]
        )
        return self.record(at, region, identity, source, name, request, None, **kw)

    def put_role_policy(self, at: datetime, region: str) -> Record:
        """An infrastructure change: the policy goes in as a JSON string, so the file holds
        escaped quotes and newlines."""
        role = self.rnd.choice(self.roles[:4])[0]
        bucket = self.rnd.choice(self.buckets)
        document = json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": ["s3:GetObject", "s3:PutObject"],
                        "Resource": f"arn:aws:s3:::{bucket}/*",
                    },
                    {
                        "Effect": "Allow",
                        "Action": "kms:Decrypt",
                        "Resource": f"arn:aws:kms:{region}:{self.account}:key/*",
                        "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.aws"}},
                    },
                ],
            },
            indent=2,
        )
        return self.record(
            at,
            region,
            self.iam_user("terraform"),
            "iam.amazonaws.com",
            "PutRolePolicy",
            {"roleName": role, "policyName": f"{bucket}-access", "policyDocument": document},
            None,
            read_only=False,
        )

    def run_instances(self, at: datetime, region: str, identity: Record) -> Record:
        """A large record: RunInstances and what it launched."""
        instance = f"i-0{self.rnd.getrandbits(64):016x}"
        subnet = f"subnet-0{self.rnd.getrandbits(64):016x}"
        tags = [{"key": "Name", "value": "orders-api"}, {"key": "team", "value": "payments"}]
        return self.record(
            at,
            region,
            identity,
            "ec2.amazonaws.com",
            "RunInstances",
            {
                "instancesSet": {"items": [{"imageId": "ami-0c1f5a3b2d4e6f708", "minCount": 1}]},
                "userData": "<sensitiveDataRemoved>",
                "instanceType": "m7i.large",
                "blockDeviceMapping": {},
                "monitoring": {"enabled": False},
                "disableApiTermination": False,
                "disableApiStop": False,
                "clientToken": self._uuid(),
                "tagSpecificationSet": {"items": [{"resourceType": "instance", "tags": tags}]},
                "launchTemplate": {"launchTemplateId": "lt-0a1b2c3d4e5f60718", "version": "7"},
            },
            {
                "requestId": self._uuid(),
                "reservationId": f"r-0{self.rnd.getrandbits(64):016x}",
                "ownerId": self.account,
                "groupSet": {},
                "instancesSet": {
                    "items": [
                        {
                            "instanceId": instance,
                            "imageId": "ami-0c1f5a3b2d4e6f708",
                            "currentInstanceBootMode": "uefi",
                            "instanceState": {"code": 0, "name": "pending"},
                            "privateDnsName": f"ip-10-0-{self.rnd.randrange(256)}-"
                            f"{self.rnd.randrange(256)}.ec2.internal",
                            "amiLaunchIndex": 0,
                            "productCodes": {},
                            "instanceType": "m7i.large",
                            "launchTime": at.timestamp() * 1000 // 1,
                            "placement": {"availabilityZone": f"{region}a", "tenancy": "default"},
                            "monitoring": {"state": "disabled"},
                            "subnetId": subnet,
                            "vpcId": f"vpc-0{self.rnd.getrandbits(64):016x}",
                            "privateIpAddress": self.rnd.choice(self.private_ips),
                            "stateReason": {
                                "code": "pending",
                                "message": "pending",
                            },
                            "architecture": "x86_64",
                            "rootDeviceType": "ebs",
                            "rootDeviceName": "/dev/xvda",
                            "blockDeviceMapping": {},
                            "virtualizationType": "hvm",
                            "tagSet": {"items": tags},
                            "hypervisor": "xen",
                            "networkInterfaceSet": {
                                "items": [
                                    {
                                        "networkInterfaceId": "eni-0"
                                        f"{self.rnd.getrandbits(64):016x}",
                                        "subnetId": subnet,
                                        "status": "in-use",
                                        "macAddress": self._mac(),
                                        "sourceDestCheck": True,
                                        "interfaceType": "interface",
                                    }
                                ]
                            },
                            "ebsOptimized": True,
                            "enaSupport": True,
                            "cpuOptions": {"coreCount": 1, "threadsPerCore": 2},
                            "capacityReservationSpecification": {
                                "capacityReservationPreference": "open"
                            },
                            "enclaveOptions": {"enabled": False},
                            "metadataOptions": {
                                "state": "pending",
                                "httpTokens": "required",
                                "httpPutResponseHopLimit": 2,
                                "httpEndpoint": "enabled",
                            },
                        }
                    ]
                },
            },
            read_only=False,
        )

    def background(self, at: datetime, region: str) -> Record:
        """One record of the account's ordinary traffic."""
        roll = self.rnd.random()
        if roll < 0.004:
            return self.put_role_policy(at, region)
        if roll < 0.006:
            return self.run_instances(at, region, self.assumed_role(at, "orders-api-task"))
        if roll < 0.06:
            identity = self.iam_user("backup-agent")  # the near miss, busy everywhere
            return self.s3_object(at, region, identity)
        if roll < 0.09:
            return self.small_call(at, region, self.iam_user("terraform"))
        if roll < 0.2:
            return self.kms(at, region)
        if roll < 0.28:
            return self.assume_role(at, region)
        identity = self.assumed_role(at)
        if roll < 0.55:
            return self.s3_object(at, region, identity)
        if roll < 0.68:
            return self.dynamodb(at, region, identity)
        if roll < 0.82:
            return self.ec2_describe(at, region, identity)
        record = self.small_call(at, region, identity)
        if self.rnd.random() < 0.08:
            record = self.small_call(
                at,
                region,
                identity,
                error=self.denied(identity, "iam:ListRoles", f"arn:aws:iam::{self.account}:*"),
            )
        return record

    # -- the stolen key -------------------------------------------------------------------

    def app_use(self, at: datetime, region: str) -> list[Record]:
        """The key's owner, a CI job deploying: a few calls from the CI runner."""
        identity = self.iam_user("ci-deploy")
        ip = "203.0.113.40"
        agent = self.agents[4]
        calls = [
            self.small_call(at, region, identity, ip=ip, agent=agent),
            self.s3_object(at, region, identity),
        ]
        for record in calls:
            record["sourceIPAddress"], record["userAgent"] = ip, agent
        return calls

    def attacker(self, at: datetime, region: str) -> Record:
        """The attacker with the stolen key: enumeration, much of it refused."""
        identity = self.iam_user("ci-deploy")
        agent = "Boto3/1.35.0 md/Botocore#1.35.0 ua/2.0 os/linux#6.8.0 lang/python#3.12.3"
        roll = self.rnd.random()
        if roll < 0.03:
            # A backdoor: a key for another user, which the response names.
            return self.record(
                at,
                region,
                identity,
                "iam.amazonaws.com",
                "CreateAccessKey",
                {"userName": "svc-metrics"},
                {
                    "accessKey": {
                        "accessKeyId": "AKIA" + self._upper(16),
                        "status": "Active",
                        "userName": "svc-metrics",
                        "createDate": at.strftime("%b %-d, %Y, %-I:%M:%S %p"),
                    }
                },
                ip=ATTACKER_IP,
                agent=agent,
                read_only=False,
            )
        if roll < 0.4:
            return self.ec2_describe(at, region, identity, ip=ATTACKER_IP, agent=agent)
        kwargs: dict[str, Any] = {"ip": ATTACKER_IP, "agent": agent}
        if roll < 0.8:
            kwargs["error"] = self.denied(
                identity, "iam:ListUsers", f"arn:aws:iam::{self.account}:user/"
            )
        return self.small_call(at, region, identity, **kwargs)

    def naming(self, at: datetime, region: str, what: str) -> Record:
        """A record by someone else that names the stolen key in its request or response."""
        admin = self.assumed_role(at, "AWSReservedSSO_AdministratorAccess_5d1c0a9e4f2b7a31")
        source = "iam.amazonaws.com"
        if what == "CreateAccessKey":
            return self.record(
                at,
                region,
                admin,
                source,
                what,
                {"userName": "ci-deploy"},
                {
                    "accessKey": {
                        "accessKeyId": TARGET_KEY,
                        "status": "Active",
                        "userName": "ci-deploy",
                        "createDate": at.strftime("%b %-d, %Y, %-I:%M:%S %p"),
                    }
                },
                read_only=False,
            )
        if what == "UpdateAccessKey":
            request: Record = {
                "userName": "ci-deploy",
                "accessKeyId": TARGET_KEY,
                "status": "Inactive",
            }
            return self.record(at, region, admin, source, what, request, None, read_only=False)
        if what == "TagUser":
            request = {
                "userName": "ci-deploy",
                "tags": [
                    {"key": "rotated-from", "value": TARGET_KEY},
                    {"key": "note", "value": f"rotate {TARGET_KEY} after the {{deploy}} freeze"},
                ],
            }
            return self.record(at, region, admin, source, what, request, None, read_only=False)
        auditor = self.assumed_role(at, "thumbnailer-lambda")
        return self.record(
            at, region, auditor, source, "GetAccessKeyLastUsed", {"accessKeyId": TARGET_KEY}, None
        )


def _slot_plan(records: int) -> list[tuple[datetime, str, int]]:
    """Every (delivery time, region, record count) to write, in time order."""
    plan = []
    rnd = random.Random(records)
    at = START + DELIVERY
    left = records
    while left > 0:
        for region in REGIONS:
            mean = RECORDS_PER_SLOT * _REGION_WEIGHT[region]
            count = min(left, max(1, int(rnd.gauss(mean, mean * 0.35))))
            plan.append((at, region, count))
            left -= count
            if left == 0:
                break
        at += DELIVERY
    return plan


def generate(root: Path, records: int, seed: int = 6, dense: bool = False) -> TrailSet:
    """Writes `records` records of one account's trail under `root` (about 900 per five
    minutes), with the stolen key planted. `dense`: the key's app calls in every file of
    the main region rather than every 45 minutes (the scan's worst case)."""
    factory = TrailFactory(seed)
    rnd = factory.rnd
    plan = _slot_plan(records)
    first, last = plan[0][0], plan[-1][0]
    attack_start = first + (last - first) * 0.6
    attack_end = attack_start + timedelta(hours=3)
    # Others naming the key: created at the start, looked up, tagged, deactivated at the
    # end; each in the first file of the main region from its point of the timeline on.
    naming = [
        (0.0, "CreateAccessKey"),
        (0.3, "GetAccessKeyLastUsed"),
        (0.5, "TagUser"),
        (0.7, "GetAccessKeyLastUsed"),
        (0.95, "UpdateAccessKey"),
    ]
    trail = TrailSet(root=root)
    next_app_use = first
    for delivered, region, count in plan:
        window = (delivered - DELIVERY, delivered)

        def moment(window: tuple[datetime, datetime] = window) -> datetime:
            return window[0] + timedelta(seconds=rnd.randrange(300))

        planted: list[Record] = []
        by_target = 0
        if region == "us-east-1" and (dense or window[0] >= next_app_use):
            planted.extend(factory.app_use(moment(), region))
            by_target += 2
            next_app_use = window[0] + timedelta(minutes=45)
        if attack_start <= window[0] < attack_end:
            burst = rnd.randrange(5, 40) if region == "us-east-1" else rnd.randrange(1, 8)
            planted.extend(factory.attacker(moment(), region) for _ in range(burst))
            by_target += burst
        while (
            naming and region == "us-east-1" and delivered >= first + (last - first) * naming[0][0]
        ):
            planted.append(factory.naming(moment(), region, naming.pop(0)[1]))
            trail.naming_target += 1
        body = [factory.background(moment(), region) for _ in range(max(0, count - len(planted)))]
        for record in planted:
            body.insert(rnd.randrange(len(body) + 1), record)
        trail.by_target += by_target
        raw = json.dumps({"Records": body}, separators=(",", ":"), ensure_ascii=False).encode()
        compressed = gzip.compress(raw, compresslevel=6, mtime=0)
        key = (
            f"AWSLogs/{ACCOUNT}/CloudTrail/{region}/{delivered:%Y/%m/%d}/"
            f"{ACCOUNT}_CloudTrail_{region}_{delivered:%Y%m%dT%H%M}Z_"
            f"{''.join(rnd.choices(_ALNUM, k=16))}.json.gz"
        )
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(compressed)
        trail.keys.append(key)
        trail.records += len(body)
        trail.raw_bytes += len(raw)
        trail.compressed_bytes += len(compressed)
    return trail
