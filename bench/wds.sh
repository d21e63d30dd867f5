#!/bin/sh
# bench/wds.sh BUILD_DIR [N] - the same N photos (default 1000; 500 x 375
# JPEGs cut from Debian's mate-backgrounds by tool_mkimage --crops, in 10
# class folders) extracted by `featcache extract` from loose files and from
# WebDataset tar shards of 100 samples (tools/make_shards.py), each into a
# fresh store. The model is the demo backbone at 32 x 32, so the figure is
# the input side (read, hash, decode, resize), where the two differ; the
# engine is a small share. Prints images/s from extract's summary and the
# process's user+sys CPU seconds, then the tar/loose ratio.
#
# Not run by `make bench` (bench/run.sh runs the programs in BUILD_DIR/bench/).
build=${1:-build}
n=${2:-1000}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
F=$build/featcache
IMG=$build/tests/tool_mkimage
for b in "$F" "$IMG"; do
	[ -x "$b" ] || { echo "bench/wds: build $b first (make BUILD=$build all $IMG)" >&2; exit 1; }
done
photos=$(ls /usr/share/backgrounds/mate/nature/*.jpg 2>/dev/null)
[ -n "$photos" ] || { echo "bench/wds: no photos in /usr/share/backgrounds/mate/nature (mate-backgrounds)" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fc-bench-wds.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
# shellcheck disable=SC2086
mkdir -p "$tmp/all"
"$IMG" --crops "$tmp/all" "$n" 7 $photos >/dev/null || exit 1
i=0
for f in "$tmp"/all/*.jpg; do
	c=$((i % 10))
	mkdir -p "$tmp/loose/c$c"
	mv "$f" "$tmp/loose/c$c/"
	i=$((i + 1))
done
python3 tools/make_shards.py "$tmp/loose" "$tmp/shards" --per-shard 100 >/dev/null || exit 1
X="--model models/fmnist_resnet.onnx --size 32 --batch 32 --quiet"

run() { # NAME DATA
	/usr/bin/time -f "%U %S" -o "$tmp/time" "$F" extract --store "$tmp/$1.st" --data "$2" $X >"$tmp/out" || exit 1
	rate=$(sed -n 's/^time: .* s, \([0-9.]*\) images\/s.*/\1/p' "$tmp/out")
	cpu=$(awk '{ printf "%.1f", $1 + $2 }' "$tmp/time")
	echo "wds: $1 $n images: $rate images/s, $cpu s user+sys"
	eval "rate_$1=$rate"
}
run loose "$tmp/loose"
run tar "$tmp/shards"
# shellcheck disable=SC2154
awk -v t="$rate_tar" -v l="$rate_loose" 'BEGIN { printf "wds: tar / loose = %.2f\n", t / l }'
