"""The Athena source: the CloudTrail table's DDL, the SQL for a TrailQuery, and reading its
results against moto's Athena, with rows injected through moto's query-results API."""

import dataclasses
import json
import re
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from moto.athena import urls as athena_urls
from moto.athena.models import AthenaBackend, athena_backends
from moto.athena.responses import AthenaResponse
from moto.core.exceptions import JsonRESTError
from moto.glue.models import glue_backends
from moto.moto_api import state_manager
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.athena import COLUMNS, AthenaSource, cloudtrail_table_ddl, query_failure
from activities.aws import (
    ERROR_INVALID_REQUEST,
    ERROR_OTHER,
    ERROR_THROTTLED,
    ERROR_UNAVAILABLE,
    AwsClients,
)
from activities.cloudtrail import _RESOURCE_PARAMETERS, TrailQuery, scan
from config.settings import Settings
from tests.support import ACCOUNT, REGION, STOLEN_KEY
from worker import build_activities

OTHER_KEY = "AKIABACKDOORKEY00001"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/web-app-role"
DATABASE = "quench"
TABLE = "cloudtrail"
TRAIL_BUCKET = "quench-trail-test"
RESULTS = "s3://quench-athena-results/quench/"
START = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
END = datetime(2026, 11, 22, 7, 30, tzinfo=UTC)

# The table's top-level columns, in order, as AWS documents them.
AWS_COLUMNS = [
    "eventversion",
    "useridentity",
    "eventtime",
    "eventsource",
    "eventname",
    "awsregion",
    "sourceipaddress",
    "useragent",
    "errorcode",
    "errormessage",
    "requestparameters",
    "responseelements",
    "additionaleventdata",
    "requestid",
    "eventid",
    "readonly",
    "resources",
    "eventtype",
    "apiversion",
    "recipientaccountid",
    "serviceeventdetails",
    "sharedeventid",
    "vpcendpointid",
    "vpcendpointaccountid",
    "eventcategory",
    "addendum",
    "sessioncredentialfromconsole",
    "edgedevicedetails",
    "tlsdetails",
]


# moto's Athena runs no SQL: a StartQueryExecution takes the next injected result. What
# AWS's Athena does and moto's lacks is added here, the way moto answers the rest.
_CREATE_DATABASE = re.compile(r"CREATE DATABASE (?:IF NOT EXISTS )?`?(\w+)`?", re.IGNORECASE)
_CREATE_TABLE = re.compile(
    r"CREATE EXTERNAL TABLE (?:IF NOT EXISTS )?`?(\w+)`?\.`?(\w+)`?", re.IGNORECASE
)


def _paged_results(self: AthenaResponse) -> str:
    """GetQueryResults pages by MaxResults and NextToken (moto returns every row at once)."""
    results = self.athena_backend.get_query_results(self._get_param("QueryExecutionId"))
    size = int(self._get_param("MaxResults") or 1000)
    first = int(self._get_param("NextToken") or 0)
    body: dict[str, Any] = {
        "ResultSet": {
            "Rows": results.rows[first : first + size],
            "ResultSetMetadata": {"ColumnInfo": results.column_info},
        }
    }
    if first + size < len(results.rows):
        body["NextToken"] = str(first + size)
    return json.dumps(body)


def _catalog_ddl(original: Any) -> Any:
    """Athena's CREATE DATABASE and CREATE EXTERNAL TABLE write to the account's Glue Data
    Catalog, where Quench reads the table back (moto's Athena keeps them to itself, if at
    all). A table in a database that does not exist fails, as in AWS."""

    def call(self: AthenaBackend, query: str, *args: Any, **kwargs: Any) -> str:
        glue = glue_backends[self.account_id][self.region_name]
        statement = query.strip()
        if database := _CREATE_DATABASE.match(statement):
            if database.group(1) not in glue.databases:
                glue.create_database(database.group(1), {"Name": database.group(1)})
        elif table := _CREATE_TABLE.match(statement):
            database_name, table_name = table.groups()
            if table_name not in glue.get_database(database_name).tables:
                glue.create_table(database_name, table_name, _table_input(table_name, statement))
        return str(original(self, query, *args, **kwargs))

    return call


