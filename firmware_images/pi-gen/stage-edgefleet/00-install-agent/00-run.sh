#!/bin/bash -e
# pi-gen, on the build host: copy what install.sh needs into the image. prepare.sh filled files/
# (install.sh, units, config, the edgefleet wheel, root.json, optional wheelhouse and edgefleet.toml).
FILES="$(dirname "$0")/files"
if [ ! -f "${FILES}/install.sh" ] || [ ! -f "${FILES}/root.json" ] || ! compgen -G "${FILES}/edgefleet-*.whl" >/dev/null; then
	echo "stage-edgefleet: run firmware_images/pi-gen/prepare.sh first (it fills ${FILES})" >&2
	exit 1
fi
rm -rf "${ROOTFS_DIR}/tmp/edgefleet-install"
cp -a "${FILES}" "${ROOTFS_DIR}/tmp/edgefleet-install"
