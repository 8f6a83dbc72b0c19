"""How often each kind of step is tried before the case stops asking AWS and asks a human."""

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.aws import NON_RETRYABLE_ERRORS
    from activities.notify import ERROR_CHAT_REFUSED

# Every AWS step: throttling and outages are retried, a denial or a bad request is not. A
# step lost with a dead worker counts as an attempt too: starting at 1 s keeps the third
# such loss in a row (10 s heartbeat timeout, then 4 s) within 15 s of the kill.
AWS_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=8,
    non_retryable_error_types=list(NON_RETRYABLE_ERRORS),
)
# The SSM agent needs a while after a start before it takes commands again: the attempts
# spread over about seven minutes, the first soon (one lost with a dead worker costs 11 s).
PROBE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=1.5,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=22,
    non_retryable_error_types=list(NON_RETRYABLE_ERRORS),
)
# A notification is worth a few tries, never a stuck case: after these it is noted as failed.
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=5,
    non_retryable_error_types=[*NON_RETRYABLE_ERRORS, ERROR_CHAT_REFUSED],
)
# Every activity beats every two seconds while it runs (activities/liveness.py): a worker
# that dies is noticed after this, and its step retried on a worker that is up.
HEARTBEAT_TIMEOUT = timedelta(seconds=10)
