"""What every compute backend hands the data sidecar."""

from __future__ import annotations

from typing import Any

from provider.services.ports import JobSpec


def sidecar_job(spec: JobSpec) -> dict[str, Any]:
    """The sidecar's job file: which objects to stage in where, which outputs to ship back.

    Input paths are relative to the staging root (`inputs/<name>`), outputs to the result directory.
    """
    kinds = {i.name: i.kind.value for i in spec.asset.inputs}
    return {
        "execution_id": spec.execution_id,
        "inputs": [
            {"name": name, "kind": kinds[name], "key": key, "path": f"inputs/{name}"}
            for name, key in spec.inputs.items()
        ],
        "outputs": [
            {"name": o.name, "kind": o.kind.value, "path": o.path, "required": o.required}
            for o in spec.asset.outputs
        ],
    }
