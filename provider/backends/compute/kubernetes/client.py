"""A thin, honest layer over kubernetes-asyncio: raw JSON in and out, errors as `KubeError`.

kubernetes-asyncio loads the configuration (in-cluster or kubeconfig), authenticates and builds
the requests; answers are read here as plain dicts (`_preload_content=False`), which is faster than
its model classes for a thousand watched pods and keeps every field the API server sent. Watches
are read line by line as they arrive.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.config.config_exception import ConfigException

from provider.config import ConfigError

# Statuses after which the same request may succeed later.
RETRYABLE = {408, 425, 429, 500, 502, 503, 504}


class KubeError(Exception):
    """The API server refused a request (`status` 0: it could not be reached)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.status == 0 or self.status in RETRYABLE

    @property
    def quota(self) -> bool:
        """A ResourceQuota refused the object: capacity may free up later."""
        return self.status == 403 and "exceeded quota" in self.message


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
        """The raw answer; a server that cannot be reached is KubeError 0."""
        try:
            response: aiohttp.ClientResponse = await method(*args, _preload_content=False, **kwargs)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise KubeError(0, "Unreachable", f"{type(exc).__name__}: {exc}") from exc
        return response

    async def _call(self, method: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
        response = await self._send(method, *args, _request_timeout=self.timeout, **kwargs)
        async with response:
            try:
                body = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise KubeError(0, "Unreachable", f"{type(exc).__name__}: {exc}") from exc
        data = _json(body)
        if not 200 <= response.status < 300:
            raise _error(response.status, data, body)
        return data

    # --- objects ------------------------------------------------------------------------------

    async def create(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        method = {
            "Job": self.batch.create_namespaced_job,
            "Secret": self.core.create_namespaced_secret,
            "Lease": self.coordination.create_namespaced_lease,
        }[kind]
        return await self._call(method, self.namespace, body)

    async def get_lease(self, name: str) -> dict[str, Any]:
        return await self._call(self.coordination.read_namespaced_lease, name, self.namespace)

    async def replace_lease(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call(self.coordination.replace_namespaced_lease, name, self.namespace, body)

    async def patch_secret(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self._call(self.core.patch_namespaced_secret, name, self.namespace, patch)

    async def delete(self, kind: str, name: str) -> bool:
        """Delete with Background propagation (dependents go too); False if it was not there."""
        method = {
            "Job": self.batch.delete_namespaced_job,
            "Secret": self.core.delete_namespaced_secret,
        }[kind]
        try:
            await self._call(method, name, self.namespace, propagation_policy="Background")
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def list(
        self, resource: str, selector: str, fields: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """Every object matching the label (and field) selector, paged, and the list's resourceVersion."""
        method = self._lister(resource)
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {**_selectors(selector, fields), "limit": 500}
            if token:
                kwargs["_continue"] = token
            page = await self._call(method, self.namespace, **kwargs)
            items.extend(page.get("items") or [])
            metadata = page.get("metadata") or {}
            token = metadata.get("continue")
            if not token:
                return items, str(metadata.get("resourceVersion", ""))

    def _lister(self, resource: str) -> Callable[..., Awaitable[Any]]:
        listers: dict[str, Callable[..., Awaitable[Any]]] = {
            "jobs": self.batch.list_namespaced_job,
            "pods": self.core.list_namespaced_pod,
            "events": self.core.list_namespaced_event,
        }
        return listers[resource]

    async def watch(
        self,
        resource: str,
        selector: str,
        resource_version: str,
        timeout_seconds: int,
        fields: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events as the server sends them, until it ends the stream (timeout) or it breaks."""
        response = await self._open(
            self._lister(resource),
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
                    if line.strip():
                        yield json.loads(line)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise KubeError(0, "Unreachable", f"watch broke: {type(exc).__name__}: {exc}") from exc

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
            raise _error(response.status, _json(body), body)
        return response


def _selectors(labels: str, fields: str | None) -> dict[str, str]:
    selectors = {"label_selector": labels} if labels else {}
    if fields:
        selectors["field_selector"] = fields
    return selectors


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _error(status: int, data: dict[str, Any], body: bytes) -> KubeError:
    """A Status object as the API server sends it; a bare body (a proxy's) as text."""
    if data.get("kind") == "Status":
        return KubeError(status, str(data.get("reason") or ""), str(data.get("message") or ""))
    return KubeError(status, "Unknown", body[:500].decode("utf-8", "replace"))
