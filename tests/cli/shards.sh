#!/bin/sh
# tests/cli/shards.sh - one dataset over many workers: --shard I/N and the
# launchers' variables (Slurm array and srun, Open MPI, MPICH), static
# shares that partition the dataset, claims (concurrent workers, a rerun
# that skips finished units, stale claims taken over, a worker killed
# mid-run and rerun), the one-writer lock (a second extract or gc refused
# naming the first, --wait, readers unaffected), and a real `mpirun -np 4`
# when Open MPI is installed. Every worker's store is compared with a
# one-process extract of the whole dataset: together they hold the same
# keys with bit-identical vectors.
NAME=shards
. "$(dirname "$0")/lib.inc"

IMG=$FC_TOOLS/tool_mkimage
MODEL=${FC_TOP:?}/tests/fixtures/models/resnet18_narrow.onnx
X="--model $MODEL --size 64 --batch 4 --quiet"
mk() { "$IMG" "$@" || echo "# tool_mkimage $* failed"; }

# 48 images in 4 classes, 2 of them duplicates of others (dedup across units).
for c in 0 1 2 3; do
	mkdir -p ds/c$c
	for i in 0 1 2 3 4 5 6 7 8 9 10 11; do
		mk ds/c$c/i$i.png $((24 + i * 3)) $((20 + c * 5)) $((c * 100 + i))
	done
done
cp ds/c0/i0.png ds/c3/dup0.png
cp ds/c1/i5.png ds/c2/dup1.png

run "$F" extract --store whole --data ds $X --shard none
t "one process extracts the whole dataset" 0
"$F" embed --store whole --out whole.npy --keys whole.keys -q >/dev/null

# same_as_whole WHAT WHOLE STORE...: together the stores hold exactly the
# keys of WHOLE.keys, each with WHOLE.npy's vector, bit for bit. A key in
# two stores (a unit taken over from a killed worker) must have the same
# vector in both; `featcache merge` keeps one.
same_as_whole() {
	what=$1
	whole=$2
	shift 2
	n=0
	for st in "$@"; do
		# A worker that found every unit taken has an empty store.
		"$F" info --store "$st" --json 2>/dev/null | grep -q '"items": 0,' && continue
		"$F" embed --store "$st" --out "part$n.npy" --keys "part$n.keys" -q >/dev/null 2>"$tmp/err" ||
			{ fail "$what (embed $st: $(cat "$tmp/err"))"; return; }
		n=$((n + 1))
	done
	if [ -z "$PY" ] || ! "$PY" -c 'import numpy' 2>/dev/null; then
		cat part*.keys | LC_ALL=C sort -u >union.keys
		ok_if "$what (keys only: no numpy)" cmp -s union.keys "$whole.keys"
		rm -f part*.npy part*.keys
		return
	fi
	if "$PY" - "$n" "$whole" >"$tmp/pyerr" 2>&1 <<'EOF'; then
import sys, numpy as np
n, w = int(sys.argv[1]), sys.argv[2]
keys = open(w + ".keys").read().split("\n")[:-1]
whole = dict(zip(keys, np.load(w + ".npy")))
seen = {}
for i in range(n):
    ks = open("part%d.keys" % i).read().split("\n")[:-1]
    for k, v in zip(ks, np.load("part%d.npy" % i)):
        assert k not in seen or seen[k].tobytes() == v.tobytes(), "key %s differs between stores" % k
        seen[k] = v
assert sorted(seen) == sorted(whole), (len(seen), len(whole))
for k in whole:
    assert whole[k].tobytes() == seen[k].tobytes(), k
EOF
		pass "$what"
	else
		fail "$what"
		sed 's/^/# /' "$tmp/pyerr"
	fi
	rm -f part*.npy part*.keys
}

