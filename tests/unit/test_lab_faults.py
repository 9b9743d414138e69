"""Lab faults, each one clear message with a hint, and nothing left behind.

Unit level: missing programs (PATH emptied), cache entries checked against
their manifest, failed and disk-full builds, lab names, ports, stale and
crashed labs. The one real build here fills a tiny tmpfs on purpose.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xenkit.cli.main import main
from xenkit.core.errors import MissingTool, OperationFailed, UsageError
from xenkit.lab import debs, image, machine
from xenkit.lab.image import GuestKit, LabImage, build_image, verify_entry
from xenkit.lab.machine import BootOptions, LabCrashed, LabState, Machine
from xenkit.lab.paths import cache_root
from xenkit.lab.tools import require

QEMU_IMG = shutil.which("qemu-img") or "qemu-img"

PANIC = [
    "(XEN) Xen call trace:",
    "(XEN)    [<ffff82d0402f9c06>] R arch/x86/domain.c#default_idle+0xc6/0xf0",
    "(XEN) ****************************************",
    "(XEN) Panic on CPU 0:",
    "(XEN) FATAL TRAP: vec 2, NMI[0000]",
    "(XEN) ****************************************",
    "(XEN) Reboot in five seconds...",
]


@pytest.fixture
def no_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No program can be found (require also looks in the sbin dirs: hide those too)."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    real_which = shutil.which

    def which(cmd: str, mode: int = os.F_OK | os.X_OK, path: str | None = None) -> str | None:
        return real_which(cmd, mode, str(empty))

    monkeypatch.setattr(shutil, "which", which)


@pytest.fixture
def state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A private XDG state dir (labs go to <it>/xenkit/labs)."""
    root = tmp_path / "st"
    root.mkdir()
    monkeypatch.setenv("XDG_STATE_HOME", str(root))
    return root / "xenkit" / "labs"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def no_qemu_of(path: Path) -> bool:
    """No process has this path on its command line."""
    needle = str(path).encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle in (proc / "cmdline").read_bytes():
                    return False
            except OSError:
                continue
    return True


# -- missing programs --------------------------------------------------------------


@pytest.mark.usefixtures("no_path")
def test_missing_qemu_names_the_package() -> None:
    with pytest.raises(MissingTool) as info:
        require("qemu-system-x86_64")
    assert info.value.hint == "install it with: apt-get install qemu-system-x86"


