"""Pure domain rules: asset definitions, identifiers, page tokens."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from provider.domain.assets import Asset, AssetSpec, EnvRule, latest
from provider.domain.errors import InvalidInput, RangeNotSatisfiable
from provider.domain.ids import new_id
from provider.domain.pagination import decode_token, encode_token
from provider.domain.ranges import ByteRange, resolve_range

BASE: dict[str, Any] = {"title": "t", "image": "img:1"}


@pytest.mark.parametrize(
    ("changes", "where", "words"),
    [
        ({"inputs": [{"name": "a", "mount_path": "data/a"}]}, "inputs.0.mount_path", "absolute path"),
        ({"inputs": [{"name": "a", "mount_path": "/x/../etc"}]}, "inputs.0.mount_path", "absolute path"),
        ({"outputs": [{"name": "o", "path": "../escape"}]}, "outputs.0.path", "relative path"),
        ({"outputs": [{"name": "o", "path": "/abs"}]}, "outputs.0.path", "relative path"),
        (
            {"inputs": [{"name": "a", "mount_path": "/results/a"}]},
            "",
            "inside result_dir",
        ),
        (
            {"outputs": [{"name": "o", "path": "a"}, {"name": "o", "path": "b"}]},
            "",
            "duplicate output names: o",
        ),
        ({"env": {"1BAD": "x"}}, "env", "not valid environment variable names: 1BAD"),
        ({"consumer_env": {"X": {}}}, "consumer_env.X", "exactly one of 'pattern' or 'enum'"),
        ({"consumer_env": {"X": {"pattern": "("}}}, "consumer_env.X", "does not compile"),
        (
            {"consumer_env": {"X": {"enum": ["a"], "default": "b"}}},
            "consumer_env.X",
            "default does not satisfy",
        ),
        ({"resources": {"cpu": "two"}}, "resources.cpu", "should match pattern"),
        ({"max_run_seconds": 10**9}, "max_run_seconds", "less than or equal"),
        ({"tolerations": [{"operator": "Maybe"}]}, "tolerations.0.operator", "'Exists' or 'Equal'"),
        (
            {"local": {"command": ["run", "{input:data}"]}},
            "",
            "local names inputs the asset does not declare: data",
        ),
        (
            {
                "inputs": [{"name": "a", "mount_path": "/in"}],
                "local": {"command": ["x"], "env": {"B": "{input:b}"}},
            },
            "",
            "local names inputs the asset does not declare: b",
        ),
    ],
)
def test_asset_rules(changes: dict[str, Any], where: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        AssetSpec.model_validate({**BASE, **changes})
    errors = caught.value.errors()
    assert any(".".join(map(str, e["loc"])) == where and words in e["msg"] for e in errors), errors


def test_env_rules_match_whole_values() -> None:
    rule = EnvRule(pattern="[0-9]+")
    assert rule.accepts("42") and not rule.accepts("42; rm -rf /") and not rule.accepts("")
    assert EnvRule(enum=["fast", "slow"]).accepts("fast") and not EnvRule(enum=["fast"]).accepts("FAST")


def test_latest_uses_version_order() -> None:
    versions = [Asset(**BASE, id="a", version=v) for v in ("1.9", "1.10", "1.10rc1", "0.9")]
    assert latest(versions).version == "1.10"  # type: ignore[union-attr]
    assert latest([]) is None
    with pytest.raises(ValidationError, match="is not a version"):
        Asset(**BASE, id="a", version="banana")


def test_ids_are_unique_and_sorted_by_creation() -> None:
    ids = [new_id("x") for _ in range(2000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(len(i) == 28 and i.startswith("x_") for i in ids)


def test_page_tokens_round_trip_and_reject_forgeries() -> None:
    assert decode_token(encode_token(("a", "1.0")), 2) == ("a", "1.0")
    for forged in ("!!!", encode_token(("a",)), "bm90IGpzb24", encode_token(("a", "b"))[:-3]):
        with pytest.raises(InvalidInput):
            decode_token(forged, 2)


def test_ranges_take_ascii_digits_and_never_convert_huge_numbers() -> None:
    assert resolve_range("bytes=\u0661-\u0662", 10) is None  # Arabic-Indic digits: not a range
    assert resolve_range("bytes=0-" + "9" * 100_000, 10) == ByteRange(0, 9)
    with pytest.raises(RangeNotSatisfiable):
        resolve_range("bytes=" + "9" * 100_000 + "-", 10)
