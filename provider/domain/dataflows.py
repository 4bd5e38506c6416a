"""Data flows of the Eclipse Data Plane Signaling specification (DPS, v1.0-RC3; contracts/dps/).

A control plane drives each flow with signals (prepare, start, started, suspend, resume,
terminate, completed); the state machine below is the specification's. This service is:
- the provider data plane of compute offerings (consumer-pull): `start` creates the flow's
  workspace and answers with a data address that opens it;
- a consumer data plane for data bought elsewhere (consumer-pull): `prepare` binds the flow to a
  registered workspace and key, `started` brings the provider's data address, and an import
  fetches the data.
What this data plane tells its control plane on its own (the flow completed, or failed for good)
is a notice, kept on the flow until the control plane has taken it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from provider.domain.errors import BadRequest, Conflict

HTTP_PROFILE = "https://w3id.org/dspace-sig/profile/http"
HTTP_PULL = HTTP_PROFILE + "-pull"
HTTP_PUSH = HTTP_PROFILE + "-push"
PROFILES = (HTTP_PULL,)  # what this data plane offers and registers with its control planes


class FlowState(enum.StrEnum):
    INITIALIZED = "INITIALIZED"
    PREPARING = "PREPARING"
    PREPARED = "PREPARED"
    STARTING = "STARTING"
    STARTED = "STARTED"
    SUSPENDED = "SUSPENDED"
    COMPLETED = "COMPLETED"
    TERMINATED = "TERMINATED"

    @property
    def final(self) -> bool:
        return self in (FlowState.COMPLETED, FlowState.TERMINATED)


class FlowRole(enum.StrEnum):
    PROVIDER = "provider"  # started here: the flow's workspace is ours to give and take back
    CONSUMER = "consumer"  # prepared here: data lands in the consumer's own workspace


class Notice(enum.StrEnum):
    """A callback to the control plane: POST {endpoint}/transfers/{processId}/dataflow/{notice}."""

    COMPLETED = "completed"
    ERRORED = "errored"


# target -> the states it may be reached from (the specification's diagram; any state that is
# not final may be terminated)
_FROM: dict[FlowState, frozenset[FlowState]] = {
    FlowState.STARTED: frozenset(
        {FlowState.INITIALIZED, FlowState.PREPARED, FlowState.STARTING, FlowState.SUSPENDED}
    ),
    FlowState.SUSPENDED: frozenset({FlowState.STARTED}),
    FlowState.COMPLETED: frozenset({FlowState.STARTED}),
    FlowState.TERMINATED: frozenset(s for s in FlowState if not s.final),
}


def direction(profile: str) -> str | None:
    """'pull' or 'push', as the profile's suffix says; None when it says neither."""
    tail = profile.rsplit("-", 1)[-1].lower() if "-" in profile else ""
    return tail if tail in ("pull", "push") else None


@dataclass(frozen=True)
class DataFlow:
    id: str  # the control plane's processId, which is also the dataFlowId it addresses
    control_plane: str
    role: FlowRole
    state: FlowState
    profile: str
    participant_id: str  # who sent the first message
    counter_party_id: str
    agreement_id: str
    dataset_id: str
    tenant_id: str
    workspace_id: str
    created_at: datetime
    updated_at: datetime
    target_key: str | None = None  # consumer: where the data lands in the workspace
    import_id: str | None = None  # consumer: the import fetching it
    error: str | None = None
    notice: Notice | None = None  # to tell the control plane, not taken yet
    notice_attempts: int = 0
    next_notice_at: datetime | None = None
    notice_error: str | None = None  # the control plane's last refusal or failure
    delete_after: datetime | None = None  # provider: when the ended flow's workspace is deleted

    def to(self, state: FlowState, at: datetime) -> DataFlow | None:
        """The flow in `state`, or None when it is there already (a repeated signal changes
        nothing); raises Conflict for a move the state machine does not have."""
        if state is self.state:
            return None
        if self.state not in _FROM.get(state, frozenset()):
            raise Conflict(f"data flow {self.id} is {self.state.value}: it cannot become {state.value}")
        return replace(self, state=state, updated_at=at)

    def notify(self, notice: Notice, at: datetime, error: str | None = None) -> DataFlow:
        """Tell the control plane `notice` (at once, then again until it takes it)."""
        return replace(
            self,
            notice=notice,
            notice_attempts=0,
            next_notice_at=at,
            notice_error=None,
            error=error,
            updated_at=at,
        )

    def notice_taken(self, at: datetime) -> DataFlow:
        return replace(self, notice=None, next_notice_at=None, notice_error=None, updated_at=at)

    def notice_failed(self, at: datetime, error: str, retry_in: timedelta | None) -> DataFlow:
        """One more failed attempt; `retry_in` None gives the notice up."""
        return replace(
            self,
            notice=self.notice if retry_in is not None else None,
            notice_attempts=self.notice_attempts + 1,
            next_notice_at=at + retry_in if retry_in is not None else None,
            notice_error=error,
            updated_at=at,
        )


def require_pull(profile: str) -> None:
    """This data plane takes consumer-pull flows only; anything else is the specification's 400."""
    way = direction(profile)
    if way == "push":
        raise BadRequest(
            f"profile {profile!r} is provider-push: this data plane serves consumer-pull flows only"
        )
    if way is None:
        raise BadRequest(
            f"profile {profile!r} names no direction (-pull or -push): supported are {', '.join(PROFILES)}"
        )
