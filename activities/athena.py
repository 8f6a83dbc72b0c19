"""CloudTrail through Athena, for accounts whose trail is too large to read file by file: a
table over the trail's bucket with partition projection (region and day), one query per
TrailQuery, and its results read page by page.

The SQL only narrows what Athena reads: every row is rebuilt as the record CloudTrail wrote,
and TrailQuery.matches decides, as it does for the other sources.
"""

import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date
from typing import Any

from botocore.exceptions import ClientError
from temporalio.exceptions import ApplicationError

from activities.aws import (
    ERROR_INVALID_REQUEST,
    ERROR_OTHER,
    ERROR_UNAVAILABLE,
    AwsClients,
    aws_errors,
    error_code,
)
from activities.cloudtrail import (
    _RESOURCE_PARAMETERS,
    DELIVERY_MARGIN,
    EARLY_STAMP,
    Cursor,
    TrailQuery,
    trails_not_logging,
)

# Partition projection needs a first day; CloudTrail began in November 2013. Queries always
# name their days, so a long range costs nothing.
PROJECTION_START = date(2013, 11, 1)
PAGE_SIZE = 1000  # GetQueryResults' maximum
ATHENA_USER_ERROR = 2  # AthenaError.ErrorCategory: 1 system, 2 user, 3 other

# Values a query may hold, by what AWS allows in them. A value outside its set is refused,
# never escaped: none of these sets holds a quote or a backslash.
ACCOUNT_ID = re.compile(r"\d{12}")
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
ACCESS_KEY_ID = re.compile(r"[A-Za-z0-9_]{16,128}")
ARN = re.compile(r"arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:\d{12}:[A-Za-z0-9+=,.@_/:-]{1,1600}")
# IAM, Lambda and CloudTrail names, and ARNs (a policyArn, a function or trail ARN).
RESOURCE_NAME = re.compile(r"[A-Za-z0-9+=,.@_/:-]{1,2048}")
EVENT_NAME = re.compile(r"[A-Za-z0-9]{1,128}")
EVENT_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
EVENT_ID = re.compile(r"[A-Za-z0-9-]{1,128}")
SQL_NAME = re.compile(r"[A-Za-z0-9_]{1,255}")  # Athena database and table names
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
KEY_PREFIX = re.compile(r"[A-Za-z0-9!_.*()/-]{0,512}")
OUTPUT_LOCATION = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s']*)?")
WORKGROUP = re.compile(r"[A-Za-z0-9._-]{1,128}")


def checked(value: str, allowed: re.Pattern[str], what: str) -> str:
    """The value, if it is made only of what AWS allows in one."""
    if not allowed.fullmatch(value):
        raise ApplicationError(
            f"refusing {what} {value[:100]!r} in Athena SQL: not a valid {what}",
            type=ERROR_INVALID_REQUEST,
            non_retryable=True,
        )
    return value


def literal(value: str, allowed: re.Pattern[str], what: str) -> str:
    return f"'{checked(value, allowed, what)}'"


def literals(values: Iterable[str], allowed: re.Pattern[str], what: str) -> str:
    return ", ".join(literal(v, allowed, what) for v in sorted(values))


