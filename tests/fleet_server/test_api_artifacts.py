"""Artifact downloads: full, Range (206, suffix, open-ended, 416), ETag, HEAD, auth."""

from tests.fleet_server.conftest import ONNX_FIXTURE, Api, admin_headers

CONTENT = ONNX_FIXTURE.read_bytes()


def artifact(api: Api) -> str:
    return api.upload(ONNX_FIXTURE, name="artifact-model").json()["sha256"]


def test_full_download_with_etag(api: Api) -> None:
    sha = artifact(api)
    response = api.get(f"/artifacts/{sha}")
    assert response.status_code == 200
    assert response.content == CONTENT
    assert response.headers["etag"] == f'"{sha}"'
    assert response.headers["accept-ranges"] == "bytes"
    assert int(response.headers["content-length"]) == len(CONTENT)
    not_modified = api.get(f"/artifacts/{sha}", headers={**api.headers, "If-None-Match": f'"{sha}"'})
    assert not_modified.status_code == 304 and not_modified.content == b""


def test_ranges(api: Api) -> None:
    sha = artifact(api)
    size = len(CONTENT)
    cases = {
        "bytes=0-99": (0, 99),
        "bytes=100-": (100, size - 1),
        "bytes=-50": (size - 50, size - 1),
        f"bytes=10-{size + 1000}": (10, size - 1),
    }
    for header, (start, end) in cases.items():
        response = api.get(f"/artifacts/{sha}", headers={**api.headers, "Range": header})
        assert response.status_code == 206, header
        assert response.content == CONTENT[start:end + 1], header
        assert response.headers["content-range"] == f"bytes {start}-{end}/{size}"
        assert response.headers["etag"] == f'"{sha}"'


def test_unsatisfiable_and_ignored_ranges(api: Api) -> None:
    sha = artifact(api)
    size = len(CONTENT)
    response = api.get(f"/artifacts/{sha}", headers={**api.headers, "Range": f"bytes={size}-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{size}"
    assert "detail" in response.json()
    assert api.get(f"/artifacts/{sha}", headers={**api.headers, "Range": "bytes=-0"}).status_code == 416
    for ignored in ("items=0-5", "bytes=5-2", "bytes=0-1,4-5"):
        response = api.get(f"/artifacts/{sha}", headers={**api.headers, "Range": ignored})
        assert response.status_code == 200 and response.content == CONTENT, ignored
    stale = api.get(f"/artifacts/{sha}", headers={**api.headers, "Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.content == CONTENT


def test_head(api: Api) -> None:
    sha = artifact(api)
    response = api.client.head(f"/api/v1/artifacts/{sha}", headers=api.headers)
    assert response.status_code == 200 and response.content == b""
    assert int(response.headers["content-length"]) == len(CONTENT)
    assert response.headers["etag"] == f'"{sha}"'
    partial = api.client.head(f"/api/v1/artifacts/{sha}", headers={**api.headers, "Range": "bytes=0-9"})
    assert partial.status_code == 206 and partial.headers["content-length"] == "10"


def test_unknown_and_malformed_digests(api: Api) -> None:
    assert api.get("/artifacts/" + "0" * 64).status_code == 404
    assert api.get("/artifacts/not-a-sha").status_code == 422
    assert api.get("/artifacts/" + "A" * 64).status_code == 422


def test_devices_may_download_anonymous_may_not(api: Api) -> None:
    sha = artifact(api)
    credential = api.enroll("downloader").json()["credential"]
    response = api.get(f"/artifacts/{sha}", headers=admin_headers(credential))
    assert response.status_code == 200 and response.content == CONTENT
    assert api.get(f"/artifacts/{sha}", headers={}).status_code == 401
    assert api.get(f"/artifacts/{sha}", headers=admin_headers("forged")).status_code == 401
