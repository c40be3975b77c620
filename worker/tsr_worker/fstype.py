"""What kind of filesystem the session directory is on, and whether its events can be trusted.

inotify reports what the kernel of *this* machine does to a file. On a network filesystem
(NFS, SMB/CIFS, 9p, Ceph, Lustre, GPFS, AFS, ...) and on FUSE, writes made by another
machine, or behind the FUSE daemon's back, pass no local kernel path and raise no event:
a worker waiting on inotify would never see the far side's request. So the worker asks
what the directory is on and polls wherever events cannot be trusted.

:func:`detect` answers from ``fstatfs(2)`` on the open directory (its ``f_type`` magic
number, through ``ctypes``: no dependency) and names the type from ``/proc/self/mountinfo``
(which also tells FUSE subtypes such as ``fuse.sshfs`` apart). Both are Linux only and
each is behind a capability check: where neither is available (macOS, Windows, a libc
without ``fstatfs``, no ``/proc``) the type is ``unknown``, and unknown means *poll*: a
wrong guess of "local" hangs a remote session, a wrong guess of "remote" costs a few
wake-ups per second.

The type belongs to the open directory for its whole life (a re-mount that makes the
session path lead to another directory is that directory going away:
:meth:`tsr_worker.sessiondir.SessionDir.gone`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["FsKind", "FsType", "detect", "kind_of_name"]

FsKind = Literal["local", "network", "fuse", "unknown"]

# statfs f_type magic numbers (linux/magic.h and the filesystems' own headers).
NETWORK_MAGICS: dict[int, str] = {
    0x6969: "nfs",
    0x517B: "smb",
    0xFE534D42: "smb2",
    0xFF534D42: "cifs",
    0x01021997: "9p",
    0x00C36400: "ceph",
    0x0BD00BD0: "lustre",
    0x47504653: "gpfs",
    0x5346414F: "afs",
    0x6B414653: "kafs",
    0x73757245: "coda",
    0x564C: "ncp",
    0x7461636F: "ocfs2",
    0x01161970: "gfs2",
    0x20030528: "orangefs",
    0x19830326: "beegfs",
    0x786F4256: "vboxsf",
    0xBACBACBC: "vmhgfs",
    0x013111A8: "ibrix",
    0xAAD7AAEA: "panfs",
}
FUSE_MAGIC = 0x65735546
LOCAL_MAGICS: dict[int, str] = {
    0xEF53: "ext4",
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0x01021994: "tmpfs",
    0x858458F6: "ramfs",
    0x794C7630: "overlay",
    0x2FC12FC1: "zfs",
    0xF2F52010: "f2fs",
    0xCA451A4E: "bcachefs",
    0x52654973: "reiserfs",
    0x3153464A: "jfs",
    0x4D44: "vfat",
    0x2011BAB0: "exfat",
    0x5346544E: "ntfs",
    0x7366746E: "ntfs3",
    0x482B: "hfsplus",
    0x3434: "nilfs",
    0xF15F: "ecryptfs",
    0x73717368: "squashfs",
    0x28CD3D45: "cramfs",
    0x9660: "iso9660",
    0x15013346: "udf",
}

NETWORK_NAMES = frozenset(
    {
        "nfs", "nfs4", "smb", "smb2", "smb3", "smbfs", "cifs", "9p", "ceph", "lustre", "gpfs",
        "afs", "kafs", "coda", "ncpfs", "ocfs2", "gfs2", "orangefs", "pvfs2", "beegfs",
        "glusterfs", "vboxsf", "vmhgfs", "davfs", "panfs", "virtiofs", "cvfs", "acfs",
    }
)  # fmt: skip
LOCAL_NAMES = frozenset(LOCAL_MAGICS.values()) | {"ext2", "ext3", "apfs", "hfs", "devtmpfs"}
MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True)
class FsType:
    """The filesystem of a directory, as far as it could be found out."""

    name: str
    """The type's name: ``ext4``, ``nfs4``, ``fuse.sshfs``, ... or ``unknown``."""
    kind: FsKind
    """``local`` (events trusted), ``network``, ``fuse``, or ``unknown`` (not found)."""
    magic: int | None = None
    """``statfs`` ``f_type``, where known."""
    how: str = "none"
    """What told: ``statfs``, ``mountinfo``, ``statfs+mountinfo`` or ``none``."""

    @property
    def events_trusted(self) -> bool:
        """Whether inotify sees every change, the far side's included (local only)."""
        return self.kind == "local"

    def describe(self) -> str:
        """``fuse (statfs 0x65735546)``, for log lines."""
        magic = f" 0x{self.magic:08x}" if self.magic is not None else ""
        return f"{self.name} ({self.kind}; {self.how}{magic})"


