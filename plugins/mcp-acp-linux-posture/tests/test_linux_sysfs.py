"""The checks on /sys and /proc trees built in tmp_path, shaped like real hosts.

Each tree copies the layout the kernel shows (symlinks from /sys/dev/block and
/sys/block to the device directory, ``slaves/`` links, ``dm/uuid`` and ``dm/name``) with
the contents found on the host it is named for.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mcp_acp_linux_posture import DiskEncryptionCheck, KernelLockdownCheck, SecureBootCheck
from mcp_acp_linux_posture.sysfs import (
    SECURE_BOOT_VARIABLE,
    mount_for,
    parse_lockdown,
    parse_mountinfo,
    parse_secure_boot,
)

from mcp_acp.models import PostureStatus

PASS, FAIL, UNKNOWN = PostureStatus.PASS, PostureStatus.FAIL, PostureStatus.UNKNOWN


class Sys:
    """A fake root: /proc/self/mountinfo and the /sys/block device graph."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "proc/self").mkdir(parents=True)
        for part in ("dev/block", "block", "class/block", "devices/virtual/block"):
            (root / "sys" / part).mkdir(parents=True)

        self.devices: dict[str, str] = {}  # path -> the "major:minor" os.stat gives it

    def mountinfo(self, text: str) -> None:
        (self.root / "proc/self/mountinfo").write_text(text)

    def stat(self, devices: dict[str, str]) -> None:
        """What ``os.stat(path).st_dev`` gives below each path, as ``"major:minor"``."""
        self.devices.update(devices)

    def st_dev(self, path: str) -> int:
        inside = [p for p in self.devices if path == p or path.startswith(p.rstrip("/") + "/")]
        found = max(inside, key=len, default=None)
        if found is None:
            raise FileNotFoundError(2, "No such file or directory", path)
        major, _, minor = self.devices[found].partition(":")
        return os.makedev(int(major), int(minor))

    def disk(self, paths: tuple[str, ...]) -> DiskEncryptionCheck:
        return DiskEncryptionCheck(paths, root=self.root, device_of=self.st_dev)

    def device(
        self,
        name: str,
        dev: str,
        *,
        uuid: str | None = None,
        dm_name: str | None = None,
        slaves: tuple[str, ...] = (),
        disk: str | None = None,
    ) -> Path:
        sys = self.root / "sys"
        if disk is not None:  # a partition lives inside its disk's directory
            path = (sys / "class/block" / disk).resolve() / name
            path.mkdir()
            (path / "partition").write_text("1\n")
        else:
            path = sys / "devices/virtual/block" / name
            path.mkdir()
            (sys / "block" / name).symlink_to(f"../devices/virtual/block/{name}")
        (path / "dev").write_text(dev + "\n")
        (sys / "dev/block" / dev).symlink_to(path)
        (sys / "class/block" / name).symlink_to(path)
        (path / "slaves").mkdir()
        for slave in slaves:
            (path / "slaves" / slave).symlink_to((sys / "class/block" / slave).resolve())
        if uuid is not None:
            (path / "dm").mkdir()
            (path / "dm/uuid").write_text(uuid + "\n")
            (path / "dm/name").write_text((dm_name or name) + "\n")
        return path


# Ubuntu 24.04 desktop installed with "encrypt the disk" (LVM on LUKS2 on NVMe)
UBUNTU_LUKS_LVM = """\
22 28 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
23 28 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
28 1 252:1 / / rw,relatime shared:1 - ext4 /dev/mapper/ubuntu--vg-ubuntu--lv rw
31 28 259:2 / /boot rw,relatime shared:62 - ext4 /dev/nvme0n1p2 rw
33 31 259:1 / /boot/efi rw,relatime shared:64 - vfat /dev/nvme0n1p1 rw,fmask=0077,dmask=0077
"""


