"""The data sidecar's unpacking rules: nothing leaves the staging directory, no archive bombs."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from provider.sidecar.__main__ import main as sidecar_main
from provider.sidecar.staging import StagingError, unpack


def tar_with(path: Path, members: list[tarfile.TarInfo], contents: dict[str, bytes] | None = None) -> Path:
    contents = contents or {}
    with tarfile.open(path, "w") as tar:
        for member in members:
            data = contents.get(member.name, b"")
            member.size = len(data) if member.isfile() else 0
            tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


@pytest.mark.parametrize(
    ("name", "kind", "target"),
    [
        ("../escape.txt", tarfile.REGTYPE, ""),
        ("/etc/evil", tarfile.REGTYPE, ""),
        ("link", tarfile.SYMTYPE, "/etc/passwd"),
        ("hard", tarfile.LNKTYPE, "../../outside"),
        ("dev", tarfile.CHRTYPE, ""),
    ],
)
def test_unsafe_tar_members_are_refused(tmp_path: Path, name: str, kind: bytes, target: str) -> None:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = target
    archive = tar_with(tmp_path / "a.tar", [member], {name: b"x"})
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(StagingError, match="unsafe"):
        unpack(archive, dest, 10**9, 1000)
    assert not (tmp_path / "escape.txt").exists()


def test_tar_bomb_limits(tmp_path: Path) -> None:
    many = [tarfile.TarInfo(f"f{i}") for i in range(20)]
    archive = tar_with(tmp_path / "many.tar", many, {f"f{i}": b"x" for i in range(20)})
    with pytest.raises(StagingError, match="limits"):
        unpack(archive, tmp_path / "d1", 10**9, 10)
    big = tar_with(tmp_path / "big.tar", [tarfile.TarInfo("big")], {"big": b"x" * 5000})
    with pytest.raises(StagingError, match="limits"):
        unpack(big, tmp_path / "d2", 1000, 10)


def test_zip_traversal_and_bomb(tmp_path: Path) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zipped:
        zipped.writestr("../../escape.txt", b"x")
    with pytest.raises(StagingError, match="unsafe"):
        unpack(evil, tmp_path / "d", 10**9, 100)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("zeros", b"\0" * 5_000_000)  # compresses to a few KiB
    assert bomb.stat().st_size < 100_000
    with pytest.raises(StagingError, match="unpacked"):
        unpack(bomb, tmp_path / "d2", 1_000_000, 100)


def test_good_archives_unpack(tmp_path: Path) -> None:
    good = tar_with(tmp_path / "ok.tar", [tarfile.TarInfo("a/b.txt")], {"a/b.txt": b"hello"})
    assert unpack(good, tmp_path / "t", 10**6, 10) == 1
    assert (tmp_path / "t" / "a" / "b.txt").read_bytes() == b"hello"
    zipped_path = tmp_path / "ok.zip"
    with zipfile.ZipFile(zipped_path, "w") as zipped:
        zipped.writestr("c/d.bin", bytes(range(256)))
    unpack(zipped_path, tmp_path / "z", 10**6, 10)
    assert (tmp_path / "z" / "c" / "d.bin").read_bytes() == bytes(range(256))
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"not an archive")
    with pytest.raises(StagingError, match="neither"):
        unpack(plain, tmp_path / "p", 10**6, 10)


def test_sidecar_usage_errors_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROVIDER_JOB_SPEC", raising=False)
    assert sidecar_main(["stage-in", "--root", str(tmp_path)]) == 2
    spec = tmp_path / "job.json"
    spec.write_text('{"execution_id": "exe_1"}')
    monkeypatch.setenv("PROVIDER_STORAGE_KIND", "api")
    monkeypatch.delenv("PROVIDER_API_URL", raising=False)
    assert sidecar_main(["stage-in", "--spec", str(spec), "--root", str(tmp_path)]) == 2


def test_transient_failures_are_retried_and_client_errors_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    from provider.sidecar import remote

    monkeypatch.setattr(remote.time, "sleep", lambda seconds: None)
    answers = [remote.RemoteError("busy", 503), ConnectionResetError("reset"), "done"]

    def flaky() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert remote._retried(flaky) == "done"
    calls = []

    def missing() -> None:
        calls.append(1)
        raise remote.RemoteError("no such object", 404)

    with pytest.raises(remote.RemoteError):
        remote._retried(missing)
    assert len(calls) == 1

    def always_down() -> None:
        calls.append(1)
        raise remote.RemoteError("down", 502)

    with pytest.raises(remote.RemoteError, match="down"):
        remote._retried(always_down)
    assert len(calls) == 1 + remote.ATTEMPTS
