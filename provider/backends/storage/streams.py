"""Helpers shared by the storage backends: digests and limits checked while bytes stream."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, AsyncIterator

from provider.domain.errors import ChecksumMismatch, PayloadTooLarge
from provider.services.ports import PutLimits


class DigestingCounter:
    """Counts and hashes bytes as they pass; enforces `PutLimits`."""

    def __init__(self, limits: PutLimits) -> None:
        self.limits = limits
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False) if limits.md5 is not None else None

    def update(self, data: bytes) -> None:
        """Account for `data`; runs in a worker thread for large blocks (hashlib releases the GIL)."""
        self.size += len(data)
        if self.limits.max_bytes is not None and self.size > self.limits.max_bytes:
            raise PayloadTooLarge(f"the object exceeds the limit of {self.limits.max_bytes} bytes")
        self.sha256.update(data)
        if self.md5 is not None:
            self.md5.update(data)

    def update_many(self, blocks: list[bytes]) -> None:
        for block in blocks:
            self.update(block)

    def verify(self) -> str:
        """Check declared checksums once all bytes are in; returns the SHA-256 in hex."""
        digest = self.sha256.digest()
        if self.limits.sha256 is not None and digest != self.limits.sha256:
            raise ChecksumMismatch("the body does not match the declared SHA-256")
        if self.md5 is not None and self.md5.digest() != self.limits.md5:
            raise ChecksumMismatch("the body does not match the declared Content-MD5")
        return digest.hex()


async def rechunk(chunks: AsyncIterator[bytes], size: int) -> AsyncGenerator[bytes, None]:
    """Regroup a stream into blocks of exactly `size` bytes (the last may be shorter)."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            with memoryview(buffer) as view:
                block = bytes(view[:size])  # one copy, not two
            del buffer[:size]
            yield block
            del block
    if buffer:
        yield bytes(buffer)


async def batches(chunks: AsyncIterator[bytes], size: int) -> AsyncGenerator[list[bytes], None]:
    """Group a stream into lists of chunks totalling at least `size` bytes, without copying."""
    batch: list[bytes] = []
    held = 0
    async for chunk in chunks:
        batch.append(chunk)
        held += len(chunk)
        if held >= size:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch
