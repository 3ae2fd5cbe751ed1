"""Private files: 0700 directories, 0600 files, atomic replacement, ownership checks."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

__all__ = [
    "FileTooLargeError",
    "NotRegularFileError",
    "atomic_write_text",
    "broken_link",
    "ensure_private_dir",
    "file_kind",
    "fsync_dir",
    "not_only_ours",
    "not_our_file",
    "not_private_dir",
    "read_opened_file",
    "read_regular_file",
    "unsafe_path",
    "unsafe_permissions",
    "untrusted_file",
    "untrusted_place",
]

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) if missing; directories we create get mode 0700.

    Each missing directory is made and opened relative to its parent's descriptor, never
    by path, and opened without following a symlink: a name another user swaps in while
    we work (a symlink to somewhere else, in a world-writable parent) is refused with
    ``ELOOP``, never chmodded or created through. A directory someone else made first is
    left as it is: the caller checks what it uses (:func:`not_private_dir`). A symlink in
    the place of a missing directory (a dangling one does not "exist") is refused too."""
    missing: list[str] = []
    current = path
    while not current.exists():
        missing.append(current.name)
        current = current.parent
    if not missing:
        return
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    parent = os.open(current, flags)
    try:
        for name in reversed(missing):
            made = True
            try:
                try:
                    os.mkdir(name, PRIVATE_DIR_MODE, dir_fd=parent)
                except FileExistsError:
                    made = False  # someone else's, made meanwhile: not ours to chmod
                child = os.open(name, flags | os.O_NOFOLLOW, dir_fd=parent)
            except OSError as exc:  # named by its whole path, not by ``name`` alone
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_symlink(name, parent):
                    raise OSError(
                        exc.errno,
                        "a symlink was put in its place while it was being made",
                        str(current / name),
                    ) from None
                raise OSError(exc.errno, exc.strerror, str(current / name)) from None
            os.close(parent)
            parent = child
            current = current / name
            if made:
                os.fchmod(parent, PRIVATE_DIR_MODE)  # mkdir's mode is filtered by the umask
    finally:
        os.close(parent)


def _is_symlink(name: str, directory: int) -> bool:
    with contextlib.suppress(OSError):
        return stat.S_ISLNK(os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode)
    return False


