#!/bin/sh
# tools/checkdeps.sh - before compiling anything, check that every library
# and tool the build needs is there, and name the Debian package of each one
# that is not (instead of failing later as "lmdb.h: No such file").
# Exit 0 when all are present; 1 after listing what is missing.
# Installs nothing: `make deps` (root) does, tools/deps.sh.
missing=""
# pkg-config name -> Debian package
for pair in lmdb:liblmdb-dev libzstd:libzstd-dev jansson:libjansson-dev libxxhash:libxxhash-dev \
	libprotobuf-c:libprotobuf-c-dev libturbojpeg:libturbojpeg0-dev libpng:libpng-dev \
	zlib:zlib1g-dev cmocka:libcmocka-dev; do
	pc=${pair%%:*}
	pkg=${pair#*:}
	pkg-config --exists "$pc" 2>/dev/null || missing="$missing $pkg"
done
command -v pkg-config >/dev/null 2>&1 || missing="$missing pkg-config"
# oneDNN ships no .pc file: look for its header.
[ -f /usr/include/dnnl.h ] || [ -f /usr/local/include/dnnl.h ] || missing="$missing libdnnl-dev"
command -v protoc-c >/dev/null 2>&1 || missing="$missing protobuf-c-compiler"
[ -z "$missing" ] && exit 0
echo "featcache: missing packages:$missing" >&2
echo "featcache: run 'make deps' as root, or: apt-get install$missing" >&2
exit 1