@pytest.fixture
def ubuntu(tmp_path: Path) -> Sys:
    host = Sys(tmp_path)
    host.mountinfo(UBUNTU_LUKS_LVM)
    host.stat({"/": "252:1", "/boot": "259:2", "/boot/efi": "259:1"})
    host.device("nvme0n1", "259:0")
    host.device("nvme0n1p1", "259:1", disk="nvme0n1")
    host.device("nvme0n1p2", "259:2", disk="nvme0n1")
    host.device("nvme0n1p3", "259:3", disk="nvme0n1")
    host.device(
        "dm-0",
        "252:0",
        uuid="CRYPT-LUKS2-5b0a8f2c6e1d4b9a8c3f7e2d1a0b9c8d-dm_crypt-0",
        dm_name="dm_crypt-0",
        slaves=("nvme0n1p3",),
    )
    host.device(
        "dm-1",
        "252:1",
        uuid="LVM-Hq3mX0vZ1c2d3e4f5g6h7i8j9k0l1m2nQ4rS5tU6vW7xY8zA9bB0cC1dD2eE3fF4g",
        dm_name="ubuntu--vg-ubuntu--lv",
        slaves=("dm-0",),
    )
    return host


async def test_lvm_on_luks_passes(ubuntu: Sys) -> None:
    result = await ubuntu.disk(("/", "/home/alice")).check()
    assert result.status is PASS
    assert "/ is on /dev/mapper/ubuntu--vg-ubuntu--lv (ext4, 252:1), encrypted by dm-0 (LUKS2)" in (
        result.detail
    )


async def test_boot_partition_of_the_same_disk_is_not_encrypted(ubuntu: Sys) -> None:
    result = await ubuntu.disk(("/", "/boot/efi")).check()
    assert result.status is FAIL
    assert result.detail == (
        "/boot/efi is on /dev/nvme0n1p1 (vfat, 259:1): no dm-crypt device in its chain"
    )


async def test_home_on_a_plain_partition_fails_though_root_is_encrypted(ubuntu: Sys) -> None:
    ubuntu.mountinfo(
        UBUNTU_LUKS_LVM + "40 28 8:1 / /home rw,relatime shared:70 - ext4 /dev/sda1 rw\n"
    )
    ubuntu.device("sda", "8:0")
    ubuntu.device("sda1", "8:1", disk="sda")
    ubuntu.stat({"/home": "8:1"})
    result = await ubuntu.disk(("/", "/home/alice")).check()
    assert (result.status, result.detail) == (
        FAIL,
        "/home/alice is on /dev/sda1 (ext4, 8:1): no dm-crypt device in its chain",
    )


# a cloud VM: ext4 straight on a virtio disk (the layout of the machine these tests run on)
PLAIN_VM = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard\n"


async def test_unencrypted_disk_fails_naming_the_device(tmp_path: Path) -> None:
    host = Sys(tmp_path)
    host.mountinfo(PLAIN_VM)
    host.stat({"/": "254:0"})
    host.device("vda", "254:0")
    result = await host.disk(("/",)).check()
    assert (result.status, result.detail) == (
        FAIL,
        "/ is on /dev/vda (ext4, 254:0): no dm-crypt device in its chain",
    )


# Fedora 40 Workstation with encryption: btrfs subvolumes on LUKS2, anonymous 0:N devices
FEDORA_BTRFS = """\
63 1 0:36 /root / rw,relatime shared:1 - btrfs /dev/mapper/luks-3f6c2a0e-8d7b-4b9e-9c1a-2f5e7d8c9b0a rw,seclabel,compress=zstd:1,ssd,space_cache=v2,subvolid=257,subvol=/root
98 63 0:36 /home /home rw,relatime shared:52 - btrfs /dev/mapper/luks-3f6c2a0e-8d7b-4b9e-9c1a-2f5e7d8c9b0a rw,seclabel,compress=zstd:1,ssd,space_cache=v2,subvolid=256,subvol=/home
101 63 259:2 / /boot rw,relatime shared:54 - ext4 /dev/nvme0n1p2 rw,seclabel
"""  # noqa: E501 - real mountinfo lines are long