def _table_input(name: str, ddl: str) -> dict[str, Any]:
    """Glue's TableInput for a CREATE EXTERNAL TABLE: its partitions, location and
    TBLPROPERTIES."""
    partitioned = re.search(r"PARTITIONED BY \(([^)]*)\)", ddl)
    partitions = partitioned.group(1).split(",") if partitioned else []
    location = re.search(r"LOCATION '([^']*)'", ddl)
    properties = ddl.partition("TBLPROPERTIES")[2]
    return {
        "Name": name,
        "TableType": "EXTERNAL_TABLE",
        "StorageDescriptor": {"Location": location.group(1) if location else ""},
        "PartitionKeys": [{"Name": p.split()[0].strip("`"), "Type": "string"} for p in partitions],
        "Parameters": {"EXTERNAL": "TRUE"}
        | dict(re.findall(r"'([^']+)'\s*=\s*'([^']*)'", properties)),
    }


def _known_execution(original: Any) -> Any:
    """An execution id Athena does not know is an InvalidRequestException (moto: KeyError)."""

    def call(self: AthenaBackend, exec_id: str) -> Any:
        if exec_id not in self.executions:
            raise JsonRESTError("InvalidRequestException", f"QueryExecution {exec_id} not found")
        return original(self, exec_id)

    return call


@pytest.fixture
def athena(clients: AwsClients, monkeypatch: pytest.MonkeyPatch) -> Any:
    # botocore 1.44.18 moved Athena to the REST-JSON protocol (GET /query-executions/{id},
    # ...) where moto routes only the JSON protocol's POST to /. moto finds the operation
    # from the method and path by itself once the paths reach its Athena.
    monkeypatch.setitem(athena_urls.url_paths, "{0}/.+$", AthenaResponse.dispatch)
    monkeypatch.setattr(AthenaResponse, "get_query_results", _paged_results)
    start = AthenaBackend.start_query_execution
    monkeypatch.setattr(AthenaBackend, "start_query_execution", _catalog_ddl(start))
    for name in ("get_query_execution", "get_query_results"):
        original = getattr(AthenaBackend, name)
        monkeypatch.setattr(AthenaBackend, name, _known_execution(original))
    clients.client("s3").create_bucket(Bucket="quench-athena-results")
    return clients.client("athena")


def backend() -> AthenaBackend:
    return athena_backends[ACCOUNT][REGION]


def queries(kind: str = "SELECT") -> list[str]:
    """The statements moto was asked to run, of one kind."""
    return [e.query for e in backend().executions.values() if e.query.startswith(kind)]


def make_source(clients: AwsClients, **overrides: Any) -> AthenaSource:
    arguments: dict[str, Any] = {
        "database": DATABASE,
        "table": TABLE,
        "workgroup": "primary",
        "output_location": RESULTS,
        "regions": [REGION, "eu-west-1"],
        "bucket": TRAIL_BUCKET,
        "prefix": "org",
        "sleep": lambda _: None,
    } | overrides
    return AthenaSource(clients, **arguments)


@pytest.fixture
def source(athena: Any, clients: AwsClients) -> AthenaSource:
    """A source whose table exists (so the next StartQueryExecution is the SELECT)."""
    made = make_source(clients, page_size=3)
    made.ensure_table(ACCOUNT)
    return made


def record(event_id: str, at: str, key: str = STOLEN_KEY, **extra: Any) -> dict[str, Any]:
    """A record as CloudTrail writes it, with only fields the query selects."""
    return {
        "eventVersion": "1.09",
        "eventID": event_id,
        "eventTime": at,
        "eventSource": "iam.amazonaws.com",
        "eventName": "ListUsers",
        "awsRegion": REGION,
        "sourceIPAddress": "198.51.100.23",
        "userAgent": "aws-cli/2.15.30 Python/3.11.8 Linux/6.1",
        "requestID": f"req-{event_id}",
        "eventType": "AwsApiCall",
        "readOnly": True,
        "recipientAccountId": ACCOUNT,
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": "AROAEXAMPLEROLEID0001:i-0a1b2c3d4e5f60718",
            "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/web-app-role/i-0a1b2c3d4e5f60718",
            "accountId": ACCOUNT,
            "accessKeyId": key,
            "sessionContext": {
                "attributes": {"creationDate": "2026-11-22T06:12:09Z", "mfaAuthenticated": "false"},
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": "AROAEXAMPLEROLEID0001",
                    "arn": ROLE_ARN,
                    "accountId": ACCOUNT,
                    "userName": "web-app-role",
                },
            },
        },
        **extra,
    }