def cloudtrail_table_ddl(
    database: str,
    table: str,
    bucket: str,
    prefix: str,
    account_id: str,
    regions: list[str],
    since: date = PROJECTION_START,
) -> str:
    """The CREATE EXTERNAL TABLE for one account's trail, in the shape AWS documents for
    CloudTrail logs with partition projection, projected over regions as well as days:
    s3://bucket/prefix/AWSLogs/<account>/CloudTrail/${region}/${timestamp}.

    AWS's current page pairs the CloudTrail input format with the Hive JSON SerDe (an
    earlier revision used com.amazon.emr.hive.serde.CloudTrailSerde); Quench follows the
    current page. requestparameters, responseelements and additionaleventdata are strings
    holding the record's JSON."""
    base = f"s3://{checked(bucket, BUCKET, 'bucket name')}/"
    if prefix.strip("/"):
        base += checked(prefix.strip("/"), KEY_PREFIX, "key prefix") + "/"
    location = f"{base}AWSLogs/{checked(account_id, ACCOUNT_ID, 'account id')}/CloudTrail/"
    projected = ",".join(checked(r, REGION, "region") for r in regions)
    if not projected:
        raise ApplicationError(
            "an Athena CloudTrail table needs at least one region",
            type=ERROR_INVALID_REQUEST,
            non_retryable=True,
        )
    name = f"`{checked(database, SQL_NAME, 'database')}`.`{checked(table, SQL_NAME, 'table')}`"
    return f"""CREATE EXTERNAL TABLE IF NOT EXISTS {name} (
    eventversion STRING,
    useridentity STRUCT<
        type: STRING,
        principalid: STRING,
        arn: STRING,
        accountid: STRING,
        invokedby: STRING,
        accesskeyid: STRING,
        username: STRING,
        onbehalfof: STRUCT<
            userid: STRING,
            identitystorearn: STRING>,
        sessioncontext: STRUCT<
            attributes: STRUCT<
                mfaauthenticated: STRING,
                creationdate: STRING>,
            sessionissuer: STRUCT<
                type: STRING,
                principalid: STRING,
                arn: STRING,
                accountid: STRING,
                username: STRING>,
            ec2roledelivery: STRING,
            webidfederationdata: STRUCT<
                federatedprovider: STRING,
                attributes: MAP<STRING, STRING>>>>,
    eventtime STRING,
    eventsource STRING,
    eventname STRING,
    awsregion STRING,
    sourceipaddress STRING,
    useragent STRING,
    errorcode STRING,
    errormessage STRING,
    requestparameters STRING,
    responseelements STRING,
    additionaleventdata STRING,
    requestid STRING,
    eventid STRING,
    readonly STRING,
    resources ARRAY<STRUCT<
        arn: STRING,
        accountid: STRING,
        type: STRING>>,
    eventtype STRING,
    apiversion STRING,
    recipientaccountid STRING,
    serviceeventdetails STRING,
    sharedeventid STRING,
    vpcendpointid STRING,
    vpcendpointaccountid STRING,
    eventcategory STRING,
    addendum STRUCT<
        reason: STRING,
        updatedfields: STRING,
        originalrequestid: STRING,
        originaleventid: STRING>,
    sessioncredentialfromconsole STRING,
    edgedevicedetails STRING,
    tlsdetails STRUCT<
        tlsversion: STRING,
        ciphersuite: STRING,
        clientprovidedhostheader: STRING>
)
PARTITIONED BY (region STRING, `timestamp` STRING)
ROW FORMAT SERDE 'org.apache.hive.hcatalog.data.JsonSerDe'
STORED AS INPUTFORMAT 'com.amazon.emr.cloudtrail.CloudTrailInputFormat'
OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat'
LOCATION '{location}'
TBLPROPERTIES (
    'projection.enabled'='true',
    'projection.region.type'='enum',
    'projection.region.values'='{projected}',
    'projection.timestamp.type'='date',
    'projection.timestamp.format'='yyyy/MM/dd',
    'projection.timestamp.range'='{since:%Y/%m/%d},NOW',
    'projection.timestamp.interval'='1',
    'projection.timestamp.interval.unit'='DAYS',
    'storage.location.template'='{location}${{region}}/${{timestamp}}'
)"""