# merged_equals WHAT WHOLE STORE...: `featcache merge` of the stores equals
# the one-process store WHOLE: the same embed output byte for byte (all
# splits, keys file too) and the same info figures but for chunk layout.
mn=0
merged_equals() {
	what=$1
	whole=$2
	shift 2
	mn=$((mn + 1))
	"$F" merge --store "merged$mn" -q "$@" >/dev/null 2>"$tmp/err" || { fail "$what (merge: $(cat "$tmp/err"))"; return; }
	"$F" embed --store "$whole" --out w.npy --keys w.keys -q >/dev/null 2>&1
	"$F" embed --store "merged$mn" --out m.npy --keys m.keys -q >/dev/null 2>&1
	"$F" info --store "$whole" --json >w.json 2>/dev/null
	"$F" info --store "merged$mn" --json >m.json 2>/dev/null
	if ! cmp -s w.npy m.npy || ! cmp -s w.keys m.keys; then
		fail "$what (embed differs)"
	elif [ -n "$PY" ] && ! "$PY" -c '
import json, sys
a, b = json.load(open("w.json")), json.load(open("m.json"))
for k in ("items", "items_failed", "labels", "errors", "splits", "data_root"):
    assert a.get(k) == b.get(k), (k, a.get(k), b.get(k))
assert [(e["id"], e["vectors"], e["dim"]) for e in a["extractors"]] == \
       [(e["id"], e["vectors"], e["dim"]) for e in b["extractors"]]
' 2>"$tmp/pyerr"; then
		fail "$what (info differs: $(tail -1 "$tmp/pyerr"))"
	else
		pass "$what"
	fi
}

# ---- who am I ----
for bad in 3/3 -1/2 1/0 x 2 1/2/3 ""; do
	run "$F" extract --store b.st --data ds $X --shard "$bad"
	t "--shard '$bad' is a usage error" 2 err "--shard"
done
ok_if "no store was made by a bad --shard" test ! -e b.st
# The worker line (printed without --quiet) says where the rank came from.
wline() {
	run env -i PATH="$PATH" HOME="$tmp" "$@" "$F" extract --store w.st --data ds --model "$MODEL" --size 64 \
		--batch 4 --units 8 $EXTRA
	rm -rf w.st
}
EXTRA=
wline OMPI_COMM_WORLD_RANK=1 OMPI_COMM_WORLD_SIZE=4
t "mpirun's variables: worker 1 of 4" 0 out "^worker 1 of 4 \(OMPI_COMM_WORLD_RANK\)"
wline PMI_RANK=2 PMI_SIZE=3
t "MPICH's variables: worker 2 of 3" 0 out "^worker 2 of 3 \(PMI_RANK\)"
wline SLURM_ARRAY_TASK_ID=7 SLURM_ARRAY_TASK_MIN=5 SLURM_ARRAY_TASK_MAX=8
t "a Slurm array 5-8, task 7: worker 2 of 4" 0 out "^worker 2 of 4 \(SLURM_ARRAY_TASK_ID\)"
wline SLURM_ARRAY_TASK_ID=3 SLURM_ARRAY_TASK_MIN=0 SLURM_ARRAY_TASK_COUNT=4 SLURM_PROCID=1 SLURM_STEP_NUM_TASKS=2
t "an array task running srun -n 2: worker 3*2+1 of 8" 0 out "^worker 7 of 8 \(SLURM_ARRAY_TASK_ID and SLURM_PROCID\)"
wline SLURM_PROCID=0 SLURM_NTASKS=4
t "a batch script outside srun is not a worker of 4" 0 "!out" "^worker"
wline SLURM_PROCID=3 SLURM_NTASKS=4 SLURM_STEP_NUM_TASKS=4
t "srun -n 4, task 3: worker 3 of 4" 0 out "^worker 3 of 4 \(SLURM_PROCID\)"
EXTRA="--shard none" wline OMPI_COMM_WORLD_RANK=1 OMPI_COMM_WORLD_SIZE=4
t "--shard none overrides the launcher" 0 "!out" "^worker"
run env -i PATH="$PATH" OMPI_COMM_WORLD_RANK=4 OMPI_COMM_WORLD_SIZE=4 "$F" extract --store w.st --data ds $X
t "a rank outside the size is refused" 2 err "OMPI_COMM_WORLD_RANK=4 is not below OMPI_COMM_WORLD_SIZE=4"
run env -i PATH="$PATH" SLURM_ARRAY_TASK_ID=4 SLURM_ARRAY_TASK_MIN=0 SLURM_ARRAY_TASK_MAX=12 \
	SLURM_ARRAY_TASK_STEP=4 "$F" extract --store w.st --data ds $X
