"""Build a lab image (Xen, a dom0 kernel and root disk, a guest kit) from Debian packages.

An image is a directory in the lab cache named by a hash of everything that
goes into it: the package versions apt resolved, the builder's own code and
the scripts baked in. It is written under a temporary name and renamed into
place, so a directory with the final name is always complete; building again
with nothing changed finds it and returns at once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import hashlib
import json
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from xenkit.core.errors import OperationFailed, UsageError, XenkitError
from xenkit.lab import debs, initramfs, scripts
from xenkit.lab.debs import AptEnv, AptSources, DebPackage
from xenkit.lab.paths import cache_root
from xenkit.lab.tools import require, run_tool

#: ``progress(stage, detail)``: called as a build moves on, for the CLI to render.
Progress = Callable[[str, str], None]

#: The dom0 userland on top of the variant's base set.
DOM0_PACKAGES: tuple[str, ...] = (
    "xen-utils-4.17",
    "qemu-system-xen",
    "qemu-utils",
    "openssh-server",
    "python3",
    "iproute2",
    "bridge-utils",
    "nftables",
    "iptables",
    "busybox",
    "kmod",
    "mount",
    "procps",
    "socat",
    "lvm2",
    "thin-provisioning-tools",
    "thermald",  # drives the clamp's cooling device (tests/lab/test_clamp.py)
)
HYPERVISOR_PACKAGE = "xen-hypervisor-4.17-amd64"
#: Metapackages: apt tells which ``linux-image-6.1.0-NN-*`` they currently mean.
DOM0_KERNEL_META = "linux-image-amd64"
GUEST_KERNEL_META = "linux-image-cloud-amd64"
STATIC_BUSYBOX = "busybox-static"

#: What the first-stage initramfs must load before the root disk can be mounted.
STAGE1_MODULES: tuple[str, ...] = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4")
#: Module trees no emulated Xen host uses; leaving them out saves ~120 MB per image.
MODULE_EXCLUDES: tuple[str, ...] = (
    "kernel/drivers/gpu",
    "kernel/drivers/media",
    "kernel/drivers/infiniband",
    "kernel/drivers/net/wireless",
    "kernel/drivers/staging",
    "kernel/drivers/iio",
    "kernel/drivers/bluetooth",
    "kernel/drivers/isdn",
    "kernel/sound",
    "kernel/net/bluetooth",
    "kernel/net/mac80211",
    "kernel/net/wireless",
)

#: Frontends the guest kit loads in agent mode (the cloud kernel builds them as modules).
GUEST_MODULES = ("xen-blkfront", "xen-netfront")
#: Where the guest kit sits inside dom0, for xl configs.
DOM0_GUEST_DIR = "/usr/share/xenkit/guest"

_MANIFEST = "manifest.json"
#: (size, mtime, inode) of each file when it was last hashed; see ``verify_entry``.
_STAMP = ".verified.json"
_BUILDER_MODULES = ("image.py", "debs.py", "initramfs.py", "scripts.py", "dom0agent.py")
_FORMAT = 1


def _noop(stage: str, detail: str) -> None:
    del stage, detail


@dataclass(frozen=True)
class ImageSpec:
    """What to build; every field is part of the cache key."""

    sources: AptSources = field(default_factory=AptSources)
    variant: Literal["essential", "minbase"] = "essential"
    packages: tuple[str, ...] = DOM0_PACKAGES
    extra_packages: tuple[str, ...] = ()
    disk_size_mib: int = 4096

    def all_packages(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.packages + self.extra_packages))


@dataclass(frozen=True)
class GuestKit:
    """A small kernel + busybox initramfs that boots as a PV, PVH or HVM guest.

    ``kernel``/``initrd`` are on this machine; ``dom0_kernel``/``dom0_initrd``
    are the same files inside the lab's dom0, where xl needs them.
    """

    kernel: Path
    initrd: Path
    kernel_version: str
    dom0_kernel: str = f"{DOM0_GUEST_DIR}/vmlinuz"
    dom0_initrd: str = f"{DOM0_GUEST_DIR}/initrd.img"
    marker: str = scripts.GUEST_MARKER


@dataclass(frozen=True)
class LabImage:
    """A complete cache entry: what Machine boots."""

    key: str
    path: Path
    xen: Path
    kernel: Path
    initrd: Path
    root_disk: Path
    host_key: str
    kernel_version: str
    xen_version: str
    guest: GuestKit
    packages: Mapping[str, str]
    timings: Mapping[str, float]
    cache_hit: bool = False
    #: Why the cache entry was built again (it was there but corrupt or incomplete).
    rebuilt_because: str | None = None

    @classmethod
    def load(
        cls, path: Path, *, cache_hit: bool = False, rebuilt_because: str | None = None
    ) -> LabImage:
        """Read an entry's manifest; raises OperationFailed if it is not a lab image."""
        try:
            m = json.loads((path / "manifest.json").read_text())
            return cls._from_manifest(path, m, cache_hit, rebuilt_because)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OperationFailed(
                f"{path} is not a lab image ({type(exc).__name__}: {exc})",
                hint="rebuild it: build again (a broken entry is replaced)",
            ) from exc

    @classmethod
    def _from_manifest(
        cls, path: Path, m: dict[str, Any], cache_hit: bool, rebuilt_because: str | None
    ) -> LabImage:
        return cls(
            key=m["key"],
            path=path,
            xen=path / "xen.elf",
            kernel=path / "vmlinuz",
            initrd=path / "stage1.cpio.gz",
            root_disk=path / "root.qcow2",
            host_key=m["host_key"],
            kernel_version=m["kernel_version"],
            xen_version=m["xen_version"],
            guest=GuestKit(
                kernel=path / "guest" / "vmlinuz",
                initrd=path / "guest" / "initrd.img",
                kernel_version=m["guest_kernel_version"],
            ),
            packages=m["packages"],
            timings=m.get("timings", {}),
            cache_hit=cache_hit,
            rebuilt_because=rebuilt_because,
        )


