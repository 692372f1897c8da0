#!/bin/bash -e
# pi-gen, inside the image (qemu-user for arm64 on an x86 host): install the agent, then clean up.
cd /tmp/edgefleet-install
wheels=(edgefleet-*.whl)
args=(--wheel "${wheels[0]}" --root-json root.json --no-start)
if [ -d wheelhouse ]; then
	args+=(--find-links wheelhouse)
fi
if [ -f edgefleet.toml ]; then
	args+=(--boot-config edgefleet.toml)
fi
bash ./install.sh "${args[@]}"
cd /
rm -rf /tmp/edgefleet-install