async def test_btrfs_on_luks_is_followed_through_the_mapper_name(tmp_path: Path) -> None:
    host = Sys(tmp_path)
    host.mountinfo(FEDORA_BTRFS)
    host.stat({"/": "0:36"})
    host.device("nvme0n1", "259:0")
    host.device("nvme0n1p3", "259:3", disk="nvme0n1")
    host.device(
        "dm-0",
        "253:0",
        uuid="CRYPT-LUKS2-3f6c2a0e8d7b4b9e9c1a2f5e7d8c9b0a-luks-3f6c2a0e-8d7b-4b9e-9c1a-2f5e7d8c9b0a",
        dm_name="luks-3f6c2a0e-8d7b-4b9e-9c1a-2f5e7d8c9b0a",
        slaves=("nvme0n1p3",),
    )
    result = await host.disk(("/", "/home/bob")).check()
    assert result.status is PASS
    assert "/home/bob is on /dev/mapper/luks-3f6c2a0e" in result.detail


@pytest.mark.parametrize(
    ("uuid", "expected"),
    [
        ("CRYPT-PLAIN-cryptroot", PASS),  # cryptsetup open --type plain
        ("CRYPT-LUKS1-0e1c6a2b3d4f5a6b7c8d9e0f1a2b3c4d-cryptroot", PASS),  # Debian 9 era
        ("CRYPT-BITLK-5a9e6f12-win", PASS),  # a BitLocker volume opened with cryptsetup
        ("CRYPT-VERITY-7a1d3e5c9b2f4a6e8d0c1b3a5f7e9d2c-root", FAIL),  # integrity only
        ("CRYPT-INTEGRITY-root", FAIL),
        ("CRYPT-SUBDEV-5b0a8f2c6e1d4b9a8c3f7e2d1a0b9c8d-root_dif", FAIL),
        ("LVM-Hq3mX0vZ1c2d3e4f", FAIL),
    ],
)
async def test_only_encrypting_dm_types_count(
    tmp_path: Path, uuid: str, expected: PostureStatus
) -> None:
    host = Sys(tmp_path)
    host.mountinfo("27 1 253:0 / / rw,relatime - ext4 /dev/mapper/root rw\n")
    host.stat({"/": "253:0"})
    host.device("sda", "8:0")
    host.device("dm-0", "253:0", uuid=uuid, dm_name="root", slaves=("sda",))
    assert (await host.disk(("/",)).check()).status is expected


async def test_overlay_root_is_unknown(tmp_path: Path) -> None:
    host = Sys(tmp_path)
    # a Docker container's root
    host.mountinfo(
        "612 535 0:52 / / rw,relatime master:300 - overlay overlay rw,lowerdir=/var/lib/docker/"
        "overlay2/l/ABC:/var/lib/docker/overlay2/l/DEF,upperdir=/u,workdir=/w\n"
    )
    host.stat({"/": "0:52"})
    result = await host.disk(("/",)).check()
    assert (result.status, result.detail) == (
        UNKNOWN,
        "/ is on overlay (overlay, 0:52), not a block device this check can follow",
    )


async def test_no_mountinfo_is_unknown(tmp_path: Path) -> None:
    result = await DiskEncryptionCheck(("/",), root=tmp_path, device_of=lambda p: 0).check()
    assert result.status is UNKNOWN
    assert "cannot read /proc/self/mountinfo" in result.detail


def _dev(text: str) -> int:
    major, _, minor = text.partition(":")
    return os.makedev(int(major), int(minor))


def test_mountinfo_unescapes_and_picks_the_mount_of_the_device() -> None:
    mounts = parse_mountinfo(
        "27 1 254:0 / / rw - ext4 /dev/vda rw\n"
        "40 27 8:1 / /mnt/my\\040disk rw - ext4 /dev/sda1 rw\n"
        "41 27 8:2 / /mnt/my\\040disk rw - ext4 /dev/sda2 rw\n"
        "garbage line\n"
    )
    assert len(mounts) == 3
    assert mount_for(mounts, "/mnt/my disk/x", _dev("8:2")) == mounts[2]  # on top of sda1
    assert mount_for(mounts, "/mnt/my", _dev("254:0")) == mounts[0]  # a prefix is not inside
    assert mount_for([], "/", _dev("254:0")) is None


