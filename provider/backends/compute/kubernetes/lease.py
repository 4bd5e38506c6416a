"""Leader election on a coordination.k8s.io/v1 Lease: one replica observes jobs, all serve the API.

A Lease is free when its holder has not renewed it for `leaseDurationSeconds`. Expiry is judged by
this replica's own clock from when it last saw the record change (as client-go does), never by
comparing timestamps written by another machine, so clock skew cannot make two leaders.
Writes carry the resourceVersion read: of two replicas taking over at once, one gets 409 and stays
a follower.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from provider.backends.compute.kubernetes.client import Kube, KubeConflict, KubeError, KubeNotFound
from provider.backends.compute.kubernetes.objects import Lease, LeaseSpec

log = logging.getLogger(__name__)


def _micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    def __init__(
        self,
        kube: Kube,
        name: str,
        identity: str,
        lease_seconds: float,
        renew_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.monotonic = monotonic
        self.leading = False
        self._observed: tuple[str, float] | None = None  # (resourceVersion, when first seen)
        self._renewed_at = 0.0

    async def run(
        self, on_started: Callable[[], Awaitable[None]], on_stopped: Callable[[], Awaitable[None]]
    ) -> None:
        """Campaign for the Lease forever; call `on_started` on winning it, `on_stopped` on losing it."""
        try:
            while True:
                try:
                    held = await self.try_acquire_or_renew()
                except KubeError as exc:
                    log.warning("lease: %s", exc.message or exc.reason)
                    # A leader that cannot renew steps down before its lease can lapse elsewhere.
                    held = self.leading and self.monotonic() - self._renewed_at < self.lease_seconds * 0.8
                if held and not self.leading:
                    self.leading = True
                    log.info("lease: this replica now observes jobs", extra={"identity": self.identity})
                    await on_started()
                elif not held and self.leading:
                    self.leading = False
                    log.warning("lease: leadership lost", extra={"identity": self.identity})
                    await on_stopped()
                pause = self.renew_seconds if self.leading else self.renew_seconds * random.uniform(1, 1.5)  # noqa: S311
                await asyncio.sleep(pause)
        finally:
            if self.leading:
                self.leading = False
                await on_stopped()
                with contextlib.suppress(KubeError, asyncio.CancelledError):
                    await asyncio.shield(self.release())

    async def try_acquire_or_renew(self) -> bool:
        try:
            lease = await self.kube.get_lease(self.name)
        except KubeNotFound:
            return await self._create()
        spec = lease.get("spec") or {}
        version = str((lease.get("metadata") or {}).get("resourceVersion"))
        now = self.monotonic()
        if self._observed is None or self._observed[0] != version:
            self._observed = (version, now)
        holder = spec.get("holderIdentity")
        duration = float(spec.get("leaseDurationSeconds") or self.lease_seconds)
        if holder == self.identity:
            return await self._write(lease, transitions=int(spec.get("leaseTransitions") or 0), acquired=None)
        if holder and now - self._observed[1] < duration:
            return False  # someone else holds a live lease
        return await self._write(
            lease, transitions=int(spec.get("leaseTransitions") or 0) + 1, acquired=_micro_time()
        )

    async def _create(self) -> bool:
        stamp = _micro_time()
        body: Lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.kube.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.lease_seconds),
                "acquireTime": stamp,
                "renewTime": stamp,
                "leaseTransitions": 0,
            },
        }
        try:
            await self.kube.create_lease(body)
        except KubeConflict:
            return False  # another replica created it first
        self._renewed_at = self.monotonic()
        return True

    async def _write(self, lease: Lease, transitions: int, acquired: str | None) -> bool:
        spec: LeaseSpec = {
            **(lease.get("spec") or {}),
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_seconds),
            "renewTime": _micro_time(),
            "leaseTransitions": transitions,
        }
        if acquired is not None:
            spec["acquireTime"] = acquired
        body: Lease = {**lease, "spec": spec}  # metadata.resourceVersion makes this a compare-and-swap
        try:
            written = await self.kube.replace_lease(self.name, body)
        except KubeConflict:
            return False  # changed under us: someone renewed or took it over
        self._observed = (str((written.get("metadata") or {}).get("resourceVersion")), self.monotonic())
        self._renewed_at = self.monotonic()
        return True

    async def release(self) -> None:
        """Hand the Lease back on a clean stop, so that another replica takes over at once."""
        lease = await self.kube.get_lease(self.name)
        spec: LeaseSpec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            return
        spec = {**spec, "holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": _micro_time()}
        with contextlib.suppress(KubeError):
            await self.kube.replace_lease(self.name, {**lease, "spec": spec})
