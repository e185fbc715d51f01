"""Endpoint handling and percent-encoding: nothing a caller passes can reshape the URL."""

from __future__ import annotations

import httpx
import pytest

from azure_sessions_kernel.client import ConfigurationError, SessionsClient

from .helpers import ENDPOINT, PREFIX, SESSION, Recorder

OK_LIST = httpx.Response(200, json={"value": [], "nextLink": None})


@pytest.mark.parametrize(
    "endpoint, path",
    [
        (ENDPOINT, f"{PREFIX}/files"),
        (ENDPOINT + "/", f"{PREFIX}/files"),
        ("http://127.0.0.1:8765", "/files"),
        ("http://127.0.0.1:8765/", "/files"),
        ("https://pool.example/a%20b/", "/a%20b/files"),  # an encoded prefix stays encoded
    ],
)
def test_endpoint_prefix_and_trailing_slash(make_client, endpoint, path):
    rec = Recorder(OK_LIST)
    make_client(rec, endpoint=endpoint).list_files(SESSION)
    assert rec.last.url.raw_path.decode().partition("?")[0] == path


@pytest.mark.parametrize(
    "endpoint, message",
    [
        (ENDPOINT + "?api-version=2024-02-02-preview", "query string or fragment"),
        (ENDPOINT + "?", "query string or fragment"),
        (ENDPOINT + "#pool", "query string or fragment"),
        ("ftp://pool.example", "http:// or https://"),
        ("pool.example/sessions", "http:// or https://"),
        ("https://user:pw@pool.example", "must not embed credentials"),
        (ENDPOINT + "/code/execute", "operation path '/code/execute'"),
        (ENDPOINT + "/python/execute/", "operation path '/python/execute'"),
    ],
)
def test_bad_endpoints_are_refused(endpoint, message):
    with pytest.raises(ConfigurationError, match=message) as caught:
        SessionsClient(endpoint, token="t")
    assert isinstance(caught.value, ValueError)


def test_unknown_api_version():
    with pytest.raises(ConfigurationError, match="supported versions are: 2024-02-02-preview"):
        SessionsClient(ENDPOINT, token="t", api_version="2023-01-01")


def test_identifier_cannot_extend_the_query(make_client):
    # 2025-10-02-preview identifiers may contain URL punctuation (§7, SPEC-2510).
    rec = Recorder(OK_LIST)
    make_client(rec).list_files("ab/&c#d?e=f%")
    assert rec.last.url.raw_path.decode() == f"{PREFIX}/files?api-version=2025-10-02-preview&identifier=ab%2F%26c%23d%3Fe%3Df%25"
    assert rec.last.url.params["identifier"] == "ab/&c#d?e=f%"


@pytest.mark.parametrize("identifier, version", [("abc", "2025-10-02-preview"), ("a b c d", "2025-10-02-preview"), ("a.b", "2024-10-02-preview"), ("", "2024-02-02-preview")])
def test_invalid_identifiers_are_refused_before_sending(make_client, identifier, version):
    rec = Recorder(OK_LIST)
    with pytest.raises(ConfigurationError, match=f"Invalid session identifier for api-version {version}") as caught:
        make_client(rec, api_version=version).list_files(identifier)
    assert rec.requests == [] and repr(identifier) not in str(caught.value)


@pytest.mark.parametrize(
    "name, path, route, query",
    [
        ("out/plot.png", None, "files/plot.png/content", "&path=out"),  # a listing's RemoteFile.path works as a name
        ("/mnt/data/out/plot.png", None, "files/plot.png/content", "&path=out"),
        ("plot.png", "/mnt/data", "files/plot.png/content", ""),
        ("b.png", "a/", "files/b.png/content", "&path=a"),
        ("100% sure.txt", None, "files/100%25%20sure.txt/content", ""),
    ],
)
def test_file_names_and_folders(make_client, name, path, route, query):
    rec = Recorder(httpx.Response(200, content=b"x"))
    make_client(rec).download(SESSION, name, path=path)
    assert rec.last.url.raw_path.decode() == f"{PREFIX}/{route}?api-version=2025-10-02-preview&identifier={SESSION}{query}"


@pytest.mark.parametrize("name, path", [("../etc/passwd", None), ("/etc/passwd", None), ("x", "../.."), ("x", "/tmp"), ("", None), ("..", None)])
def test_escaping_file_paths_are_refused(make_client, name, path):
    rec = Recorder(httpx.Response(200, content=b"x"))
    with pytest.raises(ConfigurationError):
        make_client(rec).download(SESSION, name, path=path)
    assert rec.requests == []


@pytest.mark.parametrize("execution_id", ["", "..", None])
def test_invalid_execution_ids_are_refused(make_client, execution_id):
    rec = Recorder()
    with pytest.raises(ConfigurationError, match="Invalid execution id"):
        make_client(rec).get_execution(SESSION, execution_id)
    assert rec.requests == []


@pytest.mark.parametrize("after, wait", [(-1, 0), (True, 0), (1.5, 0), (0, -1), (0, 10.5), (0, "5"), (0, True)])
def test_bad_events_arguments_are_refused_before_a_request(make_client, after, wait):
    rec = Recorder()
    with pytest.raises(ConfigurationError, match="after must be an event number >= 0 and wait 0 to 10 seconds"):
        make_client(rec).events(SESSION, after=after, wait=wait)
    assert rec.requests == []


def test_repr_and_properties():
    client = SessionsClient(ENDPOINT + "/", token="t", api_version="2024-10-02-preview")
    assert client.endpoint == ENDPOINT and client.api_version == "2024-10-02-preview"
    assert repr(client) == f"SessionsClient(endpoint='{ENDPOINT}', api_version='2024-10-02-preview', auth='static token')"
