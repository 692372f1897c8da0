#!/usr/bin/env bash
# Fill stage-edgefleet/00-install-agent/files for a pi-gen build of an EdgeFleet image.
#
#   firmware_images/pi-gen/prepare.sh --wheel dist/edgefleet-0.1.0-py3-none-any.whl --root-json keys/root.json \
#       [--wheelhouse DIR] [--boot-config edgefleet.toml]
#
# --wheelhouse: wheels for the image's platform (linux_aarch64, Python 3.11), for builds without
#               package index access; otherwise pip fetches the dependencies while the image is built.
# --boot-config: bake one fleet's edgefleet.toml into the boot partition (else write it after flashing).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FIRMWARE="$(dirname "$HERE")"
FILES="$HERE/stage-edgefleet/00-install-agent/files"
wheel="" root_json="" wheelhouse="" boot_config=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --wheel) wheel="$2"; shift 2 ;;
        --root-json) root_json="$2"; shift 2 ;;
        --wheelhouse) wheelhouse="$2"; shift 2 ;;
        --boot-config) boot_config="$2"; shift 2 ;;
        *) echo "prepare.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[[ -f "$wheel" && -f "$root_json" ]] || { echo "prepare.sh: --wheel FILE and --root-json FILE are required" >&2; exit 2; }
rm -rf "$FILES"
mkdir -p "$FILES"
cp -a "$FIRMWARE/install.sh" "$FIRMWARE/README.md" "$FIRMWARE/systemd" "$FIRMWARE/config" "$FILES/"
cp "$wheel" "$root_json" "$FILES/"
[[ "$(basename "$root_json")" == root.json ]] || mv "$FILES/$(basename "$root_json")" "$FILES/root.json"
[[ -z "$wheelhouse" ]] || cp -a "$wheelhouse" "$FILES/wheelhouse"
[[ -z "$boot_config" ]] || cp "$boot_config" "$FILES/edgefleet.toml"
echo "prepare.sh: $FILES is ready; add $HERE/stage-edgefleet to pi-gen's STAGE_LIST"
