"""Root rotation on the device: the agent fetches root N+1 before verifying a
directive, accepts it only per the protocol, and from then on rejects what the
dropped keys sign. Downgrades need a signed rollback action."""

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent.enroll import ROOT_FILE, load_root
from agent.protocol.envelope import sign_envelope
from agent.protocol.keys import generate_private_key, key_id, public_key_hex
from agent.protocol.metadata import Action, Role, RoleSpec, Root
from agent.root_refresh import RootRefresher
from tests.agent.artifact_server import ArtifactServer
from tests.agent.signing import MiniFleet, distinct_onnx, onnx_variant
from tests.agent.updater_rig import Rig, make_rig


class RootServer:
    """Serves ``/api/v1/root/{n}`` from a dict (404 for the others)."""

    def __init__(self) -> None:
        self.roots: dict[int, dict[str, Any]] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                version = self.path.rsplit("/", 1)[-1]
                document = outer.roots.get(int(version)) if version.isdigit() else None
                body = json.dumps(document).encode() if document is not None else b"{}"
                self.send_response(200 if document is not None else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def roots() -> Iterator[RootServer]:
    server = RootServer()
    yield server
    server.httpd.shutdown()


@pytest.fixture
def fleet() -> MiniFleet:
    return MiniFleet()


@pytest.fixture
def server() -> Iterator[ArtifactServer]:
    with ArtifactServer() as server:
        yield server


def successor(fleet: MiniFleet, signers: list | None = None) -> tuple[dict[str, Any], Any]:
    """Root v2 with a new rollout key, signed by the root key (old and new root role)."""
    rollout = generate_private_key()
    keys = [fleet.root_key, fleet.release_key, rollout]
    root = Root(2, datetime.now(UTC) + timedelta(days=30), {key_id(k): public_key_hex(k) for k in keys}, {
        Role.ROOT: RoleSpec((key_id(fleet.root_key),), 1),
        Role.RELEASE: RoleSpec((key_id(fleet.release_key),), 1),
        Role.ROLLOUT: RoleSpec((key_id(rollout),), 1),
    })
    return sign_envelope(root.to_dict(), signers or [fleet.root_key]).to_dict(), rollout


def provisioned(tmp_path: Path, fleet: MiniFleet) -> Path:
    (tmp_path / ROOT_FILE).write_text(json.dumps(fleet.root_document))
    return tmp_path


def refresher(tmp_path: Path, url: str) -> RootRefresher:
    return RootRefresher(tmp_path, url, lambda: datetime.now(UTC), timeout_s=2)


def test_a_valid_successor_is_trusted_and_persisted(fleet: MiniFleet, roots: RootServer, tmp_path: Path) -> None:
    roots.roots[2], _rollout = successor(fleet)
    newest = refresher(provisioned(tmp_path, fleet), roots.url).refresh(fleet.root)
    assert newest.version == 2
    assert load_root(tmp_path).version == 2


def test_a_successor_without_the_old_root_keys_is_refused(fleet: MiniFleet, roots: RootServer,
                                                          tmp_path: Path) -> None:
    roots.roots[2], _rollout = successor(fleet, signers=[generate_private_key()])
    assert refresher(provisioned(tmp_path, fleet), roots.url).refresh(fleet.root).version == 1
    assert load_root(tmp_path).version == 1


def test_an_unreachable_server_keeps_the_trusted_root(fleet: MiniFleet, tmp_path: Path) -> None:
    assert refresher(provisioned(tmp_path, fleet), "http://127.0.0.1:9").refresh(fleet.root) == fleet.root


def rig_with_roots(fleet: MiniFleet, server: ArtifactServer, roots: RootServer, tmp_path: Path) -> Rig:
    data_dir = tmp_path / "agent"
    data_dir.mkdir()
    rig = make_rig(fleet, server, provisioned(data_dir, fleet))
    rig.updater.refresh_root = refresher(data_dir, roots.url).refresh
    return rig


def release(rig: Rig, version: int) -> dict[str, Any]:
    data = distinct_onnx(f"rot-v{version}")
    rig.server.add(data)
    return rig.fleet.release((onnx_variant(data),), version=version)


def test_after_rotation_the_dropped_rollout_key_is_rejected(fleet: MiniFleet, server: ArtifactServer,
                                                           roots: RootServer, tmp_path: Path) -> None:
    rig = rig_with_roots(fleet, server, roots, tmp_path)
    rig.deploy(fleet.message(release(rig, 1)))
    assert rig.publisher.states(1)[-1] == "succeeded"
    roots.roots[2], new_rollout = successor(fleet)
    rig.deploy(fleet.message(release(rig, 2)))  # signed by the old rollout key, which root v2 dropped
    assert rig.publisher.last(2).state == "rejected"
    assert rig.publisher.last(2).reason.startswith("UnknownSignerError")
    assert rig.updater.root.version == 2 and rig.slots.read("current").release_version == 1
    rig.deploy(fleet.message(release(rig, 3), key=new_rollout))
    assert rig.publisher.states(3)[-1] == "succeeded"


def test_an_install_of_an_older_version_needs_a_rollback_directive(fleet: MiniFleet, server: ArtifactServer,
                                                                   tmp_path: Path) -> None:
    rig = make_rig(fleet, server, tmp_path / "agent")
    old, new = release(rig, 1), release(rig, 2)
    rig.deploy(fleet.message(old))
    rig.deploy(fleet.message(new))
    rig.deploy(fleet.message(old))  # validly signed, but older than what is installed
    assert rig.publisher.last(3).state == "rejected"
    assert rig.publisher.last(3).reason.startswith("DowngradeError")
    assert rig.slots.read("current").release_version == 2
    rig.deploy(fleet.message(old, action=Action.ROLLBACK))  # the signed way back
    assert rig.publisher.states(4)[-1] == "rolled_back"
    assert rig.slots.read("current").release_version == 1
