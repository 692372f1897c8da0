"""edgefleet.toml on the boot partition: parsing, removing the token, choosing the device id."""

import pytest

from agent.bootconfig import BootConfig, choose_device_id, parse_boot_config, render_boot_config, strip_token
from agent.errors import ConfigError

FILE = """# written by the operator after flashing
server_url = "https://fleet.example:8000/"
bootstrap_token = "s3cret-token"   # single use
tags = ["line-3", "camera"]
device_id = "cam-17"
"""


def test_parse_reads_every_field() -> None:
    assert parse_boot_config(FILE) == BootConfig("https://fleet.example:8000", "s3cret-token", ("line-3", "camera"),
                                                 "cam-17")
    assert parse_boot_config('server_url = "http://10.0.0.1"\n') == BootConfig("http://10.0.0.1", None)


@pytest.mark.parametrize(("text", "message"), [
    ('bootstrap_token = "x"\n', "server_url"),
    ('server_url = "ftp://x"\n', "server_url"),
    ('server_url = "http://x"\nserver = "y"\n', "unknown field"),
    ('server_url = "http://x"\ntags = "a,b"\n', "tags"),
    ('server_url = "http://x"\ndevice_id = "Not Valid!"\n', "device_id"),
    ('server_url = "http://x"\nbootstrap_token = ""\n', "bootstrap_token"),
    ("server_url = ", "not valid TOML"),
])
def test_bad_files_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_boot_config(text, "/boot/firmware/edgefleet.toml")


def test_strip_token_removes_only_the_token_line() -> None:
    stripped = strip_token(FILE)
    assert "s3cret" not in stripped and "bootstrap_token" not in stripped
    assert stripped.startswith("# written by the operator") and parse_boot_config(stripped).tags == ("line-3", "camera")


def test_strip_token_re_renders_a_token_it_cannot_remove_by_line() -> None:
    text = 'server_url = "http://x"\nbootstrap_token = """\ns3cret\n"""\ntags = ["a"]\n'
    stripped = strip_token(text)
    assert "s3cret" not in stripped and parse_boot_config(stripped) == BootConfig("http://x", None, ("a",))


def test_render_round_trips_strings_that_need_escaping() -> None:
    config = BootConfig('http://x/"quoted"\\', 'to"k\ten', ("ä",), "dev-1")
    assert parse_boot_config(render_boot_config(config)) == config


@pytest.mark.parametrize(("configured", "hostname", "machine_id", "expected"), [
    ("cam-17", "raspberrypi", "abc", "cam-17"),
    (None, "Kitchen-Pi.local", "abc", "kitchen-pi-local"),
    (None, "raspberrypi", "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "edgefleet-0f1e2d3c4b5a"),
    (None, "localhost", "", "edgefleet-device"),
])
def test_device_id_avoids_the_stock_host_name(configured: str | None, hostname: str, machine_id: str,
                                              expected: str) -> None:
    assert choose_device_id(configured, hostname, machine_id) == expected
