"""``uri`` conditions compare one normal form of the resource URI, never the raw string.

``file:`` URIs are paths (normalised, symlinks followed: an allow rule must hold where the
path really leads); other URIs are normalised as RFC 3986 allows (scheme and web hosts in
lower case, default port dropped, escapes of unreserved characters decoded), and what two
programs could read differently is denied as ambiguous, as ambiguous paths are.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from policy_helpers import make_engine, make_request
from pydantic import ValidationError

from mcp_acp.models import Decision
from mcp_acp.policy.engine import AcpPolicyEngine
from mcp_acp.policy.model import PolicyFile
from mcp_acp.policy.uris import normalise_uri
from mcp_acp.policy.view import RequestView

READ_ANY = {"id": "read-any", "effect": "allow", "conditions": {"mcp_method": "resources/read"}}


def read(engine: AcpPolicyEngine, uri: str) -> Decision:
    return engine.decide(make_request("resources/read", None, params={"uri": uri}))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``project`` with a file, a symlinked directory and a symlinked file leading out."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "ok.txt").write_text("fine")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0")
    (project / "link").symlink_to(etc)
    (project / "file").symlink_to(etc / "passwd")
    return tmp_path


def test_an_allow_rule_on_a_file_uri_holds_where_its_symlinks_lead(tree: Path) -> None:
    project = tree / "project"
    engine = make_engine(
        {
            "id": "project-files",
            "effect": "allow",
            "conditions": {"mcp_method": "resources/read", "uri": f"file://{project}/**"},
        }
    )
    assert read(engine, f"file://{project}/ok.txt").rule_id == "project-files"
    assert read(engine, f"file://localhost{project}/ok.txt").rule_id == "project-files"
    for uri in (
        f"file://{project}/link/passwd",  # link -> etc
        f"file://{project}/file",  # file -> etc/passwd
        f"file://localhost{project}/link/passwd",
        f"file:{project}/link/passwd",
    ):
        decision = read(engine, uri)
        assert decision.effect.value == "deny", uri
        assert decision.rule_id is None, (uri, decision.reason)
    trace = engine.trace(
        make_request("resources/read", None, params={"uri": f"file://{project}/file"})
    )
    assert f"(resolves to file://{tree}/etc/passwd)" in trace[0].details[0]


def test_a_deny_rule_on_a_file_uri_sees_every_spelling(tree: Path) -> None:
    etc = tree / "etc"
    engine = make_engine(
        READ_ANY, {"id": "deny-etc", "effect": "deny", "conditions": {"uri": f"file://{etc}/**"}}
    )
    assert read(engine, f"file://{tree}/project/ok.txt").rule_id == "read-any"
    for uri in (
        f"file://{etc}/passwd",
        f"file://localhost{etc}/passwd",
        f"file:{etc}/passwd",
        f"file:///{etc}/passwd",  # file:////tmp/…
        f"file://{etc}//passwd",
        f"file://{etc}/./passwd",
        f"FILE://{etc}/passwd",
        f"file://{str(etc).upper()}/passwd",  # deny rules fold case
        f"file://{tree}/project/link/passwd",  # where it leads
        f"file://{tree}/project/file",
    ):
        assert read(engine, uri).rule_id == "deny-etc", uri


@pytest.mark.parametrize(
    "uri",
    [
        "https://docs.example/admin/x",
        "https://docs.example:443/admin/x",  # the default port
        "HTTPS://DOCS.EXAMPLE/admin/x",
        "https://docs.example/%61dmin/x",  # an unreserved character, encoded
        "https://docs.example/%61%64%6D%69%6E/x",
        "https://docs.example/admin",
        "https://docs.example/admin?page=2",  # the query is not part of the path
        "https://docs.example/admin#top",
        "https://docs.example/Admin/x",  # deny rules fold case
        "https://docs.example/%EF%BD%81dmin/x",  # a fullwidth 'a', encoded
    ],
)
def test_a_deny_rule_on_a_web_uri_sees_every_spelling(uri: str) -> None:
    engine = make_engine(
        READ_ANY,
        {
            "id": "deny-admin",
            "effect": "deny",
            "conditions": {"uri": "https://docs.example/admin/**"},
        },
    )
    assert read(engine, uri).rule_id == "deny-admin"


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("https://docs.example/public/../admin/x", "'.' or '..' segment"),
        ("https://docs.example/public/%2e%2e/admin/x", "'.' or '..' segment"),
        ("https://docs.example/./admin/x", "'.' or '..' segment"),
        ("https://docs.example/public/..%2fadmin", "%2F in its path"),
        ("https://docs.example/public/%252e%252e/admin", "%25 in its path"),
        ("https://docs.example/public/%5c..%5cadmin", "%5C in its path"),
        ("https://docs.example//admin/x", "empty path segment"),
        ("https://docs.example/public\\..\\admin", "backslash"),
        ("https://docs.example/ad min", "U+0020"),
        ("https://docs.example/\u0430dmin", "U+0430 (percent-encode it)"),  # a Cyrillic a
        ("https://docs.example/adm%in", "starts no escape"),
        ("https://user@docs.example/admin/x", "user info"),
        ("https://%64ocs.example/admin/x", "percent-encoded host"),
        ("https://docs.example./admin/x", "host ending in '.'"),
        ("http://2130706433/x", "not in dotted-decimal form"),
        ("http://0x7f.1/x", "not in dotted-decimal form"),
        ("http://[x/", "invalid IPv6 host"),
        ("https://docs.example:99999/x", "invalid port"),
        ("https:/docs.example/admin/x", "has no host"),
        ("https:docs.example/admin/x", "has no host"),
        ("memo://notes/a/../b", "'.' or '..' segment"),
        ("notes/admin", "no scheme"),
        ("file://evil.example/etc/passwd", "remote host"),
        ("file://[x/", "not a valid URI"),
    ],
)
def test_ambiguous_uris_are_denied_with_a_reason(uri: str, reason: str) -> None:
    decision = read(make_engine(READ_ANY), uri)
    assert decision.rule_id == "builtin-ambiguous-path", decision.reason
    assert reason in decision.reason


def test_normal_forms() -> None:
    assert normalise_uri("HTTPS://Docs.Example:443/%7euser/%c3%a9?q=%2f#F") == (
        "https://docs.example/~user/%C3%A9?q=%2F#F"
    )
    assert normalise_uri("http://docs.example") == "http://docs.example/"
    assert normalise_uri("http://docs.example:8080/") == "http://docs.example:8080/"
    assert normalise_uri("http://[0:0::1]:80/x") == "http://[::1]/x"
    assert normalise_uri("MEMO://Notes/a%2Db") == "memo://Notes/a-b"  # other hosts: as written
    assert normalise_uri("urn:isbn:0451450523") == "urn:isbn:0451450523"
    assert normalise_uri("file:////srv//a/./b") == "file:///srv/a/b"


def test_other_schemes_compare_the_host_exactly_for_allow_rules() -> None:
    engine = make_engine(
        {"id": "notes", "effect": "allow", "conditions": {"uri": "memo://notes/**"}}
    )
    assert read(engine, "MEMO://notes/a").rule_id == "notes"
    assert read(engine, "memo://Notes/a").rule_id is None


def test_a_file_uri_is_one_path_argument_with_where_it_leads(tree: Path) -> None:
    request = make_request(
        "resources/read", None, params={"uri": f"file://localhost{tree}/project//link/passwd"}
    )
    (argument,) = request.resource.paths
    assert (argument.argument, argument.path) == ("uri", f"{tree}/project/link/passwd")
    assert argument.resolved == f"{tree}/etc/passwd"
    view = RequestView(request)
    assert len(view.paths) == 1
    assert view.uri_views == (
        f"file://{tree}/project/link/passwd",
        f"file://{tree}/etc/passwd",
    )


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("HTTPS://Docs.Example:443/%61dmin/**", "https://docs.example/admin/**"),
        ("https://docs.example", "https://docs.example/"),
        ("http://*.example:8080/a/*", "http://*.example:8080/a/*"),
        ("file://localhost/etc/**", "file:///etc/**"),
        ("file:/etc//x/./**", "file:///etc/x/**"),
        ("FILE:///caf%C3%A9/**", "file:///caf\u00e9/**"),
        ("**", "**"),
        ("memo://Notes/**", "memo://Notes/**"),
    ],
)
def test_uri_patterns_are_stored_in_normal_form(written: str, stored: str) -> None:
    policy = PolicyFile.model_validate(
        {"rules": [{"effect": "deny", "conditions": {"uri": written}}]}
    )
    assert policy.rules[0].conditions.uri == [stored]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("https://docs.example/a/../b/**", "'.' or '..' segment"),
        ("https://docs.example//admin/**", "empty segment"),
        ("https://docs.example/caf\u00e9/**", "percent-encode it"),
        ("https://u@docs.example/**", "user info"),
        ("https:docs.example/**", "no host"),
        ("file://host/etc/**", "file: URIs are local"),
        ("file:///srv/private/", "ends with '/'"),
        ("file:///srv/%2A/x", "percent-encodes '\\*'"),
    ],
)
def test_uri_patterns_that_could_never_match_are_refused(pattern: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PolicyFile.model_validate({"rules": [{"effect": "deny", "conditions": {"uri": pattern}}]})
