"""A thin, honest layer over kubernetes-asyncio: raw JSON in and out, typed as what the backend
reads (objects.py), and each refusal as the KubeError subclass its status stands for.

kubernetes-asyncio loads the configuration (in-cluster or kubeconfig), authenticates and builds
the requests; answers are read here as plain dicts (`_preload_content=False`), which is faster than
its model classes for a thousand watched pods and keeps every field the API server sent. Watches
are read line by line as they arrive.
"""

from __future__ import annotations

import collections
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.config.config_exception import ConfigException

from provider.backends.compute.kubernetes.objects import (
    Event,
    Job,
    Lease,
    ObjectList,
    ObjectT,
    Pod,
    Status,
    WatchEvent,
)
from provider.config import ConfigError

# Statuses after which the same request may succeed later.
RETRYABLE = {408, 425, 429, 500, 502, 503, 504}


class KubeError(Exception):
    """The API server refused a request; the subclass says how (see `error_for`)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def retryable(self) -> bool:
        """The same request may succeed later, unchanged."""
        return False


class KubeUnavailable(KubeError):
    """The API server could not be reached (`status` 0), or answered that it cannot serve now
    (429, 5xx, ...)."""

    @property
    def retryable(self) -> bool:
        return True


class KubeBadRequest(KubeError):
    """400: the request cannot be served as it is (a log of a container not started yet, say)."""


class KubeForbidden(KubeError):
    """403: RBAC, an admission plugin or webhook, or a ResourceQuota refused it."""

    @property
    def quota(self) -> bool:
        """A ResourceQuota refused the object: capacity may free up later."""
        return "exceeded quota" in self.message

    @property
    def retryable(self) -> bool:
        return self.quota


class KubeNotFound(KubeError):
    """404: no such object."""


class KubeConflict(KubeError):
    """409: the object exists already, or changed since it was read (a failed compare-and-swap)."""


class KubeGone(KubeError):
    """410: the resourceVersion asked for is older than the server keeps; list again."""


class KubeInvalid(KubeError):
    """422: the object breaks the API's validation; sending it again will not help."""


_BY_STATUS: dict[int, type[KubeError]] = {
    400: KubeBadRequest,
    403: KubeForbidden,
    404: KubeNotFound,
    409: KubeConflict,
    410: KubeGone,
    422: KubeInvalid,
}


def error_for(status: int, reason: str, message: str) -> KubeError:
    """The error a status stands for (0: the server could not be reached)."""
    if status == 0 or status in RETRYABLE:
        return KubeUnavailable(status, reason, message)
    return _BY_STATUS.get(status, KubeError)(status, reason, message)


@dataclass(frozen=True)
class Collection(Generic[ObjectT]):
    """A namespaced collection the backend lists and watches, by its name in the API's paths."""

    plural: str


JOBS = Collection[Job]("jobs")
PODS = Collection[Pod]("pods")
EVENTS = Collection[Event]("events")