def row(values: dict[str, Any]) -> dict[str, Any]:
    """A record as Athena returns it: one VarCharValue a selected column, {} for NULL."""
    cells: list[dict[str, str]] = []
    for _, path in COLUMNS:
        value: Any = values
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            cells.append({})
        elif isinstance(value, bool):
            cells.append({"VarCharValue": "true" if value else "false"})
        elif isinstance(value, dict | list):
            cells.append({"VarCharValue": json.dumps(value)})
        else:
            cells.append({"VarCharValue": str(value)})
    return {"Data": cells}


HEADER = {"Data": [{"VarCharValue": column.rsplit(".", 1)[-1]} for column, _ in COLUMNS]}


def inject(records: list[dict[str, Any]], header: bool = True) -> None:
    """The next query's result, through moto's documented query-results API."""
    rows = ([HEADER] if header else []) + [row(r) for r in records]
    response = requests.post(
        "http://motoapi.amazonaws.com/moto-api/static/athena/query-results",
        json={"account_id": ACCOUNT, "region": REGION, "results": [{"rows": rows}]},
        timeout=5,
    )
    assert response.status_code == 201


def key_query(**changes: Any) -> TrailQuery:
    query = TrailQuery(ACCOUNT, frozenset({STOLEN_KEY, OTHER_KEY}), START, END)
    return dataclasses.replace(query, **changes)


# Seven rows the SQL would return; two of them matches() refuses.
IN_WINDOW = [
    record("e1", "2026-11-22T07:01:00Z", requestParameters={"userName": "alice"}),
    record("e2", "2026-11-22T07:02:00Z", key=OTHER_KEY, errorCode="AccessDenied"),
    record("e3", "2026-11-22T07:03:00Z", responseElements={"accessKey": {"status": "Active"}}),
    record("e5", "2026-11-22T07:05:00Z"),
    record("e6", "2026-11-22T07:06:00Z"),
]
REFUSED = [
    # Outside the window by a fraction the SQL's whole seconds do not see.
    record("e0", "2026-11-22T06:59:59Z"),
    # Another key: a pre-filter that was too wide must not widen the result.
    record("e4", "2026-11-22T07:04:00Z", key="AKIAUNRELATEDKEY0001"),
]
ROWS = sorted(IN_WINDOW + REFUSED, key=lambda r: (r["eventTime"], r["eventID"]))


# The table.


def test_the_table_is_awss_cloudtrail_table_projected_over_regions_and_days():
    ddl = cloudtrail_table_ddl(
        DATABASE, TABLE, TRAIL_BUCKET, "/org/", ACCOUNT, [REGION, "eu-west-1"]
    )
    assert ddl.startswith(f"CREATE EXTERNAL TABLE IF NOT EXISTS `{DATABASE}`.`{TABLE}` (")
    body = ddl.partition("(")[2].partition("\n)\nPARTITIONED BY")[0]
    top_level = re.findall(r"^    (\w+) ", body, re.MULTILINE)
    assert top_level == AWS_COLUMNS
    for nested in (
        "accesskeyid: STRING",
        "sessionissuer: STRUCT<",
        "creationdate: STRING",
        "requestparameters STRING",
        "responseelements STRING",
    ):
        assert nested in ddl
    assert "PARTITIONED BY (region STRING, `timestamp` STRING)" in ddl
    assert "ROW FORMAT SERDE 'org.apache.hive.hcatalog.data.JsonSerDe'" in ddl
    assert "STORED AS INPUTFORMAT 'com.amazon.emr.cloudtrail.CloudTrailInputFormat'" in ddl
    location = f"s3://{TRAIL_BUCKET}/org/AWSLogs/{ACCOUNT}/CloudTrail/"
    assert f"LOCATION '{location}'" in ddl
    properties = dict(re.findall(r"'([^']+)'='([^']*)'", ddl.partition("TBLPROPERTIES")[2]))
    assert properties == {
        "projection.enabled": "true",
        "projection.region.type": "enum",
        "projection.region.values": "us-east-1,eu-west-1",
        "projection.timestamp.type": "date",
        "projection.timestamp.format": "yyyy/MM/dd",
        "projection.timestamp.range": "2013/11/01,NOW",
        "projection.timestamp.interval": "1",
        "projection.timestamp.interval.unit": "DAYS",
        "storage.location.template": location + "${region}/${timestamp}",
    }