@pytest.mark.usefixtures("no_path")
def test_missing_mmdebstrap_fails_before_anything_is_written(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(MissingTool) as info:
        build_image(cache_dir=cache)
    assert info.value.program == "mmdebstrap"
    assert "apt-get install mmdebstrap" in str(info.value.hint)
    assert not cache.exists()


@pytest.mark.usefixtures("no_path")
def test_lab_up_without_qemu(capsys: pytest.CaptureFixture[str], state: Path) -> None:
    rc, _, err = cli(capsys, "lab", "up", "nq")
    assert rc == 1
    assert "qemu-system-x86_64 is not installed" in err
    assert "apt-get install qemu-system-x86" in err
    assert not (state / "nq").exists()
    rc, out, _ = cli(capsys, "--json", "lab", "up", "nq")
    assert rc == 1
    assert json.loads(out)["error"]["kind"] == "MissingTool"


@pytest.mark.usefixtures("no_path")
def test_boot_without_qemu_writes_nothing(tmp_path: Path) -> None:
    m = Machine("nq", state_dir=tmp_path / "labs")
    with pytest.raises(MissingTool, match="qemu-system-x86_64"):
        m.boot(fake_image(tmp_path / "img"))
    assert not (tmp_path / "labs").exists()


# -- the image cache -------------------------------------------------------------

FILES = {
    "xen.elf": b"\x7fELF xen",
    "vmlinuz": b"kernel" * 100,
    "stage1.cpio.gz": b"initrd",
    "root.qcow2": b"QFI\xfb" + b"\0" * 4096,
    "guest/vmlinuz": b"guest kernel",
    "guest/initrd.img": b"guest initrd",
}


def fake_image(root: Path) -> LabImage:
    root.mkdir(parents=True, exist_ok=True)
    base = root / "root.qcow2"
    if not base.exists():
        subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", base, "16M"], check=True)
    kit = GuestKit(root / "guest/vmlinuz", root / "guest/initrd.img", "6.1.0-1-cloud-amd64")
    return LabImage(
        key="k" * 64,
        path=root,
        xen=root / "xen.elf",
        kernel=root / "vmlinuz",
        initrd=root / "stage1.cpio.gz",
        root_disk=base,
        host_key="ssh-ed25519 AAAA",
        kernel_version="6.1.0-1-amd64",
        xen_version="4.17",
        guest=kit,
        packages={},
        timings={},
    )


class FakeBuild:
    """Stands in for the real builder: writes a small entry the way it would."""

    def __init__(self) -> None:
        self.runs = 0
        self.fail: BaseException | None = None

    def __call__(self, builder: Any) -> None:
        self.runs += 1
        out: Path = builder.out
        for name, data in FILES.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(data)
        if self.fail is not None:
            raise self.fail
        digests = image._file_digests(out)
        image._write_stamp(out, list(digests))
        manifest = {
            "key": builder.key,
            "host_key": "ssh-ed25519 AAAA test",
            "kernel_version": "6.1.0-1-amd64",
            "xen_version": "4.17.7",
            "guest_kernel_version": "6.1.0-1-cloud-amd64",
            "packages": {"xen-utils-4.17": "4.17.7"},
            "files": digests,
        }
        (out / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def fake_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[Path, FakeBuild]]:
    """build_image against a private cache with resolution and building faked."""
    cache = tmp_path / "cache"
    lists = cache / "apt" / "lists"
    lists.mkdir(parents=True)
    (lists / "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages").write_text("")
    pkg = debs.DebPackage("pkg", "1", "amd64")
    inputs = image._Inputs({"pkg": "1"}, pkg, pkg, pkg, pkg)
    monkeypatch.setattr(image, "_resolve", lambda apt, spec, progress: inputs)
    monkeypatch.setattr(image, "_require_build_tools", lambda: None)
    fake = FakeBuild()
    monkeypatch.setattr(image._Builder, "run", lambda builder: fake(builder))
    yield cache, fake


def entries(cache: Path) -> list[str]:
    """Cache entries and scratch dirs (the apt dir and lock files are neither)."""
    return sorted(p.name for p in cache.iterdir() if p.name != "apt" and ".lock-" not in p.name)


def test_warm_build_is_a_cache_hit(fake_build: tuple[Path, FakeBuild]) -> None:
    cache, fake = fake_build
    first = build_image(cache_dir=cache)
    assert not first.cache_hit and fake.runs == 1
    stages: list[str] = []
    again = build_image(cache_dir=cache, progress=lambda stage, detail: stages.append(stage))
    assert again.cache_hit and again.path == first.path and fake.runs == 1
    assert stages == ["cached"]
    assert verify_entry(first.path) is None


def test_an_unchanged_entry_is_not_hashed_again(
    fake_build: tuple[Path, FakeBuild], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, _ = fake_build
    built = build_image(cache_dir=cache)

    def no_hashing(path: Path) -> str:
        raise AssertionError(f"hashed {path} although nothing changed")

    monkeypatch.setattr(image, "_sha256", no_hashing)
    assert verify_entry(built.path) is None


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda p: (p / "root.qcow2").write_bytes(b"QFI"), "root.qcow2 is 3 bytes"),
        (lambda p: (p / "guest/vmlinuz").unlink(), "guest/vmlinuz is missing"),
        (lambda p: (p / "vmlinuz").write_bytes(b"KERNEL" * 100), "vmlinuz does not match"),
        (lambda p: (p / "manifest.json").write_text("{"), "unreadable manifest"),
        (lambda p: (p / "manifest.json").unlink(), "incomplete"),
    ],
    ids=["truncated", "missing", "same-size-changed", "bad-manifest", "half-built"],
)
def test_a_damaged_entry_is_found_and_rebuilt(
    fake_build: tuple[Path, FakeBuild], damage: Any, says: str
) -> None:
    cache, fake = fake_build
    built = build_image(cache_dir=cache)
    (built.path / "root.qcow2").chmod(0o644)
    damage(built.path)
    problem = verify_entry(built.path)
    assert problem is not None and says in problem
    notes: list[tuple[str, str]] = []
    again = build_image(cache_dir=cache, progress=lambda s, d: notes.append((s, d)))
    assert fake.runs == 2
    assert not again.cache_hit
    assert again.rebuilt_because is not None and says in again.rebuilt_because
    corrupt = [d for s, d in notes if s == "corrupt"]
    assert len(corrupt) == 1 and "rebuilding it" in corrupt[0] and built.path.name in corrupt[0]
    assert verify_entry(again.path) is None
    assert entries(cache) == [again.path.name]


