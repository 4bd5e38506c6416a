"""The HTTP side: discovery, paths to resources and verbs, faults, and the server's lifecycle."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from tests.fake_kube import errors
from tests.fake_kube.controllers import Controllers
from tests.fake_kube.errors import KubeError
from tests.fake_kube.faults import Fault, Faults
from tests.fake_kube.kinds import GROUP_VERSIONS, RESOURCES
from tests.fake_kube.logs import PodLogs
from tests.fake_kube.registry import Registry
from tests.fake_kube.watches import Watches
from tests.fake_kube.wire import json_response, parse_bool

VERSION_INFO = {
    "major": "1",
    "minor": "34",
    "emulationMajor": "1",
    "emulationMinor": "34",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "33",
    "gitVersion": "v1.34.0",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-08-27T00:00:00Z",
    "goVersion": "go1.24.6",
    "compiler": "gc",
    "platform": "linux/amd64",
}

MAX_BODY_BYTES = 3 * 1024 * 1024


@dataclass(frozen=True)
class RequestRecord:
    """One request the server received, for assertions."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any


class Routing(PodLogs, Controllers, Registry, Faults, Watches):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[RequestRecord] = []
        self._runner: web.AppRunner | None = None
        self._port = 0

    async def start(self) -> None:
        """Listen on an ephemeral loopback port."""
        app = web.Application(client_max_size=MAX_BODY_BYTES + 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self._port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Cut open streams, cancel pending controller work and stop listening."""
        for request in list(self._streams.values()):
            if request.transport is not None:
                request.transport.abort()
        if self._reconcile_handle is not None:
            self._reconcile_handle.cancel()
            self._reconcile_handle = None
        for handle in self._kubelet_handles:
            handle.cancel()
        self._kubelet_handles.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """A kubeconfig without credentials whose one context, `fake`, points here."""
        target = Path(path)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [
                {"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}
            ],
            "current-context": "fake",
            "preferences": {},
        }
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(config, sort_keys=False))
        return target

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.requests.append(
            RequestRecord(
                request.method,
                request.path,
                dict(request.query.items()),
                request.headers.get("Content-Type", ""),
                _parse_logged_body(raw),
            )
        )
        if self._latency:
            await asyncio.sleep(self._latency)
        fault = next(
            (f for f in self._faults if f.matches(request.method, request.path, request.path_qs)), None
        )
        if fault is not None:
            fault.hits += 1
            if fault.exhausted:
                self._faults.remove(fault)
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.disconnect:
                if request.transport is not None:
                    request.transport.abort()
                await asyncio.sleep(5)
                return web.Response(status=500)
            if fault.status:
                return self._fault_response(fault)
        try:
            if len(raw) > MAX_BODY_BYTES:
                raise KubeError(
                    413, "RequestEntityTooLarge", f"Request entity too large: limit is {MAX_BODY_BYTES}"
                )
            response = await self._route(request, raw)
        except KubeError as error:
            response = self._error_response(error)
        if fault is not None and fault.late:
            await asyncio.sleep(fault.late)  # done already; only the answer is slow
        return response

    def _fault_response(self, fault: Fault) -> web.Response:
        status = fault.status or 500
        reason = fault.reason or errors.DEFAULT_REASONS.get(status, "InternalError")
        message = fault.message
        if message is None:
            message = {
                500: "Internal error occurred: injected fault",
                503: "the server is currently unable to handle the request",
                429: "Too many requests, please try again later.",
                504: "Timeout: request did not complete within the allotted timeout",
            }.get(status, f"injected {status} fault")
        details: dict[str, Any] | None = None
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            details = {"retryAfterSeconds": fault.retry_after}
            headers["Retry-After"] = str(fault.retry_after)
        return self._error_response(KubeError(status, reason, message, details, headers=headers))

    def _error_response(self, error: KubeError) -> web.Response:
        return json_response(error.status(), error.code, error.headers)

    async def _route(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        segments = [s for s in request.path.split("/") if s]
        method = request.method
        if segments in (["version"],):
            return json_response(VERSION_INFO)
        if len(segments) == 1 and segments[0] in ("healthz", "readyz", "livez"):
            return web.Response(text="ok", content_type="text/plain")
        if segments == ["api"]:
            return json_response(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self._port}"}
                    ],
                }
            )
        if segments == ["apis"]:
            return json_response(self._group_list())
        if segments[:2] == ["api", "v1"]:
            group_version, rest = "v1", segments[2:]
        elif (
            len(segments) >= 3 and segments[0] == "apis" and f"{segments[1]}/{segments[2]}" in GROUP_VERSIONS
        ):
            group_version, rest = f"{segments[1]}/{segments[2]}", segments[3:]
        else:
            raise errors.resource_not_found()
        if not rest:
            if method != "GET":
                raise errors.method_not_allowed()
            return json_response(self._resource_list(group_version))
        served = GROUP_VERSIONS[group_version]
        namespace: str | None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in served and RESOURCES[rest[2]].namespaced:
            namespace, plural, tail = rest[1], rest[2], rest[3:]
            if len(tail) > 2:
                raise errors.resource_not_found()
        else:
            namespace, plural, tail = None, rest[0], rest[1:]
            if plural not in served or len(tail) > 2 or (RESOURCES[plural].namespaced and tail):
                raise errors.resource_not_found()
        resource = RESOURCES[plural]
        name = tail[0] if tail else None
        sub = tail[1] if len(tail) > 1 else None
        if sub is not None and sub not in resource.subresources:
            raise errors.resource_not_found()
        params = dict(request.query.items())
        if name is None:
            if method == "GET":
                if parse_bool(params, "watch"):
                    return await self._watch(request, resource, namespace, params)
                return json_response(self._list(resource, namespace, params))
            if method == "POST" and (namespace is not None or not resource.namespaced):
                return await self._create(request, resource, namespace or "", params, raw)
            if method == "DELETE" and (namespace is not None or not resource.namespaced):
                return self._delete_collection(request, resource, namespace or "", params, raw)
            raise errors.method_not_allowed()
        ns = namespace or ""
        if sub == "log":
            if method != "GET":
                raise errors.method_not_allowed()
            return await self._pod_log(request, ns, name, params)
        if method == "GET":
            return json_response(self._require(resource, ns, name))
        if method == "PUT":
            body = self._decode_body(request, resource, raw)
            obj, code = self._update(
                resource, ns, name, body, status=sub == "status", dry_run="dryRun" in params
            )
            return json_response(obj, code)
        if method == "PATCH":
            return self._patch(request, resource, ns, name, params, raw, status=sub == "status")
        if method == "DELETE" and sub is None:
            return self._delete_request(request, resource, ns, name, params, raw)
        raise errors.method_not_allowed()

    def _group_list(self) -> dict[str, Any]:
        groups = []
        for group_version in GROUP_VERSIONS:
            if "/" not in group_version:
                continue
            group, version = group_version.split("/")
            entry = {"groupVersion": group_version, "version": version}
            groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _resource_list(self, group_version: str) -> dict[str, Any]:
        resources: list[dict[str, Any]] = []
        for plural in sorted(GROUP_VERSIONS[group_version]):
            resource = RESOURCES[plural]
            verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
            resources.append(
                {
                    "name": plural,
                    "singularName": resource.singular,
                    "namespaced": resource.namespaced,
                    "kind": resource.kind,
                    "verbs": verbs,
                }
            )
            for sub in sorted(resource.subresources):
                resources.append(
                    {
                        "name": f"{plural}/{sub}",
                        "singularName": "",
                        "namespaced": resource.namespaced,
                        "kind": "Pod" if sub == "log" else resource.kind,
                        "verbs": ["get"] if sub == "log" else ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }


def _parse_logged_body(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return raw