# captured in `unshare -m` on the test VM (the mktemp directory renamed /mnt/t): tmpfs A on
# m/a/b, then tmpfs B on m/a, which hides A; A stays listed, os.stat("/mnt/t/m/a") is 0:40
OVERMOUNTED = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
65 27 0:39 / /mnt/t/m/a/b rw,relatime - tmpfs A rw
66 27 0:40 / /mnt/t/m/a rw,relatime - tmpfs B rw
"""


def test_a_mount_hidden_by_a_later_mount_on_its_parent_is_not_chosen() -> None:
    mounts = parse_mountinfo(OVERMOUNTED)
    found = mount_for(mounts, "/mnt/t/m/a/b", _dev("0:40"))
    assert found is not None
    assert found.source == "B"
    assert mount_for(mounts, "/mnt/t/m/a/b", _dev("0:41")) is None  # no mount of that device


def test_btrfs_subvolumes_stat_to_devices_mountinfo_does_not_list() -> None:
    # Fedora's default: / and /home are subvolumes of one encrypted btrfs; a file's st_dev
    # is an anonymous device of its subvolume, not the 0:N mountinfo shows
    mounts = parse_mountinfo(
        "60 1 0:31 /root / rw - btrfs /dev/mapper/luks-1 rw,subvol=/root\n"
        "61 60 0:31 /home /home rw - btrfs /dev/mapper/luks-1 rw,subvol=/home\n"
        "62 60 0:32 / /scratch rw - tmpfs tmpfs rw\n"
        "63 60 0:33 / /home/alice/hidden rw - tmpfs tmpfs rw\n"
        "64 60 0:34 / /home rw - tmpfs over rw\n"  # mounted later over /home: hides 61, 63
    )
    assert mount_for(mounts[:3], "/home/alice/x", _dev("0:45")) == mounts[1]
    assert mount_for(mounts[:3], "/scratch/x", _dev("0:46")) is None  # tmpfs: no such excuse
    assert mount_for(mounts, "/home/alice/hidden/x", _dev("0:34")) == mounts[4]


def test_the_last_mount_of_a_device_wins_when_none_contains_the_path() -> None:
    # a bind mount of the same file system: same device, two places
    mounts = parse_mountinfo(
        "27 1 254:0 / / rw - ext4 /dev/vda rw\n"
        "40 27 8:1 / /srv rw - ext4 /dev/sda1 rw\n"
        "41 27 8:1 /data /mnt/data rw - ext4 /dev/sda1 rw\n"
    )
    assert mount_for(mounts, "/srv/x", _dev("8:1")) == mounts[1]
    assert mount_for(mounts, "/elsewhere", _dev("8:1")) == mounts[2]


async def test_encrypted_home_hidden_under_a_plain_root_fails(tmp_path: Path) -> None:
    # /home on LUKS, then / mounted again on top from a plain disk: /home/alice is on sda1
    host = Sys(tmp_path)
    host.mountinfo(
        "30 1 253:0 / /home rw,relatime - ext4 /dev/mapper/luks rw\n"
        "31 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
    )
    host.device("sda", "8:0")
    host.device("sda1", "8:1", disk="sda")
    host.device("dm-0", "253:0", uuid="CRYPT-LUKS2-5b0a8f2c-luks", dm_name="luks", slaves=("sda",))
    host.stat({"/": "8:1"})
    result = await host.disk(("/home/alice",)).check()
    assert (result.status, result.detail) == (
        FAIL,
        "/home/alice is on /dev/sda1 (ext4, 8:1): no dm-crypt device in its chain",
    )


async def test_a_path_whose_device_has_no_mount_is_unknown(tmp_path: Path) -> None:
    host = Sys(tmp_path)
    host.mountinfo(OVERMOUNTED)
    host.stat({"/": "254:0", "/srv": "0:41"})
    result = await host.disk(("/srv/x",)).check()
    assert (result.status, result.detail) == (
        UNKNOWN,
        "/srv/x: its device 0:41 has no mount in mountinfo (hidden, or in another mount "
        "namespace); check the path is visible here",
    )


async def test_a_path_that_cannot_be_stat_is_unknown(tmp_path: Path) -> None:
    host = Sys(tmp_path)
    host.mountinfo(PLAIN_VM)
    result = await host.disk(("/home/nobody",)).check()
    assert (result.status, result.detail) == (
        UNKNOWN,
        "cannot stat /home/nobody: No such file or directory",
    )


OVERMOUNT_SCRIPT = """\
set -e
mount -t tmpfs A "$1/m/a/b" || exit 77
mount -t tmpfs B "$1/m/a" || exit 77
mkdir "$1/m/a/b"
exec "$2" -c 'import asyncio, os, sys
from mcp_acp_linux_posture import DiskEncryptionCheck
r = asyncio.run(DiskEncryptionCheck((sys.argv[1],)).check())
dev = os.stat(sys.argv[1]).st_dev
print(r.status.value, r.detail, f"{os.major(dev)}:{os.minor(dev)}", sep="|")' "$1/m/a/b"
"""


@pytest.mark.skipif(sys.platform != "linux", reason="mount namespaces are Linux")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare(1) on this machine")
def test_real_over_mount_in_a_mount_namespace(tmp_path: Path) -> None:
    (tmp_path / "m/a/b").mkdir(parents=True)
    # root: a private mount namespace; else a user namespace mapping this user to root
    flags = ["--mount"] if os.geteuid() == 0 else ["--mount", "--map-root-user"]
    argv = ["unshare", *flags, "sh", "-c", OVERMOUNT_SCRIPT, "sh", str(tmp_path), sys.executable]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode == 77 or (done.returncode != 0 and "unshare:" in done.stderr):
        pytest.skip(f"cannot mount tmpfs in a new mount namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    status, detail, dev = done.stdout.strip().split("|")
    # B hides A: m/a/b is a directory of B now, and the check must judge B (A is still
    # listed in mountinfo with the longer mount point)
    assert (status, detail) == (
        "unknown",
        f"{tmp_path}/m/a/b is on B (tmpfs, {dev}), not a block device this check can follow",
    )


# efivarfs contents: 4 bytes of attributes (0x06: boot-service and runtime access), 1 data byte
SECURE_BOOT = {
    "enabled": (b"\x06\x00\x00\x00\x01", PASS),  # Ubuntu 22.04 on a ThinkPad, shim-signed
    "disabled": (b"\x06\x00\x00\x00\x00", FAIL),  # same machine, Secure Boot off in setup
    "truncated": (b"\x06\x00\x00\x00", UNKNOWN),
    "odd-value": (b"\x06\x00\x00\x00\x02", UNKNOWN),
}


@pytest.mark.parametrize(("data", "expected"), SECURE_BOOT.values(), ids=SECURE_BOOT.keys())
def test_secure_boot_variable(data: bytes, expected: PostureStatus) -> None:
    assert parse_secure_boot(data)[0] is expected


def _efi(root: Path, variables: dict[str, bytes]) -> None:
    efivars = root / "sys/firmware/efi/efivars"
    efivars.mkdir(parents=True)
    for name, data in variables.items():
        (efivars / name).write_bytes(data)


BOOT_ORDER = {"BootOrder-8be4df61-93ca-11d2-aa0d-00e098032b8c": b"\x07\x00\x00\x00\x01\x00"}


@pytest.mark.parametrize(
    ("data", "expected"), [(b"\x06\x00\x00\x00\x01", PASS), (b"\x06\x00\x00\x00\x00", FAIL)]
)
async def test_secure_boot_check_reads_efivarfs(
    tmp_path: Path, data: bytes, expected: PostureStatus
) -> None:
    _efi(tmp_path, {**BOOT_ORDER, SECURE_BOOT_VARIABLE: data})
    assert (await SecureBootCheck(root=tmp_path).check()).status is expected


async def test_secure_boot_on_bios_is_unknown(tmp_path: Path) -> None:
    (tmp_path / "sys/firmware").mkdir(parents=True)  # /sys/firmware exists, efi does not
    result = await SecureBootCheck(root=tmp_path).check()
    assert (result.status, result.detail) == (
        UNKNOWN,
        "not booted through UEFI (no /sys/firmware/efi)",
    )


async def test_secure_boot_without_efivarfs_is_unknown(tmp_path: Path) -> None:
    (tmp_path / "sys/firmware/efi/efivars").mkdir(parents=True)  # the empty mount point
    assert (await SecureBootCheck(root=tmp_path).check()).status is UNKNOWN


async def test_efi_firmware_without_the_variable_fails(tmp_path: Path) -> None:
    _efi(tmp_path, BOOT_ORDER)  # old UEFI firmware without Secure Boot support
    result = await SecureBootCheck(root=tmp_path).check()
    assert (result.status, "no SecureBoot variable" in result.detail) == (FAIL, True)


LOCKDOWN = {
    "none": ("[none] integrity confidentiality\n", "integrity", FAIL),  # Fedora, SB off
    "integrity": ("none [integrity] confidentiality\n", "integrity", PASS),  # Ubuntu + SB
    "integrity-not-enough": ("none [integrity] confidentiality\n", "confidentiality", FAIL),
    "confidentiality": ("none integrity [confidentiality]\n", "confidentiality", PASS),
    "no-brackets": ("none integrity confidentiality\n", "integrity", UNKNOWN),
    "empty": ("", "integrity", UNKNOWN),
    "new-mode": ("none [paranoid] confidentiality\n", "integrity", UNKNOWN),
}


@pytest.mark.parametrize(("text", "minimum", "expected"), LOCKDOWN.values(), ids=LOCKDOWN.keys())
def test_lockdown(text: str, minimum: str, expected: PostureStatus) -> None:
    assert parse_lockdown(text, minimum)[0] is expected


async def test_lockdown_check_reads_securityfs(tmp_path: Path) -> None:
    path = tmp_path / "sys/kernel/security/lockdown"
    path.parent.mkdir(parents=True)
    path.write_text(LOCKDOWN["none"][0])
    result = await KernelLockdownCheck(root=tmp_path).check()
    assert (result.status, result.detail) == (
        FAIL,
        "kernel lockdown is 'none', the config requires 'integrity'",
    )
    path.unlink()
    assert (await KernelLockdownCheck(root=tmp_path).check()).status is UNKNOWN


async def test_a_volume_group_extended_onto_a_plain_disk_fails(ubuntu: Sys) -> None:
    """``vgextend ubuntu-vg /dev/sda`` then ``lvextend``: the root LV now spans the LUKS
    device and a plain disk, and what is written to its second half lands unencrypted on
    ``sda``. One dm-crypt device somewhere below used to be enough for a pass."""
    ubuntu.device("sda", "8:0")
    lv = ubuntu.root / "sys/devices/virtual/block/dm-1/slaves"
    (lv / "sda").symlink_to((ubuntu.root / "sys/class/block/sda").resolve())
    result = await ubuntu.disk(("/",)).check()
    assert (result.status, result.detail) == (
        FAIL,
        "/ is on /dev/mapper/ubuntu--vg-ubuntu--lv (ext4, 252:1): sda in its chain is not "
        "under a dm-crypt device",
    )


async def test_a_cache_on_a_plain_ssd_in_front_of_luks_fails(tmp_path: Path) -> None:
    """lvmcache (dm-cache): the origin is on LUKS, the cache on a plain SSD partition holds
    copies of the file system's blocks in the clear."""
    host = Sys(tmp_path)
    host.mountinfo("28 1 253:3 / / rw,relatime shared:1 - ext4 /dev/mapper/vg-root rw\n")
    host.stat({"/": "253:3"})
    host.device("sda", "8:0")
    host.device("sda2", "8:2", disk="sda")
    host.device("nvme0n1", "259:0")
    host.device("nvme0n1p1", "259:1", disk="nvme0n1")
    host.device("dm-0", "253:0", uuid="CRYPT-LUKS2-0c1d2e3f-crypt", slaves=("sda2",))
    host.device("dm-1", "253:1", uuid="LVM-abc-cdata", slaves=("nvme0n1p1",))
    host.device("dm-2", "253:2", uuid="LVM-abc-cmeta", slaves=("nvme0n1p1",))
    host.device(
        "dm-3", "253:3", uuid="LVM-abc-root", dm_name="vg-root", slaves=("dm-0", "dm-1", "dm-2")
    )
    result = await host.disk(("/",)).check()
    assert result.status is FAIL
    assert "nvme0n1p1 in its chain is not under a dm-crypt device" in result.detail


