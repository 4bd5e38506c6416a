"""Pytest fixture for the fake API server; import it into a conftest or a test module."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.fake_kube.server import FakeKube


@pytest_asyncio.fixture
async def fake_kube() -> AsyncIterator[FakeKube]:
    """A started FakeKube on an ephemeral loopback port, stopped after the test."""
    kube = FakeKube()
    await kube.start()
    try:
        yield kube
    finally:
        await kube.stop()