@pytest.mark.parametrize(
    "change",
    [
        {"bucket": "trail'; DROP TABLE x; --"},
        {"account_id": "12345"},
        {"regions": ["us-east-1'"]},
        {"regions": []},
        {"table": "cloud trail"},
        {"prefix": "logs'/"},
    ],
)
def test_the_table_ddl_refuses_values_aws_would_not_hold(change: dict[str, Any]):
    arguments: dict[str, Any] = {
        "database": DATABASE,
        "table": TABLE,
        "bucket": TRAIL_BUCKET,
        "prefix": "",
        "account_id": ACCOUNT,
        "regions": [REGION],
    } | change
    with pytest.raises(ApplicationError) as refused:
        cloudtrail_table_ddl(**arguments)
    assert refused.value.type == ERROR_INVALID_REQUEST and refused.value.non_retryable


def test_ensure_table_makes_the_database_and_table_once(athena: Any, clients: AwsClients):
    glue = clients.client("glue")
    with pytest.raises(glue.exceptions.EntityNotFoundException):
        glue.get_database(Name=DATABASE)
    assert make_source(clients).ensure_table(ACCOUNT) is True
    assert glue.get_table(DatabaseName=DATABASE, Name=TABLE)["Table"]["PartitionKeys"] == [
        {"Name": "region", "Type": "string"},
        {"Name": "timestamp", "Type": "string"},
    ]
    ddl = queries("CREATE EXTERNAL TABLE")
    assert ddl == [
        cloudtrail_table_ddl(DATABASE, TABLE, TRAIL_BUCKET, "org", ACCOUNT, [REGION, "eu-west-1"])
    ]
    # Another worker finds it, checks it, and runs nothing.
    assert make_source(clients).ensure_table(ACCOUNT) is False
    assert len(queries("CREATE")) == 2


def test_ensure_table_refuses_a_table_that_would_answer_with_nothing(
    athena: Any, clients: AwsClients
):
    # AWS's single-region table, partitioned by day only: Quench's queries name regions.
    single_region = re.sub(
        r"PARTITIONED BY \([^)]*\)",
        "PARTITIONED BY (`timestamp` STRING)",
        cloudtrail_table_ddl(DATABASE, TABLE, TRAIL_BUCKET, "", ACCOUNT, [REGION]),
    )
    athena.start_query_execution(QueryString=f"CREATE DATABASE {DATABASE}", WorkGroup="primary")
    athena.start_query_execution(QueryString=single_region, WorkGroup="primary")
    with pytest.raises(ApplicationError, match="partitioned by") as refused:
        make_source(clients).ensure_table(ACCOUNT)
    assert refused.value.non_retryable


def test_ensure_table_refuses_a_table_over_another_accounts_logs(athena: Any, clients: AwsClients):
    make_source(clients).ensure_table("210987654321")
    with pytest.raises(ApplicationError, match=f"account {ACCOUNT}"):
        make_source(clients).ensure_table(ACCOUNT)


def test_without_the_trail_bucket_a_missing_table_is_a_clear_error(
    athena: Any, clients: AwsClients
):
    with pytest.raises(ApplicationError, match="QUENCH_CLOUDTRAIL_BUCKET") as refused:
        make_source(clients, bucket=None).ensure_table(ACCOUNT)
    assert refused.value.non_retryable
    assert queries("CREATE") == []


# The SQL.


def test_the_sql_for_keys_narrows_by_partition_window_and_key(clients: AwsClients):
    source = make_source(clients)
    late = key_query(start=START.replace(hour=23), end=END.replace(hour=23, minute=50))
    sql = source.query_sql(late)
    assert sql is not None
    assert sql.startswith("SELECT\n    eventversion,\n    eventid,\n    eventtime,")
    assert f'FROM "{DATABASE}"."{TABLE}"' in sql
    assert "\"region\" IN ('eu-west-1', 'us-east-1')" in sql
    # A record of 23:50 can be in a file delivered after midnight.
    assert "\"timestamp\" BETWEEN '2026/11/22' AND '2026/11/23'" in sql
    assert "eventtime BETWEEN '2026-11-22T23:00:00Z' AND '2026-11-22T23:50:00Z'" in sql
    assert f"(useridentity.accesskeyid IN ('{OTHER_KEY}', '{STOLEN_KEY}'))" in sql
    assert "arn =" not in sql and "json_extract_scalar" not in sql
    assert sql.endswith("ORDER BY eventtime, eventid")


