"""A protocol-level fake of the Kubernetes API server, for tests of code that talks to a cluster.

It speaks the real wire protocol over HTTP (JSON bodies, `Status` errors, chunked watch streams,
pod logs as text) so the code under test runs its real client unchanged, and it keeps the
semantics such code depends on: one global resourceVersion, optimistic concurrency, watch replay
and `410 Expired` after compaction, consistent paginated lists, label and field selectors, the
three patch flavours, finalizers, graceful pod deletion and owner-reference garbage collection.
With `owner_references_role` it also admits writes as OwnerReferencesPermissionEnforcement does
(OpenShift enables that plugin), for a requester holding that Role.

There are no controllers beyond a garbage collector, a namespace cleaner, a kubelet that finishes
deleting pods and a Job controller that counts its pods; tests play the scheduler, kubelet and
the rest of the Job controller through the hook methods (`create_job_pod`, `set_container_state`,
`set_job_condition`, `write_log`, ...), each of which writes through the same path as the API so
watchers see ordinary events. Pods the cluster refuses (`refuse_pods`: a quota, a missing
RuntimeClass, an admission webhook) make the Job controller's attempts fail with the `FailedCreate`
Event it records on the Job, deduplicated by count as client-go's event recorder does.

The parts, each a class that `FakeKube` combines: store.py (objects, history, the write path),
routing.py (HTTP, discovery, lifecycle), registry.py and deletion.py (the generic registry's
writes), lists.py, watches.py, pods.py (the kubelet) and logs.py, jobs.py (the Job controller),
events.py, controllers.py (garbage collector, namespace controller), faults.py and hooks.py.
Kind-specific rules (defaults, validation, Secrets' data, Leases' micro-times) live in kinds.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.fake_kube.faults import Fault
from tests.fake_kube.hooks import ObjectHooks
from tests.fake_kube.routing import RequestRecord, Routing
from tests.fake_kube.watches import WatchRecord

__all__ = ["FakeKube", "Fault", "RequestRecord", "WatchRecord"]


class FakeKube(ObjectHooks, Routing):
    """An in-memory Kubernetes API server on 127.0.0.1 with hooks to play the controllers.

    Everything handed in or out is deep-copied, so callers can never change stored state.
    """

    def __init__(
        self,
        *,
        bookmark_interval: float = 1.0,
        history_limit: int = 10_000,
        gc_delay: float = 0.0,
        pod_termination_delay: float | None = 0.0,
        auto_pods: bool = False,
        owner_references_role: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.bookmark_interval = bookmark_interval
        self.history_limit = history_limit
        self.gc_delay = gc_delay
        self.pod_termination_delay = pod_termination_delay
        self.auto_pods = auto_pods
        self.owner_references_role = owner_references_role
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self._create_namespace(name)
