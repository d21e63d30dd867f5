#!/bin/sh
# tests/cli/store.sh - the store commands (info, verify, gc) and the command
# layer around them (help, --version, usage errors, exit codes, checked
# stdout), on synthetic stores made by tests/tool_mkstore and damaged by it.
#
# Prints TAP lines ("ok - what" / "not ok - what") and exits non-zero if any
# check failed. Binaries come from $FEATCACHE and $FC_TOOLS (tests/run.sh
# sets both); everything happens in a fresh temporary directory.
NAME=store
. "$(dirname "$0")/lib.inc"

# ---- the command layer ----

run "$F" --version
t "--version prints the version" 0 out '^featcache 0\.1\.0$' '!err' '.'
ok_if "--version prints one line" [ "$(wc -l <out)" -eq 1 ]

run "$F" help
t "help lists the commands" 0 out '^  info  ' out '^  verify  ' out '^  gc  ' out '^  help  '
cp out help.txt
run "$F" --help
ok_if "--help is help" cmp -s out help.txt
run "$F"
t "no command is a usage error" 2 err '^usage: featcache ' '!out' '.'

run "$F" help info
t "help info shows the info options" 0 out '^usage: featcache info ' out '--json' out '--store'
cp out help-info.txt
run "$F" info --help
ok_if "info --help is help info" cmp -s out help-info.txt
for c in verify gc help; do
	run "$F" help "$c"
	t "help $c" 0 out "^usage: featcache $c"
	run "$F" "$c" --help
	t "$c --help" 0 out "^usage: featcache $c"
done

run "$F" frobnicate
t "unknown command exits 2" 2 err "^featcache: 'frobnicate' is not a featcache command" \
	err "^see 'featcache help'$" '!out' '.'
run "$F" inf
t "a misspelt command gets a suggestion" 2 err "did you mean 'info'"
run "$F" help frobnicate
t "help for an unknown command exits 2" 2 err "'frobnicate' is not a featcache command"
run "$F" --frobnicate
t "unknown global option exits 2" 2 err "unknown option '--frobnicate'"

run "$F" info --bogus --store x
t "unknown option exits 2 with a hint" 2 err "^featcache: unknown option '--bogus'$" \
	err "^see 'featcache help info'$"
run "$F" verify -z
t "unknown short option exits 2" 2 err "unknown option '-z'" err "see 'featcache help verify'"
run "$F" info --store
t "an option without its value exits 2" 2 err "option '--store' needs a value"
run "$F" gc --json=yes --store x
t "a value for a flag exits 2" 2 err "option '--json' takes no value" err "help gc'"
run "$F" info --store x --errors abc
t "a bad number exits 2 with the reason" 2 err "bad value 'abc' for --errors: expected a non-negative integer"
run "$F" info --store x --errors -3
t "a negative number exits 2" 2 err "bad value '-3' for --errors"
run "$F" info --store x --errors 99999999999999999999999
t "an out-of-range number exits 2" 2 err "bad value '9+' for --errors: must be from 0 to"
run "$F" info --store x extra
t "a stray argument exits 2" 2 err "unexpected argument 'extra'"
for c in info verify gc; do
	run "$F" "$c"
	t "$c without a store exits 2" 2 err "no store given: use --store DIR or set FEATCACHE_STORE" \
		err "see 'featcache help $c'"
done
run "$F" info --store ''
t "an empty --store exits 2" 2 err "bad value '' for --store"

# ---- info ----

run "$MK" --store s1 --dim 32 --items 100 --classes 4 --dup 5 --failed 3 --batch 16 --seed 7
t "tool_mkstore makes a store" 0 out '^extractor [0-9a-f]{32}$' out '^items 100 failed 3 vectors 95$'
ex=$(sed -n 's/^extractor //p' out)
data_sum=$(cksum <s1/data.mdb)

run "$F" info --store s1
t "info shows items and failed items" 0 out '^items +103 \(3 failed\)$' '!err' '.'
t "info shows labels" 0 out '^labels +4$'
t "info shows the splits" 0 out '^splits +train 70, val 10, test 10, none 13$'
t "info shows the error count" 0 out '^errors +3$'
t "info shows the file size" 0 out "^file size +$(wc -c <s1/data.mdb | tr -d ' ') bytes"
t "info shows the vectors per store" 0 out '^vectors +95, [0-9.]+ bytes each on disk'
t "info names the extractor" 0 out "^extractor $ex$" out '^extractors +1$'
t "info shows dim, dtype, codec" 0 out '^  dim +32$' out '^  dtype +f16$' \
	out '^  codec +shuffle-zstd \(level 3\)$'