@pytest.mark.parametrize(
    ("change", "who"),
    [
        # A principal: the user, or any session of the role.
        (
            {"principal_arn": ROLE_ARN},
            [
                f"useridentity.arn = '{ROLE_ARN}'",
                f"useridentity.sessioncontext.sessionissuer.arn = '{ROLE_ARN}'",
            ],
        ),
        # Calls that name a key: the key as a JSON string in either document.
        (
            {"mentions": True},
            [
                f"strpos({document}, '\"{key}\"') > 0"
                for key in (OTHER_KEY, STOLEN_KEY)
                for document in ("requestparameters", "responseelements")
            ],
        ),
    ],
    ids=["principal", "mentions"],
)
def test_the_sql_asks_for_the_keys_calls_and_what_else_the_query_wants(
    clients: AwsClients, change: dict[str, Any], who: list[str]
):
    sql = make_source(clients).query_sql(key_query(**change))
    assert sql is not None
    keys = f"useridentity.accesskeyid IN ('{OTHER_KEY}', '{STOLEN_KEY}')"
    assert "(" + " OR ".join([keys, *who]) + ")" in sql


def test_the_sql_for_a_resource_reads_the_request_parameters_that_matches_reads(
    clients: AwsClients,
):
    query = key_query(
        access_key_ids=frozenset(),
        resource_name="backdoor-admin",
        event_names=frozenset({"CreateUser", "CreateRole"}),
    )
    sql = make_source(clients).query_sql(query)
    assert sql is not None
    for field in _RESOURCE_PARAMETERS:
        assert f"json_extract_scalar(requestparameters, '$.{field}') = 'backdoor-admin'" in sql
    assert "eventname IN ('CreateRole', 'CreateUser')" in sql
    assert "accesskeyid" not in sql.partition("WHERE")[2]


def test_the_sql_for_event_names_alone_reads_every_caller_of_them(clients: AwsClients):
    query = key_query(
        access_key_ids=frozenset(), event_names=frozenset({"CreateUser", "RunInstances"})
    )
    sql = make_source(clients).query_sql(query)
    assert sql is not None
    where = sql.partition("WHERE")[2]
    assert "eventname IN ('CreateUser', 'RunInstances')" in where
    assert "accesskeyid" not in where and "json_extract_scalar" not in where


def test_a_query_for_nothing_runs_no_sql(clients: AwsClients):
    assert make_source(clients).query_sql(key_query(access_key_ids=frozenset())) is None


@pytest.mark.parametrize(
    "change",
    [
        {"access_key_ids": frozenset({"AKIA' OR '1'='1"})},
        {"access_key_ids": frozenset({"ASIA\\' OR 1=1 --"})},
        {"principal_arn": f"arn:aws:iam::{ACCOUNT}:role/x' OR 'a'='a"},
        {"principal_arn": "not-an-arn"},
        {"access_key_ids": frozenset(), "resource_name": "x') OR (1=1"},
        {
            "access_key_ids": frozenset(),
            "resource_name": "backdoor",
            "event_names": frozenset({"CreateUser' --"}),
        },
        {"access_key_ids": frozenset(), "event_names": frozenset({"CreateUser') OR (1=1"})},
    ],
)
def test_the_sql_refuses_values_that_are_not_ids_arns_or_names(
    clients: AwsClients, change: dict[str, Any]
):
    with pytest.raises(ApplicationError, match="refusing") as refused:
        make_source(clients).query_sql(key_query(**change))
    assert refused.value.type == ERROR_INVALID_REQUEST and refused.value.non_retryable


# Reading the results.


