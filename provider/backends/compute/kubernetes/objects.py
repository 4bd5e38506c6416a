"""What the backend reads of the API server's objects: only the fields it uses, typed over the
raw JSON as the API server sends it (no copy, no validation: the API's schema gives the shapes).

Field names are the API's own (camelCase), so that each one can be looked up in its reference.
Every key may be missing (`total=False`): an object being created has no status yet, and a
watch's BOOKMARK carries metadata alone.
"""

from __future__ import annotations

from typing import Generic, Literal, TypedDict, TypeVar

# --- shared -------------------------------------------------------------------------------------


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    resourceVersion: str
    creationTimestamp: str
    deletionTimestamp: str
    labels: dict[str, str]
    annotations: dict[str, str]


class KubeObject(TypedDict, total=False):
    """Any object: its metadata."""

    metadata: ObjectMeta


ListMeta = TypedDict("ListMeta", {"resourceVersion": str, "continue": str}, total=False)


class Condition(TypedDict, total=False):
    type: str
    status: str  # "True", "False" or "Unknown"
    reason: str
    message: str


class Status(TypedDict, total=False):
    """The API server's answer to a request that failed (and the object of a watch's ERROR)."""

    kind: Literal["Status"]
    code: int
    reason: str
    message: str


# --- batch/v1 Job -------------------------------------------------------------------------------


class JobStatus(TypedDict, total=False):
    conditions: list[Condition]


class Job(TypedDict, total=False):
    metadata: ObjectMeta
    status: JobStatus


# --- v1 Pod -------------------------------------------------------------------------------------


class ContainerStateWaiting(TypedDict, total=False):
    reason: str
    message: str


class ContainerStateRunning(TypedDict, total=False):
    startedAt: str


class ContainerStateTerminated(TypedDict, total=False):
    exitCode: int
    reason: str
    message: str


class ContainerState(TypedDict, total=False):
    waiting: ContainerStateWaiting
    running: ContainerStateRunning
    terminated: ContainerStateTerminated


class ContainerStatus(TypedDict, total=False):
    name: str
    state: ContainerState


class PodStatus(TypedDict, total=False):
    phase: str
    reason: str
    message: str
    conditions: list[Condition]
    initContainerStatuses: list[ContainerStatus]
    containerStatuses: list[ContainerStatus]


class Pod(TypedDict, total=False):
    metadata: ObjectMeta
    status: PodStatus


# --- v1 Event -----------------------------------------------------------------------------------


class ObjectReference(TypedDict, total=False):
    apiVersion: str
    kind: str
    name: str
    uid: str


class Event(TypedDict, total=False):
    metadata: ObjectMeta
    involvedObject: ObjectReference
    message: str
    firstTimestamp: str
    lastTimestamp: str
    eventTime: str


# --- coordination.k8s.io/v1 Lease ---------------------------------------------------------------


class LeaseSpec(TypedDict, total=False):
    holderIdentity: str | None  # None (JSON null): handed back
    leaseDurationSeconds: int
    acquireTime: str
    renewTime: str
    leaseTransitions: int


class Lease(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: LeaseSpec


# --- lists and watches --------------------------------------------------------------------------

ObjectT = TypeVar("ObjectT", bound=KubeObject)


class ObjectList(TypedDict, Generic[ObjectT], total=False):
    metadata: ListMeta
    items: list[ObjectT]


class WatchEvent(TypedDict, Generic[ObjectT]):
    """One line of a watch: ADDED, MODIFIED, DELETED or BOOKMARK (ERROR is raised by the client)."""

    type: str
    object: ObjectT