# What the query selects, and where each value goes in the rebuilt record: the fields
# Quench reads (classification, the watch, the investigation, recovery), named as
# CloudTrail writes them.
COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("eventversion", ("eventVersion",)),
    ("eventid", ("eventID",)),
    ("eventtime", ("eventTime",)),
    ("eventsource", ("eventSource",)),
    ("eventname", ("eventName",)),
    ("awsregion", ("awsRegion",)),
    ("sourceipaddress", ("sourceIPAddress",)),
    ("useragent", ("userAgent",)),
    ("errorcode", ("errorCode",)),
    ("errormessage", ("errorMessage",)),
    ("requestparameters", ("requestParameters",)),
    ("responseelements", ("responseElements",)),
    ("additionaleventdata", ("additionalEventData",)),
    ("requestid", ("requestID",)),
    ("eventtype", ("eventType",)),
    ("readonly", ("readOnly",)),
    ("recipientaccountid", ("recipientAccountId",)),
    ("useridentity.type", ("userIdentity", "type")),
    ("useridentity.principalid", ("userIdentity", "principalId")),
    ("useridentity.arn", ("userIdentity", "arn")),
    ("useridentity.accountid", ("userIdentity", "accountId")),
    ("useridentity.accesskeyid", ("userIdentity", "accessKeyId")),
    ("useridentity.username", ("userIdentity", "userName")),
    ("useridentity.invokedby", ("userIdentity", "invokedBy")),
    (
        "useridentity.sessioncontext.attributes.creationdate",
        ("userIdentity", "sessionContext", "attributes", "creationDate"),
    ),
    (
        "useridentity.sessioncontext.attributes.mfaauthenticated",
        ("userIdentity", "sessionContext", "attributes", "mfaAuthenticated"),
    ),
    (
        "useridentity.sessioncontext.sessionissuer.type",
        ("userIdentity", "sessionContext", "sessionIssuer", "type"),
    ),
    (
        "useridentity.sessioncontext.sessionissuer.principalid",
        ("userIdentity", "sessionContext", "sessionIssuer", "principalId"),
    ),
    (
        "useridentity.sessioncontext.sessionissuer.arn",
        ("userIdentity", "sessionContext", "sessionIssuer", "arn"),
    ),
    (
        "useridentity.sessioncontext.sessionissuer.accountid",
        ("userIdentity", "sessionContext", "sessionIssuer", "accountId"),
    ),
    (
        "useridentity.sessioncontext.sessionissuer.username",
        ("userIdentity", "sessionContext", "sessionIssuer", "userName"),
    ),
)
_JSON_FIELDS = frozenset({"requestParameters", "responseElements", "additionalEventData"})
_TIME_COLUMN = [column for column, _ in COLUMNS].index("eventtime")
_ID_COLUMN = [column for column, _ in COLUMNS].index("eventid")


def trail_query_sql(
    database: str,
    table: str,
    regions: list[str],
    query: TrailQuery,
    after: tuple[str, str] | None = None,
) -> str | None:
    """The SELECT for a TrailQuery, in (eventtime, eventid) order, or None when nothing can
    match. It narrows by the partitions (regions, and the days whose files can hold the
    window's records), the window, and who or what the query asks for; `after` resumes past
    a row already read."""
    if (
        query.resource_name is None
        and not query.access_key_ids
        and not query.principal_arn
        and not query.by_event_name()
    ):
        return None
    if not regions:
        return None
    start, end = query.start.astimezone(UTC), query.end.astimezone(UTC)
    # A record sits in a file stamped up to DELIVERY_MARGIN after it (as for the S3 scan).
    first_day = (start - EARLY_STAMP).strftime("%Y/%m/%d")
    last_day = (end + DELIVERY_MARGIN).strftime("%Y/%m/%d")
    conditions = [
        f'"region" IN ({literals(regions, REGION, "region")})',
        f"\"timestamp\" BETWEEN '{first_day}' AND '{last_day}'",
        # CloudTrail writes whole seconds; the window's own fractions are left to matches().
        f"eventtime BETWEEN '{start:%Y-%m-%dT%H:%M:%SZ}' AND '{end:%Y-%m-%dT%H:%M:%SZ}'",
    ]
    if query.by_event_name():
        events = literals(query.event_names, EVENT_NAME, "event name")
        conditions.append(f"eventname IN ({events})")
    elif query.resource_name is None:
        who = []
        if query.access_key_ids:
            keys = literals(query.access_key_ids, ACCESS_KEY_ID, "access key id")
            who.append(f"useridentity.accesskeyid IN ({keys})")
        if query.mentions:
            # The key as a JSON string anywhere in the two documents (a pre-filter, as the
            # S3 scan's byte search is: matches() decides).
            for key in sorted(query.access_key_ids):
                quoted = f"'\"{checked(key, ACCESS_KEY_ID, 'access key id')}\"'"
                who.append(f"strpos(requestparameters, {quoted}) > 0")
                who.append(f"strpos(responseelements, {quoted}) > 0")
        if query.principal_arn:
            principal = literal(query.principal_arn, ARN, "principal ARN")
            who.append(f"useridentity.arn = {principal}")
            who.append(f"useridentity.sessioncontext.sessionissuer.arn = {principal}")
        conditions.append("(" + " OR ".join(who) + ")")
    else:
        name = literal(query.resource_name, RESOURCE_NAME, "resource name")
        named = " OR ".join(
            f"json_extract_scalar(requestparameters, '$.{field}') = {name}"
            for field in _RESOURCE_PARAMETERS
        )
        conditions.append(f"({named})")
        if query.event_names:
            events = literals(query.event_names, EVENT_NAME, "event name")
            conditions.append(f"eventname IN ({events})")
    if after is not None:
        at = literal(after[0], EVENT_TIME, "event time")
        event_id = literal(after[1], EVENT_ID, "event id")
        conditions.append(f"(eventtime > {at} OR (eventtime = {at} AND eventid > {event_id}))")
    columns = ",\n    ".join(column for column, _ in COLUMNS)
    source = f'"{checked(database, SQL_NAME, "database")}"."{checked(table, SQL_NAME, "table")}"'
    where = "\n  AND ".join(conditions)
    return f"SELECT\n    {columns}\nFROM {source}\nWHERE {where}\nORDER BY eventtime, eventid"


