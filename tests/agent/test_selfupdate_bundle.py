"""Agent bundles: only a wheel of the edgefleet distribution with the agent in it is accepted."""

import zipfile
from pathlib import Path

import pytest

from agent.errors import InvalidBundleError
from agent.selfupdate.bundle import inspect_wheel
from tests.helpers.wheels import make_wheel, write_wheel


def test_a_wheel_of_edgefleet_is_an_agent_bundle(tmp_path: Path) -> None:
    bundle = inspect_wheel(make_wheel(tmp_path, "0.3.0+build.7"))
    assert (bundle.distribution, bundle.version, bundle.tags) == ("edgefleet", "0.3.0+build.7", ("py3-none-any",))
    assert bundle.filename == "edgefleet-0.3.0+build.7-py3-none-any.whl"


def test_the_canonical_name_compresses_several_tags(tmp_path: Path) -> None:
    path = make_wheel(tmp_path, "1.0", tag="py2-none-any\nTag: py3-none-any")
    assert inspect_wheel(path).filename == "edgefleet-1.0-py2.py3-none-any.whl"


@pytest.mark.parametrize(("build", "message"), [
    (lambda d: make_wheel(d, name="requests"), "not the edgefleet agent"),
    (lambda d: make_wheel(d, version="latest"), "not a PEP 440 version"),
    (lambda d: make_wheel(d, entry_points=""), "edgefleet-agent command"),
    (lambda d: write_wheel(d / "x.whl", {"agent/__init__.py": b""}, "x.dist-info"), "lacks x.dist-info/WHEEL"),
    (lambda d: write_wheel(d / "x.whl", {"a.dist-info/WHEEL": b"", "b.dist-info/WHEEL": b""}, "a.dist-info"),
     "2"),
    (lambda d: make_wheel(d, extra={"../evil.py": b"x"}), "unsafe file name"),
    (lambda d: make_wheel(d, extra={"/etc/passwd": b"x"}), "unsafe file name"),
])
def test_anything_else_is_refused_with_the_reason(tmp_path: Path, build, message: str) -> None:
    with pytest.raises(InvalidBundleError, match=message.replace("+", r"\+")):
        inspect_wheel(build(tmp_path))


def test_a_wheel_without_the_agent_package_is_refused(tmp_path: Path) -> None:
    path = make_wheel(tmp_path)
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist() if not name.endswith("RECORD")}
    del files["agent/__init__.py"]
    with pytest.raises(InvalidBundleError, match="agent package"):
        inspect_wheel(write_wheel(tmp_path / "other.whl", files, "edgefleet-9.9.9.dist-info"))


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"not a zip at all"])
def test_files_that_are_no_zip_are_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bundle.whl"
    path.write_bytes(content)
    with pytest.raises(InvalidBundleError, match="not a zip"):
        inspect_wheel(path)
