"""The asset catalog through the HTTP API."""

from __future__ import annotations

from typing import Any

import yaml

from tests.conftest import ADMIN_KEY, REPO, Api


def dummy_spec(**changes: Any) -> dict[str, Any]:
    spec = yaml.safe_load((REPO / "config" / "assets" / "dummy.yaml").read_text())
    spec.pop("id"), spec.pop("version")
    spec.update(changes)
    return spec


async def test_file_assets_are_loaded_at_start_and_readable_by_consumers(api: Api, new_consumer) -> None:  # type: ignore[no-untyped-def]
    consumer = await new_consumer()
    asset = await api.json("GET", "/api/v1/assets/dummy", 200, key=consumer.key)
    assert asset["version"] == "1.0.0"
    assert asset["inputs"][0]["name"] == "source" and asset["outputs"][0]["path"] == "output"
    assert asset["local"]["command"][0] == "{python}"
    page = await api.json("GET", "/api/v1/assets", 200, key=consumer.key)
    assert [(a["id"], a["version"]) for a in page["items"]] == [("dummy", "1.0.0")]


async def test_put_creates_then_replaces_and_latest_version_wins(api: Api) -> None:
    created = await api.json(
        "PUT", "/api/v1/assets/dummy/versions/1.10.0", 201, key=ADMIN_KEY, json=dummy_spec(title="Ten")
    )
    assert created["created_at"] == created["updated_at"]
    replaced = await api.json(
        "PUT", "/api/v1/assets/dummy/versions/1.10.0", 200, key=ADMIN_KEY, json=dummy_spec(title="Ten again")
    )
    assert replaced["title"] == "Ten again" and replaced["created_at"] == created["created_at"]
    # 1.10.0 > 1.9.0 > 1.0.0 by version order, not by text order
    await api.json("PUT", "/api/v1/assets/dummy/versions/1.9.0", 201, key=ADMIN_KEY, json=dummy_spec())
    assert (await api.json("GET", "/api/v1/assets/dummy", 200, key=ADMIN_KEY))["version"] == "1.10.0"
    one = await api.json("GET", "/api/v1/assets/dummy?version=1.0.0", 200, key=ADMIN_KEY)
    assert one["version"] == "1.0.0"
    assert (await api.json("GET", "/api/v1/assets/dummy/versions/1.9.0", 200, key=ADMIN_KEY))[
        "version"
    ] == "1.9.0"


async def test_a_dry_run_validates_and_stores_nothing(api: Api) -> None:
    checked = await api.json(
        "PUT",
        "/api/v1/assets/trial/versions/1.0.0?dry_run=true",
        200,
        key=ADMIN_KEY,
        json=dummy_spec(title="T"),
    )
    assert checked["id"] == "trial" and checked["title"] == "T"
    await api.json("GET", "/api/v1/assets/trial", 404, key=ADMIN_KEY)  # nothing stored
    refused = await api.json(
        "PUT",
        "/api/v1/assets/trial/versions/1.0.0?dry_run=true",
        422,
        key=ADMIN_KEY,
        json=dummy_spec(max_run_seconds=-1),
    )
    assert any("max_run_seconds" in problem["field"] for problem in refused["errors"])
    await api.json("PUT", "/api/v1/assets/trial/versions/1.0.0", 201, key=ADMIN_KEY, json=dummy_spec())


async def test_put_accepts_matching_identity_in_body_and_rejects_a_mismatch(api: Api) -> None:
    await api.json(
        "PUT",
        "/api/v1/assets/twin/versions/2.0.0",
        201,
        key=ADMIN_KEY,
        json=dummy_spec(id="twin", version="2.0.0"),
    )
    problem = await api.json(
        "PUT",
        "/api/v1/assets/twin/versions/2.0.0",
        422,
        key=ADMIN_KEY,
        json=dummy_spec(id="other", version="3"),
    )
    assert {e["field"] for e in problem["errors"]} == {"body.id", "body.version"}


async def test_put_with_invalid_identity_or_spec_is_422_and_stores_nothing(api: Api) -> None:
    problem = await api.json(
        "PUT", "/api/v1/assets/Bad_Id/versions/not-a-version", 422, key=ADMIN_KEY, json=dummy_spec()
    )
    assert {e["field"] for e in problem["errors"]} == {"path.asset_id", "path.version"}
    problem = await api.json(
        "PUT",
        "/api/v1/assets/good/versions/1",
        422,
        key=ADMIN_KEY,
        json=dummy_spec(max_run_seconds=0, resources={"memory": "lots"}, inputs=[{"name": "x"}]),
    )
    fields = {e["field"] for e in problem["errors"]}
    assert {"body.max_run_seconds", "body.resources.memory", "body.inputs.0.mount_path"} <= fields
    await api.json("GET", "/api/v1/assets/good", 404, key=ADMIN_KEY)


