"""The ``mtls`` provider on real files and certificates: the context it builds and every
start-up check (TLS-5, TLS-7 of the security checklist)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import ssl
from pathlib import Path
from typing import Any

import pytest
from mcp_acp_mtls import MtlsConfig, MtlsProvider
from mcp_acp_mtls.status import _certificates as status_certificates
from pydantic import ValidationError

from mcp_acp.config import HttpBackend
from mcp_acp.models import TlsSeverity
from mcp_acp.protocols import TlsProvider
from mcp_acp.registry import PluginContext

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)
ROOT = Path(__file__).resolve().parents[3]


def provider(pki: Any, **changes: Any) -> MtlsProvider:
    options = {
        "client_cert": pki.client_cert,
        "client_key": pki.client_key,
        "ca_bundle": pki.ca.pem,
        **changes,
    }
    return MtlsProvider(MtlsConfig.model_validate(options))


def refusals(p: MtlsProvider) -> list[str]:
    return [f.detail for f in p.check() if f.severity is TlsSeverity.REFUSE]


def test_good_files_pass_and_the_context_verifies(pki: Any) -> None:
    p = provider(pki)
    assert isinstance(p, TlsProvider)
    findings = p.check()
    assert {f.severity for f in findings} == {TlsSeverity.OK}
    validity = next(f for f in findings if f.check == "client_certificate_validity")
    assert validity.facts["subject"] == "CN=client"
    assert 89 < validity.facts["days_left"] <= 90
    context = p.ssl_context()
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.hostname_checks_common_name is False
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.verify_flags & ssl.VERIFY_X509_STRICT
    # trust is the configured bundle only, not the system store
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "trusted test CA"),),)
    ]


def test_key_readable_by_others_is_refused(pki: Any) -> None:
    pki.client_key.chmod(0o644)
    [reason] = refusals(provider(pki))
    assert "mode 0644" in reason
    assert "chmod 600" in reason


def test_key_readable_by_group_is_refused(pki: Any) -> None:
    pki.client_key.chmod(0o640)
    assert refusals(provider(pki))


def test_key_from_another_pair_is_refused(pki: Any) -> None:
    _, other_key = pki.ca.issue("other", client=True)
    [reason] = refusals(provider(pki, client_key=other_key))
    assert "does not belong to certificate" in reason


def test_missing_file_is_refused(pki: Any, tmp_path: Path) -> None:
    [reason] = refusals(provider(pki, ca_bundle=tmp_path / "nope.pem"))
    assert "does not exist" in reason


def test_key_symlink_to_elsewhere_is_refused(pki: Any, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    link = elsewhere / "key.pem"
    link.symlink_to(pki.client_key)
    [reason] = refusals(provider(pki, client_key=link))
    assert "symlink" in reason
    beside = pki.directory / "current-key.pem"  # a link within the directory is fine
    beside.symlink_to(pki.client_key.name)
    assert refusals(provider(pki, client_key=beside)) == []


def test_files_in_a_directory_others_can_write_are_refused(pki: Any) -> None:
    pki.directory.chmod(0o777)
    try:
        reasons = refusals(provider(pki))
        assert len(reasons) == 3  # the certificate, the key and the CA bundle
        named = f"directory {pki.directory} is writable by group or others"
        assert all(named in r for r in reasons)
        assert all("keep the file where only you or root can change" in r for r in reasons)
    finally:
        pki.directory.chmod(0o700)


def open_directory(tmp_path: Path, mode: int, name: str = "shared") -> Path:
    """A directory of ``mode`` (e.g. 0777: another user can rename anything in it)."""
    shared = tmp_path / name
    shared.mkdir()
    shared.chmod(mode)
    return shared


@pytest.mark.parametrize("option", ["client_cert", "ca_bundle", "client_key"])
def test_every_file_in_a_directory_others_can_write_is_refused(
    pki: Any, tmp_path: Path, option: str
) -> None:
    """TLS-7: another user who can write the directory can rename their own file (or a
    symlink to any file root owns) over the one the config names."""
    original = {"client_cert": pki.client_cert, "ca_bundle": pki.ca.pem}.get(option)
    moved = open_directory(tmp_path, 0o777) / "file.pem"
    (original or pki.client_key).rename(moved)
    [reason] = refusals(provider(pki, **{option: moved}))
    assert f"directory {moved.parent} is writable by group or others (mode 0777)" in reason


def test_a_sticky_directory_others_can_write_is_accepted(pki: Any, tmp_path: Path) -> None:
    """As /tmp: others may add files but not rename or remove ours."""
    moved = open_directory(tmp_path, 0o1777) / "ca.pem"
    pki.ca.pem.rename(moved)
    assert refusals(provider(pki, ca_bundle=moved)) == []


def test_a_directory_others_can_write_higher_up_is_refused(pki: Any, tmp_path: Path) -> None:
    """Whoever can rename ``shared/own`` can put another directory at that name."""
    own = open_directory(tmp_path, 0o777) / "own"
    own.mkdir(mode=0o700)
    pki.ca.pem.rename(own / "ca.pem")
    [reason] = refusals(provider(pki, ca_bundle=own / "ca.pem"))
    assert f"directory {own.parent} is writable by group or others" in reason


def test_a_symlink_is_followed_through_every_directory(pki: Any, tmp_path: Path) -> None:
    """A link in a private directory to a file in an open one is no safer than the open
    one; a link to a file in a safe directory (e.g. the system's) is fine."""
    shared = open_directory(tmp_path, 0o777)
    pki.ca.pem.rename(shared / "ca.pem")
    link = pki.directory / "ca-link.pem"
    link.symlink_to(shared / "ca.pem")
    [reason] = refusals(provider(pki, ca_bundle=link))
    assert f"directory {shared} is writable by group or others" in reason
    safe = open_directory(tmp_path, 0o755, "safe")
    (shared / "ca.pem").rename(safe / "ca.pem")
    link.unlink()
    link.symlink_to(Path("..") / "safe" / "ca.pem")  # relative, through ".."
    (tmp_path / "safe-link").symlink_to(safe)  # and a link to a directory on the way
    assert refusals(provider(pki, ca_bundle=link)) == []
    assert refusals(provider(pki, ca_bundle=tmp_path / "safe-link" / "ca.pem")) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a symlink to another user")
@pytest.mark.parametrize("option", ["ca_bundle", "client_cert"])
def test_another_users_symlink_in_a_sticky_directory_is_refused(
    pki: Any, tmp_path: Path, option: str
) -> None:
    """Sticky protects an entry from everyone but its owner: a symlink that another user
    (uid 65534) planted in a /tmp-like directory is theirs to point anywhere — here at a
    CA certificate root owns (as CPython's test CA, whose key is public, or the system's
    bundle), which passes every check of the file itself. Refused, as is a path through
    their link to a directory, or a link of ours that leads through theirs; the same link
    made by us (or root) is fine."""
    sticky = open_directory(tmp_path, 0o1777)
    system = open_directory(tmp_path, 0o755, "system")  # root's, 0644: a file root owns
    bundle = system / "ca.pem"
    bundle.write_bytes((pki.ca.pem if option == "ca_bundle" else pki.client_cert).read_bytes())
    bundle.chmod(0o644)
    planted = sticky / "victim.pem"
    planted.symlink_to(bundle)
    os.lchown(planted, 65534, 65534)
    [reason] = refusals(provider(pki, **{option: planted}))
    label = {"ca_bundle": "CA bundle", "client_cert": "client certificate"}[option]
    assert reason == (
        f"{label} {planted}: symlink {planted} is owned by uid 65534, not by you (uid 0) or "
        f"root, in directory {sticky}, which others can write (mode 1777): its owner can "
        "replace it; keep the file where only you or root can change what its path names"
    )
    through = sticky / "dir"  # their link to a directory on the way
    through.symlink_to(system)
    os.lchown(through, 65534, 65534)
    ours = pki.directory / "via.pem"  # our link, in our directory, to theirs
    ours.symlink_to(planted)
    for path in (through / "ca.pem", ours):
        [reason] = refusals(provider(pki, **{option: path}))
        assert "is owned by uid 65534, not by you (uid 0) or root, in directory" in reason
    for link in (planted, through):
        os.lchown(link, 0, 0)
    for path in (planted, through / "ca.pem", ours):
        assert refusals(provider(pki, **{option: path})) == []


@pytest.mark.parametrize(
    ("option", "label"), [("client_key", "client key"), ("ca_bundle", "CA bundle")]
)
def test_a_file_over_the_size_limit_is_refused_naming_the_limit(
    pki: Any, option: str, label: str
) -> None:
    """No configured file is read past 1 MiB (a CA bundle of every public CA is ~220 KiB):
    one larger — here valid PEM and 2 MiB of blank lines — is refused, not held in memory."""
    path = pki.client_key if option == "client_key" else pki.ca.pem
    with path.open("ab") as grown:
        grown.write(b"\n" * (2 << 20))
    size = path.stat().st_size
    [reason] = refusals(provider(pki))
    assert reason == (
        f"{label} {path} is over the 1 MiB limit of a certificate, key or CA bundle file "
        f"({size} bytes)"
    )


def test_tls_status_shows_what_the_checks_read(pki: Any, tmp_path: Path) -> None:
    """The certificates ``tls status`` lists are the bytes check() read: a CA bundle
    replaced after the checks (or a FIFO put there) is never opened again."""
    p = provider(pki)
    assert refusals(p) == []
    rogue_copy = tmp_path / "rogue-ca.pem"
    rogue_copy.write_bytes(pki.rogue.pem.read_bytes())
    os.replace(rogue_copy, pki.ca.pem)
    client, ca = status_certificates(p)
    assert client["subject"] == "CN=client"
    assert ca["subject"] == "CN=trusted test CA"


def handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> ssl.SSLObject:
    """A real TLS handshake between two contexts, in memory; the server's end once done."""
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    ours = client.wrap_bio(client_in, client_out, server_hostname="127.0.0.1")
    theirs = server.wrap_bio(server_in, server_out, server_side=True)
    pending = [ours, theirs]
    for _ in range(10):
        for end in list(pending):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
                pending.remove(end)
        server_in.write(client_out.read())
        client_in.write(server_out.read())
    assert not pending
    return theirs


def server_context(pki: Any) -> ssl.SSLContext:
    """The server side: its certificate from the trusted CA; any client certificate from
    the trusted CA accepted."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(pki.ca.pem)
    return context


def test_the_context_is_built_from_what_the_checks_read(pki: Any, tmp_path: Path) -> None:
    """Files replaced after check() (another CA, another client certificate and key) do
    not reach the context: it trusts and presents what was checked and audited."""
    server = server_context(pki)
    p = provider(pki)
    assert refusals(p) == []
    other_cert, other_key = pki.ca.issue("other-client", client=True)
    rogue_copy = tmp_path / "rogue-ca.pem"
    rogue_copy.write_bytes(pki.rogue.pem.read_bytes())
    os.replace(rogue_copy, pki.ca.pem)
    os.replace(other_cert, pki.client_cert)
    os.replace(other_key, pki.client_key)
    context = p.ssl_context()
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "trusted test CA"),),)
    ]
    presented = handshake(context, server).getpeercert()
    assert presented is not None
    assert presented["subject"] == ((("commonName", "client"),),)


def test_no_context_without_passing_checks(pki: Any) -> None:
    pki.client_key.chmod(0o644)
    p = provider(pki)
    with pytest.raises(ValueError, match="did not pass the start-up checks"):
        p.ssl_context()


def with_key(pem: Path, key: Path, mode: int) -> Path:
    pem.write_bytes(pem.read_bytes() + key.read_bytes())
    pem.chmod(mode)
    return pem


@pytest.mark.parametrize("option", ["client_cert", "ca_bundle"])
def test_a_private_key_in_a_file_others_can_read_is_refused(pki: Any, option: str) -> None:
    pem = pki.client_cert if option == "client_cert" else pki.ca.pem
    with_key(pem, pki.client_key, 0o644)
    [reason] = refusals(provider(pki))
    assert "has mode 0644; a private key must be 0600 or stricter" in reason
    assert "it holds a private key: keep that only in the file client_key names" in reason


def test_a_certificate_file_with_its_key_is_held_to_the_key_rules(pki: Any) -> None:
    """One file with both, 0600 and yours, is a key file like any other."""
    both = with_key(pki.client_cert, pki.client_key, 0o600)
    p = provider(pki, client_key=both)
    assert refusals(p) == []
    assert handshake(p.ssl_context(), server_context(pki)).getpeercert() is not None


def test_certificate_writable_by_others_is_refused(pki: Any) -> None:
    pki.client_cert.chmod(0o666)
    assert "writable by group or others" in refusals(provider(pki))[0]


@pytest.mark.parametrize(
    ("not_before", "not_after", "severity", "words"),
    [
        (NOW - 30 * DAY, NOW - DAY, TlsSeverity.REFUSE, "expired"),
        (NOW + DAY, NOW + 30 * DAY, TlsSeverity.REFUSE, "not valid before"),
        (NOW - DAY, NOW + 3 * DAY, TlsSeverity.CRITICAL, "expires in 3.0 days"),
        (NOW - DAY, NOW + 10 * DAY, TlsSeverity.WARNING, "expires in 10.0 days"),
        (NOW - DAY, NOW + 20 * DAY, TlsSeverity.OK, "expires in 20.0 days"),
    ],
)
def test_client_certificate_validity(
    pki: Any, not_before: dt.datetime, not_after: dt.datetime, severity: TlsSeverity, words: str
) -> None:
    cert, key = pki.ca.issue("dated", client=True, not_before=not_before, not_after=not_after)
    findings = provider(pki, client_cert=cert, client_key=key).check()
    validity = next(f for f in findings if f.check == "client_certificate_validity")
    assert validity.severity is severity
    assert words in validity.detail


def test_relative_paths_are_taken_from_the_config_directory(pki: Any) -> None:
    options = MtlsConfig(
        client_cert=Path("client.pem"),
        client_key=Path("client-key.pem"),
        ca_bundle=Path("trusted-ca.pem"),
    )
    context = PluginContext(config_path=pki.directory / "config.json", log_dir=pki.directory)
    p = MtlsProvider.from_config(options, context)
    assert p.options.client_key == pki.client_key
    assert refusals(p) == []


def test_there_is_no_option_to_turn_verification_off(pki: Any) -> None:
    for option in ("verify", "insecure", "check_hostname", "verify_mode"):
        with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
            MtlsConfig.model_validate(
                {"client_cert": "a", "client_key": "b", "ca_bundle": "c", option: False}
            )
    with pytest.raises(ValidationError, match="critical_days"):
        MtlsConfig(client_cert="a", client_key="b", ca_bundle="c", warn_days=3, critical_days=7)


def test_server_name_override_is_the_name_checked(pki: Any) -> None:
    context = provider(pki, server_name="backend.internal").ssl_context()
    obj = context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="127.0.0.1")
    assert obj.server_hostname == "backend.internal"


def test_tls_on_a_plain_http_url_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="url must be https://"):
        HttpBackend(url="http://127.0.0.1:1/mcp", tls={"use": "mtls"})
    with pytest.raises(ValidationError, match="only to a loopback host"):
        HttpBackend(url="http://example.com/mcp")


UNVERIFIED = re.compile(
    r"verify\s*=\s*False|CERT_NONE|check_hostname\s*=\s*False|_create_unverified_context"
)


def test_no_code_turns_verification_off() -> None:
    """TLS-5: a static check over the core and every plugin's source."""
    sources = [
        *ROOT.joinpath("mcp_acp").rglob("*.py"),
        *ROOT.joinpath("plugins").glob("*/src/**/*.py"),
    ]
    assert sources
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sources
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if UNVERIFIED.search(line)
    ]
    assert offenders == []
