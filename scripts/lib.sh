# shellcheck shell=bash
# Bootstrap shared by scripts/test.sh and scripts/demo.sh. Source it; do not run it.
#
# Provides: EDGEFLEET_ROOT, section, fail, ensure_system_packages, ensure_venv.

EDGEFLEET_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PIP_DISABLE_PIP_VERSION_CHECK=1

section() {
    printf '\n==== %s ====\n' "$*"
}

fail() {  # fail MESSAGE [EXIT_CODE]
    printf 'error: %s\n' "$1" >&2
    exit "${2:-1}"
}

# Prints the path of an executable found in PATH, /usr/sbin or PostgreSQL's versioned bin dirs.
find_tool() {
    local name="$1" candidate
    if candidate="$(command -v "$name" 2>/dev/null)"; then
        printf '%s\n' "$candidate"
        return 0
    fi
    for candidate in /usr/sbin/"$name" /usr/lib/postgresql/*/bin/"$name"; do
        if [[ -x "$candidate" ]]; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

missing_system_tools() {
    local tool
    for tool in mosquitto initdb pg_ctl nginx chromium debootstrap systemd-analyze; do
        find_tool "$tool" >/dev/null || printf '%s ' "$tool"
    done
}

# Installs Mosquitto, PostgreSQL and nginx from Debian's packages when they are missing (root only).
# The tests start their own broker, database and web server; the Debian services are not used.
ensure_system_packages() {
    local missing
    missing="$(missing_system_tools)"
    [[ -z "$missing" ]] && return 0
    if [[ "$(id -u)" -ne 0 ]]; then
        fail "missing ${missing% }: run 'sudo apt-get install -y --no-install-recommends mosquitto postgresql nginx chromium fonts-dejavu-core debootstrap systemd' (or run this script as root)" 2
    fi
    section "installing mosquitto, postgresql and nginx (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # chromium and a font: the dashboard tests drive headless Chromium through Playwright
    # debootstrap and systemd (systemd-analyze): the firmware image tests (install.sh in a bookworm chroot)
    apt-get install -y -q --no-install-recommends mosquitto postgresql nginx chromium fonts-dejavu-core \
        debootstrap systemd
    missing="$(missing_system_tools)"
    [[ -z "$missing" ]] || fail "still missing after apt-get install: ${missing% }"
}

# Prints a Python >= 3.11 interpreter: python3.11, else python3 when recent enough.
find_python() {
    local candidate
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

# Debian splits ensurepip (needed by `python3 -m venv`) into python3-venv; install it when missing.
ensure_venv_module() {
    local python="$1"
    "$python" -c 'import ensurepip, venv' 2>/dev/null && return 0
    if [[ "$(id -u)" -ne 0 ]]; then
        fail "$python cannot create virtual environments: run 'sudo apt-get install -y python3-venv'" 2
    fi
    section "installing python3-venv (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends python3-venv
}

# ensure_venv DIR EXTRAS: a virtual environment at $EDGEFLEET_ROOT/DIR with the project installed
# editable with EXTRAS. Skips the install when the stamp matches pyproject.toml and the extras.
ensure_venv() {
    local venv="$EDGEFLEET_ROOT/$1" extras="$2" python stamp_file wanted
    stamp_file="$venv/.edgefleet-install-stamp"
    wanted="$(sha256sum "$EDGEFLEET_ROOT/pyproject.toml" | cut -d' ' -f1) [$extras]"
    if [[ -x "$venv/bin/python" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$wanted" ]]; then
        return 0
    fi
    if [[ ! -x "$venv/bin/python" ]]; then
        python="$(find_python)" || fail "Python 3.11 or newer is required: install it with 'apt-get install python3 python3-venv'" 2
        ensure_venv_module "$python"
        section "creating $1 with $("$python" --version)"
        "$python" -m venv "$venv" ||
            fail "could not create $1: install the venv module with 'apt-get install python3-venv'" 2
    fi
    section "installing edgefleet[$extras] into $1"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e "$EDGEFLEET_ROOT[$extras]"
    printf '%s\n' "$wanted" >"$stamp_file"
}