def test_a_disk_full_build_leaves_no_entry(fake_build: tuple[Path, FakeBuild]) -> None:
    cache, fake = fake_build
    fake.fail = OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OperationFailed) as info:
        build_image(cache_dir=cache)
    assert "disk full while building the lab image" in info.value.message
    assert "XDG_CACHE_HOME" in str(info.value.hint)
    assert entries(cache) == []  # no entry, no .build-* scratch dir
    fake.fail = OperationFailed("dpkg-deb -x x.deb failed (exit 2):\nNo space left on device")
    with pytest.raises(OperationFailed, match="disk full"):
        build_image(cache_dir=cache)
    assert entries(cache) == []


def test_a_failed_build_leaves_no_entry(fake_build: tuple[Path, FakeBuild]) -> None:
    cache, fake = fake_build
    fake.fail = OperationFailed("mmdebstrap (dom0 root filesystem) failed (exit 1)")
    with pytest.raises(OperationFailed, match="mmdebstrap"):
        build_image(cache_dir=cache)
    assert entries(cache) == []
    fake.fail = None
    assert not build_image(cache_dir=cache).cache_hit


@pytest.mark.slow
def test_a_real_build_on_a_full_disk(tmp_path: Path) -> None:
    """A real build into a tmpfs too small for it: the first big write fails."""
    apt = cache_root() / "apt"
    if os.geteuid() != 0 or not (apt / "lists").is_dir():
        pytest.skip("needs root and the lab's package lists (build once first)")
    need = sum(f.stat().st_size for f in apt.rglob("*") if f.is_file())
    mnt = tmp_path / "small"
    mnt.mkdir()
    size = need + (48 << 20)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mnt], check=False)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        shutil.copytree(apt, mnt / "apt", symlinks=True)
        with pytest.raises(OperationFailed) as info:
            build_image(cache_dir=mnt)
        assert "disk full while building the lab image" in info.value.message
        assert sorted(p.name for p in mnt.iterdir() if not p.name.startswith(".lock")) == ["apt"]
    finally:
        subprocess.run(["umount", "-l", mnt], check=False)


# -- names, ports -----------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["lab", "up", "Bad_Name"],
        ["lab", "up", "ok", "--join", "a b"],
        ["lab", "status", "../x"],
        ["lab", "snapshot", "save", "--lab", "-x", "t"],
        ["lab", "exec", "A", "--", "true"],
    ],
)
def test_bad_lab_names(capsys: pytest.CaptureFixture[str], state: Path, args: list[str]) -> None:
    rc, _, err = cli(capsys, *args)
    assert rc == 2, err
    assert "invalid lab name" in err and "hint:" in err
    assert not state.exists() or not any(state.iterdir())