t "info shows vectors and chunks" 0 out '^  vectors +95 \(95 slots, 0 dead\)$' out '^  chunks +6, [0-9]+ bytes encoded'
t "info shows bytes per vector and compression" 0 out '^  on disk +[0-9]+ bytes, [0-9.]+ per vector$' \
	out '^  compression +[0-9.]+x'
t "info shows the descriptor" 0 out '^  model +synthetic$'
t "info lists the error records" 0 out '^errors \(3\):$' \
	out '^  bad/00000\.jpg: cannot decode image' out '^  bad/00002\.jpg: '
cp out info-s1.txt

run env FEATCACHE_STORE="$tmp/s1" "$F" info
t "info takes the store from FEATCACHE_STORE" 0 out '^items +103 '
run env FEATCACHE_STORE="$tmp/nonexistent" "$F" info --store s1
t "--store wins over FEATCACHE_STORE" 0 out '^items +103 '

run "$F" info --store s1 --errors 1
t "--errors limits the records listed" 0 out '^errors \(3, first 1 shown\):$' '!out' 'bad/00001'
run "$F" info --store s1 --errors 0
t "--errors 0 lists none" 0 '!out' '^errors \(' out '^errors +3$'

run "$F" info --store s1 --json
t "info --json" 0 out '^\{$' out '^  "items": 103,$' out '^  "vectors": 95,$' '!err' '.'
cp out info-s1.json
py "info --json is one JSON object with the same figures" info-s1.json "
import json, os, sys
d = json.load(open(sys.argv[1]))
assert d['items'] == 103 and d['items_failed'] == 3, d
assert d['labels'] == 4 and d['errors'] == 3, d
assert d['splits'] == {'train': 70, 'val': 10, 'test': 10, 'none': 13}, d['splits']
assert [r['key'] for r in d['error_records']] == ['bad/00000.jpg', 'bad/00001.jpg', 'bad/00002.jpg']
assert all(r['reason'].startswith('cannot decode image') for r in d['error_records'])
assert d['file_bytes'] == os.path.getsize('s1/data.mdb'), d['file_bytes']
assert d['vectors'] == 95
assert abs(d['file_bytes_per_vector'] - d['file_bytes'] / 95) < 1e-3
[e] = d['extractors']
assert e['id'] == '$ex', e['id']
assert (e['dim'], e['dtype'], e['codec'], e['level']) == (32, 'f16', 'shuffle-zstd', 3), e
assert (e['vectors'], e['slots'], e['chunks']) == (95, 95, 6), e
assert e['chunk_bytes'] > 0 and e['disk_bytes'] >= e['chunk_bytes'], e
assert abs(e['disk_bytes_per_vector'] - e['disk_bytes'] / 95) < 1e-3
assert abs(e['encoded_bytes_per_vector'] - e['chunk_bytes'] / 95) < 1e-3
assert abs(e['compression_ratio'] - 95 * 32 * 4 / e['chunk_bytes']) < 1e-4
assert e['compression_ratio'] > 1.0, e['compression_ratio']
assert e['descriptor']['model'] == 'synthetic'
text = open('info-s1.txt').read()
assert '%d bytes encoded' % e['chunk_bytes'] in text
assert '%d bytes, ' % e['disk_bytes'] in text
"
ok_if "info and --json leave data.mdb as it was" [ "$(cksum <s1/data.mdb)" = "$data_sum" ]

run "$MK" --store s2 --dim 16 --items 10 --classes 2 --dtype f32 --codec raw --extractors 2
t "tool_mkstore makes a two-extractor f32 store" 0
run "$F" info --store s2 --json
t "info on two extractors" 0 out '"dtype": "f32"' out '"codec": "raw"'
py "raw f32 has no compression to speak of" out "
import json, sys
d = json.load(open(sys.argv[1]))
assert len(d['extractors']) == 2
for e in d['extractors']:
    assert e['vectors'] == 10 and e['dim'] == 16
    assert 0.5 < e['compression_ratio'] <= 1.0, e['compression_ratio']
"
run "$F" info --store s2
t "info text on two extractors" 0 out '^extractors +2$' out '^  codec +raw$'
ok_if "info text shows both" [ "$(grep -c '^extractor ' out)" -eq 2 ]

run "$MK" --store s0 --items 0 --classes 1
t "tool_mkstore makes an empty store" 0
run "$F" info --store s0
t "info on an empty store" 0 out '^items +0 \(0 failed\)$' out '^vectors +0$'
run "$F" info --store s0 --json
py "info --json on an empty store" out "
import json, sys
d = json.load(open(sys.argv[1]))
assert d['vectors'] == 0 and d['file_bytes_per_vector'] is None, d
e = d['extractors'][0]
assert e['vectors'] == 0 and e['compression_ratio'] is None and e['disk_bytes_per_vector'] is None, e
"