@dataclass(frozen=True)
class _Inputs:
    """Resolved inputs: exactly what the key is computed from."""

    rootfs: dict[str, str]
    hypervisor: DebPackage
    kernel: DebPackage
    guest_kernel: DebPackage
    busybox: DebPackage

    def as_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> _Inputs:
        def pkg(key: str) -> DebPackage:
            value = data[key]
            assert isinstance(value, dict)
            return DebPackage(**value)

        rootfs = data["rootfs"]
        assert isinstance(rootfs, dict)
        return cls(
            dict(rootfs), pkg("hypervisor"), pkg("kernel"), pkg("guest_kernel"), pkg("busybox")
        )


def builder_digest() -> str:
    """The builder's "code version": its own source, so any change rebuilds images."""
    h = hashlib.sha256(f"format={_FORMAT}".encode())
    here = Path(__file__).parent
    for name in _BUILDER_MODULES:
        h.update(name.encode())
        h.update((here / name).read_bytes())
    return h.hexdigest()


def _resolve(apt: AptEnv, spec: ImageSpec, progress: Progress) -> _Inputs:
    """Resolution is a pure function of the lists, so it is cached next to them."""
    request = {
        "lists": apt.lists_digest(),
        "packages": sorted(spec.all_packages()),
        "variant": spec.variant,
        "sources": spec.sources.sources_list(),
        "format": _FORMAT,
    }
    memo = apt.root / "resolved" / f"{debs.digest_json(request)}.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AssertionError):
        return _Inputs.from_json(json.loads(memo.read_text()))
    progress("resolve", "asking apt for package versions")
    base = "?essential" if spec.variant == "essential" else "?priority(required)"
    rootfs = apt.resolve_closure([*spec.all_packages()], base=base)
    metas = apt.candidates(
        [HYPERVISOR_PACKAGE, DOM0_KERNEL_META, GUEST_KERNEL_META, STATIC_BUSYBOX]
    )
    for name in (HYPERVISOR_PACKAGE, DOM0_KERNEL_META, GUEST_KERNEL_META, STATIC_BUSYBOX):
        if name not in metas:
            raise OperationFailed(
                f"package {name} not found in {spec.sources.suite}",
                hint="refresh the lab package lists (build with refresh=True)",
            )
    kernel_name = debs.first_dependency(metas[DOM0_KERNEL_META].depends)
    guest_name = debs.first_dependency(metas[GUEST_KERNEL_META].depends)
    kernels = apt.candidates([kernel_name, guest_name])
    inputs = _Inputs(
        rootfs=dict(sorted(rootfs.items())),
        hypervisor=metas[HYPERVISOR_PACKAGE],
        kernel=kernels[kernel_name],
        guest_kernel=kernels[guest_name],
        busybox=metas[STATIC_BUSYBOX],
    )
    memo.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(memo, json.dumps(inputs.as_json(), indent=1, sort_keys=True))
    return inputs