@pytest.mark.usefixtures("state")
def test_commands_on_no_lab(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["down", "nolab"], ["destroy", "nolab"], ["status", "nolab"]):
        rc, _, err = cli(capsys, "lab", *args)
        assert rc == 2 and "no lab named 'nolab'" in err, err
    rc, _, err = cli(capsys, "lab", "exec", "nolab")
    assert rc == 2 and "no command to run" in err and "--" in err
    rc, out, _ = cli(capsys, "lab", "list", "--json")
    assert rc == 0 and json.loads(out) == {"labs": []}


def test_no_free_port(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: socket.socket, address: object) -> None:
        raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")

    monkeypatch.setattr(socket.socket, "bind", refuse)
    with pytest.raises(OperationFailed) as info:
        machine.free_port()
    assert "no free TCP port on 127.0.0.1" in info.value.message
    assert info.value.hint


def test_boot_with_no_free_port_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def no_port() -> int:
        raise OperationFailed("no free TCP port on 127.0.0.1 for the lab's SSH forward")

    real_popen = subprocess.Popen

    def no_qemu(argv: list[str], *args: Any, **kwargs: Any) -> Any:
        assert "qemu-system" not in str(argv[0]), "QEMU was started"
        return real_popen(argv, *args, **kwargs)

    monkeypatch.setattr(machine, "free_port", no_port)
    monkeypatch.setattr(subprocess, "Popen", no_qemu)
    m = Machine("np", state_dir=tmp_path / "labs")
    with pytest.raises(OperationFailed, match="no free TCP port"):
        m.boot(fake_image(tmp_path / "img"))
    assert not m.is_running()


