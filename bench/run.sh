#!/bin/sh
# bench/run.sh BUILD_DIR - run every benchmark program in BUILD_DIR/bench/
# with its default arguments, one after another, each under a header line.
# `make bench` calls it from the repository top. A new benchmark needs no
# change here: building bench/<name>.c into BUILD_DIR/bench/<name> is enough.
#
# Benchmarks print their own summary lines and tables; this script only adds
# the headers and exits non-zero if any of them failed (a missed target is
# not a failure: it is reported as MISS in the output).
build=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
failed=""
found=0
for b in "$build"/bench/*; do
	case $b in *.o | *.d) continue ;; esac
	[ -f "$b" ] && [ -x "$b" ] || continue
	found=$((found + 1))
	name=$(basename "$b")
	echo "==== bench $name ($(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) CPUs, $(uname -r))"
	"$b" || failed="$failed $name"
	echo
done
if [ "$found" -eq 0 ]; then
	echo "bench: no benchmark programs in $build/bench/" >&2
	exit 1
fi
if [ -n "$failed" ]; then
	echo "bench: failed:$failed" >&2
	exit 1
fi
