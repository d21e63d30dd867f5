#!/bin/sh
# tests/cli/layout.sh - the tree keeps the shape HACKING.md draws: every
# `#include "..."` of our own runs down the dependency order, and no source
# file grows past 1,500 lines. Reads files only.
#
#   util/    -> (nothing of ours)
#   store/   -> util/
#   io/      -> util/
#   extract/ -> store/ io/ util/
#   train/   -> io/ util/
#   export/  -> extract/ train/ io/ util/
#   report/  -> train/ io/ util/
#   cli/     -> everything
NAME=layout
. "$(dirname "$0")/lib.inc"
top=${FC_TOP:?set FC_TOP to the source tree (tests/run.sh does)}

# The module a header belongs to.
module_of() {
	case $1 in
	featcache/featcache.h | featcache/rows.h | util/*) echo util ;;
	featcache/store.h | store/*) echo store ;;
	featcache/io.h | io/* | onnx.pb-c.h) echo io ;;
	featcache/model.h | featcache/engine.h | featcache/image.h | featcache/extract.h | featcache/shard.h | extract/*) echo extract ;;
	featcache/head.h | featcache/loss.h | featcache/optim.h | featcache/sampler.h | featcache/metrics.h | \
		featcache/trainer.h | featcache/train.h | featcache/sweep.h | train/*) echo train ;;
	featcache/export.h | export/*) echo export ;;
	featcache/report.h | report/*) echo report ;;
	cli/*) echo cli ;;
	*) echo unknown ;;
	esac
}

# What a module may include besides itself.
allowed() {
	case $1 in
	util) echo "" ;;
	store) echo "util" ;;
	io) echo "util" ;;
	extract) echo "store io util" ;;
	train) echo "io util" ;;
	export) echo "extract train io util" ;;
	report) echo "train io util" ;;
	cli) echo "util store io extract train export report" ;;
	esac
}

bad=""
files=$(cd "$top" && ls util/*.[ch] store/*.[ch] io/*.[ch] extract/*.[ch] train/*.[ch] export/*.[ch] \
	report/*.[ch] cli/*.[ch] include/featcache/*.h 2>/dev/null)
for f in $files; do
	case $f in
	include/featcache/*) mine=$(module_of "featcache/${f#include/featcache/}") ;;
	*) mine=$(module_of "$f") ;;
	esac
	ok=" $mine $(allowed "$mine") "
	for inc in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$top/$f"); do
		case $inc in
		featcache.h | rows.h | store.h | io.h | model.h | engine.h | image.h | extract.h | head.h | loss.h | optim.h | \
			sampler.h | metrics.h | trainer.h | train.h | sweep.h | export.h | report.h)
			inc="featcache/$inc" ;; # a public header naming a sibling
		esac
		theirs=$(module_of "$inc")
		case $ok in
		*" $theirs "*) ;;
		*) bad="$bad $f->$inc" ;;
		esac
	done
done
if [ -z "$bad" ]; then
	pass "every #include runs down the dependency order"
else
	fail "includes against the dependency order:$bad"
fi

long=""
for f in $(cd "$top" && ls */*.c */*.h include/featcache/*.h); do
	n=$(wc -l <"$top/$f")
	[ "$n" -gt 1500 ] && long="$long $f($n)"
done
if [ -z "$long" ]; then
	pass "no source file over 1,500 lines"
else
	fail "source files over 1,500 lines:$long"
fi

exit $((failures > 0))