def test_a_forward_port_taken_three_times(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """QEMU exits at once when its hostfwd port was taken meanwhile; three tries, one error."""
    tries: list[int] = []

    def taken(*args: Any, ssh_port: int, **kwargs: Any) -> list[str]:
        tries.append(ssh_port)
        return ["sh", "-c", "echo 'Could not set up host forwarding rule' >&2; exit 1"]

    monkeypatch.setattr(machine, "qemu_command", taken)
    m = Machine("pt", state_dir=tmp_path / "labs")
    with pytest.raises(OperationFailed) as info:
        m.boot(fake_image(tmp_path / "img"))
    assert "could not bind the SSH forward" in info.value.message
    assert len(tries) == 3
    st = m.state
    assert st is None or st.pid == 0
    assert no_qemu_of(m.paths.root)


# -- stale and crashed labs -----------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def write_state(root: Path, name: str, *, pid: int, **extra: Any) -> Machine:
    m = Machine(name, state_dir=root)
    m.paths.root.mkdir(parents=True, exist_ok=True)
    LabState(
        name=name,
        image="/nonexistent",
        image_key="k",
        pid=pid,
        pid_start="0",
        ssh_port=2222,
        options={"memory_mib": 2048, "network": None, "join_index": 1},
        booted_at=0.0,
        **extra,
    ).write(m.paths.state)
    return m


def test_a_dead_qemu_is_cleaned_up(tmp_path: Path) -> None:
    m = write_state(tmp_path, "stale", pid=dead_pid())
    for sock in (m.paths.qmp, m.paths.ssh_control, m.paths.join_socket):
        sock.write_text("")
    m.paths.overlay.write_bytes(b"not a qcow2 image at all")
    assert m.condition() == "dead"
    with pytest.raises(UsageError, match="not running"):
        m.require_running()
    stale = m.clean_stale()
    assert stale is not None and stale.name == "stale"
    assert m.condition() == "stopped"
    assert not any(s.exists() for s in m.paths.sockets())
    assert not m.paths.overlay.exists()  # failed qemu-img check: the next boot starts over
    assert m.clean_stale() is None


def test_a_crashed_lab_says_so_with_its_console(
    capsys: pytest.CaptureFixture[str], state: Path
) -> None:
    m = write_state(state, "crashy", pid=dead_pid())
    m.paths.serial_log.write_text("(XEN) booting\n" + "\n".join(PANIC) + "\n")
    assert m.condition() == "crashed"
    with pytest.raises(LabCrashed) as info:
        m.require_running()
    assert "lab crashy crashed (Xen panic)" in info.value.message
    assert "FATAL TRAP: vec 2, NMI" in info.value.message
    assert "snapshot load" in str(info.value.hint)
    rc, out, _ = cli(capsys, "lab", "--json", "list")
    (row,) = json.loads(out)["labs"]
    assert (row["state"], row["crash"]) == ("crashed", "Xen panic")
    rc, out, _ = cli(capsys, "--json", "lab", "status", "crashy")
    err = json.loads(out)["error"]
    assert rc == 1 and err["kind"] == "LabCrashed" and "Panic on CPU 0" in err["message"]
    rc, out, err_text = cli(capsys, "lab", "console", "crashy", "-n", "2")
    assert rc == 1
    assert out.splitlines() == PANIC[-2:]
    assert "crashed (Xen panic)" in err_text
    rc, _, err_text = cli(capsys, "lab", "exec", "crashy", "--", "true")
    assert rc == 1 and "crashed (Xen panic)" in err_text


def test_a_restore_leaves_old_crashes_behind(tmp_path: Path) -> None:
    m = write_state(tmp_path, "restored", pid=dead_pid())
    before = "\n".join(PANIC) + "\n"
    m.paths.serial_log.write_text(before + "XENKIT-LAB-READY after the restore\n")
    assert m.fault() is not None
    st = m.state
    assert st is not None
    st.console_from = len(before.encode())
    st.write(m.paths.state)
    assert m.fault() is None
    assert m.condition() == "dead"


def test_boot_options_are_checked() -> None:
    for bad in (
        {"cpus": 0},
        {"memory_mib": 256},
        {"scheduler": "bogus"},
        {"join_index": 0},
        {"join_index": 64},
    ):
        with pytest.raises(UsageError):
            BootOptions(**bad)  # type: ignore[arg-type]
    opts = BootOptions(join_index=3, network="n")
    cmdline = opts.dom0_cmdline("KEY")
    assert "xenkit.bridgeip=192.0.2.3/24" in cmdline
    assert "xenkit.joinmac=52:54:00:c0:02:03" in cmdline
    assert machine.options_from_json(json.loads(json.dumps(vars(opts)))) == opts


def test_an_overlay_on_a_rebuilt_base_starts_again(tmp_path: Path) -> None:
    """A corrupt entry rebuilt under the same key has a new base disk: a lab's old
    overlay (written over the old base) must not be laid over it."""
    img = fake_image(tmp_path / "img")
    digest = image._sha256(img.root_disk)
    (img.path / "manifest.json").write_text(
        json.dumps({"files": {"root.qcow2": {"size": 1, "sha256": digest}}})
    )
    assert machine.base_digest(img) == digest
    m = write_state(tmp_path / "labs", "rebased", pid=0, base_digest="0" * 64)
    st = m.state
    assert st is not None
    st.image_key = img.key
    subprocess.run(
        [QEMU_IMG, "create", "-q", "-f", "qcow2", "-b", img.root_disk, "-F", "qcow2",
         m.paths.overlay],
        check=True,
    )  # fmt: skip

    def marked() -> bool:
        listing = subprocess.run(
            [QEMU_IMG, "snapshot", "-l", m.paths.overlay], capture_output=True, text=True
        )
        return " mark " in listing.stdout

    subprocess.run([QEMU_IMG, "snapshot", "-c", "mark", m.paths.overlay], check=True)
    notes: list[str] = []
    m._prepare_overlay(img, st, fresh=False, snapshot=None, report=lambda s, d: notes.append(s))
    assert notes == ["overlay"]
    assert not marked()  # a new overlay
    st.base_digest = digest
    subprocess.run([QEMU_IMG, "snapshot", "-c", "mark", m.paths.overlay], check=True)
    m._prepare_overlay(img, st, fresh=False, snapshot=None, report=lambda s, d: notes.append(s))
    assert marked() and notes == ["overlay"]  # kept