def kind_of_name(name: str) -> FsKind:
    """The kind of a mount-table type name (``fuse.sshfs`` -> ``fuse``)."""
    base = name.split(".", 1)[0]
    if base in ("fuse", "fuseblk"):
        return "network" if name.split(".", 1)[-1] in NETWORK_NAMES else "fuse"
    if name in NETWORK_NAMES or base in NETWORK_NAMES:
        return "network"
    if name in LOCAL_NAMES:
        return "local"
    return "unknown"


def _kind_of_magic(magic: int) -> tuple[str, FsKind]:
    if magic == FUSE_MAGIC:
        return "fuse", "fuse"
    if magic in NETWORK_MAGICS:
        return NETWORK_MAGICS[magic], "network"
    if magic in LOCAL_MAGICS:
        return LOCAL_MAGICS[magic], "local"
    return "unknown", "unknown"


_libc: Any = None


def _statfs_magic(fd: int) -> int | None:
    """``f_type`` of ``fstatfs(fd)``, or ``None`` where there is no such call."""
    global _libc
    if not sys.platform.startswith("linux"):
        return None
    if _libc is None:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        if not hasattr(lib, "fstatfs"):
            return None
        lib.fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]
        lib.fstatfs.restype = ctypes.c_int
        _libc = lib
    # struct statfs starts with f_type, a machine word (__fsword_t) on the Linux ABIs;
    # magics are 32-bit (the mask drops a sign extension); 512 bytes hold the struct.
    buf = ctypes.create_string_buffer(512)
    if _libc.fstatfs(fd, buf) != 0:
        return None
    return int(ctypes.c_ulong.from_buffer(buf).value) & 0xFFFFFFFF


def _mountinfo_type(fd: int, path: str, table: str | None = None) -> str | None:
    """The type name of the mount holding the open directory ``fd`` (at ``path``).

    Matched by device number first (exact, bind mounts included); else (btrfs subvolumes
    report an anonymous device) by the longest mount point that contains ``path``.
    """
    try:
        with open(table or MOUNTINFO, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        dev = os.fstat(fd).st_dev
    except OSError:
        return None
    if sys.platform == "win32":  # no mount table there (nor os.major)
        return None
    want = f"{os.major(dev)}:{os.minor(dev)}"
    by_point: tuple[int, str] | None = None
    real = os.path.realpath(path)
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or not tail:
            continue
        if fields[2] == want:
            return tail[0]
        point = fields[4].replace("\\040", " ")
        if (real == point or real.startswith(point.rstrip("/") + "/")) and (
            by_point is None or len(point) > by_point[0]
        ):
            by_point = (len(point), tail[0])
    return by_point[1] if by_point else None


def detect(fd: int, path: str) -> FsType:
    """The filesystem of the open directory ``fd`` (whose path is ``path``)."""
    magic = None
    with contextlib.suppress(OSError, AttributeError, ValueError):
        magic = _statfs_magic(fd)
    table_name = _mountinfo_type(fd, path)
    how = "+".join(w for w, v in (("statfs", magic), ("mountinfo", table_name)) if v is not None)
    if magic is not None:
        name, kind = _kind_of_magic(magic)
        if table_name is not None:
            by_name = kind_of_name(table_name)
            if kind == "unknown" or (kind == "fuse" and by_name == "network"):
                kind = by_name
            name = table_name
        return FsType(name, kind, magic, how)
    if table_name is not None:
        return FsType(table_name, kind_of_name(table_name), None, how)
    return FsType("unknown", "unknown", None, "none")
