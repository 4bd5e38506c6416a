"""Deletes as the generic registry carries them out: preconditions, propagation policies
(orphan and foreground finalizers), graceful pod deletion, and collections."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from aiohttp import web

from tests.fake_kube import errors, validation
from tests.fake_kube.errors import KubeError
from tests.fake_kube.kinds import Resource
from tests.fake_kube.lists import Lists
from tests.fake_kube.objects import TERMINAL, timestamp, utc_now
from tests.fake_kube.pods import Kubelet
from tests.fake_kube.wire import json_response, parse_bool, parse_int

JOB_DELETE_WARNING = (
    '299 - "child pods are preserved by default when jobs are deleted; set propagationPolicy=Background '
    'to remove them or set propagationPolicy=Orphan to suppress this warning"'
)


class Deletion(Kubelet, Lists):
    def _delete_options(self, request: web.Request, params: dict[str, str], raw: bytes) -> dict[str, Any]:
        """DeleteOptions from the body if there is one, else from the query (as the server does)."""
        if raw.strip():
            try:
                options = json.loads(raw)
            except ValueError as error:
                raise errors.bad_request(f"error decoding DeleteOptions: {error}") from None
            if not isinstance(options, dict):
                raise errors.bad_request("DeleteOptions must be an object")
            return options
        options: dict[str, Any] = {}
        if "propagationPolicy" in params:
            options["propagationPolicy"] = params["propagationPolicy"]
        if "gracePeriodSeconds" in params:
            options["gracePeriodSeconds"] = parse_int(params, "gracePeriodSeconds")
        if "orphanDependents" in params:
            options["orphanDependents"] = parse_bool(params, "orphanDependents")
        if "dryRun" in params:
            options["dryRun"] = [params["dryRun"]]
        return options

    def _delete_request(
        self,
        request: web.Request,
        resource: Resource,
        namespace: str,
        name: str,
        params: dict[str, str],
        raw: bytes,
    ) -> web.Response:
        options = self._delete_options(request, params, raw)
        policy = self._policy(resource, options)
        key = (namespace if resource.namespaced else "", name)
        if key not in self._store[resource.plural]:
            raise errors.not_found(resource, name)
        if resource.plural == "namespaces" and name in ("default", "kube-system", "kube-public"):
            raise KubeError(
                403,
                "Forbidden",
                f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                errors.details(resource, name),
            )
        obj, deleted = self._delete_object(
            resource,
            key,
            policy=policy,
            grace=options.get("gracePeriodSeconds"),
            preconditions=options.get("preconditions") or {},
            dry_run=bool(options.get("dryRun")),
        )
        headers = {}
        if (
            resource.plural == "jobs"
            and "propagationPolicy" not in options
            and "orphanDependents" not in options
        ):
            headers["Warning"] = JOB_DELETE_WARNING
        code = 202 if not deleted and options.get("orphanDependents") is False else 200
        if deleted and resource.plural != "pods":
            body: dict[str, Any] = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {**errors.details(resource, name), "uid": obj["metadata"]["uid"]},
            }
            return json_response(body, code, headers)
        return json_response(obj, code, headers)

    def _policy(self, resource: Resource, options: Mapping[str, Any]) -> str:
        policy = options.get("propagationPolicy")
        orphan = options.get("orphanDependents")
        if policy is not None and orphan is not None:
            raise errors.invalid(
                resource,
                "",
                [
                    validation.invalid(
                        "propagationPolicy",
                        policy,
                        "orphanDependents and deletionPropagation cannot be both set",
                    )
                ],
            )
        if policy is None:
            if orphan is not None:
                return "Orphan" if orphan else "Background"
            return "Orphan" if resource.plural == "jobs" else "Background"
        if policy not in ("Orphan", "Background", "Foreground"):
            raise KubeError(
                422,
                "Invalid",
                f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: "{policy}": '
                'supported values: "Foreground", "Background", "Orphan", "nil"',
                {"group": "meta.k8s.io", "kind": "DeleteOptions"},
            )
        return str(policy)

    def _delete_object(
        self,
        resource: Resource,
        key: tuple[str, str],
        *,
        policy: str,
        grace: int | None = None,
        preconditions: Mapping[str, Any] | None = None,
        dry_run: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Delete like the generic registry: finalizers and graceful pods defer it. Returns the
        object (its state when deleted, or the updated one) and whether it is gone already."""
        obj = copy.deepcopy(self._store[resource.plural][key])
        meta = obj["metadata"]
        name = meta["name"]
        preconditions = preconditions or {}
        if preconditions.get("uid") and preconditions["uid"] != meta["uid"]:
            raise errors.conflict(
                resource,
                name,
                f"Precondition failed: UID in precondition: {preconditions['uid']}, "
                f"UID in object meta: {meta['uid']}",
            )
        if (
            preconditions.get("resourceVersion")
            and preconditions["resourceVersion"] != meta["resourceVersion"]
        ):
            raise errors.conflict(
                resource,
                name,
                "Precondition failed: ResourceVersion in precondition: "
                f"{preconditions['resourceVersion']}, "
                f"ResourceVersion in object meta: {meta['resourceVersion']}",
            )
        if dry_run:
            return obj, True
        period = 0
        if resource.plural == "pods":
            period = grace if grace is not None else obj["spec"].get("terminationGracePeriodSeconds", 30)
            if not obj["spec"].get("nodeName") or (obj.get("status") or {}).get("phase") in TERMINAL:
                period = 0
            period = 1 if period < 0 else period
        if meta.get("deletionTimestamp"):
            if resource.plural == "pods" and period < meta.get("deletionGracePeriodSeconds", 0):
                if period == 0:
                    return self._finish_pod(key)
                meta["deletionGracePeriodSeconds"] = period
                meta["deletionTimestamp"] = timestamp(utc_now() + timedelta(seconds=period))
                return self._commit(resource, key, obj, "MODIFIED"), False
            return obj, False
        finalizers = list(meta.get("finalizers") or [])
        if policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        elif policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if resource.plural == "namespaces":
            meta["deletionTimestamp"] = timestamp(utc_now())
            meta["deletionGracePeriodSeconds"] = 0
            meta["finalizers"] = [f for f in finalizers if f != "orphan"]
            obj.setdefault("status", {})["phase"] = "Terminating"
            return self._commit(resource, key, obj, "MODIFIED"), False
        if resource.plural == "pods":
            # Pods always go through an update that marks them, even when deleted at once.
            meta["deletionTimestamp"] = timestamp(utc_now() + timedelta(seconds=period))
            meta["deletionGracePeriodSeconds"] = period
            meta["finalizers"] = finalizers
            stored = self._commit(resource, key, obj, "MODIFIED")
            if period > 0:
                self._schedule_kubelet(key[0], key[1], meta["uid"])
                return stored, False
            return self._finish_pod(key)
        if finalizers:
            meta["deletionTimestamp"] = timestamp(utc_now())
            meta["deletionGracePeriodSeconds"] = 0
            meta["finalizers"] = finalizers
            return self._commit(resource, key, obj, "MODIFIED"), False
        self._commit(resource, key, None, "DELETED")
        return obj, True

    def _delete_collection(
        self, request: web.Request, resource: Resource, namespace: str, params: dict[str, str], raw: bytes
    ) -> web.Response:
        options = self._delete_options(request, params, raw)
        policy = self._policy(resource, options)
        listed = self._list(resource, namespace if resource.namespaced else None, params)
        items = []
        for item in listed["items"]:
            item_meta = item["metadata"]
            key = (item_meta.get("namespace", ""), item_meta["name"])
            if key in self._store[resource.plural]:
                obj, _ = self._delete_object(
                    resource, key, policy=policy, grace=options.get("gracePeriodSeconds")
                )
                obj.pop("kind", None)
                obj.pop("apiVersion", None)
                items.append(obj)
        return json_response(
            {
                "kind": resource.list_kind,
                "apiVersion": resource.api_version,
                "metadata": {"resourceVersion": self.resource_version},
                "items": items,
            }
        )
