"""Executions: run an asset on a workspace's data and report faithfully what happened.

`ExecutionService` (service.py) puts together parts that work with the same `Dependencies` and
share one `Shared` state (the cache of recent executions, the long-poll notifier, the job
tokens, the waiting retries; shared.py):

- commands.py: start an execution (validate, persist QUEUED, submit), cancel;
- submission.py: hand an execution to compute with the storage access its job gets;
- observation.py: what compute reports (`on_event`), retries, finishing, reconciliation;
- reads.py: get, long-poll wait, list, logs, outputs.

Every state change goes through `Observation.apply`: the domain's rules decide it
(provider/domain/executions.py), it is persisted, and only then announced.
"""

from provider.services.executions.commands import CallbackRequest, ExecutionRequest, Started
from provider.services.executions.observation import RetryLimit
from provider.services.executions.service import ExecutionService
from provider.services.executions.shared import ExecutionPolicy

__all__ = [
    "CallbackRequest",
    "ExecutionPolicy",
    "ExecutionRequest",
    "ExecutionService",
    "RetryLimit",
    "Started",
]