async def test_a_volume_on_two_luks_devices_passes(ubuntu: Sys) -> None:
    ubuntu.device("sda", "8:0")
    ubuntu.device("dm-2", "252:2", uuid="CRYPT-LUKS2-77aa-sda_crypt", slaves=("sda",))
    lv = ubuntu.root / "sys/devices/virtual/block/dm-1/slaves"
    (lv / "dm-2").symlink_to((ubuntu.root / "sys/class/block/dm-2").resolve())
    result = await ubuntu.disk(("/",)).check()
    assert result.status is PASS
    assert "encrypted by dm-0 (LUKS2), dm-2 (LUKS2)" in result.detail


def _btrfs_devices(host: Sys, fsid: str, *names: str) -> None:
    """``/sys/fs/btrfs/FSID/devices/NAME``: a link to each member's block device."""
    devices = host.root / "sys/fs/btrfs" / fsid / "devices"
    devices.mkdir(parents=True)
    for name in names:
        (devices / name).symlink_to((host.root / "sys/class/block" / name).resolve())


async def test_a_btrfs_mirror_on_a_plain_disk_fails(tmp_path: Path) -> None:
    """``btrfs device add /dev/sdb /`` and a RAID1 balance on Fedora's encrypted btrfs:
    mountinfo still names only the LUKS device, and every block is also on ``sdb``."""
    host = Sys(tmp_path)
    host.mountinfo(FEDORA_BTRFS)
    host.stat({"/": "0:36"})
    host.device("nvme0n1", "259:0")
    host.device("nvme0n1p3", "259:3", disk="nvme0n1")
    host.device(
        "dm-0",
        "253:0",
        uuid="CRYPT-LUKS2-3f6c2a0e8d7b4b9e9c1a2f5e7d8c9b0a-luks-3f6c2a0e-8d7b-4b9e-9c1a-2f5e7d8c9b0a",
        dm_name="luks-3f6c2a0e-8d7b-4b9e-9c1a-2f5e7d8c9b0a",
        slaves=("nvme0n1p3",),
    )
    host.device("sdb", "8:16")
    _btrfs_devices(host, "5e1c0d2a-7b3f-4e8a-9c6d-1f2e3a4b5c6d", "dm-0", "sdb")
    result = await host.disk(("/",)).check()
    assert (result.status, result.detail) == (
        FAIL,
        "/ is on /dev/mapper/luks-3f6c2a0e-8d7b-4b9e-9c1a-2f5e7d8c9b0a (btrfs, 0:36): sdb in "
        "its chain is not under a dm-crypt device",
    )
    (host.root / "sys/fs/btrfs/5e1c0d2a-7b3f-4e8a-9c6d-1f2e3a4b5c6d/devices/sdb").unlink()
    assert (await host.disk(("/",)).check()).status is PASS  # the disk removed again