# ---- verify ----

run "$F" verify --store s1
t "verify on a sound store" 0 out '^checked [0-9]+ records: ok$' '!err' '.'
run "$F" verify --store s1 --quiet
t "verify --quiet on a sound store prints nothing" 0 '!out' '.' '!err' '.'
ok_if "verify leaves data.mdb as it was" [ "$(cksum <s1/data.mdb)" = "$data_sum" ]

cp -R s1 dc
run "$MK" --store dc --corrupt-chunk 2
t "tool_mkstore flips a bit in a chunk" 0 out "^corrupted feat\.$ex/chunk 2$"
run "$F" verify --store dc
t "verify finds a damaged chunk" 1 err "^featcache: verify: feat\.$ex/chunk 2: " \
	out '^checked [0-9]+ records: [0-9]+ problems?$'
t "verify counts the index entries of the damaged chunk with it" 1 \
	err "^featcache: verify: feat\.$ex/chunk 2: .*; 16 index entries point at it"
run "$F" verify --store dc --quiet
t "verify --quiet still reports damage" 1 err "feat\.$ex/chunk 2: " out 'problems?$'
run "$F" info --store dc
t "info shows the damage the last verify recorded, and the rest" 1 out '^items +103 ' \
	out '^damage +1 problem \(1 damaged chunk, 16 vectors to re-extract\), found by verify ' \
	err "^featcache: store 'dc' has damage that verify found: run 'featcache verify --store dc --repair'$"
run "$F" gc --store dc
t "gc refuses a damaged chunk, names it and points at the repair" 1 \
	err "^featcache: cannot collect garbage in store 'dc': .*chunk 2: .*; run 'featcache verify --store dc --repair'$"

cp -R s1 dl
run "$MK" --store dl --corrupt-chunk last
t "tool_mkstore damages the last chunk" 0 out "^corrupted feat\.$ex/chunk [0-9]+$"
last=$(sed -n 's/^corrupted .*chunk //p' out)
run "$F" verify --store dl
t "verify finds a damaged last chunk" 1 err "^featcache: verify: feat\.$ex/chunk $last: "

cp -R s1 di
run "$MK" --store di --corrupt-index
t "tool_mkstore breaks an index entry" 0 out "^corrupted index\.$ex/[0-9a-f]{32}$"
bad=$(sed -n 's/^corrupted //p' out)
run "$F" verify --store di
t "verify finds a broken index entry" 1 err "^featcache: verify: $bad: " \
	out '^checked [0-9]+ records: 1 problem$'

cp -R s1 dt
run "$MK" --store dt --corrupt-item bad/00001.jpg
t "tool_mkstore truncates an item record" 0 out '^corrupted items/bad/00001\.jpg$'
run "$F" verify --store dt
t "verify finds a truncated item record" 1 err '^featcache: verify: items/bad/00001\.jpg: '
run "$F" info --store dt
t "info on a truncated item record shows the rest and fails clearly" 1 \
	err "^featcache: store 'dt' has 1 damaged records: run 'featcache verify --store dt'"
t "info on a truncated item record still counts the sound items" 1 out '^items +102 '

cp -R s1 dd
run "$MK" --store dd --corrupt-descriptor
t "tool_mkstore breaks an extractor descriptor" 0 out "^corrupted extractors/$ex$"
run "$F" verify --store dd
t "verify finds a broken descriptor" 1 err "^featcache: verify: extractors/$ex: "

cp -R s1 df
run "$MK" --store df --set-format 99
t "tool_mkstore sets a future format" 0 out '^corrupted meta/format = 99$'
for c in verify info gc; do
	run "$F" "$c" --store df
	t "$c refuses a newer store format" 1 \
		err "^featcache: cannot open store 'df': store format 99 is newer than this featcache"
done

# ---- gc ----

run "$MK" --store g --items 64 --batch 8 --dim 24 --failed 2 --seed 3
t "tool_mkstore makes a store for gc" 0 out '^items 64 failed 2 vectors 64$'
run "$MK" --store g --remove-items 22
t "tool_mkstore removes items" 0 out '^removed 22 items$'
run "$F" info --store g
t "removed items leave their vectors" 0 out '^items +44 \(0 failed\)$' out '^  vectors +64 '
run "$F" gc --store g
t "gc drops the orphaned vectors" 0 out '^index entries dropped +20$' out '^slots dropped +20$' \
	out '^chunk bytes +[0-9]+ -> [0-9]+ ' '!err' '.'
