"""Who may do what, from a terminal: tenants and their API keys (admin), workspace tokens, and
webhook subscriptions with their deliveries."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from provider.cli.common import _client, key_values
from provider.client import ApiClient


def _call(args: argparse.Namespace, work: Callable[[ApiClient], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        async with _client(args) as api:
            return await work(api)

    return asyncio.run(run())


def _all(path: str, **params: str) -> Callable[[ApiClient], Awaitable[list[dict[str, Any]]]]:
    async def work(api: ApiClient) -> list[dict[str, Any]]:
        return [item async for item in api.pages(path, **params)]

    return work


def _show(args: argparse.Namespace, value: Any, line: Callable[[dict[str, Any]], str], empty: str) -> int:
    """JSON with --json, else one line per item (or `empty`)."""
    if args.json:
        print(json.dumps(value, indent=2))
        return 0
    items = value if isinstance(value, list) else [value]
    if not items:
        print(empty)
    for item in items:
        print(line(item))
    return 0


# --- tenants and API keys (admin) --------------------------------------------------------------


def _tenant_line(tenant: dict[str, Any]) -> str:
    allowed = tenant.get("allowed_assets")
    scope = "all assets" if allowed is None else f"assets: {', '.join(allowed) or 'none'}"
    return f"{tenant['id']}  {tenant['participant_id']:<32}  {tenant['display_name']:<24}  {scope}"


def cmd_tenants_list(args: argparse.Namespace) -> int:
    return _show(args, _call(args, _all("/api/v1/tenants")), _tenant_line, "no tenants")


def cmd_tenants_create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"participant_id": args.participant_id}
    if args.name:
        body["display_name"] = args.name
    if args.allow is not None:
        body["allowed_assets"] = args.allow

    async def work(api: ApiClient) -> Any:
        return await api.json("POST", "/api/v1/tenants", json=body)

    return _show(args, _call(args, work), _tenant_line, "")


def cmd_tenants_get(args: argparse.Namespace) -> int:
    async def work(api: ApiClient) -> Any:
        return await api.json("GET", f"/api/v1/tenants/{args.tenant}")

    return _show(args, _call(args, work), _tenant_line, "")


def _key_line(key: dict[str, Any]) -> str:
    state = "revoked" if key.get("revoked_at") else "active"
    return f"{key['id']}  {key['role']:<9}  {state:<8}  {key.get('name') or '-'}"


def cmd_keys_list(args: argparse.Namespace) -> int:
    items = _call(args, _all(f"/api/v1/tenants/{args.tenant}/api-keys"))
    return _show(args, items, _key_line, "no API keys")


def cmd_keys_create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"role": args.role, "name": args.name}
    if args.expires_at:
        body["expires_at"] = args.expires_at

    async def work(api: ApiClient) -> Any:
        return await api.json("POST", f"/api/v1/tenants/{args.tenant}/api-keys", json=body)

    issued = _call(args, work)
    if args.json:
        print(json.dumps(issued, indent=2))
    else:
        print(issued["key"])  # shown only now: the one line a script needs
    return 0


def _delete_each(args: argparse.Namespace, collection: str, ids: list[str], done: str) -> int:
    """DELETE collection/id for each id, saying `done id` after each."""

    async def work(api: ApiClient) -> None:
        for item_id in ids:
            await api.json("DELETE", f"{collection}/{item_id}")
            print(f"{done} {item_id}")

    _call(args, work)
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    return _delete_each(args, f"/api/v1/tenants/{args.tenant}/api-keys", args.keys, "revoked")


# --- workspace tokens --------------------------------------------------------------------------


def _token_line(token: dict[str, Any]) -> str:
    state = "revoked" if token.get("revoked_at") else f"expires {token['expires_at']}"
    return f"{token['id']}  {','.join(token['scopes']):<48}  {state}  {token.get('name') or '-'}"


def cmd_tokens_list(args: argparse.Namespace) -> int:
    items = _call(args, _all(f"/api/v1/workspaces/{args.workspace}/tokens"))
    return _show(args, items, _token_line, "no tokens")


def cmd_tokens_create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name}
    if args.scope:
        body["scopes"] = args.scope
    if args.ttl is not None:
        body["ttl_seconds"] = args.ttl

    async def work(api: ApiClient) -> Any:
        return await api.json("POST", f"/api/v1/workspaces/{args.workspace}/tokens", json=body)

    issued = _call(args, work)
    print(json.dumps(issued, indent=2) if args.json else issued["token"])
    return 0


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    return _delete_each(args, f"/api/v1/workspaces/{args.workspace}/tokens", args.tokens, "revoked")


# --- subscriptions -----------------------------------------------------------------------------


def _subscription_line(subscription: dict[str, Any]) -> str:
    return f"{subscription['id']}  {','.join(subscription['events']):<32}  {subscription['url']}"


def cmd_subscriptions_list(args: argparse.Namespace) -> int:
    items = _call(args, _all("/api/v1/subscriptions"))
    return _show(args, items, _subscription_line, "no subscriptions")


def cmd_subscriptions_create(args: argparse.Namespace) -> int:
    labels = key_values(args.label, "--label", "KEY=VALUE")
    body: dict[str, Any] = {"url": args.hook_url, "events": args.event or ["execution.*"]}
    event_filter = {
        name: value
        for name, value in (("workspace_id", args.workspace), ("execution_id", args.execution))
        if value
    }
    if labels:
        event_filter["labels"] = labels
    if event_filter:
        body["filter"] = event_filter

    async def work(api: ApiClient) -> Any:
        return await api.json("POST", "/api/v1/subscriptions", json=body)

    made = _call(args, work)
    if args.json:
        print(json.dumps(made, indent=2))
    else:
        print(made["id"])
        print(f"secret {made['secret']} (shown only now: the receiver verifies signatures with it)")
    return 0


def cmd_subscriptions_rm(args: argparse.Namespace) -> int:
    return _delete_each(args, "/api/v1/subscriptions", args.subscriptions, "deleted")


def _delivery_line(delivery: dict[str, Any]) -> str:
    attempts = delivery["attempt_count"]
    outcome = delivery["last_error"] or ""
    return (
        f"{delivery['id']}  {delivery['state']:<9}  {delivery['event_type']:<28}  {attempts} tries  {outcome}"
    )


def cmd_subscriptions_deliveries(args: argparse.Namespace) -> int:
    items = _call(args, _all(f"/api/v1/subscriptions/{args.subscription}/deliveries"))
    items = [item for item in items if args.state in (None, item["state"])]
    return _show(args, items, _delivery_line, "no deliveries")


def cmd_subscriptions_retry(args: argparse.Namespace) -> int:
    async def work(api: ApiClient) -> Any:
        path = f"/api/v1/subscriptions/{args.subscription}/deliveries/{args.delivery}/retry"
        return await api.json("POST", path)

    return _show(args, _call(args, work), _delivery_line, "")
