"""``edgefleet-agent-firstboot``: enroll a freshly flashed device from its boot partition, then
forget the token.

Run once, as root, by ``edgefleet-agent-firstboot.service`` before the agent starts:

1. the first ``--boot-config`` file that exists is read (``agent.bootconfig``);
2. unless the data directory already holds an enrollment, ``edgefleet-agent enroll``
   runs with its server URL, token, tags and device id, in a child process that
   gave up root for the agent's user (``--user``), so every file enrollment
   writes belongs to the agent; the token never appears on a command line. It
   is the same CLI an operator runs, so whatever enrollment does (keys, a
   certificate request) the first boot does too;
3. a refusal or an unreachable server (exit 1: the network or the server may not
   be up yet on a first boot) is retried with backoff; a usage error (exit 2)
   is final;
4. the ``bootstrap_token`` line is removed from the boot file.

Exit codes: 0 enrolled (or already enrolled), 1 gave up after ``--attempts``,
2 bad boot config or usage.
"""

import argparse
import logging
import os
import pwd
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.bootconfig import BootConfig, choose_device_id, parse_boot_config, strip_token
from agent.config import load_config
from agent.enroll import ENROLLMENT_FILE
from agent.errors import ConfigError
from agent.storage import atomic_write_bytes

log = logging.getLogger("agent.firstboot")

PROG = "edgefleet-agent-firstboot"
DEFAULT_BOOT_CONFIGS = (Path("/boot/firmware/edgefleet.toml"), Path("/boot/edgefleet.toml"))
MACHINE_ID = Path("/etc/machine-id")
USAGE_ERROR = 2


def enroll_argv(config_path: Path | None, boot: BootConfig, device_id: str) -> list[str]:
    """The ``edgefleet-agent`` arguments that enroll with ``boot``."""
    assert boot.bootstrap_token is not None
    argv = ["--config", str(config_path)] if config_path is not None else []
    argv += ["enroll", "--server", boot.server_url, "--token", boot.bootstrap_token, "--device-id", device_id]
    for tag in boot.tags:
        argv += ["--tag", tag]
    return argv


def run_enroll_as(user: str | None, argv: list[str]) -> int:
    """Run ``edgefleet-agent ARGV`` in a forked child (as ``user`` when given); its exit code."""
    account = pwd.getpwnam(user) if user else None
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 1
        try:
            if account is not None and os.geteuid() != account.pw_uid:
                os.setgroups([])
                os.setgid(account.pw_gid)
                os.setuid(account.pw_uid)
                os.environ["HOME"] = account.pw_dir
            from agent.cli import main as agent_main

            code = agent_main(argv)
        except SystemExit as exc:  # argparse's --help/usage errors
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:  # noqa: BLE001 - the child must exit, whatever happened
            print(f"{PROG}: error: enrollment crashed: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def rewrite(path: Path, text: str) -> None:
    """Replace ``path`` atomically. No chmod: the boot partition is FAT, which refuses mode changes."""
    atomic_write_bytes(path, text.encode("utf-8"), mode=None)


def first_boot(boot_path: Path, config_path: Path | None, user: str | None, attempts: int, retry_base_s: float,
               retry_max_s: float, enroll: Callable[[str | None, list[str]], int] = run_enroll_as,
               sleep: Callable[[float], None] = time.sleep) -> int:
    text = boot_path.read_text(encoding="utf-8")
    boot = parse_boot_config(text, str(boot_path))
    data_dir = Path(load_config(config_path).data_dir)
    if (data_dir / ENROLLMENT_FILE).exists():
        log.info("event=already_enrolled data_dir=%s", data_dir)
    elif boot.bootstrap_token is None:
        raise ConfigError(f"{boot_path} has no bootstrap_token and {data_dir} holds no enrollment")
    else:
        machine_id = MACHINE_ID.read_text().strip() if MACHINE_ID.is_file() else ""
        device_id = choose_device_id(boot.device_id, socket.gethostname(), machine_id)
        argv = enroll_argv(config_path, boot, device_id)
        delay, attempt = retry_base_s, 0
        while True:
            attempt += 1
            code = enroll(user, argv)
            if code == 0:
                log.info("event=first_boot_enrolled device=%s server=%s attempts=%d", device_id, boot.server_url,
                         attempt)
                break
            if code == USAGE_ERROR:
                return USAGE_ERROR
            if attempts and attempt >= attempts:
                log.error("event=first_boot_gave_up attempts=%d", attempt)
                return 1
            log.warning("event=first_boot_retry attempt=%d exit=%d retry_in_s=%g", attempt, code, delay)
            sleep(delay)
            delay = min(delay * 2, retry_max_s)
    if boot.bootstrap_token is not None:
        rewrite(boot_path, strip_token(text, str(boot_path)))
        log.info("event=bootstrap_token_removed file=%s", boot_path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Enroll this device from the boot partition's "
                                     "edgefleet.toml, then remove the bootstrap token from it.")
    parser.add_argument("--boot-config", type=Path, action="append", dest="boot_configs",
                        help="edgefleet.toml to read (repeatable; the first that exists is used)")
    parser.add_argument("--config", type=Path, help="the agent's TOML config (data_dir)")
    parser.add_argument("--user", help="run the enrollment as this user (the agent's), when started as root")
    parser.add_argument("--attempts", type=int, default=0, help="give up after N attempts (0: never)")
    parser.add_argument("--retry-base-s", type=float, default=5.0, help="first retry delay, doubled up to the max")
    parser.add_argument("--retry-max-s", type=float, default=300.0, help="longest retry delay")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    candidates = args.boot_configs or list(DEFAULT_BOOT_CONFIGS)
    boot_path = next((path for path in candidates if path.is_file()), None)
    if boot_path is None:
        return _fail(f"no boot config among {', '.join(map(str, candidates))}",
                     "write edgefleet.toml (server_url, bootstrap_token) to the boot partition")
    if args.user:
        try:
            pwd.getpwnam(args.user)
        except KeyError:
            return _fail(f"no user {args.user!r}", "install.sh creates the agent's user; pass its name")
    try:
        return first_boot(boot_path, args.config, args.user, max(args.attempts, 0), args.retry_base_s,
                          args.retry_max_s)
    except ConfigError as exc:
        return _fail(str(exc), f"fix {boot_path} (server_url, bootstrap_token, tags, device_id)")
    except OSError as exc:
        return _fail(str(exc), "check that the boot partition and the data directory are mounted and writable")


def _fail(message: str, hint: str) -> int:
    print(f"{PROG}: error: {message} (hint: {hint})", file=sys.stderr)
    return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