t "a stepped Slurm array is refused" 2 err "SLURM_ARRAY_TASK_STEP=4"
run "$F" extract --store "w-{rank}" --data ds $X
t "{rank} without being a worker is refused" 2 err "\{rank\}"
ok_if "nothing was written for the refused runs" test ! -e w.st -a ! -e "w-{rank}"

# ---- static shares ----
for r in 0 1 2; do
	run "$F" extract --store "st-{rank}" --data ds $X --shard $r/3
	t "worker $r of 3 extracts its share" 0
done
ok_if "each worker wrote st-<rank>" test -d st-0 -a -d st-1 -a -d st-2
n0=$("$F" info --store st-0 --json | grep -o '"items": [0-9]*' | grep -o '[0-9]*$')
ok_if "a share is a part, not the whole (st-0 has $n0 of 50 items)" test "${n0:-0}" -gt 0 -a "${n0:-50}" -lt 50
same_as_whole "three shares hold the whole dataset once, same vectors" whole st-0 st-1 st-2
merged_equals "merged, the three shares equal the one-process store (info, embed)" whole st-0 st-1 st-2
run "$F" extract --store st-1 --data ds $X --shard 1/3
t "a shard's rerun has nothing to do" 0
run "$F" extract --store st-1 --data ds --model "$MODEL" --size 64 --batch 4 --shard 1/3
t "... and says so" 0 out "^images: 0 extracted" out "0 removed"

# Shards run one after another into one store: the second leaves the
# first's items alone, and the store ends up whole.
run "$F" extract --store seq --data ds $X --shard 0/2
t "shard 0 of 2 into one store" 0
run "$F" extract --store seq --data ds --model "$MODEL" --size 64 --batch 4 --shard 1/2
t "shard 1 of 2 into the same store removes nothing" 0 out " 0 removed$"
run "$F" extract --store seq --data ds --model "$MODEL" --size 64 --batch 4 --shard none
t "the store is then whole: nothing new" 0 out "^items: 50 seen, 0 new, 0 changed, 0 removed$"
same_as_whole "two shares in one store equal the whole" whole seq

# ---- claims ----
"$F" extract --store "cl-{rank}" --data ds $X --shard 0/2 --units 16 --claims claims >/dev/null &
p0=$!
"$F" extract --store "cl-{rank}" --data ds $X --shard 1/2 --units 16 --claims claims >/dev/null &
p1=$!
wait $p0
r0=$?
wait $p1
r1=$?
rc=$((r0 + r1))
t "two workers take units through claims" 0
ok_if "every unit has one done marker, no claim is left" \
	test "$(ls claims | grep -c '\.done$')" -eq 16 -a "$(ls claims | grep -c '\.claim')" -eq 0
same_as_whole "the claimed units hold the whole dataset once" whole cl-0 cl-1
merged_equals "merged, the claimed units equal the one-process store" whole cl-0 cl-1
run "$F" extract --store "cl-{rank}" --data ds --model "$MODEL" --size 64 --batch 4 --shard 0/2 --units 16 \
	--claims claims
t "a rerun skips finished units" 0 out "^units: 0 done by this worker, 16 of 16 by all"
run "$F" extract --store "cl-{rank}" --data ds $X --shard 0/2 --units 32 --claims claims
t "another unit count is refused" 1 err "made for another split"

# Stale claims: one of a dead process on this host (taken at once), one of
# another host whose heartbeat stopped an hour ago (taken after the
# timeout), one of another host that is alive (left alone).
mkdir stale
printf 'units 8\n' >stale/plan
sh -c 'exit 0' &
dead=$!
wait $dead
printf 'host %s pid %s since 0\n' "$(hostname)" "$dead" >stale/u00000000.claim
printf 'host elsewhere pid 1 since 0\n' >stale/u00000001.claim
touch -d '1 hour ago' stale/u00000001.claim
printf 'host elsewhere pid 1 since 0\n' >stale/u00000002.claim
run "$F" extract --store stale.st --data ds --model "$MODEL" --size 64 --batch 4 --units 8 --claims stale \
	--claim-timeout 60 --shard 0/1