def rebuild(values: list[str | None]) -> dict[str, Any]:
    """A record as CloudTrail wrote it from one result row (COLUMNS' order); a NULL is a
    field the record did not have."""
    if len(values) != len(COLUMNS):
        raise ApplicationError(
            f"Athena returned {len(values)} columns, expected {len(COLUMNS)}",
            type=ERROR_OTHER,
            non_retryable=True,
        )
    record: dict[str, Any] = {}
    for (_, path), value in zip(COLUMNS, values, strict=True):
        if value is None:
            continue
        node = record
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = _field(path[-1], value)
    return record


def _field(name: str, value: str) -> Any:
    if name in _JSON_FIELDS:
        try:
            return json.loads(value)
        except ValueError:
            return value  # the record held a string there, which the SerDe gives unquoted
    if name == "readOnly":
        return value == "true"
    return value


def _values(row: dict[str, Any]) -> list[str | None]:
    return [cell.get("VarCharValue") for cell in row.get("Data", [])]


def query_failure(execution_id: str, status: dict[str, Any]) -> ApplicationError:
    """A FAILED execution in the AWS error taxonomy: a user error (bad SQL, a missing table,
    no access to the bucket) is surfaced, not retried; what Athena calls retryable is."""
    error = status.get("AthenaError") or {}
    reason = status.get("StateChangeReason") or error.get("ErrorMessage") or "no reason given"
    if error.get("ErrorCategory") == ATHENA_USER_ERROR:
        kind, retryable = ERROR_INVALID_REQUEST, False
    elif error.get("Retryable") is True:
        kind, retryable = ERROR_UNAVAILABLE, True
    elif error.get("Retryable") is False:
        kind, retryable = ERROR_OTHER, False
    else:
        kind, retryable = ERROR_OTHER, True
    return ApplicationError(
        f"Athena query {execution_id} failed: {reason}",
        {"query_execution_id": execution_id, "athena_error": error},
        type=kind,
        non_retryable=not retryable,
    )


class _ExecutionGone(Exception):
    """Athena no longer has a resumed execution or its results."""


@dataclass
class _Position:
    """Where a read is: the execution, the NextToken of the page to read, how many pages
    were read, and the (eventtime, eventid) of the last row read."""

    execution: str | None = None
    token: str | None = None
    pages: int = 0
    after: tuple[str, str] | None = None

    @classmethod
    def from_cursor(cls, cursor: Cursor | None) -> "_Position":
        if not cursor:
            return cls()
        after = cursor.get("after")
        return cls(
            execution=cursor.get("execution"),
            token=cursor.get("token"),
            pages=int(cursor.get("pages", 0)),
            after=(str(after[0]), str(after[1])) if after else None,
        )

    @property
    def finished(self) -> bool:
        return self.execution is not None and self.pages > 0 and self.token is None

    def cursor(self) -> Cursor:
        return {
            "execution": self.execution,
            "token": self.token,
            "pages": self.pages,
            "after": list(self.after) if self.after else None,
        }

    def start_over(self) -> None:
        """A new query for the rows after the last one read."""
        self.execution, self.token, self.pages = None, None, 0


