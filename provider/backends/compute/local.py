"""The embedded compute backend: each execution runs as local processes.

stage-in (the sidecar), the asset's `local` command, stage-out (the sidecar), in a working
directory of its own. The worker gets only the asset's environment, never the service's or the
storage credentials; the sidecar gets the scoped credentials and nothing else.

Processes die with the service, however it ends: each stage runs as a process group under a guard
(local_guard.py) that kills the group once the service's end of a pipe closes. The next start
kills any group that its records name and that is still there, and only then reconciles: the
executions of the earlier run become SYSTEM_ERROR (Lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from provider.aio import Tasks, wait_event
from provider.backends.compute.common import sidecar_job, staging_failed
from provider.backends.compute.process_groups import (
    GROUP_RECORD,
    GUARD_MODULE,
    kill_recorded_groups,
    record_group,
)
from provider.backends.directories import ensure_writable
from provider.domain.executions import Reason, State, output_files
from provider.domain.programs import StepLog, directory_path, placement_name
from provider.services.ports import ComputeEvent, EventSink, JobSpec, Reconciler
from provider.sidecar.contract import INPUTS, MANIFEST, MODULE, RESULTS, Command, Env, Manifest, input_path

log = logging.getLogger(__name__)
SAFE_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT")
PROGRAM_MODULE = "provider.backends.compute.local_program"
NOBODY = 65534


@dataclass
class _Job:
    spec: JobSpec
    directory: Path
    process: asyncio.subprocess.Process | None = None
    canceled: bool = False
    waiting: bool = False  # held back by the concurrency limits
    done: asyncio.Event = field(default_factory=asyncio.Event)


class LocalCompute:
    name = "local"
    step_errors_ignorable = True

    def __init__(
        self,
        root: Path,
        max_concurrent: int,
        per_tenant: int,
        cancel_grace_seconds: float,
        niceness: int = 10,
        hidden: tuple[Path, ...] = (),
    ) -> None:
        self.root = root.resolve()  # workers run in their own directory: paths must be absolute
        self.cancel_grace = cancel_grace_seconds
        # What a program's steps must not read (the service's data, configuration, other jobs);
        # the working directories of every job are among them.
        self.hidden = tuple(dict.fromkeys((*(p.resolve() for p in hidden), self.root)))
        self.per_tenant = per_tenant
        self.sidecar = [sys.executable, "-m", MODULE]  # the data sidecar's command line
        # Jobs run with a lower CPU priority, so that the service stays responsive while they work.
        nice = shutil.which("nice")
        self._prefix = [nice, "-n", str(niceness)] if nice and niceness > 0 else []
        self._slots = asyncio.Semaphore(max_concurrent)
        self._tenant_slots: dict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(per_tenant or 1_000_000)
        )
        self._jobs: dict[str, _Job] = {}
        self._runs = Tasks(log)  # execution id -> its run (waiting for a slot, running, reporting)
        self._sink: EventSink | None = None
        self._stopping = False
        # Guards watch the read end; the write end stays in this process, and closes when it ends.
        self._lifeline: tuple[int, int] | None = None

    async def start(self, sink: EventSink, reconcile: Reconciler) -> None:
        self._sink = sink
        self.root.mkdir(parents=True, exist_ok=True)
        self._lifeline = os.pipe()  # neither end is inherited by anything but the guards
        # Jobs of an earlier run died with it; any process that did not is killed before its
        # execution is reported Lost and its directory removed.
        await asyncio.to_thread(kill_recorded_groups, self.root)
        await reconcile(0.0)

    async def ping(self) -> None:
        await ensure_writable(self.root)

    async def submit(self, job: JobSpec) -> None:
        await self.withdraw(job.execution_id, job.attempt)  # an earlier attempt still going away
        if job.execution_id in self._jobs:
            return
        entry = _Job(job, self.root / job.execution_id)
        self._jobs[job.execution_id] = entry
        self._runs.spawn(job.execution_id, self._run(entry), f"execution {job.execution_id}")

    def waiting(self) -> set[str]:
        """Executions submitted here and held back by the concurrency limits."""
        return {execution_id for execution_id, entry in self._jobs.items() if entry.waiting}

    async def cancel(self, execution_id: str) -> None:
        entry = self._jobs.get(execution_id)
        if entry is None or entry.done.is_set():
            return
        entry.canceled = True
        if entry.process is not None and entry.process.returncode is None:
            await self._terminate(entry.process)
        else:
            self._runs.cancel(execution_id)  # still waiting for a slot

    async def _terminate(self, process: asyncio.subprocess.Process) -> None:
        """SIGTERM to the whole process group, SIGKILL after the grace period."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self.cancel_grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    async def known(self) -> set[str]:
        return {i for i, job in self._jobs.items() if not job.done.is_set()}

    async def withdraw(self, execution_id: str, attempt: int) -> None:
        entry = self._jobs.get(execution_id)
        if entry is None or entry.spec.attempt >= attempt:
            return
        await self.cancel(execution_id)  # what it still reports is of the withdrawn attempt
        await self._runs.join(execution_id)  # nothing of it writes to its directory any more
        await self.release(execution_id)

    async def release(self, execution_id: str) -> None:
        entry = self._jobs.pop(execution_id, None)
        directory = entry.directory if entry else self.root / execution_id
        await asyncio.to_thread(shutil.rmtree, directory, True)

    async def stop(self) -> None:
        """Kill every job; report nothing more (the next start reconciles them as Lost).

        Jobs are not cancelled in the middle of reporting: a task cut off inside a store
        transaction could leave SQLite's write lock behind. Their processes are killed, and the
        tasks, which now report nothing, end by themselves.
        """
        self._stopping = True
        for entry in list(self._jobs.values()):
            if entry.process is not None and entry.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(entry.process.pid, signal.SIGKILL)
        if self._lifeline is not None:
            for end in self._lifeline:
                os.close(end)
            self._lifeline = None
        tasks = list(self._runs)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=10)
            for task in late:  # still waiting for a slot, or stuck: now they may be cancelled
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    # --- logs ---------------------------------------------------------------------------------

    async def logs(self, execution_id: str, tail: int | None, follow: bool) -> AsyncIterator[bytes]:
        entry = self._jobs.get(execution_id)
        path = (entry.directory if entry else self.root / execution_id) / "worker.log"
        position = 0
        if path.exists():
            data = await asyncio.to_thread(path.read_bytes)
            position = len(data)
            if tail is not None:
                lines = data.splitlines(keepends=True)
                data = b"".join(lines[-tail:]) if tail else b""
            if data:
                yield data
        while follow and entry is not None and not entry.done.is_set():
            await wait_event(entry.done, 0.2)
            if path.exists():
                with path.open("rb") as handle:
                    handle.seek(position)
                    more = handle.read()
                if more:
                    position += len(more)
                    yield more

    # --- running ------------------------------------------------------------------------------

    async def _emit(self, entry: _Job, state: State, **details: object) -> None:
        if self._stopping:
            return  # the service is stopping: what a killed job seems to do is not its outcome
        assert self._sink is not None
        await self._sink(
            ComputeEvent(entry.spec.execution_id, state, attempt=entry.spec.attempt, **details)  # type: ignore[arg-type]
        )

    async def _run(self, entry: _Job) -> None:
        spec = entry.spec
        try:
            # The tenant's own limit first: a tenant waiting on it must not hold machine capacity.
            entry.waiting = True
            async with self._tenant_slots[spec.tenant_id], self._slots:
                entry.waiting = False
                if entry.canceled:
                    raise asyncio.CancelledError
                await self._stages(entry)
        except asyncio.CancelledError:
            if entry.canceled:
                await self._emit(entry, State.CANCELED, reason=Reason.CANCELED)
            raise
        except Exception as exc:
            log.exception("local execution failed", extra={"execution_id": spec.execution_id})
            await self._emit(
                entry, State.SYSTEM_ERROR, reason=Reason.BACKEND, message=f"{type(exc).__name__}: {exc}"
            )
        finally:
            entry.waiting = False
            entry.done.set()

    async def _stages(self, entry: _Job) -> None:
        spec, directory = entry.spec, entry.directory
        results = directory / RESULTS
        await asyncio.to_thread(self._prepare, entry, results)
        sidecar_env = {
            **_base_env(),
            **spec.access.secrets,
            **spec.access.settings,
            Env.STORAGE_KIND: spec.access.kind,
        }

        await self._emit(entry, State.INITIALIZING)
        code, errors = await self._process(
            entry,
            [
                *self.sidecar,
                Command.STAGE_IN,
                "--spec",
                str(directory / "job.json"),
                "--root",
                str(directory),
            ],
            sidecar_env,
            directory / "sidecar.log",
        )
        if await self._stopped(entry, code, Command.STAGE_IN):
            return
        if code != 0:
            await self._staging_failed(entry, Command.STAGE_IN, code, errors)
            return

        await self._emit(entry, State.RUNNING)
        runner = spec.asset.local
        values = {"{python}": sys.executable, "{result_dir}": str(results)}
        values.update({f"{{input:{i.name}}}": str(directory / input_path(i.name)) for i in spec.asset.inputs})
        if spec.program is not None:
            # A program's steps see the paths a container would: the task placed the files there.
            values["{result_dir}"] = spec.asset.result_dir
            values.update({f"{{input:{i.name}}}": i.mount_path for i in spec.asset.inputs})
        env = {
            **_base_env(),
            **spec.asset.env,
            **spec.env,
            **{k: _fill(v, values) for k, v in (runner.env if runner else {}).items()},
        }
        if spec.program is not None:
            own = [_fill(arg, values) for arg in runner.command] if runner else None
            command = self._program_command(entry, results, env, own)
            if command is None:
                await self._emit(
                    entry,
                    State.SYSTEM_ERROR,
                    reason=Reason.BACKEND,
                    message="the local backend runs a task's steps with unshare(1), which this host lacks",
                )
                return
        else:
            assert runner is not None
            command = [_fill(arg, values) for arg in runner.command]
        try:
            code, _ = await asyncio.wait_for(
                self._process(entry, command, env, directory / "worker.log", cwd=directory),
                spec.asset.max_run_seconds,
            )
        except TimeoutError:
            if entry.process is not None:
                await self._terminate(entry.process)
            await self._emit(
                entry,
                State.EXECUTOR_ERROR,
                reason=Reason.DEADLINE_EXCEEDED,
                message=f"the worker ran longer than {spec.asset.max_run_seconds} s",
            )
            return
        if await self._stopped(entry, code, "worker"):
            return
        steps: tuple[StepLog, ...] = ()
        if spec.program is not None:
            report = json.loads((directory / "steps.json").read_text() or "{}")
            steps = tuple(StepLog.from_json(s) for s in report.get("steps", []))
            if report.get("setup_error"):
                await self._emit(
                    entry, State.SYSTEM_ERROR, reason=Reason.CONTAINER_CONFIG, message=report["setup_error"]
                )
                return
        if code != 0:
            reason = f"Signal{-code}" if code < 0 else Reason.EXIT_CODE
            failed = "a step" if steps else "the worker"
            await self._emit(
                entry,
                State.EXECUTOR_ERROR,
                exit_code=code,
                reason=reason,
                message=f"{failed} exited with {code}",
                steps=steps,
            )
            return

        await self._emit(entry, State.FINALIZING, exit_code=0, steps=steps)
        code, errors = await self._process(
            entry,
            [*self.sidecar, Command.STAGE_OUT, "--spec", str(directory / "job.json"), "--root", str(results)],
            sidecar_env,
            directory / "sidecar.log",
            capture=directory / MANIFEST,
        )
        if await self._stopped(entry, code, Command.STAGE_OUT):
            return
        if code != 0:
            await self._staging_failed(entry, Command.STAGE_OUT, code, errors)
            return
        manifest = Manifest.from_json(json.loads((directory / MANIFEST).read_text()))
        await self._emit(entry, State.COMPLETE, exit_code=0, outputs=output_files(manifest.listed()))

    async def _staging_failed(self, entry: _Job, command: Command, code: int, errors: str) -> None:
        state, reason, exit_code = staging_failed(command, code)
        await self._emit(entry, state, exit_code=exit_code, reason=reason, message=errors)

    def _prepare(self, entry: _Job, results: Path) -> None:
        spec, directory = entry.spec, entry.directory
        shutil.rmtree(directory, ignore_errors=True)
        (directory / INPUTS).mkdir(parents=True)
        results.mkdir()
        (directory / "job.json").write_text(json.dumps(sidecar_job(spec).to_json()))
        if spec.program is not None:
            for index in range(len(spec.program.directories())):
                (results / directory_path(index)).mkdir()
            (directory / "tmp").mkdir()
            (directory / "tmp").chmod(0o1777)

    def _program_command(
        self, entry: _Job, results: Path, env: dict[str, str], own: list[str] | None
    ) -> list[str] | None:
        """The command that runs a program's steps in a mount namespace (local_program.py). A
        step that runs the asset's own command runs its local equivalent (`own`)."""
        asset_command = [*entry.spec.asset.command, *entry.spec.asset.args]
        unshare = shutil.which("unshare")
        program, directory = entry.spec.program, entry.directory
        if unshare is None or program is None:
            return None
        plan: dict[str, object] = {
            "root": str(directory / "root"),
            "tmp": str(directory / "tmp"),
            "report": str(directory / "steps.json"),
            "directories": [
                [str(results / directory_path(index)), path]
                for index, path in enumerate(program.directories())
            ],
            "placements": [
                [str(directory / input_path(placement_name(index))), item.path, item.directory]
                for index, item in enumerate(program.placements)
            ],
            "steps": [
                {
                    "command": own if own and list(step.command) == asset_command else list(step.command),
                    "workdir": step.workdir,
                    "stdin": step.stdin,
                    "stdout": step.stdout,
                    "stderr": step.stderr,
                    "env": step.env,
                    "ignore_error": step.ignore_error,
                }
                for step in program.steps
            ],
            "env": env,
            "hide": [str(p) for p in self.hidden],
            "expose": _interpreter_paths(),
        }
        (directory / "plan.json").write_text(json.dumps(plan))
        (directory / "steps.json").write_text("{}")
        # Root on the host needs no user namespace, and runs the steps as nobody instead; any other
        # user maps itself to the namespace's root, whose capabilities the steps never get.
        as_root = os.geteuid() == 0
        if as_root:
            plan["run_as"] = [NOBODY, NOBODY]
            (directory / "plan.json").write_text(json.dumps(plan))
        return [
            unshare,
            *([] if as_root else ["--user", "--map-root-user"]),
            "--mount",
            "--pid",
            "--fork",
            sys.executable,
            "-I",
            "-m",
            PROGRAM_MODULE,
            str(directory / "plan.json"),
        ]

    async def _stopped(self, entry: _Job, code: int, stage: str) -> bool:
        if entry.canceled:
            await self._emit(
                entry, State.CANCELED, reason=Reason.CANCELED, message=f"canceled during {stage}"
            )
            return True
        return False

    async def _process(
        self,
        entry: _Job,
        command: list[str],
        env: dict[str, str],
        log_path: Path,
        cwd: Path | None = None,
        capture: Path | None = None,
    ) -> tuple[int, str]:
        """Run one process in its own group under a guard; output appended to `log_path` (stdout
        to `capture` when given). Returns the exit code and the last lines of the log."""
        if self._stopping:
            raise asyncio.CancelledError  # no new processes once the service stops
        assert self._lifeline is not None, "start() first"
        watched = self._lifeline[0]
        record = entry.directory / GROUP_RECORD
        with contextlib.ExitStack() as files:
            log_file = files.enter_context(log_path.open("ab"))
            out = files.enter_context(capture.open("wb")) if capture else log_file
            process = await asyncio.create_subprocess_exec(
                *self._prefix,
                sys.executable,
                "-I",  # isolated: the job's PYTHON* variables and working directory do not apply
                "-m",
                GUARD_MODULE,
                str(watched),
                "--",
                *command,
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=log_file,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
                pass_fds=(watched,),
            )
            entry.process = process
            try:
                record_group(record, process.pid)
                code = await process.wait()
            except asyncio.CancelledError:
                await self._terminate(process)
                raise
            finally:
                record.unlink(missing_ok=True)
        data = await asyncio.to_thread(log_path.read_bytes)
        tail = data[-2000:].decode("utf-8", "replace").strip().splitlines()[-5:]
        return code, "\n".join(tail)


def _interpreter_paths() -> list[str]:
    """What a program's steps need from the users' homes, which are not in their root: the
    service's interpreter, its environment and the project it runs from (where pyenv, a venv or
    a checkout live under /root or /home)."""
    import provider

    found = {
        os.path.realpath(sys.base_prefix),
        os.path.realpath(sys.prefix),
        os.path.dirname(os.path.dirname(os.path.realpath(provider.__file__))),
    }
    return sorted(found)


def _fill(value: str, values: dict[str, str]) -> str:
    for placeholder, replacement in values.items():
        value = value.replace(placeholder, replacement)
    return value


def _base_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in SAFE_ENV if k in os.environ}
    env.setdefault("PATH", os.defpath)
    env["PYTHONUNBUFFERED"] = "1"
    return env
