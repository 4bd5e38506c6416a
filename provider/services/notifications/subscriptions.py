"""Subscriptions: who wants which events, delivered where, and the dead letters to send again."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from provider.domain.errors import Conflict, FieldProblem, Forbidden, InvalidInput, NotFound
from provider.domain.ids import new_id
from provider.domain.notifications import (
    Delivery,
    Subscription,
    SubscriptionState,
    check_types,
    generate_secret,
    secret_problem,
)
from provider.domain.pagination import Page, PageRequest
from provider.domain.tenants import CredentialKind, Principal
from provider.domain.workspaces import Scope
from provider.services.notifications.outbox import EventLog
from provider.services.notifications.stream import EventStream
from provider.services.ports import Clock, Store, WebhookSender

log = logging.getLogger(__name__)


class SubscriptionService:
    def __init__(self, store: Store, sender: WebhookSender, events: EventLog, clock: Clock) -> None:
        self.store = store
        self.sender = sender
        self.events = events
        self.clock = clock
        self.streams = EventStream(store, events)  # the live stream, served beside subscriptions

    async def new(
        self,
        principal: Principal,
        url: str,
        events: Iterable[str],
        secret: str | None,
        *,
        execution_id: str | None = None,
        workspace_id: str | None = None,
        labels: dict[str, str] | None = None,
        field: str = "body",
    ) -> tuple[Subscription, str | None]:
        """A valid subscription, not stored yet, and its secret when it was generated here."""
        if (
            principal.kind is CredentialKind.WORKSPACE_TOKEN
            and Scope.SUBSCRIPTIONS_WRITE not in principal.scopes
        ):
            raise Forbidden("subscriptions need the subscriptions:write scope")
        patterns = check_types(events, f"{field}.events")
        if secret is not None and (problem := secret_problem(secret)) is not None:
            raise InvalidInput(
                "the secret is not a Standard Webhooks secret", [FieldProblem(f"{field}.secret", problem)]
            )
        await self.sender.check(url, f"{field}.url")
        now = self.clock()
        generated = generate_secret() if secret is None else None
        subscription = Subscription(
            id=new_id("sub"),
            tenant_id=principal.tenant_id,
            owner_workspace_id=principal.workspace_id,
            url=url,
            events=patterns,
            execution_id=execution_id,
            workspace_id=workspace_id,
            labels=dict(labels or {}),
            secret=secret or generated or "",
            state=SubscriptionState.ACTIVE,
            created_at=now,
            updated_at=now,
        )
        return subscription, generated

    async def create(
        self,
        principal: Principal,
        url: str,
        events: Iterable[str],
        secret: str | None,
        execution_id: str | None,
        workspace_id: str | None,
        labels: dict[str, str],
    ) -> tuple[Subscription, str | None]:
        async with self.store.read() as uow:
            if workspace_id is not None:
                workspace = await uow.workspaces.get(workspace_id)
                if (
                    workspace is None
                    or workspace.tenant_id != principal.tenant_id
                    or principal.workspace_id not in (None, workspace_id)
                ):
                    raise NotFound("workspace", workspace_id)
            if execution_id is not None:
                execution = await uow.executions.get(execution_id)
                if (
                    execution is None
                    or execution.tenant_id != principal.tenant_id
                    or principal.workspace_id not in (None, execution.workspace_id)
                ):
                    raise NotFound("execution", execution_id)
        subscription, generated = await self.new(
            principal,
            url,
            events,
            secret,
            execution_id=execution_id,
            workspace_id=workspace_id,
            labels=labels,
        )
        async with self.store.transaction() as uow:
            await uow.subscriptions.add(subscription)
        log.info("subscription created", extra={"subscription_id": subscription.id})
        return subscription, generated

    def _visible(self, principal: Principal, item: Subscription | None, subscription_id: str) -> Subscription:
        if (
            item is None
            or not principal.may_see_tenant(item.tenant_id)
            or (principal.workspace_id is not None and item.owner_workspace_id != principal.workspace_id)
        ):
            raise NotFound("subscription", subscription_id)
        return item

    async def get(self, principal: Principal, subscription_id: str) -> Subscription:
        async with self.store.read() as uow:
            return self._visible(principal, await uow.subscriptions.get(subscription_id), subscription_id)

    async def list(self, principal: Principal, page: PageRequest) -> Page[Subscription]:
        async with self.store.read() as uow:
            return await uow.subscriptions.list(
                page, None if principal.is_admin else principal.tenant_id, principal.workspace_id
            )

    async def delete(self, principal: Principal, subscription_id: str) -> None:
        async with self.store.transaction() as uow:
            self._visible(principal, await uow.subscriptions.get(subscription_id), subscription_id)
            await uow.subscriptions.delete(subscription_id)

    async def deliveries(
        self, principal: Principal, subscription_id: str, page: PageRequest
    ) -> Page[Delivery]:
        async with self.store.read() as uow:
            self._visible(principal, await uow.subscriptions.get(subscription_id), subscription_id)
            return await uow.deliveries.list_for_subscription(subscription_id, page)

    async def retry(self, principal: Principal, subscription_id: str, delivery_id: str) -> Delivery:
        """Queue a dead letter again (409 for any other delivery)."""
        async with self.store.transaction() as uow:
            subscription = self._visible(
                principal, await uow.subscriptions.get(subscription_id), subscription_id
            )
            delivery = await uow.deliveries.get(delivery_id)
            if delivery is None or delivery.subscription_id != subscription.id:
                raise NotFound("delivery", delivery_id)
            if subscription.state is not SubscriptionState.ACTIVE:
                raise Conflict(f"subscription {subscription.id} is disabled: {subscription.disabled_reason}")
            if not await uow.deliveries.requeue(delivery_id, self.clock()):
                raise Conflict(
                    f"delivery {delivery_id} is {delivery.state.value}; only dead letters are retried"
                )
            requeued = await uow.deliveries.get(delivery_id)
        self.events.committed()
        assert requeued is not None
        return requeued
