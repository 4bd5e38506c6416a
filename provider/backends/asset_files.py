"""Asset definitions from YAML files (config/assets/*.yaml), one asset per file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from provider.domain.assets import Asset


@dataclass
class AssetFileError(Exception):
    """An asset file that cannot be used; the message names the file, the field and the problem."""

    path: Path
    problems: list[tuple[str, str]]

    def __str__(self) -> str:
        lines = [f"{self.path}: {field or '(file)'}: {message}" for field, message in self.problems]
        return "invalid asset file\n  " + "\n  ".join(lines)


def example_asset_directory() -> Path:
    """The asset definitions that ship with the package (the `dummy` asset), wherever it runs:
    provider/assets in an installed wheel (pyproject.toml copies config/assets there), else
    config/assets of the source tree, their one copy."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / "assets"
    return packaged if packaged.is_dir() else package.parent / "config" / "assets"


def read_asset_file(path: Path) -> Asset:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise AssetFileError(path, [("", f"cannot read: {exc}")]) from exc
    except yaml.YAMLError as exc:
        raise AssetFileError(path, [("", f"not valid YAML: {exc}")]) from exc
    if not isinstance(data, dict):
        raise AssetFileError(path, [("", "must hold one mapping (an asset definition)")])
    try:
        return Asset.model_validate(data)
    except ValidationError as exc:
        raise AssetFileError(
            path, [(".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors()]
        ) from exc


def read_asset_directory(directory: Path) -> list[Asset]:
    """Every `*.yaml`/`*.yml` file in `directory` (sorted); a duplicate id and version is an error."""
    assets: list[Asset] = []
    seen: dict[tuple[str, str], Path] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        asset = read_asset_file(path)
        key = (asset.id, asset.version)
        if key in seen:
            raise AssetFileError(path, [("id", f"{asset.id} {asset.version} is also defined in {seen[key]}")])
        seen[key] = path
        assets.append(asset)
    return assets