def atomic_write_text(path: Path, text: str, *, replace: bool = True) -> None:
    """Write ``text`` to ``path`` as a 0600 file, replacing it atomically — or, with
    ``replace=False``, only if nothing is at ``path`` when the file is put there
    (``FileExistsError`` otherwise, and nothing changed): the check and the placing are
    one step (a hard link of the finished file), so a file made meanwhile is never
    overwritten.

    The data goes to a temporary file in the same directory, is flushed and fsynced, then
    renamed over ``path``; the directory is fsynced so the rename survives a crash. A reader
    (or a crash) sees the old file or the new one, never a half-written file.
    """
    ensure_private_dir(path.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # EEXIST if anything is there, a dangling symlink too
            tmp.unlink()
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """fsync ``directory``: the names created or renamed in it are durable (an fsync of a
    file does not make its name so)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def broken_link(path: Path) -> str | None:
    """What is wrong with the symlink at ``path`` if it leads nowhere (``"… is a dangling
    symlink to …"``, ``"… is a symlink loop"``), or ``None`` if it leads to something (or
    is no symlink). Raises ``OSError`` if that cannot be told (a directory on the way is
    unreadable)."""
    try:
        os.stat(path)
    except FileNotFoundError:
        if not os.path.islink(path):
            raise
        return f"{path} is a dangling symlink (to {os.readlink(path)})"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{path} is a symlink loop"
        raise
    return None


def unsafe_permissions(path: Path) -> str | None:
    """Why ``path`` (a file or directory) cannot be trusted, or ``None`` if it can.

    Untrusted: owned by another user (other than root), or writable by group or others —
    anyone who can write there could rewrite the policy or the config.
    """
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        broken = broken_link(path)
        if broken:
            return broken
        return unsafe_permissions(Path(os.path.realpath(path)))
    return _unsafe_status(path, info)


def _unsafe_status(path: Path, info: os.stat_result) -> str | None:
    """:func:`unsafe_permissions` of what ``info`` (not a symlink's) describes."""
    if info.st_uid not in (os.geteuid(), 0):
        return f"{path} is owned by uid {info.st_uid}, not by you (uid {os.geteuid()})"
    is_dir = stat.S_ISDIR(info.st_mode)
    if is_dir and info.st_mode & stat.S_ISVTX:
        return None  # sticky (like /tmp): others cannot rename or delete our entries in it
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        kind = "directory" if is_dir else "file"
        return (
            f"{kind} {path} is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o})"
        )
    return None


#: Symlinks followed while walking one path (as the kernel's own limit).
_MAX_LINKS = 40


def unsafe_path(path: Path) -> str | None:
    """Why another user could change what ``path`` names, or ``None``: the path is walked
    as the kernel resolves it, from ``/`` down and through every symlink on the way (the
    directories a link leads through included), and refused at the first place where
    someone other than you or root could put something else at the name:

    * a directory it passes through that another user owns, or that group or others can
      write and that is not sticky (anyone can rename their own entry over ours there) —
      judged by :func:`unsafe_permissions`;
    * an entry — a directory, a symlink, the file itself — that another user owns, in a
      directory group or others can write (a sticky one such as ``/tmp``: the only kind
      that passes the check above). Sticky protects an entry from everyone *but its
      owner*: a symlink another user planted in ``/tmp`` is theirs to point anywhere —
      at a file root owns, which every other check accepts — and theirs to replace.
      Entries of yours or root's are safe there, as in any directory.

    What the path finally names is not judged here beyond that (its own owner and mode are
    the caller's). Raises ``FileNotFoundError`` if a name on the way is missing,
    ``OSError`` if the walk cannot be made."""
    uid = os.geteuid()
    todo = list(path.absolute().parts[1:])
    current = Path(path.absolute().anchor)  # never a symlink: links are followed below
    shared: dict[Path, int] = {}  # each directory judged -> its mode, if others can write it
    links = 0
    while todo:
        if current not in shared:
            info = current.lstat()
            problem = _unsafe_status(current, info)
            if problem is not None:
                return problem
            writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
            shared[current] = stat.S_IMODE(info.st_mode) if writable else 0
        name = todo.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            current = current.parent
            continue
        step = current / name
        entry = step.lstat()
        if shared[current] and entry.st_uid not in (uid, 0):
            kind = (
                "symlink"
                if stat.S_ISLNK(entry.st_mode)
                else "directory"
                if stat.S_ISDIR(entry.st_mode)
                else "file"
            )
            return (
                f"{kind} {step} is owned by uid {entry.st_uid}, not by you (uid {uid}) or "
                f"root, in directory {current}, which others can write "
                f"(mode {shared[current]:04o}): its owner can replace it"
            )
        if stat.S_ISLNK(entry.st_mode):
            links += 1
            if links > _MAX_LINKS:
                return f"{path}: too many levels of symbolic links"
            target = Path(os.readlink(step))
            if target.is_absolute():
                current = Path(target.anchor)
            todo[:0] = [part for part in target.parts if part != target.anchor]
            continue
        if not todo:
            return None  # the file itself: its own checks are the caller's
        current = step
    return None


def untrusted_file(path: Path) -> str | None:
    """Why the file at ``path`` — a config or a policy, which says what may pass — cannot be
    trusted, or ``None`` if it can: a dangling link or a link loop; another user (not root)
    who owns, or group or others who may write, the file, the directory it is in, or (for a
    link) the file it leads to or that file's directory; or anything :func:`unsafe_path`
    refuses on the way there — a directory higher up that others can write (not sticky),
    or a symlink or other entry another user owns in a directory others can write, such as
    a link planted in ``/tmp`` that leads to a file root owns. Anyone who can change one of
    these can change what the proxy allows. Raises ``FileNotFoundError`` if there is no
    file, ``OSError`` if it cannot be told."""
    # the file (a link: the file it leads to) by unsafe_permissions; every directory on
    # the way — its own, and for a link the one it leads into — by unsafe_path's walk
    return broken_link(path) or unsafe_permissions(path) or unsafe_path(path)


def untrusted_place(path: Path) -> str | None:
    """Why a config or policy about to be written at ``path`` could not be trusted once
    written — :func:`untrusted_file` would refuse it — or ``None``: the directory it goes
    in, or the nearest one on the way that exists (those made for it are ours, mode 0700),
    is another user's or writable by group or others and not sticky, or anything
    :func:`unsafe_path` refuses on the way there. (The file itself is ours: written anew,
    never through what is there.) Raises ``OSError`` if it cannot be told."""
    directory = path.absolute().parent
    while not os.path.lexists(directory) and directory != directory.parent:
        directory = directory.parent
    return unsafe_permissions(directory) or unsafe_path(directory)


def not_private_dir(path: Path) -> str | None:
    """Why ``path`` is not a directory only we can change, or ``None`` if it is: a
    directory we keep records in must be ours and writable by nobody else. Stricter than
    :func:`unsafe_permissions`: a sticky directory such as ``/tmp`` lets others create names
    in it (files we would then adopt), and root's ownership is not ours. A symlink is
    judged by the directory it leads to."""
    info = Path(os.path.realpath(path)).stat()
    if not stat.S_ISDIR(info.st_mode):
        return f"{path} is not a directory"
    return not_only_ours(path, info, "directory ")


def not_our_file(path: Path) -> str | None:
    """Why the existing file ``path`` may not be written as ours (another user owns it, or
    group or others may write it), or ``None``."""
    return not_only_ours(path, path.lstat())


def not_only_ours(path: Path, info: os.stat_result, kind: str = "") -> str | None:
    """Why the file or directory ``path`` (whose status is ``info``) is not ours alone:
    another user owns it, or group or others may write it; or ``None``."""
    if info.st_uid != os.geteuid():
        return f"{path} is owned by uid {info.st_uid}, not by you (uid {os.geteuid()})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        mode = stat.S_IMODE(info.st_mode)
        return f"{kind}{path} is writable by group or others (mode {mode:04o})"
    return None


class NotRegularFileError(ValueError):
    """The path names a directory, a FIFO, a device or a socket, not a regular file."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(f"{path} is {kind}, not a regular file")
        self.kind = kind


class FileTooLargeError(ValueError):
    """The file holds more than the reader's limit; ``size`` is what it holds (at least)."""

    def __init__(self, path: Path, size: int, limit: int) -> None:
        super().__init__(f"{path} is {size} bytes, over the {limit}-byte limit")
        self.size = size


def file_kind(mode: int) -> str:
    """What a file of ``mode`` is, for a message: "a directory", "a FIFO (named pipe)" …"""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_regular_file(path: Path, limit: int) -> bytes:
    """The bytes of the regular file at ``path`` (symlinks followed), at most ``limit``.

    Nothing but a regular file is read — ``/dev/zero`` never ends and a FIFO may block for
    ever — and never more than ``limit + 1`` bytes, so a file that grows while it is read
    costs no more memory. Raises :class:`NotRegularFileError`, :class:`FileTooLargeError`,
    or ``OSError`` (missing, unreadable …).
    """
    # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    try:
        return read_opened_file(fd, path, limit)[1]
    finally:
        os.close(fd)


def read_opened_file(fd: int, path: Path, limit: int) -> tuple[os.stat_result, bytes]:
    """:func:`read_regular_file` of a file already open as ``fd`` (``path`` names it in
    errors), and the status it was judged by — so a caller that checks the owner and mode
    checks the file it read. ``fd`` stays open."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise NotRegularFileError(path, file_kind(info.st_mode))
    if info.st_size > limit:
        raise FileTooLargeError(path, info.st_size, limit)
    chunks: list[bytes] = []
    left = limit + 1
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    data = b"".join(chunks)
    if len(data) > limit:
        raise FileTooLargeError(path, len(data), limit)
    return info, data
