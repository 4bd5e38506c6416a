"""The execution service: its parts put together, and the operations callers use."""

from __future__ import annotations

from provider.services.assets import AssetService
from provider.services.executions.commands import Commands
from provider.services.executions.observation import Observation
from provider.services.executions.reads import Reads
from provider.services.executions.shared import Dependencies, ExecutionPolicy, Shared
from provider.services.executions.submission import Submission
from provider.services.notifications import EventLog, SubscriptionService
from provider.services.ports import Clock, Compute, Storage, Store
from provider.services.workspaces import WorkspaceService


class ExecutionService:
    """Executions for the API, EDC and the compute backend; see the package's docstring."""

    def __init__(
        self,
        store: Store,
        compute: Compute,
        storage: Storage,
        workspaces: WorkspaceService,
        assets: AssetService,
        clock: Clock,
        policy: ExecutionPolicy,
        events: EventLog | None = None,
        subscriptions: SubscriptionService | None = None,
    ) -> None:
        self.deps = Dependencies(
            store, compute, storage, workspaces, assets, clock, policy, events, subscriptions
        )
        self.shared = Shared(policy.cache_seconds)
        self.reads = Reads(self.deps, self.shared)
        # A submission that fails is observed like a job that fails.
        self.submission = Submission(self.deps, self.shared, lambda event: self.observation.on_event(event))
        self.observation = Observation(self.deps, self.shared, self.reads, self.submission)
        self.commands = Commands(self.deps, self.reads, self.submission, self.observation)
        # What callers use, each from the part that does it.
        self.create = self.commands.create
        self.start = self.commands.start
        self.cancel = self.commands.cancel
        self.cancel_workspace = self.commands.cancel_workspace
        self.hold_workspace = self.commands.hold_workspace
        self.release_workspace = self.commands.release_workspace
        self.get = self.reads.get
        self.wait = self.reads.wait
        self.list = self.reads.list
        self.logs = self.reads.logs
        self.outputs = self.reads.outputs
        self.on_event = self.observation.on_event
        self.reconcile = self.observation.reconcile
        self.stop = self.observation.stop

    @property
    def compute(self) -> Compute:
        """The backend jobs run on (set once: every part uses the same)."""
        return self.deps.compute