async def load_configuration(kubeconfig: Path | None, context: str | None) -> k8s.Configuration:
    """In-cluster configuration when running in a pod (and no kubeconfig is named), else the
    kubeconfig file (default ~/.kube/config)."""
    configuration = k8s.Configuration()
    if kubeconfig is None:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
            return configuration
        except ConfigException:
            pass
    try:
        await k8s_config.load_kube_config(
            config_file=str(kubeconfig) if kubeconfig else None,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    except (ConfigException, OSError) as exc:
        where = str(kubeconfig) if kubeconfig else "~/.kube/config (and no in-cluster service account)"
        raise ConfigError(
            f"compute.kubernetes.kubeconfig: cannot reach a cluster with {where}: {exc}"
        ) from exc
    return configuration


class Kube:
    """The calls the backend makes, in one namespace."""

    def __init__(self, configuration: k8s.Configuration, namespace: str, timeout_seconds: float) -> None:
        # Failed calls by status ("0": unreachable), for the operator's metrics.
        self.errors: collections.Counter[str] = collections.Counter()
        self.api_client = k8s.ApiClient(configuration)
        self.namespace = namespace
        self.timeout = timeout_seconds
        self.core = k8s.CoreV1Api(self.api_client)
        self.batch = k8s.BatchV1Api(self.api_client)
        self.coordination = k8s.CoordinationV1Api(self.api_client)

    async def close(self) -> None:
        await self.api_client.close()

    async def _send(
        self, method: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> aiohttp.ClientResponse:
        """The raw answer; a server that cannot be reached is KubeUnavailable 0."""
        try:
            response: aiohttp.ClientResponse = await method(*args, _preload_content=False, **kwargs)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.errors["0"] += 1
            raise _unreachable(exc) from exc
        return response

    async def _call(self, method: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """The answer's JSON (typed by the caller, as the API promises it)."""
        response = await self._send(method, *args, _request_timeout=self.timeout, **kwargs)
        async with response:
            try:
                body = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise _unreachable(exc) from exc
        if not 200 <= response.status < 300:
            self.errors[str(response.status)] += 1
            raise _error(response.status, body)
        return _json(body)

    # --- objects ------------------------------------------------------------------------------

    async def create_job(self, body: Mapping[str, object]) -> Job:
        job: Job = await self._call(self.batch.create_namespaced_job, self.namespace, body)
        return job

    async def create_secret(self, body: Mapping[str, object]) -> None:
        await self._call(self.core.create_namespaced_secret, self.namespace, body)

    async def patch_secret(self, name: str, patch: Mapping[str, object]) -> None:
        await self._call(self.core.patch_namespaced_secret, name, self.namespace, patch)

    async def create_lease(self, body: Lease) -> Lease:
        lease: Lease = await self._call(self.coordination.create_namespaced_lease, self.namespace, body)
        return lease

    async def get_lease(self, name: str) -> Lease:
        lease: Lease = await self._call(self.coordination.read_namespaced_lease, name, self.namespace)
        return lease

    async def replace_lease(self, name: str, body: Lease) -> Lease:
        """A compare-and-swap: KubeConflict when the Lease changed since `body` was read."""
        lease: Lease = await self._call(
            self.coordination.replace_namespaced_lease, name, self.namespace, body
        )
        return lease

    async def delete(self, kind: str, name: str, uid: str | None = None) -> bool:
        """Delete with Background propagation (dependents go too); False if it was not there.

        With `uid`, only that object: one made since under the same name is KubeConflict."""
        method = {
            "Job": self.batch.delete_namespaced_job,
            "Secret": self.core.delete_namespaced_secret,
        }[kind]
        # DeleteOptions come from the body or from the query, never both.
        options: dict[str, Any] = (
            {"body": {"propagationPolicy": "Background", "preconditions": {"uid": uid}}}
            if uid
            else {"propagation_policy": "Background"}
        )
        try:
            await self._call(method, name, self.namespace, **options)
        except KubeNotFound:
            return False
        return True

    async def list(
        self, collection: Collection[ObjectT], selector: str, fields: str | None = None
    ) -> tuple[list[ObjectT], str]:
        """Every object matching the label (and field) selector, paged, and the list's resourceVersion."""
        method = self._lister(collection)
        items: list[ObjectT] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {**_selectors(selector, fields), "limit": 500}
            if token:
                kwargs["_continue"] = token
            page: ObjectList[ObjectT] = await self._call(method, self.namespace, **kwargs)
            items.extend(page.get("items") or [])
            metadata = page.get("metadata") or {}
            token = metadata.get("continue")
            if not token:
                return items, str(metadata.get("resourceVersion", ""))

    def _lister(self, collection: Collection[ObjectT]) -> Callable[..., Awaitable[Any]]:
        listers: dict[str, Callable[..., Awaitable[Any]]] = {
            JOBS.plural: self.batch.list_namespaced_job,
            PODS.plural: self.core.list_namespaced_pod,
            EVENTS.plural: self.core.list_namespaced_event,
        }
        return listers[collection.plural]

    async def watch(
        self,
        collection: Collection[ObjectT],
        selector: str,
        resource_version: str,
        timeout_seconds: int,
        fields: str | None = None,
    ) -> AsyncIterator[WatchEvent[ObjectT]]:
        """Watch events as the server sends them, until it ends the stream (timeout) or it breaks;
        an ERROR event is raised as the error its Status stands for (KubeGone: list again)."""
        response = await self._open(
            self._lister(collection),
            self.namespace,
            **_selectors(selector, fields),
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout_seconds,
            # No total limit: a watch lasts; silence longer than the server's timeout is a fault.
            _request_timeout=aiohttp.ClientTimeout(
                sock_connect=self.timeout, sock_read=timeout_seconds + self.timeout
            ),
        )
        async with response:
            try:
                while line := await response.content.readline():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if not (isinstance(event, dict) and isinstance(event.get("object"), dict)):
                        continue  # nothing to read
                    if event.get("type") == "ERROR":
                        status: Status = event["object"]
                        raise _status_error(int(status.get("code") or 500), status)
                    yield {"type": str(event.get("type") or ""), "object": event["object"]}
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise _unreachable(exc, "watch broke: ") from exc

    async def pod_log(self, pod: str, container: str, tail: int | None, follow: bool) -> AsyncIterator[bytes]:
        kwargs: dict[str, Any] = {"container": container, "follow": follow}
        if tail is not None:
            kwargs["tail_lines"] = tail
        timeout = (
            aiohttp.ClientTimeout(sock_connect=self.timeout)
            if follow
            else aiohttp.ClientTimeout(total=self.timeout * 4)
        )
        response = await self._open(
            self.core.read_namespaced_pod_log, pod, self.namespace, _request_timeout=timeout, **kwargs
        )
        async with response:
            async for chunk in response.content.iter_any():
                yield chunk

    async def _open(
        self, method: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> aiohttp.ClientResponse:
        """A streamed answer whose status is 200; errors as KubeError."""
        response = await self._send(method, *args, **kwargs)
        if response.status != 200:
            async with response:
                body = await response.read()
            raise _error(response.status, body)
        return response


def _selectors(labels: str, fields: str | None) -> dict[str, str]:
    selectors = {"label_selector": labels} if labels else {}
    if fields:
        selectors["field_selector"] = fields
    return selectors


def _json(body: bytes) -> Any:
    """The body's JSON object; {} for an empty body or one that is not a JSON object."""
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _unreachable(exc: BaseException, context: str = "") -> KubeUnavailable:
    return KubeUnavailable(0, "Unreachable", f"{context}{type(exc).__name__}: {exc}")


def _status_error(code: int, status: Status) -> KubeError:
    return error_for(code, str(status.get("reason") or ""), str(status.get("message") or ""))


def _error(code: int, body: bytes) -> KubeError:
    """A Status object as the API server sends it; a bare body (a proxy's) as text."""
    data: Status = _json(body)
    if data.get("kind") == "Status":
        return _status_error(code, data)
    return error_for(code, "Unknown", body[:500].decode("utf-8", "replace"))