t "stale claims are taken over" 0 out "^unit 0 \(taken over" out "^unit 1 \(taken over" "!out" "^unit 2 "
ok_if "the live claim is left, its unit not done" test -e stale/u00000002.claim -a ! -e stale/u00000002.done
ok_if "the others are done" test "$(ls stale | grep -c '\.done$')" -eq 7

# A worker killed mid-run: the rest finish, its rerun takes its claim back.
rm -rf big
mkdir -p big/a big/b
i=0
while [ $i -lt 100 ]; do
	mk big/a/$i.png 384 384 $((1000 + i))
	mk big/b/$i.png 384 384 $((2000 + i))
	i=$((i + 1))
done
"$F" extract --store bigwhole --data big --model "$MODEL" --size 192 --batch 1 --threads 1 -q --shard none >/dev/null
"$F" embed --store bigwhole --out bigwhole.npy --keys bigwhole.keys -q >/dev/null
"$F" extract --store "k-{rank}" --data big --model "$MODEL" --size 192 --batch 1 --threads 1 -q --shard 0/2 \
	--units 8 --claims kc >/dev/null 2>&1 &
victim=$!
n=0
# Two units done and a third claimed (not the moment between a unit's
# done marker and the next claim); 8 units of 25 images each, so a unit
# takes a while even on a fast machine.
while { [ "$(ls kc 2>/dev/null | grep -c '\.done$')" -lt 2 ] || [ "$(ls kc | grep -c '\.claim$')" -ne 1 ]; } &&
	[ $n -lt 3000 ] && kill -0 $victim 2>/dev/null; do
	sleep 0.005
	n=$((n + 1))
done
if kill -9 $victim 2>/dev/null; then
	wait $victim 2>/dev/null
	held=$(ls kc | grep -c '\.claim$')
	ok_if "the killed worker left its claim ($held)" test "$held" -eq 1
	run "$F" extract --store "k-{rank}" --data big --model "$MODEL" --size 192 --batch 1 --threads 1 --shard 1/2 \
		--units 8 --claims kc
	t "the other worker takes the dead worker's claim over at once, and the rest" 0 \
		out "taken over from a stale claim"
	run "$F" extract --store "k-{rank}" --data big --model "$MODEL" --size 192 --batch 1 --shard 0/2 --units 8 \
		--claims kc
	t "the killed worker's rerun finds nothing left" 0 out "^units: 0 done by this worker"
	ok_if "all 8 units are done" test "$(ls kc | grep -c '\.done$')" -eq 8
	run "$F" verify --store k-0
	t "the killed worker's store verifies" 0
	same_as_whole "killed and taken over: the stores hold the whole dataset" bigwhole k-0 k-1
	merged_equals "merged, a killed worker's and its heir's stores equal the one-process store" bigwhole k-0 k-1
else
	wait $victim
	echo "ok - a worker killed mid-run # SKIP it finished before the kill"
fi

# ---- one writer ----
"$F" extract --store lk --data big --model "$MODEL" --size 192 --batch 1 --threads 1 -q --shard none >/dev/null &
first=$!
n=0
until grep -q extract lk/writer.lock 2>/dev/null || [ $n -ge 200 ]; do
	sleep 0.05
	n=$((n + 1))
done
run "$F" extract --store lk --data big --model "$MODEL" --size 192 --batch 1 --shard none
r_extract=$rc
cp "$tmp/err" lk.err
run "$F" gc --store lk
r_gc=$rc
cp "$tmp/err" gc.err
run "$F" info --store lk
r_info=$rc
if kill -0 $first 2>/dev/null; then
	rc=$r_extract
	cp lk.err "$tmp/err"
	t "a second extract is refused, naming the first" 1 err "another process writes to it \(extract, pid $first on "
	rc=$r_gc
	cp gc.err "$tmp/err"
	t "so is gc" 1 err "pid $first"
	rc=$r_info
	t "a reader is unaffected" 0
	if kill -0 $first 2>/dev/null; then
		run "$F" merge --store lk whole
		t "so is merge into it" 1 err "pid $first"
	else
		echo "ok - so is merge into it # SKIP the first finished meanwhile"
	fi
	run "$F" extract --store lk --data big --model "$MODEL" --size 192 --batch 1 --shard none --wait
	t "--wait waits for the first, then finds nothing to do" 0 out "^images: 0 extracted"
	wait $first
