"""What every compute backend hands the data sidecar, and what it makes of how the sidecar ended.

The sidecar's side of both is provider/sidecar/contract.py.
"""

from __future__ import annotations

from provider.domain.executions import Reason, State
from provider.domain.programs import Program, collect_name, directory_path, placement_name
from provider.services.ports import JobSpec
from provider.sidecar.contract import Command, ExitCode, InputSpec, JobDescription, OutputSpec, input_path


def sidecar_job(spec: JobSpec) -> JobDescription:
    """The sidecar's job description: which objects to stage in where, which outputs to ship back.

    Input paths are relative to the staging root, outputs to the result directory.
    """
    kinds = {i.name: i.kind.value for i in spec.asset.inputs}
    inputs = tuple(InputSpec(name, kinds[name], key, input_path(name)) for name, key in spec.inputs.items())
    if spec.program is not None:
        return JobDescription(
            spec.execution_id,
            inputs=inputs + program_inputs(spec.program),
            outputs=program_outputs(spec.program),
        )
    return JobDescription(
        spec.execution_id,
        inputs=inputs,
        outputs=tuple(OutputSpec(o.name, o.kind.value, o.path, o.required) for o in spec.asset.outputs),
    )


def program_inputs(program: Program) -> tuple[InputSpec, ...]:
    """A program's placements, staged as inputs of their own names."""
    return tuple(
        InputSpec(
            placement_name(index),
            "directory" if item.directory else "file",
            item.key,
            input_path(placement_name(index)),
        )
        for index, item in enumerate(program.placements)
    )


def program_outputs(program: Program) -> tuple[OutputSpec, ...]:
    """A program's collects: each in the program directory that holds it (relative to the result
    directory, where the backends keep those directories), shipped to its own key."""
    outputs = []
    for index, item in enumerate(program.collects):
        home = program.home(item.path)
        assert home is not None, "every collected path lies in a program directory"
        directory, relative = home
        path = directory_path(directory) if relative == "." else f"{directory_path(directory)}/{relative}"
        kind = "directory" if item.directory else "file"
        outputs.append(OutputSpec(collect_name(index), kind, path, True, item.key))
    return tuple(outputs)


def staging_failed(command: Command, code: int) -> tuple[State, Reason, int | None]:
    """What a stage that exited with `code` (not 0) makes of the execution: its state, reason and
    exit code. A required output missing is the worker's fault (which itself exited 0); any other
    failure of staging is the system's."""
    if command is Command.STAGE_OUT and code == ExitCode.MISSING_OUTPUT:
        return State.EXECUTOR_ERROR, Reason.MISSING_OUTPUT, 0
    return State.SYSTEM_ERROR, Reason.STAGE_IN if command is Command.STAGE_IN else Reason.STAGE_OUT, None