def image_key(spec: ImageSpec, inputs: _Inputs) -> str:
    return debs.digest_json(
        {
            "builder": builder_digest(),
            "inputs": inputs.as_json(),
            "spec": {
                "sources": spec.sources.sources_list(),
                "variant": spec.variant,
                "packages": list(spec.all_packages()),
                "disk_size_mib": spec.disk_size_mib,
            },
            "scripts": [
                scripts.STAGE1_INIT,
                scripts.INITTAB,
                scripts.DOM0_BOOT,
                scripts.DOM0_SHUTDOWN,
                scripts.SSHD_CONFIG,
                scripts.GUEST_INIT,
            ],
        }
    )


#: What building needs besides apt (which run_tool checks when it is first used).
BUILD_TOOLS = ("mmdebstrap", "mke2fs", "qemu-img", "dpkg-deb", "ssh-keygen")
#: Roughly what a build occupies in the cache while it runs (scratch tree, raw disk, image).
BUILD_SPACE_MIB = 3072


def build_image(
    spec: ImageSpec | None = None,
    *,
    progress: Progress | None = None,
    refresh: bool = False,
    cache_dir: Path | None = None,
) -> LabImage:
    """Return the cached image for ``spec``, building it first if needed.

    ``refresh`` re-fetches the package lists, the only way versions move;
    without it a warm call only reads a few small files (and needs no build
    tool). A cache entry that fails its manifest check (a file missing, of the
    wrong size or hash) or has no manifest is reported through ``progress``
    (stage ``"corrupt"``) and built again. A failed build, a full disk
    included, leaves nothing in the cache but its package downloads.
    """
    spec = spec or ImageSpec()
    report = progress or _noop
    if spec.disk_size_mib < 1024:
        raise UsageError("the lab root disk needs at least 1024 MiB", hint="raise disk_size_mib")
    root = cache_dir or cache_root()
    apt = AptEnv(root / "apt", spec.sources)
    if refresh or not apt.has_lists():
        # Network and minutes ahead: fail now, not after them, if a build tool is missing.
        _require_build_tools()
    try:
        with apt.locked():
            if apt.ensure_lists(refresh=refresh) or refresh:
                report("resolve", "fetched package lists")
            inputs = _resolve(apt, spec, report)
    except OSError as exc:
        raise _disk_error(exc, root) from exc
    except OperationFailed as exc:
        raise _disk_error(exc, root) from exc
    key = image_key(spec, inputs)
    final = root / key[:32]
    found = _cached(final, report)
    if found is not None:
        return found
    with _locked(root / f".lock-{key[:32]}"):
        found = _cached(final, report)
        if found is not None:
            return found
        problem = verify_entry(final) if final.exists() else None
        _require_build_tools()
        if os.geteuid() != 0:
            # mmdebstrap's unshare mode would leave subuid owners in the tree and mke2fs -d
            # would copy them into the disk: refuse rather than build a broken image.
            raise UsageError(
                "building a lab image needs root (mmdebstrap root mode)",
                hint="build once as root (e.g. sudo); using a built image does not need root",
            )
        _sweep(root)
        work: Path | None = None
        failure: OSError | OperationFailed | None = None
        try:
            if problem is not None:
                report("corrupt", f"cache entry {final.name} is {problem}; rebuilding it")
                shutil.rmtree(final)
            work = Path(tempfile.mkdtemp(prefix=f".build-{os.getpid()}-", dir=root))
            _Builder(spec, inputs, apt, key, work, report).run()
            (work / "image").rename(final)
        except (OSError, OperationFailed) as exc:
            failure = exc
        finally:
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)
        if failure is not None:
            # Said after the scratch tree is gone, so the free space it reports is real.
            raise _disk_error(failure, root) from failure
    report("done", str(final))
    return LabImage.load(final, rebuilt_because=problem)


