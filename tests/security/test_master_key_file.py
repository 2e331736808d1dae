"""The master-key file: made and replaced without a window for another user or a planted link, synced to disk,
and refused at start (one clear line, no traceback) when it is a symbolic link or others may read it."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import KEYPLANE
from keyplane import crypto


def _run(workdir: Path, *args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")}
    env.update(env_extra or {})
    return subprocess.run([*KEYPLANE, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=60)


def _refused_in_one_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_a_new_key_file_is_owner_only_synced_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:  # a spy: the real fsync runs
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(crypto.os, "fsync", recording_fsync)
    key_file = tmp_path / "keys" / "master-key"
    ring = crypto.load_or_create_master_key(None, key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert crypto.MasterKey.from_text(key_file.read_text()).unseal(ring.seal(b"s", "k"), "k") == b"s"
    assert sorted(p.name for p in key_file.parent.iterdir()) == ["master-key"]
    # the content was synced under its temporary name, then the directory holding the new name
    assert any(".master-key." in path and path.endswith(".tmp") for path in synced[:1])
    assert synced[-1] == str(key_file.parent)

    synced.clear()
    crypto.write_key_file(key_file, crypto.new_master_key_text() + "\n")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert sorted(p.name for p in key_file.parent.iterdir()) == ["master-key"]
    assert len(synced) == 2 and synced[-1] == str(key_file.parent)


def test_nodes_starting_at_once_all_get_the_one_key_that_was_written(tmp_path: Path) -> None:
    key_file = tmp_path / "master-key"
    sealed: list[bytes] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        sealed.append(crypto.load_or_create_master_key(None, key_file).seal(b"secret", "k"))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    on_disk = crypto.MasterKey.from_text(key_file.read_text())
    assert len(sealed) == 8
    assert all(on_disk.unseal(blob, "k") == b"secret" for blob in sealed)  # no node kept a key that lost
    assert [p.name for p in tmp_path.iterdir()] == ["master-key"]


def test_a_symlinked_key_file_is_refused_at_start_and_its_target_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text(crypto.new_master_key_text() + "\n")
    target.chmod(0o600)
    before = target.read_text()
    assert _run(tmp_path, "init", env_extra={"KEYPLANE_MASTER_KEY": before.strip()}).returncode == 0
    (tmp_path / "keyplane.db.master-key").symlink_to(target)
    for args in (("accounts", "create", "--name", "acme"), ("master-key", "rotate"), ("serve", "--port", "1")):
        _refused_in_one_line(_run(tmp_path, *args), "symbolic link")
    assert target.read_text() == before
    with pytest.raises(crypto.MasterKeyError):
        crypto.read_key_file(tmp_path / "keyplane.db.master-key")


def test_a_dangling_symlink_is_not_followed_to_create_a_key_somewhere_else(tmp_path: Path) -> None:
    target = tmp_path / "planted"
    (tmp_path / "keyplane.db.master-key").symlink_to(target)
    for args in (("init",), ("serve", "--port", "1")):
        _refused_in_one_line(_run(tmp_path, *args), "symbolic link")
    assert not target.exists()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602])
def test_a_key_file_others_may_read_or_write_is_refused_at_start(tmp_path: Path, mode: int) -> None:
    key_file = tmp_path / "keyplane.db.master-key"
    key_file.write_text(crypto.new_master_key_text() + "\n")
    key_file.chmod(0o600)
    assert _run(tmp_path, "init").returncode == 0
    key_file.chmod(mode)
    for args in (("accounts", "create", "--name", "acme"), ("serve", "--port", "1")):
        _refused_in_one_line(_run(tmp_path, *args), f"{mode:04o}", "chmod 600")
    key_file.chmod(0o600)
    assert _run(tmp_path, "accounts", "create", "--name", "acme", "--json").returncode == 0


def test_an_explicit_key_file_setting_gets_the_same_checks(tmp_path: Path) -> None:
    key_file = tmp_path / "conf" / "master.key"
    env = {"KEYPLANE_MASTER_KEY_FILE": str(key_file)}
    assert _run(tmp_path, "init", env_extra=env).returncode == 0
    assert _run(tmp_path, "accounts", "create", "--name", "acme", "--json", env_extra=env).returncode == 0
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key_file.chmod(0o644)
    _refused_in_one_line(_run(tmp_path, "accounts", "create", "--name", "b", env_extra=env), "chmod 600")


def test_a_key_file_loosened_while_running_keeps_the_keys_in_force(tmp_path: Path) -> None:
    key_file = tmp_path / "master-key"
    ring = crypto.MasterKeyRing(key_file=key_file)
    sealed = ring.current().seal(b"s", "k")
    key_file.chmod(0o644)
    os.utime(key_file, ns=(1, 1))
    assert ring.current().unseal(sealed, "k") == b"s"  # logged, not raised: verification never raises
