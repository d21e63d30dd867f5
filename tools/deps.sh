#!/bin/sh
# tools/deps.sh - install the Debian packages featcache needs to build,
# test and run its demo; prints the command instead when not root.
# Set FC_DEPS_EXTRA to add packages (the fuzz and bench targets do).
pkgs="build-essential pkg-config liblmdb-dev libzstd-dev libdnnl-dev libjansson-dev
libxxhash-dev libcmocka-dev lmdb-utils python3 python3-numpy clang libclang-rt-14-dev
libprotobuf-c-dev protobuf-c-compiler libturbojpeg0-dev libpng-dev libarchive-dev dataset-fashion-mnist zlib1g-dev chromium
openmpi-bin slurm-wlm munge
$FC_DEPS_EXTRA"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
cmd="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" != 0 ]; then
	echo "featcache: missing packages:$missing" >&2
	echo "featcache: run as root: apt-get update && $cmd" >&2
	exit 1
fi
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && $cmd >/dev/null || { echo "featcache: apt-get failed" >&2; exit 1; }
