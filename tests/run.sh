#!/bin/sh
# tests/run.sh BUILD_DIR - run every unit test program and every CLI script
# and print one closing line "N passed, N failed, N skipped".
#
# Unit tests are cmocka programs (BUILD/tests/test_*), run with TAP output.
# CLI tests are tests/cli/*.sh; each prints TAP lines ("ok - what" or
# "not ok - what") and exits non-zero if any check failed. They find the
# binaries through $FEATCACHE and $FC_TOOLS. A program that dies without
# reporting a failure (a crash, a sanitizer abort) counts as one failure.
# An "ok" line with a "# SKIP" directive (TAP) counts as skipped, not passed.
build=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
export FEATCACHE="$top/$build/featcache"
export FC_TOOLS="$top/$build/tests"
export FC_TOP="$top"
export CMOCKA_MESSAGE_OUTPUT=TAP
log="$top/$build/test.log"
: >"$log"
pass=0
fail=0
skip=0

run_one() {
	name=$1
	shift
	out=$("$@" 2>&1)
	rc=$?
	printf '%s\n' "$out" >>"$log"
	p=$(printf '%s\n' "$out" | grep '^ok ' | grep -vc '# SKIP')
	k=$(printf '%s\n' "$out" | grep '^ok ' | grep -c '# SKIP')
	f=$(printf '%s\n' "$out" | grep -c '^not ok ')
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1
		echo "not ok - $name exited with status $rc" >>"$log"
	fi
	pass=$((pass + p))
	fail=$((fail + f))
	skip=$((skip + k))
	if [ "$f" -ne 0 ]; then
		echo "FAIL $name ($p passed, $f failed)"
		printf '%s\n' "$out" | grep -v '^ok ' | tail -40
	else
		if [ "$k" -ne 0 ]; then
			echo "ok   $name ($p, $k skipped)"
		else
			echo "ok   $name ($p)"
		fi
	fi
}

for t in "$top/$build"/tests/test_*; do
	case $t in *.o | *.d) continue ;; esac
	[ -x "$t" ] || continue
	# FC_WRAP is a command line (make valgrind); FC_WRAP_SKIP lists the
	# programs it must not wrap, which then run natively.
	wrap=${FC_WRAP:-}
	case " ${FC_WRAP_SKIP:-} " in *" $(basename "$t") "*) wrap= ;; esac
	# shellcheck disable=SC2086
	run_one "$(basename "$t")" $wrap "$t"
done
for s in "$top"/tests/cli/*.sh; do
	[ -f "$s" ] || continue
	run_one "cli/$(basename "$s")" sh "$s"
done

echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