def test_pages_rebuild_the_records_matches_accepts_page_by_page(source: AthenaSource, athena: Any):
    inject(ROWS)
    query = key_query()
    pages = list(source.pages(query, None))

    (sql,) = queries()
    assert sql == source.query_sql(query)
    (execution,) = [e for e in backend().executions.values() if e.query == sql]
    assert execution.workgroup is not None and execution.workgroup.name == "primary"
    assert execution.config["OutputLocation"].startswith(RESULTS)
    # The query's start is heartbeated before any row, then one page a GetQueryResults
    # page: the header and e0, e1; e2 to e4; e5, e6 (matches() drops e0 and e4).
    assert [len(found) for _, found in pages] == [0, 1, 2, 2]
    tokens = [cursor["token"] for cursor, _ in pages]
    assert tokens == [None, "3", "6", None]
    assert [cursor["pages"] for cursor, _ in pages] == [0, 1, 2, 3]
    assert pages[-1][0]["after"] == ["2026-11-22T07:06:00Z", "e6"]
    found = [r for _, page in pages for r in page]
    assert found == IN_WINDOW
    # The nested fields come back as CloudTrail wrote them.
    assert found[0]["requestParameters"] == {"userName": "alice"}
    assert found[0]["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"] == ROLE_ARN
    assert found[0]["readOnly"] is True
    assert "responseElements" not in found[0] and "errorCode" not in found[0]


def test_a_retry_reads_on_from_its_cursor_without_running_the_query_again(
    source: AthenaSource, athena: Any, clients: AwsClients
):
    inject(ROWS)
    query = key_query()
    first_attempt = source.pages(query, None)
    read = [next(first_attempt) for _ in range(3)]  # started, then two pages
    cursor = json.loads(json.dumps(read[-1][0]))  # as a heartbeat carries it

    retry = make_source(clients, page_size=3)  # another worker
    rest = list(retry.pages(query, cursor))

    assert len(queries()) == 1
    assert [r for _, page in read for r in page] + [r for _, page in rest for r in page] == (
        IN_WINDOW
    )
    # A cursor past the last page reads nothing more.
    assert list(retry.pages(query, rest[-1][0])) == []


def test_a_retry_whose_execution_athena_no_longer_has_reads_the_rows_after_the_last_one(
    source: AthenaSource, athena: Any
):
    inject(ROWS)
    query = key_query()
    first_attempt = source.pages(query, None)
    read = [next(first_attempt) for _ in range(2)]  # started, then the first page
    cursor = json.loads(json.dumps(read[-1][0]))
    (first,) = queries()
    del backend().executions[cursor["execution"]]  # expired
    inject(ROWS[2:])  # what the new query returns

    rest = list(source.pages(query, cursor))

    (again,) = queries()
    narrowed = first.removesuffix("\nORDER BY eventtime, eventid")
    assert again == (
        f"{narrowed}\n  AND (eventtime > '2026-11-22T07:01:00Z'"
        " OR (eventtime = '2026-11-22T07:01:00Z' AND eventid > 'e1'))"
        "\nORDER BY eventtime, eventid"
    )
    assert [r for _, page in read for r in page] + [r for _, page in rest for r in page] == (
        IN_WINDOW
    )


def test_the_query_is_polled_with_backoff_and_the_cursor_carried_while_it_runs(
    source: AthenaSource, athena: Any, clients: AwsClients
):
    slept: list[float] = []
    polling = make_source(clients, sleep=slept.append, page_size=1000)
    inject(ROWS)
    state_manager.set_transition("athena::execution", {"progression": "manual", "times": 2})
    try:
        pages = list(polling.pages(key_query(), None))
    finally:
        state_manager.unset_transition("athena::execution")
    # QUEUED, RUNNING, RUNNING, then SUCCEEDED: the running looks carry the cursor.
    assert slept == [0.5, 1.0, 2.0]
    assert [len(found) for _, found in pages] == [0, 0, 0, 0, len(IN_WINDOW)]
    execution = pages[0][0]["execution"]
    assert all(cursor["execution"] == execution for cursor, _ in pages)


def test_a_failed_query_is_a_clear_error_not_retried_when_the_query_is_at_fault(
    source: AthenaSource, athena: Any
):
    reason = "TABLE_NOT_FOUND: line 5:6: Table 'awsdatacatalog.quench.cloudtrail' does not exist"

    def fail(parsed: dict[str, Any], **_: Any) -> None:
        backend().executions[parsed["QueryExecutionId"]].status = "FAILED"

    def explain(parsed: dict[str, Any], **_: Any) -> None:
        # What AWS says of a failed query and moto does not.
        parsed["QueryExecution"]["Status"] |= {
            "StateChangeReason": reason,
            "AthenaError": {"ErrorCategory": 2, "ErrorType": 1301, "Retryable": False},
        }

    athena.meta.events.register("after-call.athena.StartQueryExecution", fail)
    athena.meta.events.register("after-call.athena.GetQueryExecution", explain)
    with pytest.raises(ApplicationError) as failed:
        list(source.pages(key_query(), None))
    assert failed.value.type == ERROR_INVALID_REQUEST and failed.value.non_retryable
    (execution,) = [e.id for e in backend().executions.values() if e.query.startswith("SELECT")]
    assert failed.value.message == f"Athena query {execution} failed: {reason}"


