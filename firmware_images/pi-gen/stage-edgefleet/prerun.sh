#!/bin/bash -e
# pi-gen: this stage builds on the previous one's root file system (stage2: Raspberry Pi OS Lite).
if [ ! -d "${ROOTFS_DIR}" ]; then
	copy_previous
fi
