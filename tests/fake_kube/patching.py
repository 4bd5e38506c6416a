"""The three PATCH flavours the API server accepts, applied to plain JSON documents.

JSON merge patch follows RFC 7386 and JSON patch RFC 6902 exactly. Strategic merge patch is
approximated: lists are merged by the merge key Kubernetes declares for that field name (which
is the same wherever the name occurs in the kinds served here), primitive `finalizers` lists are
unioned, every other list is replaced, and the `$patch`, `$retainKeys`, `$setElementOrder/...`
and `$deleteFromPrimitiveList/...` directives are honoured.
"""

from __future__ import annotations

import copy
from typing import Any

# Field name -> merge key, from the `patchMergeKey` tags of the core, batch and meta types.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
    "conditions": "type",
    "ownerReferences": "uid",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "resourceClaims": "name",
    "topologySpreadConstraints": "topologyKey",
}
# Lists of scalars whose patch strategy is `merge` (set union).
PRIMITIVE_MERGE: frozenset[str] = frozenset({"finalizers"})


class PatchError(ValueError):
    """A patch that cannot be applied; `code` is the HTTP status the server answers with."""

    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------- merge patch


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes a member, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ------------------------------------------------------------------- strategic merge patch


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: _strip_directives(item)
            for key, item in value.items()
            if not key.startswith("$") and item is not None
        }
    if isinstance(value, list):
        return [
            _strip_directives(item)
            for item in value
            if not (isinstance(item, dict) and item.get("$patch") == "delete")
        ]
    return value


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Apply a strategic merge patch (see the module docstring for what is covered)."""
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch must be a JSON object", code=400)
    result = _smp_map(target if isinstance(target, dict) else {}, patch)
    return {} if result is None else result


def _smp_map(original: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any] | None:
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip_directives({k: v for k, v in patch.items() if k != "$patch"})
    if directive == "delete":
        return None
    if directive is not None:
        raise PatchError(f"Unknown patch type: {directive!r}", code=400)
    result = copy.deepcopy(original)
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = list(value or [])
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            doomed = list(value or [])
            if isinstance(result.get(name), list):
                result[name] = [item for item in result[name] if item not in doomed]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            current = result.get(key)
            merged = _smp_map(current if isinstance(current, dict) else {}, value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _smp_list(key, result.get(key), value)
        else:
            result[key] = value
    for name, order in orders.items():
        if isinstance(result.get(name), list):
            result[name] = _apply_order(name, result[name], order)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {key: item for key, item in result.items() if key in retain}
    return result


def _smp_list(name: str, original: Any, patch: list[Any]) -> list[Any]:
    original_list = copy.deepcopy(original) if isinstance(original, list) else []
    merge_key = MERGE_KEYS.get(name)
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [
            _strip_directives(item)
            for item in patch
            if not (isinstance(item, dict) and item.get("$patch") == "replace")
        ]
    if merge_key and all(isinstance(item, dict) for item in patch):
        items = original_list
        for item in patch:
            if merge_key not in item:
                raise PatchError(f"map: {item} does not contain declared merge key: {merge_key}")
            key_value = item[merge_key]
            position = next(
                (
                    i
                    for i, old in enumerate(items)
                    if isinstance(old, dict) and old.get(merge_key) == key_value
                ),
                None,
            )
            if item.get("$patch") == "delete":
                items = [
                    old for old in items if not (isinstance(old, dict) and old.get(merge_key) == key_value)
                ]
                continue
            if position is None:
                items.append(_strip_directives(item))
            else:
                merged = _smp_map(items[position], item)
                items[position] = merged if merged is not None else {}
        return items
    if name in PRIMITIVE_MERGE:
        merged_list = list(original_list)
        for item in patch:
            if item not in merged_list:
                merged_list.append(item)
        return merged_list
    return _strip_directives(patch)


def _apply_order(name: str, items: list[Any], order: list[Any]) -> list[Any]:
    merge_key = MERGE_KEYS.get(name)

    def key_of(item: Any) -> Any:
        if merge_key and isinstance(item, dict):
            return item.get(merge_key)
        return item

    wanted = [key_of(item) for item in order]
    ranked = [item for item in items if key_of(item) in wanted]
    ranked.sort(key=lambda item: wanted.index(key_of(item)))
    rest = [item for item in items if key_of(item) not in wanted]
    return ranked + rest


# ------------------------------------------------------------------------------ JSON patch


def _unescape_pointer(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _split_pointer(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f'JSON pointer must start with "/": {pointer!r}', code=400)
    return [_unescape_pointer(token) for token in pointer[1:].split("/")]


def _array_index(token: str, length: int, *, allow_end: bool, op: str, path: str) -> int:
    if token == "-" and allow_end:
        return length
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchError(
            f"{op} operation does not apply: doc is missing path: {path}: invalid index {token!r}"
        )
    index = int(token)
    limit = length if allow_end else length - 1
    if index > limit:
        raise PatchError(f"{op} operation does not apply: doc is missing path: {path}: index out of range")
    return index


def _parent(doc: Any, tokens: list[str], op: str, path: str) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"{op} operation does not apply: doc is missing path: {path}: missing value")
            node = node[token]
        elif isinstance(node, list):
            node = node[_array_index(token, len(node), allow_end=False, op=op, path=path)]
        else:
            raise PatchError(f"{op} operation does not apply: doc is missing path: {path}: missing value")
    return node


def _get(doc: Any, path: str, op: str) -> Any:
    tokens = _split_pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, op, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"{op} operation does not apply: doc is missing path: {path}: missing value")
        return parent[last]
    if isinstance(parent, list):
        return parent[_array_index(last, len(parent), allow_end=False, op=op, path=path)]
    raise PatchError(f"{op} operation does not apply: doc is missing path: {path}: missing value")


def _add(doc: Any, path: str, value: Any, op: str = "add") -> Any:
    tokens = _split_pointer(path)
    if not tokens:
        return copy.deepcopy(value)
    parent = _parent(doc, tokens, op, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        parent.insert(_array_index(last, len(parent), allow_end=True, op=op, path=path), copy.deepcopy(value))
    else:
        raise PatchError(f"{op} operation does not apply: doc is missing path: {path}: missing value")
    return doc


def _remove(doc: Any, path: str, op: str = "remove") -> tuple[Any, Any]:
    tokens = _split_pointer(path)
    if not tokens:
        raise PatchError(f"{op} operation does not apply: cannot remove the whole document")
    parent = _parent(doc, tokens, op, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"{op} operation does not apply: doc is missing path: {path}: missing value")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_array_index(last, len(parent), allow_end=False, op=op, path=path))
    raise PatchError(f"{op} operation does not apply: doc is missing path: {path}: missing value")


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902. A failed `test` or a path that does not exist raises PatchError (422)."""
    if not isinstance(operations, list):
        raise PatchError("json: cannot unmarshal object into Go value of type jsonpatch.Patch", code=400)
    doc = copy.deepcopy(target)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation:
            raise PatchError("Unexpected kind: <nil>", code=400)
        op = operation["op"]
        path = operation.get("path")
        if not isinstance(path, str):
            raise PatchError(f"{op} operation does not apply: path is missing", code=422)
        if op in ("add", "replace", "test") and "value" not in operation:
            raise PatchError(f"{op} operation does not apply: value is missing")
        if op == "add":
            doc = _add(doc, path, operation["value"])
        elif op == "remove":
            doc, _ = _remove(doc, path)
        elif op == "replace":
            _get(doc, path, "replace")
            tokens = _split_pointer(path)
            if not tokens:
                doc = copy.deepcopy(operation["value"])
            else:
                parent = _parent(doc, tokens, "replace", path)
                last = tokens[-1]
                if isinstance(parent, list):
                    parent[_array_index(last, len(parent), allow_end=False, op="replace", path=path)] = (
                        copy.deepcopy(operation["value"])
                    )
                else:
                    parent[last] = copy.deepcopy(operation["value"])
        elif op in ("move", "copy"):
            source = operation.get("from")
            if not isinstance(source, str):
                raise PatchError(f"{op} operation does not apply: from is missing")
            if op == "move":
                if path.startswith(source + "/"):
                    raise PatchError("move operation does not apply: from is a prefix of path")
                doc, value = _remove(doc, source, "move")
            else:
                value = copy.deepcopy(_get(doc, source, "copy"))
            doc = _add(doc, path, value, op)
        elif op == "test":
            if not _exists(doc, path) or not _json_equal(_get(doc, path, "test"), operation["value"]):
                raise PatchError(f"testing value {path} failed: test failed")
        else:
            raise PatchError(f"Unexpected kind: {op}", code=400)
    return doc


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_equal(left: Any, right: Any) -> bool:
    """Equality of JSON values: 1 equals 1.0, but true does not equal 1."""
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_json_equal(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(_json_equal(a, b) for a, b in zip(left, right, strict=True))
    return type(left) is type(right) and bool(left == right)


def _exists(doc: Any, path: str) -> bool:
    try:
        _get(doc, path, "test")
    except PatchError:
        return False
    return True
