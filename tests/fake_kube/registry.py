"""The generic registry's writes: create, update (PUT) and the four patch flavours, with body
decoding, defaults, validation, optimistic concurrency and admission of owner references
(`owner_references_role`)."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Mapping
from typing import Any

import yaml
from aiohttp import web

from tests.fake_kube import errors, kinds, patching, rbac
from tests.fake_kube.errors import KubeError
from tests.fake_kube.kinds import RESOURCES, DecodeError, Resource
from tests.fake_kube.objects import generate_name, metadata_of, timestamp, utc_now
from tests.fake_kube.store import Store
from tests.fake_kube.wire import json_response

PATCH_TYPES = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
]

BODY_TYPES = [
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/cbor",
]


class Registry(Store):
    # The Role every requester holds, for the admission plugin OwnerReferencesPermissionEnforcement;
    # None: the plugin is off (upstream's default) and owner references are not checked.
    owner_references_role: Mapping[str, Any] | None = None

    def _decode_body(self, request: web.Request, resource: Resource, raw: bytes) -> dict[str, Any]:
        content_type = (request.content_type or "application/json").lower()
        if not raw.strip():
            raise errors.cannot_decode(resource, "unexpected end of JSON input")
        try:
            if content_type in ("application/json", "*/*", "application/octet-stream"):
                body = json.loads(raw)
            elif content_type in ("application/yaml", "application/x-yaml", "text/yaml"):
                body = yaml.safe_load(raw)
            else:
                raise errors.unsupported_media_type(BODY_TYPES)
        except (ValueError, yaml.YAMLError) as error:
            raise errors.cannot_decode(resource, f"error decoding body: {error}") from None
        if not isinstance(body, dict):
            raise errors.cannot_decode(
                resource, f"json: cannot unmarshal {type(body).__name__} into Go value of type struct"
            )
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if api_version and api_version != resource.api_version:
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({resource.api_version})"
            )
        if kind and kind != resource.kind:
            raise errors.bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({resource.kind})"
            )
        result = kinds.prune_nulls(body)
        assert isinstance(result, dict)
        return result

    def _decode_fields(self, resource: Resource, obj: dict[str, Any]) -> None:
        """Checks Go's decoder makes, plus the conversions (stringData) it performs."""
        try:
            kinds.check_types(resource, obj)
            if resource.plural == "secrets":
                kinds.decode_secret(obj)
            elif resource.plural == "configmaps":
                kinds.decode_configmap(obj)
            kinds.normalize_times(resource, obj)
        except DecodeError as error:
            raise errors.cannot_decode(resource, str(error)) from None

    async def _create(
        self, request: web.Request, resource: Resource, namespace: str, params: dict[str, str], raw: bytes
    ) -> web.Response:
        body = self._decode_body(request, resource, raw)
        obj = self._create_object(resource, namespace, body, dry_run="dryRun" in params)
        return json_response(obj, 201)

    def _create_object(
        self, resource: Resource, namespace: str, body: dict[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        obj["kind"], obj["apiVersion"] = resource.kind, resource.api_version
        if not isinstance(obj.get("metadata", {}), dict):
            raise errors.cannot_decode(
                resource, "json: cannot unmarshal into Go struct field .metadata of type v1.ObjectMeta"
            )
        meta = obj.setdefault("metadata", {})
        if resource.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
            self._check_namespace(resource, namespace, meta.get("name") or meta.get("generateName") or "")
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            raise errors.internal("resourceVersion should not be set on objects to be created")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = generate_name(meta["generateName"])
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = timestamp(utc_now())
        for key in (
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
            "generation",
        ):
            meta.pop(key, None)
        self._decode_fields(resource, obj)
        name = meta.get("name") or ""
        self._admit_owner_references(resource, name, obj, None)
        kinds.prepare_create(resource, obj)
        problems = kinds.validate(resource, obj)
        if problems:
            raise errors.invalid(resource, name, problems)
        key = (namespace if resource.namespaced else "", name)
        if key in self._store[resource.plural]:
            raise errors.already_exists(resource, name)
        if dry_run:
            return kinds.canonical(resource, obj)
        return self._commit(resource, key, obj, "ADDED")

    def _check_namespace(self, resource: Resource, namespace: str, name: str) -> None:
        ns = self._store["namespaces"].get(("", namespace))
        if ns is None:
            raise errors.not_found(RESOURCES["namespaces"], namespace)
        if metadata_of(ns).get("deletionTimestamp"):
            message = f"unable to create new content in namespace {namespace} because it is being terminated"
            raise KubeError(
                403,
                "Forbidden",
                f"{resource.qualified} {errors.quoted(name)} is forbidden: {message}",
                errors.details(
                    resource,
                    name,
                    causes=[
                        {"reason": "NamespaceTerminating", "message": message, "field": "metadata.namespace"}
                    ],
                ),
            )

    def _admit_owner_references(
        self, resource: Resource, name: str, new: Mapping[str, Any], old: Mapping[str, Any] | None
    ) -> None:
        """OwnerReferencesPermissionEnforcement (plugin/pkg/admission/gc): changing an object's
        owner references needs `delete` on the object (on update), and each reference that newly
        sets blockOwnerDeletion needs `update` on its owner's `finalizers` subresource."""
        role = self.owner_references_role
        if role is None:
            return
        refs = metadata_of(new).get("ownerReferences") or []
        old_refs = (metadata_of(old).get("ownerReferences") or []) if old is not None else []
        if refs == old_refs:
            return
        if old is not None and not rbac.allows(role, "delete", resource.group, resource.plural, name=name):
            raise errors.forbidden(
                resource, name, "cannot set an ownerRef on a resource you can't delete: , <nil>"
            )
        blocking_before = {r.get("uid") for r in old_refs if r.get("blockOwnerDeletion") is True}
        for ref in refs:
            if ref.get("blockOwnerDeletion") is not True or ref.get("uid") in blocking_before:
                continue
            api_version, kind = str(ref.get("apiVersion", "")), str(ref.get("kind", ""))
            owner = next(
                (r for r in RESOURCES.values() if r.api_version == api_version and r.kind == kind), None
            )
            if owner is None:
                raise errors.forbidden(
                    resource,
                    name,
                    "cannot set blockOwnerDeletion in this case because cannot find RESTMapping for "
                    f'APIVersion {api_version} Kind {kind}: no matches for kind "{kind}" in version '
                    f'"{api_version}"',
                )
            if not rbac.allows(
                role, "update", owner.group, owner.plural, "finalizers", name=str(ref.get("name", ""))
            ):
                raise errors.forbidden(
                    resource,
                    name,
                    "cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't "
                    "set finalizers on: , <nil>",
                )

    def _update(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        body: dict[str, Any],
        *,
        status: bool = False,
        dry_run: bool = False,
    ) -> tuple[dict[str, Any], int]:
        """PUT semantics (also the tail of PATCH): optimistic concurrency, strategy, validation."""
        if not isinstance(body.get("metadata", {}), dict):
            raise errors.cannot_decode(
                resource, "json: cannot unmarshal into Go struct field .metadata of type v1.ObjectMeta"
            )
        meta = body.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != name:
            raise errors.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        if resource.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        key = (namespace if resource.namespaced else "", name)
        old = self._store[resource.plural].get(key)
        if old is None:
            if resource.allow_create_on_update and not status:
                meta["name"] = name
                meta.pop("resourceVersion", None)
                return self._create_object(resource, namespace, body, dry_run=dry_run), 201
            raise errors.not_found(resource, name)
        old_meta = old["metadata"]
        requested = meta.get("resourceVersion")
        if not requested:
            if not resource.allow_unconditional_update:
                raise KubeError(
                    422,
                    "Invalid",
                    f"{resource.qualified} {errors.quoted(name)} is invalid: metadata.resourceVersion: "
                    "Invalid value: 0x0: must be specified for an update",
                    errors.details(
                        resource,
                        name,
                        causes=[
                            {
                                "reason": "FieldValueInvalid",
                                "message": "Invalid value: 0x0: must be specified for an update",
                                "field": "metadata.resourceVersion",
                            }
                        ],
                    ),
                )
        elif str(requested) != old_meta["resourceVersion"]:
            if not str(requested).isdigit():
                raise errors.bad_request(f'invalid resource version "{requested}"')
            raise errors.conflict(resource, name)
        new = copy.deepcopy(body)
        new["kind"], new["apiVersion"] = resource.kind, resource.api_version
        new_meta = new["metadata"]
        new_meta["name"] = name
        if resource.namespaced:
            new_meta["namespace"] = namespace
        if new_meta.get("uid") and new_meta["uid"] != old_meta["uid"]:
            raise errors.conflict(
                resource,
                name,
                f"Precondition failed: UID in precondition: {new_meta['uid']}, "
                f"UID in object meta: {old_meta['uid']}",
            )
        new_meta["uid"] = old_meta["uid"]
        new_meta["creationTimestamp"] = old_meta["creationTimestamp"]
        new_meta["resourceVersion"] = old_meta["resourceVersion"]
        for key_name in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            if key_name in old_meta:
                new_meta[key_name] = old_meta[key_name]
            else:
                new_meta.pop(key_name, None)
        new_meta.pop("selfLink", None)
        new_meta.pop("managedFields", None)
        self._decode_fields(resource, new)
        if not (status and resource.plural == "pods"):  # the plugin lets pods/status through
            self._admit_owner_references(resource, name, new, old)
        kinds.prepare_update(resource, new, old, status=status)
        problems = kinds.validate_update(resource, new, old, status=status)
        if problems:
            raise errors.invalid(resource, name, problems)
        new = kinds.canonical(resource, new)
        if new == old:
            return copy.deepcopy(old), 200
        if dry_run:
            return new, 200
        if (
            new_meta.get("deletionTimestamp")
            and not new_meta.get("finalizers")
            and not new_meta.get("deletionGracePeriodSeconds")
        ):
            # The registry deletes instead of writing an object whose last finalizer is gone.
            self._commit(resource, key, None, "DELETED")
            return copy.deepcopy(old), 200
        return self._commit(resource, key, new, "MODIFIED"), 200

    def _patch(
        self,
        request: web.Request,
        resource: Resource,
        namespace: str,
        name: str,
        params: dict[str, str],
        raw: bytes,
        *,
        status: bool,
    ) -> web.Response:
        content_type = (request.content_type or "").lower()
        if content_type not in PATCH_TYPES:
            raise errors.unsupported_media_type(PATCH_TYPES)
        dry_run = "dryRun" in params
        key = (namespace if resource.namespaced else "", name)
        old = self._store[resource.plural].get(key)
        if content_type == "application/apply-patch+yaml":
            if not params.get("fieldManager"):
                raise errors.bad_request(
                    "PATCH requests with the apply content type must specify a field manager"
                )
            try:
                patch_body = yaml.safe_load(raw)
            except yaml.YAMLError as error:
                raise errors.bad_request(f"error decoding YAML: {error}") from None
            if not isinstance(patch_body, dict):
                raise errors.bad_request("error decoding YAML: expected an object")
            patch_body = kinds.prune_nulls(patch_body)
            if old is None:
                if status:
                    raise errors.not_found(resource, name)
                patch_body.setdefault("metadata", {})["name"] = name
                return json_response(
                    self._create_object(resource, namespace, patch_body, dry_run=dry_run), 201
                )
            patched = patching.strategic_merge_patch(copy.deepcopy(old), patch_body)
        else:
            if old is None:
                raise errors.not_found(resource, name)
            try:
                patch_body = json.loads(raw) if raw.strip() else None
            except ValueError as error:
                raise errors.bad_request(f"error decoding patch: {error}") from None
            try:
                if content_type == "application/json-patch+json":
                    patched = patching.json_patch(copy.deepcopy(old), patch_body)
                elif content_type == "application/merge-patch+json":
                    if not isinstance(patch_body, dict):
                        raise patching.PatchError("merge patch must be a JSON object", code=400)
                    patched = patching.merge_patch(copy.deepcopy(old), patch_body)
                else:
                    patched = patching.strategic_merge_patch(copy.deepcopy(old), patch_body)
            except patching.PatchError as error:
                if error.code == 400:
                    raise errors.bad_request(str(error)) from None
                raise KubeError(
                    422, "Invalid", "the server rejected our request due to an error in our request", {}
                ) from None
        if not isinstance(patched, dict):
            raise KubeError(
                422, "Invalid", "the server rejected our request due to an error in our request", {}
            )
        patched = kinds.prune_nulls(patched)
        obj, code = self._update(resource, namespace, name, patched, status=status, dry_run=dry_run)
        return json_response(obj, code)
