"""Pod logs as the kubelet serves them through the API server: refusals while a container has
not started, tail, since, limitBytes, timestamps, previous, and following as lines arrive."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.fake_kube import errors, kinds, validation
from tests.fake_kube.errors import KubeError
from tests.fake_kube.kinds import RESOURCES, DecodeError
from tests.fake_kube.pods import ContainerLog, Kubelet, container_names
from tests.fake_kube.wire import parse_bool, parse_int

_WAITING_MESSAGES = {
    "ErrImagePull": "image can't be pulled",
    "ImagePullBackOff": "trying and failing to pull image",
}


def _rfc3339_nano(ns: int) -> str:
    seconds, nanos = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


class PodLogs(Kubelet):
    def _find_status(self, pod: Mapping[str, Any], container: str) -> dict[str, Any] | None:
        status = pod.get("status") or {}
        for group in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
            for entry in status.get(group) or []:
                if entry.get("name") == container:
                    return dict(entry)
        return None

    def _log_gate(self, pod: Mapping[str, Any], container: str, previous: bool) -> str | None:
        """The kubelet's refusal to serve logs, or None when it would."""
        pod_name = pod["metadata"]["name"]
        entry = self._find_status(pod, container)
        if entry is None:
            spec = pod.get("spec") or {}
            is_init = any(c.get("name") == container for c in spec.get("initContainers") or [])
            reason = "PodInitializing" if (is_init or spec.get("initContainers")) else "ContainerCreating"
            if previous:
                return f'previous terminated container "{container}" in pod "{pod_name}" not found'
            return f'container "{container}" in pod "{pod_name}" is waiting to start: {reason}'
        state = entry.get("state") or {}
        last = (entry.get("lastState") or {}).get("terminated")
        if previous:
            if not last or not last.get("containerID"):
                return f'previous terminated container "{container}" in pod "{pod_name}" not found'
            return None
        if "running" in state or "terminated" in state:
            return None
        if last and last.get("containerID"):
            return None
        reason = (state.get("waiting") or {}).get("reason", "")
        if "waiting" in state:
            text = _WAITING_MESSAGES.get(reason, reason)
            return f'container "{container}" in pod "{pod_name}" is waiting to start: {text}'
        return f'container "{container}" in pod "{pod_name}" is waiting to start - no logs yet'

    async def _pod_log(
        self, request: web.Request, namespace: str, name: str, params: dict[str, str]
    ) -> web.StreamResponse:
        pods = RESOURCES["pods"]
        pod = self._require(pods, namespace, name)
        container = params.get("container") or ""
        names = container_names(pod)
        if not container:
            regular = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
            if len(regular) == 1:
                container = regular[0]
            elif not regular:
                raise errors.bad_request(f"a container name must be specified for pod {name}")
            else:
                raise errors.bad_request(
                    f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]"
                )
        elif container not in names:
            raise errors.bad_request(f"container {container} is not valid for pod {name}")
        follow = bool(parse_bool(params, "follow"))
        previous = bool(parse_bool(params, "previous"))
        timestamps = bool(parse_bool(params, "timestamps"))
        tail = parse_int(params, "tailLines")
        since_seconds = parse_int(params, "sinceSeconds")
        limit_bytes = parse_int(params, "limitBytes")
        since_time = params.get("sinceTime")
        problems = []
        if tail is not None and tail < 0:
            problems.append(validation.invalid("tailLines", tail, "must be greater than or equal to 0"))
        if limit_bytes is not None and limit_bytes < 1:
            problems.append(validation.invalid("limitBytes", limit_bytes, "must be greater than 0"))
        if since_seconds is not None and since_seconds < 1:
            problems.append(validation.invalid("sinceSeconds", since_seconds, "must be greater than 0"))
        if since_seconds is not None and since_time:
            problems.append(
                validation.forbidden("", "at most one of `sinceTime` or `sinceSeconds` may be specified")
            )
        if problems:
            raise KubeError(
                422,
                "Invalid",
                f'PodLogOptions "{name}" is invalid: {validation.aggregate(problems)}',
                {"name": name, "kind": "PodLogOptions", "causes": [p.cause() for p in problems]},
            )
        if not (pod.get("spec") or {}).get("nodeName"):
            return web.Response(body=b"", content_type="text/plain")
        refusal = self._log_gate(pod, container, previous)
        if refusal:
            raise errors.bad_request(refusal)
        since_ns = 0
        if since_seconds is not None:
            since_ns = time.time_ns() - since_seconds * 1_000_000_000
        elif since_time:
            try:
                since_ns = int(
                    datetime.fromisoformat(
                        kinds.normalize_time(since_time, micro=True).replace("Z", "+00:00")
                    ).timestamp()
                    * 1e9
                )
            except DecodeError as error:
                raise errors.bad_request(str(error)) from None
        uid = pod["metadata"]["uid"]

        def entries() -> list[tuple[int, str]]:
            log = self._logs.get((uid, container), ContainerLog())
            return log.previous if previous else log.lines

        def render(lines: Iterable[tuple[int, str]]) -> bytes:
            return b"".join(
                ((_rfc3339_nano(stamp) + " ") if timestamps else "").encode() + text.encode()
                for stamp, text in lines
            )

        lines = [entry for entry in entries() if entry[0] >= since_ns]
        sent = len(entries())
        if tail is not None:
            lines = lines[-tail:] if tail else []
        body = render(lines)
        budget = limit_bytes
        if budget is not None:
            body = body[:budget]
            budget -= len(body)
        if not follow or previous or self._terminated(namespace, name, uid, container):
            return web.Response(body=body, content_type="text/plain")
        response = web.StreamResponse(status=200)
        response.content_type = "text/plain"
        response.enable_chunked_encoding()
        self._streams[id(request)] = request
        try:
            await response.prepare(request)
            if body:
                await response.write(body)
            while budget is None or budget > 0:
                changed = self._changed
                current = entries()
                pod_now = self._store["pods"].get((namespace, name))
                if pod_now is None or pod_now["metadata"]["uid"] != uid:
                    break
                if len(current) > sent:
                    chunk = render(current[sent:])
                    sent = len(current)
                    if budget is not None:
                        chunk = chunk[:budget]
                        budget -= len(chunk)
                    await response.write(chunk)
                    continue
                if self._terminated(namespace, name, uid, container):
                    break
                if request.transport is None or request.transport.is_closing():
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), 0.25)
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self._streams.pop(id(request), None)
        return response

    def _terminated(self, namespace: str, pod: str, uid: str, container: str) -> bool:
        obj = self._store["pods"].get((namespace, pod))
        if obj is None or obj["metadata"]["uid"] != uid:
            return True
        entry = self._find_status(obj, container)
        return bool(entry and "terminated" in (entry.get("state") or {}))
