"""Pure readers of /proc and /sys contents: text or bytes in, ``(status, detail)`` out.

Every function here that touches the file system takes ``root``, the directory that
stands for ``/``: the checks pass ``/``, the tests a tree that mimics /sys and /proc.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

import attrs

from mcp_acp.models import PostureStatus

__all__ = [
    "SECURE_BOOT_VARIABLE",
    "Mount",
    "crypt_device",
    "mount_for",
    "parse_lockdown",
    "parse_mountinfo",
    "parse_secure_boot",
]

Outcome = tuple[PostureStatus, str]

SECURE_BOOT_VARIABLE = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"

# dm uuids cryptsetup gives its devices ("CRYPT-<TYPE>-..."). Only these types encrypt;
# CRYPT-VERITY and CRYPT-INTEGRITY protect integrity only, and CRYPT-SUBDEV is the
# integrity layer under an authenticated LUKS2 device, not the encryption itself.
ENCRYPTING_TYPES = frozenset({"LUKS1", "LUKS2", "PLAIN", "TCRYPT", "BITLK", "LOOPAES", "FVAULT2"})


@attrs.frozen(slots=True)
class Mount:
    """One line of /proc/self/mountinfo, the fields we use."""

    major: int
    minor: int
    mount_point: str
    fs_type: str
    source: str


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash in paths as \ooo octal
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts in /proc/self/mountinfo order; malformed lines are skipped."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 6 or len(fields) < sep + 3:
            continue
        major, _, minor = fields[2].partition(":")
        if not (major.isdigit() and minor.isdigit()):
            continue
        mounts.append(
            Mount(
                major=int(major),
                minor=int(minor),
                mount_point=_unescape(fields[4]),
                fs_type=fields[sep + 1],
                source=_unescape(fields[sep + 2]),
            )
        )
    return mounts


def mount_for(mounts: list[Mount], path: str, dev: int) -> Mount | None:
    """The mount that holds ``path`` (absolute, resolved), whose ``os.stat`` gives ``dev``.

    A mount point alone can lie: a later mount on a parent directory hides a deeper one
    that is still listed. So the mounts on ``path``'s way are replayed in mountinfo order
    (the order they were mounted), each one hiding those below it, and the deepest one
    left standing is the candidate. If a mount of ``dev`` (``major:minor``) is listed, the
    kernel's word wins: the candidate if it is that device, else the deepest mount of that
    device on the way (else its last one). If none is, the candidate stands only if it is
    btrfs (which gives each subvolume's files an anonymous device mountinfo does not list);
    otherwise — or if nothing is mounted on the way — ``None``.
    """
    target = PurePosixPath(path)

    def holds(mount: Mount) -> bool:
        point = PurePosixPath(mount.mount_point)
        return target == point or point in target.parents

    standing: list[Mount] = []
    for mount in mounts:
        if holds(mount):
            point = PurePosixPath(mount.mount_point)
            standing = [
                m
                for m in standing
                if not (
                    PurePosixPath(m.mount_point) == point
                    or point in PurePosixPath(m.mount_point).parents
                )
            ]
            standing.append(mount)
    candidate = max(standing, key=lambda m: len(PurePosixPath(m.mount_point).parts), default=None)
    device = (os.major(dev), os.minor(dev))
    same = [m for m in mounts if (m.major, m.minor) == device]
    if candidate is not None and (candidate.major, candidate.minor) == device:
        return candidate
    if not same:  # only btrfs is known to stat to a device mountinfo does not list
        return candidate if candidate is not None and candidate.fs_type == "btrfs" else None
    best: Mount = same[-1]
    depth = -1
    for mount in same:  # later lines are mounted on top of earlier ones
        point = PurePosixPath(mount.mount_point)
        if holds(mount) and len(point.parts) >= depth:
            best, depth = mount, len(point.parts)
    return best


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _block_dir(root: Path, mount: Mount) -> Path | None:
    """The /sys directory of the block device under ``mount``, if it has one."""
    if mount.major != 0:
        found = root / "sys/dev/block" / f"{mount.major}:{mount.minor}"
        return found if found.exists() else None
    # btrfs and some others report an anonymous 0:N device; the source names the real one
    if not mount.source.startswith("/dev/"):
        return None
    if mount.source.startswith("/dev/mapper/"):
        wanted = mount.source.removeprefix("/dev/mapper/")
        for dm in sorted((root / "sys/block").glob("dm-*")):
            if _read(dm / "dm/name") == wanted:
                return dm
        return None
    found = root / "sys/class/block" / PurePosixPath(mount.source).name
    return found if found.exists() else None


#: The most block devices one file system's chain is followed through.
MAX_CHAIN_DEVICES = 64


def crypt_device(start: Path, *more: Path) -> tuple[list[tuple[str, str]], str | None]:
    """Walk down from /sys block directories (one file system's devices) through
    ``slaves/`` and partition parents, each branch until a dm-crypt device that encrypts.

    Return the ``(device, dm uuid)`` of every such device met, and what keeps the chain
    from being encrypted (else ``None``): the first device at the bottom of a branch that
    no dm-crypt device is above — a logical volume extended onto a plain disk, a cache or
    RAID member outside the encryption holds the file system's data in the clear — or a
    chain too long to follow.
    """
    found: list[tuple[str, str]] = []
    # each device to look at, and the name to blame if nothing above it encrypts (a plain
    # partition is named, not the disk it leads to)
    pending: list[tuple[Path, str | None]] = [(device, None) for device in (*more[::-1], start)]
    seen: set[Path] = set()
    while pending:
        device, blame = pending.pop()
        real = device.resolve()
        if real in seen:
            continue
        if len(seen) >= MAX_CHAIN_DEVICES:
            return found, f"more than {MAX_CHAIN_DEVICES} devices in its chain"
        seen.add(real)
        uuid = _read(real / "dm/uuid") or ""
        if uuid.startswith("CRYPT-") and uuid.split("-")[1] in ENCRYPTING_TYPES:
            found.append((real.name, uuid))
            continue  # what lies below holds ciphertext
        below: list[tuple[Path, str | None]] = []
        slaves = real / "slaves"
        if slaves.is_dir():  # popped in name order
            below.extend((slave, None) for slave in sorted(slaves.iterdir(), reverse=True))
        if (real / "partition").exists():  # a partition sits on its parent disk
            below.append((real.parent, blame or real.name))
        if not below:
            plain = blame or real.name
            return found, f"{plain} in its chain is not under a dm-crypt device"
        pending.extend(below)
    return found, None


def encryption_of(root: Path, mountinfo: str, path: str, dev: int) -> Outcome:
    """Is the file system holding ``path`` (whose ``st_dev`` is ``dev``) on dm-crypt — every
    device it lies on below a dm-crypt device?

    Reads /sys below ``root``.
    """
    mount = mount_for(parse_mountinfo(mountinfo), path, dev)
    if mount is None:
        return (
            PostureStatus.UNKNOWN,
            f"{path}: its device {os.major(dev)}:{os.minor(dev)} has no mount in mountinfo "
            "(hidden, or in another mount namespace); check the path is visible here",
        )
    where = f"{path} is on {mount.source} ({mount.fs_type}, {mount.major}:{mount.minor})"
    block = _block_dir(root, mount)
    if block is None:
        return PostureStatus.UNKNOWN, f"{where}, not a block device this check can follow"
    members = _btrfs_members(root, block) if mount.fs_type == "btrfs" else []
    found, plain = crypt_device(block, *members)
    if not found:
        return PostureStatus.FAIL, f"{where}: no dm-crypt device in its chain"
    if plain is not None:
        return PostureStatus.FAIL, f"{where}: {plain}"
    named = ", ".join(f"{name} ({uuid.split('-')[1]})" for name, uuid in sorted(found))
    return PostureStatus.PASS, f"{where}, encrypted by {named}"


def _btrfs_members(root: Path, block: Path) -> list[Path]:
    """The other devices of the btrfs file system on ``block``: mountinfo names one device
    of a multi-device btrfs (RAID1 over a LUKS device and a plain disk, a disk added with
    ``btrfs device add``), ``/sys/fs/btrfs/FSID/devices/`` links every one."""
    real = block.resolve()
    for devices in sorted((root / "sys/fs/btrfs").glob("*/devices")):
        members = sorted(devices.iterdir())
        if any(member.resolve() == real for member in members):
            return [member for member in members if member.resolve() != real]
    return []


def parse_secure_boot(data: bytes) -> Outcome:
    """The SecureBoot EFI variable as efivarfs shows it: 4 attribute bytes, 1 data byte."""
    if len(data) != 5:
        return PostureStatus.UNKNOWN, f"SecureBoot variable has {len(data)} bytes, expected 5"
    if data[4] == 1:
        return PostureStatus.PASS, "Secure Boot is enabled"
    if data[4] == 0:
        return PostureStatus.FAIL, "Secure Boot is disabled (or the firmware is in setup mode)"
    return PostureStatus.UNKNOWN, f"SecureBoot variable has unexpected value {data[4]}"


def secure_boot_of(root: Path) -> Outcome:
    """Secure Boot from efivarfs below ``root``."""
    efi = root / "sys/firmware/efi"
    if not efi.is_dir():
        return PostureStatus.UNKNOWN, "not booted through UEFI (no /sys/firmware/efi)"
    efivars = efi / "efivars"
    try:
        present = any(efivars.iterdir())
    except OSError:
        present = False
    if not present:
        return PostureStatus.UNKNOWN, "efivarfs is not mounted at /sys/firmware/efi/efivars"
    try:
        data = (efivars / SECURE_BOOT_VARIABLE).read_bytes()
    except FileNotFoundError:
        return PostureStatus.FAIL, "the firmware has no SecureBoot variable (no Secure Boot)"
    except OSError as exc:
        return PostureStatus.UNKNOWN, f"cannot read the SecureBoot variable: {exc.strerror}"
    return parse_secure_boot(data)


LOCKDOWN_LEVELS = ("none", "integrity", "confidentiality")


def parse_lockdown(text: str, minimum: str = "integrity") -> Outcome:
    """``/sys/kernel/security/lockdown``, e.g. ``none [integrity] confidentiality``."""
    words = text.split()
    chosen = [w[1:-1] for w in words if w.startswith("[") and w.endswith("]")]
    if len(chosen) != 1 or chosen[0] not in LOCKDOWN_LEVELS:
        shown = repr(text.strip()[:80]) if text.strip() else "nothing"
        return PostureStatus.UNKNOWN, f"unexpected lockdown state: {shown}"
    mode = chosen[0]
    if LOCKDOWN_LEVELS.index(mode) >= LOCKDOWN_LEVELS.index(minimum):
        return PostureStatus.PASS, f"kernel lockdown is '{mode}'"
    return PostureStatus.FAIL, f"kernel lockdown is '{mode}', the config requires '{minimum}'"


def lockdown_of(root: Path, minimum: str) -> Outcome:
    """Kernel lockdown from securityfs below ``root``."""
    path = root / "sys/kernel/security/lockdown"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return (
            PostureStatus.UNKNOWN,
            "no /sys/kernel/security/lockdown (securityfs not mounted, or a kernel "
            "without the lockdown LSM)",
        )
    except OSError as exc:
        return PostureStatus.UNKNOWN, f"cannot read /sys/kernel/security/lockdown: {exc.strerror}"
    return parse_lockdown(text, minimum)


def resolve(path: str, root: Path) -> str:
    """``path`` with symlinks resolved on the real host; as given inside a test tree."""
    return os.path.realpath(path) if root == Path("/") else path