async def test_list_filters_and_paginates(api: Api) -> None:
    for i in range(4):
        await api.json(
            "PUT",
            f"/api/v1/assets/fft-{i}/versions/1.0",
            201,
            key=ADMIN_KEY,
            json=dummy_spec(title=f"FFT {i}", description="Fourier transform"),
        )
    page = await api.json("GET", "/api/v1/assets?q=fourier&page_size=3", 200, key=ADMIN_KEY)
    assert [a["id"] for a in page["items"]] == ["fft-0", "fft-1", "fft-2"]
    rest = await api.json(
        "GET",
        f"/api/v1/assets?q=fourier&page_size=3&page_token={page['next_page_token']}",
        200,
        key=ADMIN_KEY,
    )
    assert [a["id"] for a in rest["items"]] == ["fft-3"] and rest["next_page_token"] is None
    only = await api.json("GET", "/api/v1/assets?id=dummy", 200, key=ADMIN_KEY)
    assert [a["id"] for a in only["items"]] == ["dummy"]


async def test_delete_one_version_then_all(api: Api) -> None:
    await api.json("PUT", "/api/v1/assets/dummy/versions/2.0.0", 201, key=ADMIN_KEY, json=dummy_spec())
    await api.json("DELETE", "/api/v1/assets/dummy/versions/2.0.0", 204, key=ADMIN_KEY)
    await api.json("GET", "/api/v1/assets/dummy/versions/2.0.0", 404, key=ADMIN_KEY)
    assert (await api.json("GET", "/api/v1/assets/dummy", 200, key=ADMIN_KEY))["version"] == "1.0.0"
    await api.json("DELETE", "/api/v1/assets/dummy", 204, key=ADMIN_KEY)
    await api.json("GET", "/api/v1/assets/dummy", 404, key=ADMIN_KEY)
    await api.json("DELETE", "/api/v1/assets/dummy", 404, key=ADMIN_KEY)


async def test_unknown_asset_and_version_are_404(api: Api) -> None:
    problem = await api.json("GET", "/api/v1/assets/nothing", 404, key=ADMIN_KEY)
    assert problem["type"] == "urn:provider:problem:not-found" and "nothing" in problem["detail"]
    await api.json("GET", "/api/v1/assets/dummy?version=9.9.9", 404, key=ADMIN_KEY)


async def test_an_asset_whose_local_runner_names_an_unknown_input_is_422(api: Api) -> None:
    spec = dummy_spec()
    spec["local"]["env"] = {**spec["local"].get("env", {}), "OTHER": "{input:nope}"}
    problem = await api.json("PUT", "/api/v1/assets/dummy/versions/2.0.0", 422, key=ADMIN_KEY, json=spec)
    assert "does not declare: nope" in problem["errors"][0]["message"]
    assert (await api.json("GET", "/api/v1/assets/dummy", 200, key=ADMIN_KEY))["version"] == "1.0.0"


async def test_flags_are_json_booleans_not_numbers_or_words(api: Api) -> None:
    """`required` and `retry.on_executor_error` are booleans (contract: AssetSpec); a lax reading
    would take 0, 1 and "yes" for them and store an asset the caller did not describe."""
    spec = dummy_spec()
    for flag in (0, 1, "yes"):
        inputs = [{**spec["inputs"][0], "required": flag}]
        outputs = [{**spec["outputs"][0], "required": flag}]
        problem = await api.json(
            "PUT",
            "/api/v1/assets/flags/versions/1",
            422,
            key=ADMIN_KEY,
            json=dummy_spec(inputs=inputs, outputs=outputs, retry={"on_executor_error": flag}),
        )
        fields = {e["field"] for e in problem["errors"]}
        assert fields == {"body.inputs.0.required", "body.outputs.0.required", "body.retry.on_executor_error"}
    # Integers likewise: not true or false (1 and 0 to a lax integer), not "60".
    for number in (False, True, "60"):
        problem = await api.json(
            "PUT",
            "/api/v1/assets/flags/versions/1",
            422,
            key=ADMIN_KEY,
            json=dummy_spec(
                tolerations=[{"key": "k", "operator": "Exists", "toleration_seconds": number}],
                run_as_user=number,
                max_run_seconds=number,
            ),
        )
        fields = {e["field"] for e in problem["errors"]}
        assert fields == {"body.tolerations.0.toleration_seconds", "body.run_as_user", "body.max_run_seconds"}
    await api.json("GET", "/api/v1/assets/flags", 404, key=ADMIN_KEY)
