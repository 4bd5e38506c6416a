"""The import service over a scripted remote source and in-memory storage (tests/fakes.py):
retries, resumption from an offset, checksums and refusals, in milliseconds each. The same
behaviour is exercised against a real HTTP source in tests/test_imports.py."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from provider.domain.imports import Import, ImportState
from provider.services.imports import RetryPolicy
from tests.conftest import WAIT_SECONDS, ServiceWorld
from tests.fakes import Answer, ScriptedSource

DATA = os.urandom(10_000)


class Imports:
    def __init__(self, services: ServiceWorld, source: ScriptedSource) -> None:
        self.services = services
        self.service = services.components.imports
        self.service.source = source
        self.service.retry = RetryPolicy(max_attempts=3, backoff_seconds=0.001)
        self.ended: dict[str, asyncio.Event] = {}
        self.service.listeners.append(self._changed)

    def _changed(self, item: Import) -> None:
        if item.state.final:
            self.ended.setdefault(item.id, asyncio.Event()).set()

    async def run(self, sha256: str | None = None, size: int | None = None) -> tuple[Import, bytes | None]:
        admin = self.services.admin
        ws = await self.services.components.workspaces.create(admin.tenant_id, "w", {})
        created = await self.service.create(
            admin, ws.id, "https://source.example/data.bin", {}, "in/data.bin", size, sha256
        )
        ended = self.ended.setdefault(created.id, asyncio.Event())
        await asyncio.wait_for(ended.wait(), WAIT_SECONDS)
        final = await self.service.get(admin, ws.id, created.id)
        stored = self.services.storage.locations[ws.location].get("in/data.bin")
        return final, stored.data if stored else None


@pytest.fixture
def source() -> ScriptedSource:
    return ScriptedSource(DATA)


@pytest.fixture
def imports(services: ServiceWorld, source: ScriptedSource) -> Imports:
    return Imports(services, source)


async def test_transient_answers_are_retried_until_the_copy_is_whole(
    imports: Imports, source: ScriptedSource
) -> None:
    source.script = [Answer(503), Answer(429)]
    final, stored = await imports.run(sha256=hashlib.sha256(DATA).hexdigest())
    assert final.state is ImportState.SUCCEEDED and final.attempts == 3
    assert stored == DATA and final.sha256 == hashlib.sha256(DATA).hexdigest()


async def test_a_body_that_breaks_off_is_resumed_from_where_it_stopped(
    imports: Imports, source: ScriptedSource
) -> None:
    source.script = [Answer(break_after=4000), Answer(break_after=3000)]
    final, stored = await imports.run(size=len(DATA))
    assert final.state is ImportState.SUCCEEDED and final.attempts == 1  # one attempt, resumed twice
    assert stored == DATA
    # Each resumption asks for the rest, of the same version of the resource.
    assert source.fetches == [(0, None), (4000, '"v1"'), (7000, '"v1"')]


async def test_a_source_that_cannot_resume_is_read_again_from_the_start(
    imports: Imports, source: ScriptedSource
) -> None:
    source.script = [Answer(break_after=4000, ranges=False)]
    final, stored = await imports.run()
    assert final.state is ImportState.SUCCEEDED and final.attempts == 2
    assert stored == DATA and [offset for offset, _ in source.fetches] == [0, 0]


async def test_a_refusal_is_final_and_stores_nothing(imports: Imports, source: ScriptedSource) -> None:
    source.script = [Answer(404)]
    final, stored = await imports.run()
    assert final.state is ImportState.FAILED and final.upstream_status == 404 and final.attempts == 1
    assert stored is None and len(source.fetches) == 1


async def test_a_wrong_checksum_fails_the_import_and_stores_nothing(imports: Imports) -> None:
    final, stored = await imports.run(sha256=hashlib.sha256(b"other").hexdigest())
    assert final.state is ImportState.FAILED and "SHA-256" in (final.error or "")
    assert stored is None


async def test_an_import_gives_up_after_its_attempts(imports: Imports, source: ScriptedSource) -> None:
    source.script = [Answer(503)] * 5
    final, stored = await imports.run()
    assert final.state is ImportState.FAILED and final.attempts == 3 and final.upstream_status == 503
    assert "gave up after 3 attempts" in (final.error or "") and stored is None
    assert len(source.fetches) == 3
