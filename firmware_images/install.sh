#!/usr/bin/env bash
# Install the EdgeFleet agent on a Debian-based device (Raspberry Pi OS bookworm, 64-bit), or into an
# image being built (pi-gen and rpi-image-gen run it inside the image's chroot).
#
#   sudo ./install.sh --wheel edgefleet-0.1.0-py3-none-any.whl --root-json root.json
#
# It installs, idempotently (a second run installs into the other slot and switches to it):
#   python3 and python3-venv (apt-get, when missing), the system user "edgefleet",
#   /opt/edgefleet-agent          A/B agent slots (slots/a, slots/b), links current and confirmed,
#                                 install.json (interpreter and extras for later self-updates)
#   /etc/edgefleet/agent.toml     the agent's configuration (kept if present)
#   /var/lib/edgefleet-agent      the agent's data directory, with the trusted root.json
#   edgefleet-agent.service and edgefleet-agent-firstboot.service, enabled
#
# Options:
#   --wheel FILE          the edgefleet wheel to install (built with `pip wheel --no-deps . -w dist`);
#                         without it edgefleet comes from the package index (--version)
#   --version SPEC        version specifier for the index install, e.g. "==0.1.0"
#   --extras NAME         auto (default), agent (LiteRT), agent-tflite-legacy (tflite-runtime, numpy<2)
#   --find-links DIR      a directory of wheels pip may install from (repeatable)
#   --no-index            install only from --wheel and --find-links (offline builds)
#   --index-url URL       another package index
#   --root-json FILE      the fleet's trusted root.json (`edgefleet keys init`); required on a first install
#   --boot-config FILE    also write this edgefleet.toml to the boot partition (an image for one fleet)
#   --no-apt              never call apt-get (fail instead when python3-venv is missing)
#   --no-enable           install the systemd units without enabling them
#   --no-start            do not (re)start the agent, even where systemd runs
#
# Exit codes: 0 installed, 1 a step failed, 2 bad usage or unsupported system.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PREFIX=/opt/edgefleet-agent
CONFIG_DIR=/etc/edgefleet
DATA_DIR=/var/lib/edgefleet-agent
UNIT_DIR=/etc/systemd/system
AGENT_USER=edgefleet
PYTHON=${EDGEFLEET_PYTHON:-/usr/bin/python3}
UNITS=(edgefleet-agent.service edgefleet-agent-firstboot.service)

wheel="" version="" extras=auto root_json="" boot_config="" index_url=""
no_index=0 use_apt=1 enable=1 start=1
find_links=()

say() { printf 'install.sh: %s\n' "$*"; }
fail() { printf 'install.sh: error: %s\n' "$1" >&2; exit "${2:-1}"; }
usage_fail() { fail "$1 (see the comment at the top of $0 for the options)" 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --wheel) wheel="${2:?--wheel needs a file}"; shift 2 ;;
        --version) version="${2:?--version needs a specifier}"; shift 2 ;;
        --extras) extras="${2:?--extras needs a name}"; shift 2 ;;
        --find-links) find_links+=("${2:?--find-links needs a directory}"); shift 2 ;;
        --no-index) no_index=1; shift ;;
        --index-url) index_url="${2:?--index-url needs a URL}"; shift 2 ;;
        --root-json) root_json="${2:?--root-json needs a file}"; shift 2 ;;
        --boot-config) boot_config="${2:?--boot-config needs a file}"; shift 2 ;;
        --no-apt) use_apt=0; shift ;;
        --no-enable) enable=0; shift ;;
        --no-start) start=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) usage_fail "unknown option $1" ;;
    esac
done

[[ "$(id -u)" -eq 0 ]] || fail "run as root (sudo $0 ...)" 2
[[ -z "$wheel" || -f "$wheel" ]] || usage_fail "no wheel at $wheel"
[[ -z "$root_json" || -f "$root_json" ]] || usage_fail "no root.json at $root_json"
[[ -z "$boot_config" || -f "$boot_config" ]] || usage_fail "no boot config at $boot_config"
case "$extras" in auto|agent|agent-tflite-legacy) ;; *) usage_fail "unknown --extras $extras" ;; esac
if [[ -z "$root_json" && ! -f "$DATA_DIR/root.json" ]]; then
    usage_fail "--root-json is required on a first install (the root.json devices trust, from 'edgefleet keys init')"
fi
[[ -n "$wheel" ]] && wheel="$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")"

# -- python3 with venv -----------------------------------------------------------------------------

python_ok() { "$PYTHON" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }
if ! python_ok; then
    if [[ "$use_apt" -ne 1 ]] || ! command -v apt-get >/dev/null; then
        fail "$PYTHON (>= 3.11, with venv) is missing: install python3 and python3-venv" 2
    fi
    say "installing python3 and python3-venv (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends python3 python3-venv ca-certificates
    python_ok || fail "$PYTHON is older than 3.11: EdgeFleet needs Raspberry Pi OS bookworm (Debian 12) or newer" 2
fi

# -- the agent's user and directories --------------------------------------------------------------

if ! id -u "$AGENT_USER" >/dev/null 2>&1; then
    say "creating system user $AGENT_USER"
    useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home --shell /usr/sbin/nologin \
        --comment "EdgeFleet agent" "$AGENT_USER"
