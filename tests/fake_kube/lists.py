"""Lists: label and field selectors, consistent pages with continue tokens, and lists at an
exact resourceVersion (from the history)."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Mapping
from typing import Any

from tests.fake_kube import errors
from tests.fake_kube.kinds import Resource
from tests.fake_kube.objects import etcd_key, metadata_of
from tests.fake_kube.selectors import (
    FieldSelector,
    LabelSelector,
    SelectorError,
    object_fields,
    parse_field_selector,
    parse_label_selector,
)
from tests.fake_kube.store import Store
from tests.fake_kube.wire import parse_int, parse_rv, too_large


def parse_selectors(resource: Resource, params: Mapping[str, str]) -> tuple[LabelSelector, FieldSelector]:
    try:
        labels = parse_label_selector(params.get("labelSelector"))
        fields = parse_field_selector(params.get("fieldSelector"), resource.field_names)
    except SelectorError as error:
        raise errors.bad_request(str(error)) from None
    return labels, fields


def selected(
    resource: Resource, obj: Mapping[str, Any], labels: LabelSelector, fields: FieldSelector
) -> bool:
    if not labels.matches(metadata_of(obj).get("labels")):
        return False
    return fields.empty or fields.matches(object_fields(obj, resource.selectable))


def _encode_continue(rv: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if data.get("v") != "meta.k8s.io/v1":
            raise ValueError(
                "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"
            )
        rv, start = int(data["rv"]), str(data["start"])
        if not start:
            raise ValueError("continue key is not valid: encoded start key is empty")
    except (ValueError, KeyError, TypeError) as error:
        message = (
            str(error) if str(error).startswith("continue key") else f"continue key is not valid: {error}"
        )
        raise errors.bad_request(message) from None
    return rv, start


class Lists(Store):
    def _list(self, resource: Resource, namespace: str | None, params: Mapping[str, str]) -> dict[str, Any]:
        labels, fields = parse_selectors(resource, params)
        limit = parse_int(params, "limit") or 0
        token = params.get("continue")
        requested_rv = params.get("resourceVersion") or ""
        match = params.get("resourceVersionMatch") or ""
        start = ""
        prefix = f"{namespace}/" if namespace and resource.namespaced else ""
        if token:
            if requested_rv:
                raise errors.bad_request("specifying resource version is not allowed when using continue")
            list_rv, start = _decode_continue(token)
            if list_rv == -1:
                list_rv = self._rv
                state = self._store[resource.plural]
            elif list_rv < self._compacted:
                raise errors.expired(errors.INCONSISTENT_CONTINUE, continue_token=_encode_continue(-1, start))
            else:
                state = self._state_at(resource, list_rv)
        elif match == "Exact":
            list_rv = parse_rv(requested_rv)
            if list_rv < self._compacted:
                raise errors.expired("The resourceVersion for the provided list is too old.")
            if list_rv > self._rv:
                raise too_large(list_rv, self._rv)
            state = self._state_at(resource, list_rv)
        else:
            if match and match != "NotOlderThan":
                raise errors.bad_request(f'resourceVersionMatch: Unsupported value: "{match}"')
            if requested_rv not in ("", "0") and parse_rv(requested_rv) > self._rv:
                raise too_large(parse_rv(requested_rv), self._rv)
            list_rv = self._rv
            state = self._store[resource.plural]
        entries = []
        for (ns, name), obj in state.items():
            if namespace is not None and resource.namespaced and ns != namespace:
                continue
            sort_key = etcd_key(ns, name)
            relative = sort_key[len(prefix) :] if prefix else sort_key
            if start and relative < start:
                continue
            if selected(resource, obj, labels, fields):
                entries.append((relative, obj))
        entries.sort(key=lambda entry: entry[0])
        meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
        if limit > 0 and len(entries) > limit:
            meta["continue"] = _encode_continue(list_rv, entries[limit - 1][0] + "\x00")
            if labels.empty and fields.empty:
                meta["remainingItemCount"] = len(entries) - limit
            entries = entries[:limit]
        items = []
        for _, obj in entries:
            item = copy.deepcopy(obj)
            item.pop("kind", None)
            item.pop("apiVersion", None)
            items.append(item)
        return {
            "kind": resource.list_kind,
            "apiVersion": resource.api_version,
            "metadata": meta,
            "items": items,
        }