run "$F" info --store g
t "after gc only live vectors remain" 0 out '^  vectors +44 \(44 slots, 0 dead\)$'
run "$F" verify --store g
t "the store is sound after gc" 0 out ': ok$'
run "$F" gc --store g --json
t "a second gc has nothing to do" 0 out '"index_dropped": 0,' out '"slots_dropped": 0,'
py "gc --json is one JSON object" out "
import json, sys
d = json.load(open(sys.argv[1]))
assert d['chunks_rewritten'] == 0 and d['chunks_dropped'] == 0, d
assert d['chunk_bytes_before'] == d['chunk_bytes_after'] > 0, d
"
run "$F" gc --store g
t "gc says when there is nothing to collect" 0 out '^nothing to collect$'

# Items 30..39 share the content of items 0..9; removing the first 8 class0
# items (contents 0, 4, ..., 28) orphans only the 5 that no copy still uses.
run "$MK" --store gd --items 40 --dup 10 --classes 4 --batch 4
t "tool_mkstore makes a store with shared content" 0 out 'vectors 30$'
run "$MK" --store gd --remove-items 8
run "$F" gc --store gd --json
t "gc keeps content another item still uses" 0 out '"index_dropped": 5,'
run "$F" info --store gd
t "shared content survives gc" 0 out '^  vectors +25 \(25 slots, 0 dead\)$'
run "$F" verify --store gd
t "the shared-content store is sound after gc" 0 out ': ok$'

# ---- what is not a store ----

mkdir nd nd/sub
printf 'some data\n' >nd/a.txt
printf 'x' >nd/sub/b.bin
before=$(fingerprint nd)
for c in info verify gc; do
	run "$F" "$c" --store nd
	t "$c on a directory that is not a store fails clearly" 1 \
		err "^featcache: .*'nd'.* not a featcache store" '!out' '.'
done
ok_if "the directory that is not a store is untouched" [ "$(fingerprint nd)" = "$before" ]

mkdir empty
for c in info verify gc; do
	run "$F" "$c" --store empty
	t "$c on an empty directory fails clearly" 1 err "'empty'.* not a featcache store"
done
ok_if "the empty directory stays empty" [ -z "$(ls -A empty)" ]

mkdir junk
printf 'this is not an lmdb file\n' >junk/data.mdb
junk_sum=$(cksum <junk/data.mdb)
run "$F" info --store junk
t "info on a junk data.mdb fails clearly" 1 err "'junk'.* not a featcache store"
run "$F" gc --store junk
t "gc on a junk data.mdb fails clearly" 1 err "'junk'.* not a featcache store"
ok_if "the junk data.mdb is untouched" [ "$(cksum <junk/data.mdb)" = "$junk_sum" ]

for c in info verify gc; do
	run "$F" "$c" --store nowhere
	t "$c on a nonexistent path fails" 1 err "^featcache: cannot open store 'nowhere': "
done
ok_if "a nonexistent store is not created" [ ! -e nowhere ]

run "$F" info --store nd/a.txt
t "a file as the store fails" 1 err "^featcache: cannot open store 'nd/a\.txt': not a directory"

# Permissions: root reads anything, so as root run the command as nobody
# when setpriv can do that, and skip otherwise.
cp -R s1 locked
as=
if [ "$(id -u)" -eq 0 ]; then
	as=none
	if command -v setpriv >/dev/null 2>&1 && chmod 755 "$tmp" &&
		setpriv --reuid=65534 --regid=65534 --clear-groups "$F" --version >/dev/null 2>&1; then
		as="setpriv --reuid=65534 --regid=65534 --clear-groups"
	fi
fi
chmod 000 locked
if [ "$as" = none ]; then
	echo "ok - info on an unreadable store fails # SKIP root"
	echo "ok - verify on an unreadable store fails # SKIP root"
else
	# shellcheck disable=SC2086 # $as is a command prefix
	run $as "$F" info --store "$tmp/locked"
	t "info on an unreadable store fails" 1 err "^featcache: cannot open store '$tmp/locked': "
	# shellcheck disable=SC2086
	run $as "$F" verify --store "$tmp/locked"
	t "verify on an unreadable store fails" 1 err "^featcache: cannot open store '$tmp/locked': "
fi
chmod 755 locked
chmod 700 "$tmp"

# ---- a full stdout ----

if [ -w /dev/full ]; then
	for args in "info --store s1" "info --store s1 --json" "verify --store s1" "gc --store g" \
		"help" "--version"; do
		# shellcheck disable=SC2086 # word splitting is the point
		"$F" $args >/dev/full 2>err
		rc=$?
		: >out
		t "$args > /dev/full exits 1" 1 err '^featcache: cannot write standard output: no space left on device$'
	done
else
	echo "ok - writing to a full stdout fails # SKIP no /dev/full"
fi

[ "$failures" -eq 0 ]