fi
install -d -m 0755 "$PREFIX" "$PREFIX/slots" "$CONFIG_DIR"
install -d -m 0750 -o "$AGENT_USER" -g "$AGENT_USER" "$DATA_DIR"

# -- an agent slot ---------------------------------------------------------------------------------

current="$(readlink "$PREFIX/current" 2>/dev/null || true)"
if [[ "$current" == "slots/a" ]]; then slot=b; else slot=a; fi
target="$PREFIX/slots/$slot"

pip_args=(--disable-pip-version-check --no-input --no-cache-dir --progress-bar off)
[[ "$no_index" -eq 1 ]] && pip_args+=(--no-index)
[[ -n "$index_url" ]] && pip_args+=(--index-url "$index_url")
for links in "${find_links[@]}"; do pip_args+=(--find-links "$links"); done

requirement() {  # requirement EXTRAS
    if [[ -n "$wheel" ]]; then printf '%s[%s]' "$wheel" "$1"; else printf 'edgefleet[%s]%s' "$1" "$version"; fi
}

install_slot() {  # install_slot EXTRAS
    rm -rf "$target" &&
        "$PYTHON" -m venv "$target" &&
        "$target/bin/python" -m pip install "${pip_args[@]}" "$(requirement "$1")"
}

case "$extras" in
    auto)
        case "$(uname -m)" in
            armv6l|armv7l) candidates=(agent-tflite-legacy) ;;  # LiteRT publishes no 32-bit ARM wheels
            *) candidates=(agent agent-tflite-legacy) ;;
        esac ;;
    *) candidates=("$extras") ;;
esac
installed=""
for candidate in "${candidates[@]}"; do
    say "installing edgefleet[$candidate] into $target"
    if install_slot "$candidate"; then installed="$candidate"; break; fi
    say "edgefleet[$candidate] cannot be installed here"
done
[[ -n "$installed" ]] || fail "pip could not install the agent (see its output above)"
agent_version="$("$target/bin/edgefleet-agent" --version)" || fail "the installed agent does not run"
say "installed $agent_version with extras $installed in slot $slot"

# install.json tells later self-updates how slots are built.
printf '{"extras": "%s", "python": "%s"}\n' "$installed" "$PYTHON" >"$PREFIX/.install.json.new"
mv -f "$PREFIX/.install.json.new" "$PREFIX/install.json"
rm -f "$PREFIX/trial.json"  # a manual install ends any self-update on trial
for link in current confirmed; do  # switch atomically: a new link renamed over the old one
    ln -sfn "slots/$slot" "$PREFIX/.$link.new"
    mv -Tf "$PREFIX/.$link.new" "$PREFIX/$link"
done
install -m 0644 "$HERE/README.md" "$PREFIX/README.md"
chown -R "$AGENT_USER:$AGENT_USER" "$PREFIX"

# -- configuration, trust and first-boot enrollment --------------------------------------------------

if [[ ! -f "$CONFIG_DIR/agent.toml" ]]; then
    install -m 0644 "$HERE/config/agent.toml" "$CONFIG_DIR/agent.toml"
fi
if [[ -n "$root_json" ]]; then
    if [[ -f "$DATA_DIR/root.json" ]] && ! cmp -s "$root_json" "$DATA_DIR/root.json"; then
        say "keeping the existing $DATA_DIR/root.json (roots rotate through the server, not through install.sh)"
    else
        install -m 0644 -o "$AGENT_USER" -g "$AGENT_USER" "$root_json" "$DATA_DIR/root.json"
    fi
fi
if [[ -n "$boot_config" ]]; then
    boot_dir=/boot/firmware
    [[ -d "$boot_dir" ]] || boot_dir=/boot
    install -d "$boot_dir"
    cp "$boot_config" "$boot_dir/edgefleet.toml"  # cp, not install -m: the boot partition is FAT
    say "wrote $boot_dir/edgefleet.toml (the device enrolls with it on its next start)"
fi

# -- systemd ---------------------------------------------------------------------------------------

install -d "$UNIT_DIR"
for unit in "${UNITS[@]}"; do
    install -m 0644 "$HERE/systemd/$unit" "$UNIT_DIR/$unit"
done
if [[ "$enable" -eq 1 ]]; then
    if command -v systemctl >/dev/null 2>&1; then
        systemctl enable "${UNITS[@]}"
    else  # what `systemctl enable` does, for systems without systemctl
        install -d "$UNIT_DIR/multi-user.target.wants"
        for unit in "${UNITS[@]}"; do ln -sfn "$UNIT_DIR/$unit" "$UNIT_DIR/multi-user.target.wants/$unit"; done
    fi
fi
if [[ -d /run/systemd/system && "$start" -eq 1 ]]; then  # a running device, not an image build
    systemctl daemon-reload
    if [[ -f "$DATA_DIR/enrollment.json" ]]; then
        systemctl restart edgefleet-agent.service
        say "restarted edgefleet-agent.service"
    elif [[ -n "$boot_config" ]]; then
        systemctl start edgefleet-agent-firstboot.service edgefleet-agent.service
        say "enrolled and started edgefleet-agent.service"
    else
        say "not enrolled yet: write edgefleet.toml to the boot partition and run" \
            "'systemctl start edgefleet-agent-firstboot edgefleet-agent'"
    fi
fi
say "done: $agent_version in $PREFIX (slot $slot)"