else
	wait $first
	echo "ok - a second writer is refused # SKIP the first finished too soon"
fi
run "$F" gc --store lk
t "with no other writer gc runs" 0

# ---- sweeps over many workers ----
"$MK" --store ts --dim 16 --items 800 --classes 6 --noise 300 --mixed-splits --dtype f32 >/dev/null
spec="--grid batch_size=32,64 --grid lr=1e-3,3e-3 --grid output-dim=8,16 --epochs 2 --seed 5 -q"
run "$F" sweep --store ts --out sw-full $spec --shard none
t "a one-process sweep" 0
strip() { sed 's/"seconds":[0-9.e+-]*,\{0,1\}//g; s/"samples_per_s":[0-9.e+-]*,\{0,1\}//g' "$1"; }
# same_sweep WHAT DIR: DIR's combined results, table ranks, and every head
# equal the one-process sweep's, but for timings.
same_sweep() {
	strip sw-full/results.jsonl >a.res
	strip "$2/results.jsonl" >b.res
	cut -d, -f1-5 sw-full/results.csv >a.csv
	cut -d, -f1-5 "$2/results.csv" >b.csv 2>/dev/null
	same=1
	for h in sw-full/c*.safetensors sw-full/best.safetensors; do cmp -s "$h" "$2/${h#sw-full/}" || same=0; done
	ok_if "$1" [ $same -eq 1 ] && cmp -s a.res b.res && cmp -s a.csv b.csv
}
run "$F" sweep --store ts --out sw-1 $spec --shard 1/3
t "worker 1 of 3 trains its share and waits for the others" 0 out "^sweep: 3 of 8 configurations done" \
	"!out" "^best:"
ok_if "... into its own results file" test -s sw-1/results.shard-1-of-3.jsonl -a ! -e sw-1/results.jsonl
run "$F" sweep --collect --out sw-1
t "--collect before every worker is done is an error" 1 err "not every configuration is done"
"$F" sweep --store ts --out sw-1 $spec --shard 0/3 >/dev/null 2>&1 &
a=$!
"$F" sweep --store ts --out sw-1 $spec --shard 2/3 >/dev/null 2>&1 &
b=$!
wait $a
ra=$?
wait $b
rc=$((ra + $?))
t "workers 0 and 2 run at once" 0
same_sweep "three workers' sweep equals the one-process sweep: results, ranks, heads" sw-1
rm -f sw-1/results.jsonl sw-1/results.csv sw-1/best.safetensors
run "$F" sweep --collect --out sw-1
t "--collect writes the combined results" 0 out "^best: "
same_sweep "... the same as the workers did" sw-1
run "$F" sweep --store ts --out sw-1 --grid lr=1e-3,1e-2 --shard 0/2
t "another sweep into a worker's directory is refused" 1 err "holds another sweep"

# ---- a real launcher ----
if command -v mpirun >/dev/null 2>&1; then
	root=
	[ "$(id -u)" -eq 0 ] && root=--allow-run-as-root
	run mpirun $root --oversubscribe -np 4 "$F" extract --store "mpi-{rank}" --data ds $X
	t "mpirun -np 4 runs four workers" 0
	ok_if "each wrote its store" test -d mpi-0 -a -d mpi-1 -a -d mpi-2 -a -d mpi-3
	same_as_whole "mpirun's four stores hold the whole dataset once" whole mpi-0 mpi-1 mpi-2 mpi-3
	merged_equals "mpirun -np 4 then merge equals a one-process extract (info, embed)" whole mpi-0 mpi-1 mpi-2 mpi-3
	run mpirun $root --oversubscribe -np 2 "$F" sweep --store ts --out sw-mpi $spec
	t "mpirun -np 2 sweeps" 0 out "^best: "
	same_sweep "mpirun's sweep equals the one-process sweep" sw-mpi
else
	echo "ok - mpirun -np 4 # SKIP Open MPI is not installed (tools/deps.sh installs openmpi-bin)"
fi

exit $((failures > 0))