class AthenaSource:
    """CloudTrail records from an Athena table over the trail's bucket (see
    cloudtrail_table_ddl), made on first use when the trail's bucket is known."""

    def __init__(
        self,
        clients: AwsClients,
        database: str,
        table: str,
        workgroup: str,
        output_location: str,
        regions: list[str],
        bucket: str | None = None,
        prefix: str = "",
        page_size: int = PAGE_SIZE,
        sleep: Callable[[float], None] = time.sleep,
        first_poll_seconds: float = 0.5,
        max_poll_seconds: float = 5.0,
    ) -> None:
        self._clients = clients
        self.database = checked(database, SQL_NAME, "database")
        self.table = checked(table, SQL_NAME, "table")
        self.workgroup = checked(workgroup, WORKGROUP, "workgroup")
        self.output_location = checked(output_location, OUTPUT_LOCATION, "output location")
        self.regions = [checked(r, REGION, "region") for r in regions]
        self.bucket = bucket
        self.prefix = prefix
        self.description = f"athena:{self.database}.{self.table} (workgroup {self.workgroup})"
        self._page_size = page_size
        self._sleep = sleep
        self._first_poll = first_poll_seconds
        self._max_poll = max_poll_seconds
        self._ready: set[str] = set()
        self._lock = threading.Lock()

    def not_logging(self) -> list[str]:
        """The trails delivering to the table's bucket that are not logging (none known
        when the source is not told the bucket)."""
        return trails_not_logging(self._clients, self.bucket, self.prefix)

    def _athena(self) -> Any:
        return self._clients.client("athena")

    def _glue(self) -> Any:
        return self._clients.client("glue")

    def query_sql(self, query: TrailQuery, after: tuple[str, str] | None = None) -> str | None:
        return trail_query_sql(self.database, self.table, self._regions(query), query, after)

    def _regions(self, query: TrailQuery) -> list[str]:
        # A read split by region names its regions; otherwise every region the source reads.
        return query.in_regions(self.regions)

    def ensure_table(self, account_id: str) -> bool:
        """The account's table, checked once per process: made (with its database) when
        missing, refused when it is not Quench's shape for this account and these regions.
        True when this call made it. Creating is idempotent: the DDL says IF NOT EXISTS."""
        with self._lock:
            if account_id in self._ready:
                return False
            metadata = self._table_metadata()
            if metadata is None:
                self._create_table(account_id)
            else:
                self._check_table(metadata, account_id)
            self._ready.add(account_id)
            return metadata is None

    def _table_metadata(self) -> dict[str, Any] | None:
        """The table as the Glue Data Catalog holds it, or None when it or its database is
        missing. The AwsDataCatalog that Quench's queries name is the account's Glue catalog
        in the region, and Athena's own GetTableMetadata needs glue:GetTable to relay it."""
        with aws_errors(f"read the Athena table {self.database}.{self.table}"):
            try:
                response = self._glue().get_table(DatabaseName=self.database, Name=self.table)
            except ClientError as exc:
                if error_code(exc) == "EntityNotFoundException":
                    return None
                raise
        return dict(response["Table"])

    def _create_table(self, account_id: str) -> None:
        if not self.bucket:
            raise ApplicationError(
                f"the Athena table {self.database}.{self.table} does not exist: set "
                "QUENCH_CLOUDTRAIL_BUCKET so the worker makes it, or create it with "
                "activities.athena.cloudtrail_table_ddl",
                type=ERROR_INVALID_REQUEST,
                non_retryable=True,
            )
        ddl = cloudtrail_table_ddl(
            self.database, self.table, self.bucket, self.prefix, account_id, self.regions
        )
        if not self._database_exists():
            self._run(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
        self._run(ddl)

    def _database_exists(self) -> bool:
        with aws_errors(f"read the Athena database {self.database}"):
            try:
                self._glue().get_database(Name=self.database)
            except ClientError as exc:
                if error_code(exc) == "EntityNotFoundException":
                    return False
                raise
        return True

    def _check_table(self, metadata: dict[str, Any], account_id: str) -> None:
        """Refuse a table that would answer with nothing rather than with the records: not
        partitioned as Quench's, over another account's logs, or missing regions."""
        name = f"{self.database}.{self.table}"
        partitions = [p.get("Name") for p in metadata.get("PartitionKeys", [])]
        parameters = metadata.get("Parameters", {})
        template = str(parameters.get("storage.location.template", ""))
        projected = set(str(parameters.get("projection.region.values", "")).split(","))
        problem = None
        if partitions != ["region", "timestamp"]:
            problem = f"is partitioned by {partitions}, not by region and timestamp"
        elif f"/{account_id}/CloudTrail/" not in template:
            problem = f"does not read account {account_id}'s logs ({template or 'no template'})"
        elif missing := sorted(set(self.regions) - projected):
            problem = f"does not project regions {missing}"
        if problem:
            raise ApplicationError(
                f"the Athena table {name} {problem}: drop it so the worker makes it again, "
                "or name another with QUENCH_ATHENA_TABLE",
                type=ERROR_INVALID_REQUEST,
                non_retryable=True,
            )

    def _run(self, sql: str) -> None:
        """A statement (DDL), to its end."""
        execution = self._start(sql)
        for _ in self._wait(execution, resumed=False):
            pass

    def _start(self, sql: str) -> str:
        with aws_errors(f"start an Athena query on {self.database}.{self.table}"):
            response = self._athena().start_query_execution(
                QueryString=sql,
                # Every statement names its database: the first makes it.
                QueryExecutionContext={"Catalog": "AwsDataCatalog"},
                ResultConfiguration={"OutputLocation": self.output_location},
                WorkGroup=self.workgroup,
            )
        return str(response["QueryExecutionId"])

    def _wait(self, execution: str, resumed: bool) -> Iterator[None]:
        """Polls the execution with backoff until it ends, yielding after each look that finds
        it still queued or running (the caller heartbeats)."""
        delay = self._first_poll
        while True:
            with aws_errors(f"read the Athena query {execution}"):
                try:
                    response = self._athena().get_query_execution(QueryExecutionId=execution)
                except ClientError as exc:
                    # An execution id Athena does not know (any more).
                    if resumed and error_code(exc) == "InvalidRequestException":
                        raise _ExecutionGone from exc
                    raise
            status = response["QueryExecution"]["Status"]
            state = status["State"]
            if state == "SUCCEEDED":
                return
            if state in ("FAILED", "CANCELLED") and resumed:
                # A retry after a retryable failure, or after someone cancelled it.
                raise _ExecutionGone
            if state == "FAILED":
                raise query_failure(execution, status)
            if state == "CANCELLED":
                raise ApplicationError(
                    f"Athena query {execution} was cancelled", type=ERROR_UNAVAILABLE
                )
            yield
            self._sleep(delay)
            delay = min(delay * 2, self._max_poll)

    def _results(self, position: _Position, resumed: bool) -> dict[str, Any]:
        request: dict[str, Any] = {
            "QueryExecutionId": position.execution,
            "MaxResults": self._page_size,
        }
        if position.token:
            request["NextToken"] = position.token
        with aws_errors(f"read the results of the Athena query {position.execution}"):
            try:
                return dict(self._athena().get_query_results(**request))
            except ClientError as exc:
                if resumed and error_code(exc) == "InvalidRequestException":
                    raise _ExecutionGone from exc
                raise

    def pages(
        self, query: TrailQuery, cursor: Cursor | None
    ) -> Iterator[tuple[Cursor, list[dict[str, Any]]]]:
        """One page a GetQueryResults page, the query's records in (eventtime, eventid)
        order. The cursor names the execution and the NextToken of the next page, so a retry
        reads on without running the query again; if Athena no longer has the execution or
        its results, a new query reads the rows after the last one read. While the query
        runs, empty pages carry the cursor (so it is heartbeated)."""
        position = _Position.from_cursor(cursor)
        if position.finished:
            return
        resumed = position.execution is not None
        while True:
            if position.execution is None:
                sql = self.query_sql(query, position.after)
                if sql is None:
                    return
                self.ensure_table(query.account_id)
                position.execution = self._start(sql)
                yield position.cursor(), []
            try:
                for _ in self._wait(position.execution, resumed):
                    yield position.cursor(), []
                while True:
                    response = self._results(position, resumed)
                    resumed = False
                    rows = response.get("ResultSet", {}).get("Rows", [])
                    if position.pages == 0:
                        rows = rows[1:]  # the first page starts with the column names
                    values = [_values(row) for row in rows]
                    found = [r for r in map(rebuild, values) if query.matches(r)]
                    if values and values[-1][_TIME_COLUMN] and values[-1][_ID_COLUMN]:
                        last = values[-1]
                        position.after = (str(last[_TIME_COLUMN]), str(last[_ID_COLUMN]))
                    position.token = response.get("NextToken")
                    position.pages += 1
                    yield position.cursor(), found
                    if not position.token:
                        return
            except _ExecutionGone:
                position.start_over()
                resumed = False