@pytest.mark.parametrize(
    ("athena_error", "kind", "retried"),
    [
        ({"ErrorCategory": 2, "ErrorType": 1301, "Retryable": False}, ERROR_INVALID_REQUEST, False),
        ({"ErrorCategory": 1, "ErrorType": 100, "Retryable": True}, ERROR_UNAVAILABLE, True),
        ({"ErrorCategory": 1, "ErrorType": 0, "Retryable": False}, ERROR_OTHER, False),
        (None, ERROR_OTHER, True),
    ],
)
def test_a_failed_query_is_retried_as_athena_says(
    athena_error: dict[str, Any] | None, kind: str, retried: bool
):
    status: dict[str, Any] = {"State": "FAILED", "StateChangeReason": "it broke"}
    if athena_error:
        status["AthenaError"] = athena_error
    error = query_failure("q-1", status)
    assert (error.type, error.non_retryable) == (kind, not retried)


def test_scan_through_athena_resumes_after_a_failed_read_without_a_second_query(
    source: AthenaSource, athena: Any, clients: AwsClients
):
    """The activity path: scan() heartbeats each page's cursor; a throttled read fails the
    attempt, and the retry reads on from the heartbeat."""
    inject(ROWS)
    reads = 0

    def throttle_the_third(**_: Any) -> None:
        nonlocal reads
        reads += 1
        if reads == 3:
            error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
            raise ClientError(error, "GetQueryResults")  # type: ignore[arg-type]

    athena.meta.events.register("before-call.athena.GetQueryResults", throttle_the_third)
    first_attempt = ActivityEnvironment()
    beats: list[Any] = []
    first_attempt.on_heartbeat = lambda *details: beats.append(json.loads(json.dumps(details)))
    query = key_query()
    with pytest.raises(ApplicationError) as throttled:
        first_attempt.run(scan, source, query)
    assert throttled.value.type == ERROR_THROTTLED and not throttled.value.non_retryable

    retry = ActivityEnvironment()
    retry.info = dataclasses.replace(retry.info, heartbeat_details=beats[-1])
    records = retry.run(scan, make_source(clients, page_size=3), query)

    assert records == IN_WINDOW
    assert len(queries()) == 1


# Configuration.


def _athena_settings(**changes: Any) -> Settings:
    values: dict[str, Any] = {
        "account_id": "123456789012",
        "evidence_bucket": "evidence",
        "cloudtrail_source": "athena",
        "athena_database": DATABASE,
        "athena_table": TABLE,
        "athena_output_location": RESULTS,
    } | changes
    return Settings(**values)


@pytest.mark.parametrize("missing", ["athena_database", "athena_table", "athena_output_location"])
def test_the_athena_source_needs_its_table_and_a_place_for_results(missing: str):
    settings = _athena_settings(**{missing: None})
    with pytest.raises(ValueError, match=f"QUENCH_{missing.upper()}"):
        settings.require_aws_targets()


@pytest.mark.parametrize(
    "bad",
    [
        {"athena_output_location": "https://example.com/results"},
        {"athena_table": "cloudtrail; DROP"},
        {"athena_workgroup": "primary'"},
    ],
)
def test_athena_settings_are_refused_at_start_unless_well_formed(bad: dict[str, Any]):
    with pytest.raises(ValueError):
        _athena_settings(**bad)


def test_the_worker_reads_cloudtrail_through_athena_when_configured():
    clients = AwsClients(boto3.Session(region_name=REGION), REGION)
    settings = _athena_settings(cloudtrail_regions=[REGION, "eu-west-1"])
    activities = {fn.__name__: fn for fn in build_activities(settings, clients)}
    sources = activities["capture_cloudtrail_slice"].__self__._source  # type: ignore[attr-defined]
    trail = sources.source_for("123456789012")
    assert isinstance(trail, AthenaSource)
    assert (trail.database, trail.table, trail.workgroup) == (DATABASE, TABLE, "primary")
    assert trail.regions == [REGION, "eu-west-1"]