def _require_build_tools() -> None:
    for program in BUILD_TOOLS:
        require(program)


def _cached(final: Path, report: Progress) -> LabImage | None:
    """The entry at ``final`` if it is complete and intact; None to (re)build it."""
    if not (final / "manifest.json").exists():
        return None
    if verify_entry(final) is not None:
        return None
    image = LabImage.load(final, cache_hit=True)
    report("cached", str(final))
    return image


def _file_digests(directory: Path) -> dict[str, dict[str, object]]:
    """Size and SHA-256 of every file of an entry (the manifest and stamp excepted)."""
    out: dict[str, dict[str, object]] = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_file() and rel not in (_MANIFEST, _STAMP):
            out[rel] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _write_stamp(directory: Path, names: list[str]) -> None:
    stamp = {name: _stat_key(directory / name) for name in names}
    _atomic_write(directory / _STAMP, json.dumps(stamp))


def verify_entry(directory: Path) -> str | None:
    """What is wrong with a cache entry, or None if it is intact.

    Every file the manifest lists must be there with its size; its SHA-256 is
    checked too unless the file's (size, mtime, inode) still match the ones
    recorded when it was last hashed, which keeps a warm build at a few stat
    calls while an entry that was written to, truncated or replaced since is
    hashed (and found out) again.
    """
    try:
        manifest = json.loads((directory / _MANIFEST).read_text())
    except FileNotFoundError:
        return "incomplete (no manifest.json: a build stopped half way)"
    except (OSError, ValueError) as exc:
        return f"corrupt (unreadable manifest.json: {exc})"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files:
        return "corrupt (its manifest lists no file hashes)"
    try:
        stamp = json.loads((directory / _STAMP).read_text())
    except (OSError, ValueError):
        stamp = {}
    rehashed = False
    for name, want in files.items():
        path = directory / name
        try:
            key = _stat_key(path)
        except OSError:
            return f"corrupt ({name} is missing)"
        if key[0] != want.get("size"):
            return f"corrupt ({name} is {key[0]} bytes, the manifest says {want.get('size')})"
        if stamp.get(name) == key:
            continue
        if _sha256(path) != want.get("sha256"):
            return f"corrupt ({name} does not match its SHA-256 in the manifest)"
        rehashed = True
    if rehashed:
        with contextlib.suppress(OSError):
            _write_stamp(directory, list(files))
    return None


def _disk_error(exc: OSError | OperationFailed, root: Path) -> XenkitError:
    """A full disk said as such (with the space left), anything else unchanged."""
    full = (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or (
        "No space left on device" in str(exc)
    )
    if not full:
        return (
            exc
            if isinstance(exc, OperationFailed)
            else OperationFailed(f"building the lab image failed: {exc}", hint=f"cache: {root}")
        )
    try:
        free = shutil.disk_usage(root).free >> 20
    except OSError:
        free = 0
    return OperationFailed(
        f"disk full while building the lab image in {root} ({free} MiB left); "
        "the partial build was removed",
        hint=f"a build needs about {BUILD_SPACE_MIB} MiB free there: free some space or "
        "point XDG_CACHE_HOME at a bigger disk",
    )


def cached_images(cache_dir: Path | None = None) -> list[LabImage]:
    """Complete images in the cache, newest first."""
    root = cache_dir or cache_root()
    found = []
    for manifest in root.glob("*/manifest.json"):
        with contextlib.suppress(OperationFailed, OSError):
            image = LabImage.load(manifest.parent)
            image.root_disk.stat()
            found.append(image)
    return sorted(found, key=lambda i: i.root_disk.stat().st_mtime, reverse=True)


class _Builder:
    """One build, in a scratch directory; ``work/image`` becomes the cache entry."""

    def __init__(
        self,
        spec: ImageSpec,
        inputs: _Inputs,
        apt: AptEnv,
        key: str,
        work: Path,
        progress: Progress,
    ) -> None:
        self.spec = spec
        self.inputs = inputs
        self.apt = apt
        self.key = key
        self.work = work
        self.out = work / "image"
        self.progress = progress
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str, detail: str) -> Iterator[None]:
        self.progress(name, detail)
        start = time.monotonic()
        yield
        self.timings[name] = round(self.timings.get(name, 0.0) + time.monotonic() - start, 3)

    def run(self) -> None:
        (self.out / "guest").mkdir(parents=True)
        i = self.inputs
        with self.stage("download", "kernel, cloud kernel, Xen, busybox-static"):
            files = {
                p.name: self.apt.download(p)
                for p in (i.hypervisor, i.kernel, i.guest_kernel, i.busybox)
            }
        with self.stage("extract", "unpacking the .deb files"):
            trees = {
                name: debs.extract(deb, self.work / "deb" / name) for name, deb in files.items()
            }
        xen_tree, kernel_tree = trees[i.hypervisor.name], trees[i.kernel.name]
        guest_tree, busybox_tree = trees[i.guest_kernel.name], trees[i.busybox.name]
        kver = _only(kernel_tree / "lib/modules", "*", "dom0 kernel modules").name
        with self.stage("kernel", f"Xen {i.hypervisor.version}, dom0 kernel {kver}"):
            xen_gz = _only(xen_tree / "boot", "xen-*.gz", "Xen hypervisor")
            with gzip.open(xen_gz) as src, (self.out / "xen.elf").open("wb") as dst:
                shutil.copyfileobj(src, dst)
            shutil.copy(
                _only(kernel_tree / "boot", "vmlinuz-*", "dom0 kernel"), self.out / "vmlinuz"
            )
            guest_vmlinuz = _only(guest_tree / "boot", "vmlinuz-*", "guest kernel")
            shutil.copy(guest_vmlinuz, self.out / "guest" / "vmlinuz")
        busybox = (busybox_tree / "bin/busybox").read_bytes()
        with self.stage("initramfs", "dom0 stage 1 and the guest kit"):
            self._stage1(kernel_tree / "lib/modules" / kver, busybox)
            self._guest_initrd(busybox, guest_tree / "lib/modules")
        host_key = self._overlay(kernel_tree / "lib/modules" / kver)
        with self.stage(
            "rootfs", f"mmdebstrap {self.spec.variant} + {len(self.spec.all_packages())} packages"
        ):
            rootfs = self._mmdebstrap(kernel_tree / "lib/modules", kver)
        packages = debs.installed_packages(rootfs)
        with self.stage("disk", f"ext4 {self.spec.disk_size_mib} MiB -> qcow2"):
            self._disk(rootfs)
        manifest: dict[str, object] = {
            "format": _FORMAT,
            "key": self.key,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host_key": host_key,
            "kernel_version": kver,
            "xen_version": i.hypervisor.version,
            "guest_kernel_version": guest_vmlinuz.name.removeprefix("vmlinuz-"),
            "inputs": i.as_json(),
            "packages": packages,
            "timings": self.timings,
        }
        with self.stage("manifest", "hashing the image files"):
            digests = _file_digests(self.out)
            manifest["files"] = digests
            _write_stamp(self.out, list(digests))
        # Written last: an entry with a manifest is complete.
        _atomic_write(self.out / _MANIFEST, json.dumps(manifest, indent=1))

    def _stage1(self, moddir: Path, busybox: bytes) -> None:
        index = initramfs.module_index(moddir)
        order = initramfs.module_closure(index, STAGE1_MODULES)
        cpio = initramfs.Cpio()
        cpio.file("bin/busybox", busybox, 0o755)
        for applet in (
            "sh",
            "mount",
            "umount",
            "insmod",
            "usleep",
            "sleep",
            "switch_root",
            "poweroff",
            "cat",
            "echo",
        ):
            cpio.symlink(f"bin/{applet}", "busybox")
        for d in ("dev", "proc", "sys", "newroot"):
            cpio.directory(d)
        cpio.chardev("dev/console", 5, 1)
        for name in order:
            cpio.file(f"lib/modules/{name}.ko", index[name].read_bytes())
        cpio.file("lib/modules/order", ("\n".join(order) + "\n").encode())
        cpio.file("init", scripts.STAGE1_INIT.encode(), 0o755)
        cpio.write_gzip(self.out / "stage1.cpio.gz")

    def _guest_initrd(self, busybox: bytes, modules: Path) -> None:
        cpio = initramfs.Cpio()
        cpio.file("bin/busybox", busybox, 0o755)
        cpio.symlink("bin/sh", "busybox")
        for d in ("dev", "proc", "sys", "lib/modules"):
            cpio.directory(d)
        cpio.chardev("dev/console", 5, 1)
        for name in GUEST_MODULES:
            found = sorted(modules.rglob(f"{name}.ko*"))
            if not found or found[0].suffix != ".ko":
                raise OperationFailed(
                    f"the guest kernel has no uncompressed {name}.ko",
                    hint="the guest kit needs Debian's cloud kernel, which builds it as a module",
                )
            cpio.file(f"lib/modules/{name}.ko", found[0].read_bytes())
        cpio.file("init", scripts.GUEST_INIT.encode(), 0o755)
        cpio.file("bin/xenkit-agent", scripts.GUEST_AGENT.encode(), 0o755)
        cpio.write_gzip(self.out / "guest" / "initrd.img")

    def _overlay(self, moddir: Path) -> str:
        """Files laid over the mmdebstrap tree; only under usr/ and etc/ (merged /usr)."""
        o = self.work / "overlay"
        files = {
            "etc/inittab": (scripts.INITTAB, 0o644),
            "etc/hostname": ("xenkit-lab\n", 0o644),
            "etc/hosts": ("127.0.0.1\tlocalhost\n127.0.1.1\txenkit-lab\n", 0o644),
            "etc/fstab": ("# the root disk is mounted by the initramfs\n", 0o644),
            "etc/ssh/sshd_config.d/xenkit.conf": (scripts.SSHD_CONFIG, 0o644),
            "usr/lib/xenkit/dom0-boot": (scripts.DOM0_BOOT, 0o755),
            "usr/lib/xenkit/dom0-shutdown": (scripts.DOM0_SHUTDOWN, 0o755),
            "usr/lib/xenkit/image.json": (json.dumps({"key": self.key}) + "\n", 0o644),
            "usr/lib/xenkit/lab-agent.py": (
                (Path(__file__).parent / "dom0agent.py").read_text(),
                0o644,
            ),
        }
        for rel, (text, mode) in files.items():
            path = o / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(mode)
        (o / "usr/sbin").mkdir(parents=True)
        (o / "usr/local/sbin").mkdir(parents=True)
        (o / "usr/sbin/init").symlink_to("/usr/bin/busybox")
        for cmd in ("poweroff", "reboot", "halt"):
            (o / "usr/local/sbin" / cmd).symlink_to("/usr/bin/busybox")
        guest = o / DOM0_GUEST_DIR.lstrip("/")
        guest.mkdir(parents=True)
        shutil.copy(self.out / "guest" / "vmlinuz", guest / "vmlinuz")
        shutil.copy(self.out / "guest" / "initrd.img", guest / "initrd.img")
        key = o / "etc/ssh/ssh_host_ed25519_key"
        run_tool(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "xenkit-lab", "-f", key])
        shutil.copy(key.with_suffix(".pub"), self.out / "ssh_host_ed25519_key.pub")
        for rel in MODULE_EXCLUDES:
            shutil.rmtree(moddir / rel, ignore_errors=True)
        return key.with_suffix(".pub").read_text().strip()

    def _mmdebstrap(self, modules: Path, kver: str) -> Path:
        rootfs = self.work / "rootfs"
        q = shlex.quote
        lists = q(str(self.apt.lists))
        argv: list[str | Path] = [
            "mmdebstrap",
            f"--variant={self.spec.variant}",
            "--mode=auto",
            "--format=directory",
            "--include=" + ",".join(self.spec.all_packages()),
            '--aptopt=Acquire::Languages "none"',
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            # Resolve against the very lists the cache key was computed from.
            "--skip=update",
            '--setup-hook=mkdir -p "$1/var/lib/apt/lists" && '
            f'cp {lists}/*Release {lists}/*_Packages* "$1/var/lib/apt/lists/"',
            f"--customize-hook=sync-in {q(str(self.work / 'overlay'))} /",
            '--customize-hook=mkdir -p "$1/usr/lib/modules"',
            f"--customize-hook=sync-in {q(str(modules))} /usr/lib/modules",
            f'--customize-hook=chroot "$1" depmod -a {q(kver)}',
            '--customize-hook=rm -f "$1"/etc/ssh/ssh_host_rsa_key* '
            '"$1"/etc/ssh/ssh_host_ecdsa_key*',
            self.spec.sources.suite,
            rootfs,
            self.apt.sources_file,
        ]
        run_tool(argv, timeout=1800, what="mmdebstrap (dom0 root filesystem)")
        return rootfs

    def _disk(self, rootfs: Path) -> None:
        raw = self.work / "root.img"
        run_tool(
            [
                "mke2fs", "-q", "-F", "-t", "ext4", "-L", "xenkit-root", "-m", "0",
                "-E", "lazy_itable_init=0,lazy_journal_init=0",
                "-d", rootfs, raw, f"{self.spec.disk_size_mib}M",
            ],
            what="mke2fs -d (dom0 root disk)",
        )  # fmt: skip
        shutil.rmtree(rootfs)
        run_tool(
            ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, self.out / "root.qcow2"],
            what="qemu-img convert",
        )
        raw.unlink()
        # The base is only ever a backing file; read-only makes an accidental write fail loudly.
        (self.out / "root.qcow2").chmod(0o444)


def _only(directory: Path, pattern: str, what: str) -> Path:
    found = sorted(p for p in directory.glob(pattern) if not p.name.endswith((".config", ".efi")))
    if len(found) != 1:
        raise OperationFailed(
            f"expected one {what} ({pattern}) in {directory}, found {len(found)}",
            hint="the Debian package layout changed; the lab builder needs updating",
        )
    return found[0]


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sweep(root: Path) -> None:
    """Remove scratch dirs of builds whose process is gone (killed mid-build)."""
    for tmp in root.glob(".build-*-*"):
        pid = tmp.name.split("-")[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(tmp, ignore_errors=True)
