#!/bin/sh
# tests/cli/sweep.sh - sweep end to end on a small synthetic store: the grid
# expands in order, random draws stay in their ranges, bad specs are usage
# errors, heads trained together on shared batches are bit-identical to
# separate `featcache train` runs, a killed sweep resumes to the results of
# an uninterrupted one, another sweep into the same directory is refused,
# and results.csv / results.jsonl parse.
NAME=sweep
. "$(dirname "$0")/lib.inc"

run "$MK" --store s --dim 32 --items 2400 --classes 8 --noise 300 --mixed-splits --dtype f32
t "tool_mkstore makes a training store" 0
export OMP_NUM_THREADS=2

# 2 x 2 x 2: batch size 32 and 64 make two groups of 4 (lr and output_dim vary inside).
run "$F" sweep --store s --out g --grid lr=1e-3,3e-3 --grid output-dim=8,16 --grid batch_size=32,64 \
	--epochs 2 --seed 3
t "a grid sweep runs" 0 out '^rank +id +lr +output_dim +batch_size +epoch +average_precision +seconds' \
	out "^best: c000[0-7], head 'g/c000[0-7].safetensors'" err 'group 2/2, epoch 2/2: 4 heads'
ids=$(sed 's/^{"id":"\(c[0-9]*\)".*/\1/' g/results.jsonl | LC_ALL=C sort | tr '\n' ' ')
ok_if "8 configurations, ids c0000..c0007 ($ids)" [ "$ids" = "c0000 c0001 c0002 c0003 c0004 c0005 c0006 c0007 " ]
ok_if "one head and log per configuration, and the best one" [ -s g/c0007.safetensors ] &&
	[ -s g/c0000.safetensors.jsonl ] && [ -s g/best.safetensors ] && [ "$(wc -l <g/results.csv)" -eq 9 ]
ok_if "the last grid key varies fastest (c0005: lr 3e-3, output_dim 8, batch 64)" \
	grep -q '^c0005,0.003,8,64,' g/results.csv

# Each of these must match a separate train run bit for bit: three of the
# batch-32 group (two lrs, two output dims) and one of the batch-64 group.
for spec in "c0000 1e-3 8 32" "c0003 1e-3 16 64" "c0004 3e-3 8 32" "c0006 3e-3 16 32"; do
	set -- $spec
	"$F" train --store s --out "$1.safetensors" --lr "$2" --output-dim "$3" --batch-size "$4" --epochs 2 \
		--seed 3 -q >/dev/null 2>&1
	"$F" embed --store s --head "$1.safetensors" --split val --out "$1.train.npy" >/dev/null 2>&1
	"$F" embed --store s --head "g/$1.safetensors" --split val --out "$1.sweep.npy" >/dev/null 2>&1
	ok_if "$1 (lr $2, output_dim $3, batch $4) embeds exactly as a separate train run" \
		cmp -s "$1.train.npy" "$1.sweep.npy"
	grep -o '"metrics":{[^}]*}' "$1.safetensors.jsonl" >"$1.train.m"
	grep -o '"metrics":{[^}]*}' "g/$1.safetensors.jsonl" >"$1.sweep.m"
	ok_if "$1 has train's per-epoch metrics" sh -c "[ \$(wc -l <$1.train.m) -eq 2 ] && cmp -s $1.train.m $1.sweep.m"
	ok_if "$1's head file is byte for byte train's" cmp -s "$1.safetensors" "g/$1.safetensors"
done

py "results.jsonl: one object per configuration with train's config and 2 epochs" g/results.jsonl '
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 8
for l in lines:
    assert set(l) >= {"id", "config", "swept", "before", "epochs", "best_epoch", "best", "seconds"}, l.keys()
    assert abs(l["config"]["lr"] - l["swept"]["lr"]) < 1e-9
    assert l["config"]["output_dim"] == l["swept"]["output_dim"] and l["config"]["epochs"] == 2
    assert [e["epoch"] for e in l["epochs"]] == [1, 2] and 1 <= l["best_epoch"] <= 2
    assert l["best"] == l["epochs"][l["best_epoch"] - 1]["metrics"]'
py "results.csv: a header and 8 rows sorted by average_precision" g/results.csv '
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert len(rows) == 8 and list(rows[0])[:5] == ["id", "lr", "output_dim", "batch_size", "best_epoch"], list(rows[0])
ap = [float(r["average_precision"]) for r in rows]
assert ap == sorted(ap, reverse=True), ap
assert open("g/best.safetensors", "rb").read() == open("g/%s.safetensors" % rows[0]["id"], "rb").read()'

# --metric takes train's short names and ranks by their real values: the
# table, results.csv and best.safetensors agree (issue 16: 'map' ranked
# every configuration at 0 in id order).
for m in "map average_precision" "ndcg ndcg_at_k"; do
	set -- $m
	run "$F" sweep --store s --out "m-$1" --grid lr=1e-3,3e-3,1e-2 --epochs 2 --output-dim 8 --seed 3 --metric "$1"
	t "sweep --metric $1 runs" 0 out "^rank +id +lr +epoch +$1 +seconds"
	cp "$tmp/out" "m-$1.out"
	py "sweep --metric $1 ranks by $2 in its table, results.csv and best head" "m-$1/results.csv" '
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
v = [float(r["'"$2"'"]) for r in rows]
assert len(rows) == 3 and min(v) > 0 and v == sorted(v, reverse=True), v
table = [l.split() for l in open("m-'"$1"'.out") if l[:1].isdigit()]
assert [t[1] for t in table] == [r["id"] for r in rows], (table, rows)
assert all(abs(float(t[4]) - x) < 6e-5 for t, x in zip(table, v)), (table, v)
best = open("m-'"$1"'/best.safetensors", "rb").read()
assert best == open("m-'"$1"'/%s.safetensors" % rows[0]["id"], "rb").read()'
done
run "$F" sweep --store s --out bad --grid lr=1e-3,1e-2 --metric mean_ap
t "an unknown --metric is a usage error naming the accepted names" 2 \
	err "unknown metric 'mean_ap' for --metric: expected precision_at_k \\(precision\\), .*average_precision \\(map, ap\\), .* or ndcg_at_k \\(ndcg\\)$"
run "$F" sweep --store s --out bad --grid lr=1e-3,1e-2 --early-stop MAP:2
t "an unknown --early-stop metric is a usage error naming the accepted names" 2 \
	err "unknown metric 'MAP' for --early-stop: expected .*average_precision \\(map, ap\\)"

# Random search: 5 draws x 2 losses, log-uniform lr, linear margin, integer output_dim.
run "$F" sweep --store s --out r --random 5 --range lr=1e-4:1e-2:log --range margin=0.1:0.4 \
	--range output_dim=4:20 --grid loss=triplet,siamese --epochs 1 --batch-size 32 --seed 9 -q
t "a random search runs" 0 out '^rank +id +lr +margin +output_dim +loss '
ok_if "10 configurations" [ "$(wc -l <r/results.jsonl)" -eq 10 ]
ok_if "every draw lies in its range, output_dim an integer" awk -F, 'NR > 1 {
	if ($2 < 1e-4 || $2 > 1e-2 || $3 < 0.1 || $3 > 0.4 || $4 < 4 || $4 > 20 || $4 != int($4)) bad = 1; n++ }
	END { exit bad || n != 10 }' r/results.csv
run "$F" sweep --store s --out r2 --random 5 --range lr=1e-4:1e-2:log --range margin=0.1:0.4 \
	--range output_dim=4:20 --grid loss=triplet,siamese --epochs 1 --batch-size 32 --seed 9 -q
ok_if "the same seed draws the same configurations" cmp -s r/sweep.json r2/sweep.json

# Bad specs: usage errors with a reason, nothing created.
run "$F" sweep --store s --out bad --grid nonsense=1,2
t "an unknown key is a usage error" 2 err "unknown key 'nonsense'"
run "$F" sweep --store s --out bad --grid lr=1e-3,abc
t "a bad grid value is a usage error naming the option" 2 err "bad value 'abc' for --lr"
run "$F" sweep --store s --out bad --grid loss=triplet,magic
t "an unknown loss in the grid is a usage error" 2 err "unknown loss 'magic'"
run "$F" sweep --store s --out bad --random 3 --range lr=1e-2:1e-4
t "a range with lo >= hi is a usage error" 2 err 'empty'
run "$F" sweep --store s --out bad --random 3 --range margin=0:1:log
t "a log range from 0 is a usage error" 2 err 'above 0'
run "$F" sweep --store s --out bad --random 3 --range lr=1e-4:x
t "a range bound that is not a number is a usage error" 2 err "'x' is not a number"
run "$F" sweep --store s --out bad --random 3 --range loss=1:2
t "a range over a non-numeric option is a usage error" 2 err 'only numeric options'
run "$F" sweep --store s --out bad --range lr=1e-4:1e-2
t "a range without --random is a usage error" 2 err 'needs --random'
run "$F" sweep --store s --out bad --grid eval_split=val,test
t "the eval split cannot be swept" 2 err 'cannot be swept'
run "$F" sweep --store s --out bad --grid lr=1e-3 --grid lr=1e-4
t "a key swept twice is a usage error" 2 err 'swept twice'
run "$F" sweep --store s --out bad --grid items_per_class=4,40 --batch-size 32
t "an invalid configuration is a usage error naming it" 2 err 'smaller than 2 classes x 40' \
	err 'in configuration c0001 \(items_per_class=40\)'
ok_if "failed specs create nothing" [ ! -e bad ]

# Resume: kill a 3-group sweep after its first results, rerun, compare with g2 done in one go.
spec="--grid batch_size=32,48,64 --grid lr=1e-3,3e-3 --epochs 4 --output-dim 8 --seed 1 -q"
run "$F" sweep --store s --out full $spec
t "the uninterrupted sweep runs" 0
"$F" sweep --store s --out k $spec >/dev/null 2>&1 &
pid=$!
i=0
while [ $i -lt 1000 ]; do
	[ "$(cat k/results.jsonl 2>/dev/null | wc -l)" -ge 2 ] && break
	sleep 0.01
	i=$((i + 1))
done
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
n=$(wc -l <k/results.jsonl)
run "$F" sweep --store s --out k $spec
t "the killed sweep resumes (killed with $n of 6 done)" 0 out '^best: '
strip() { sed 's/"seconds":[0-9.e+-]*,\{0,1\}//g; s/"samples_per_s":[0-9.e+-]*,\{0,1\}//g' "$1" | LC_ALL=C sort; }
strip full/results.jsonl >full.res
strip k/results.jsonl >k.res
ok_if "its results equal the uninterrupted sweep's but for timings" cmp -s full.res k.res
same=1
for h in full/c*.safetensors; do cmp -s "$h" "k/${h#full/}" || same=0; done
ok_if "and so do its heads" [ $same -eq 1 ] && cmp -s full/best.safetensors k/best.safetensors
cut -d, -f1-4 full/results.csv >full.csv
cut -d, -f1-4 k/results.csv >k.csv
ok_if "and its results.csv ranks the same" cmp -s full.csv k.csv
run "$F" sweep --store s --out k $spec
t "a finished sweep reruns nothing" 0 '!err' 'group 1/'
ok_if "and appends nothing" [ "$(wc -l <k/results.jsonl)" -eq 6 ]

run "$F" sweep --store s --out k --grid batch_size=32,48,64 --grid lr=1e-3,1e-2 --epochs 4 --output-dim 8 --seed 1
t "another sweep into the same directory is refused" 1 err "'k' holds another sweep \(its c0001 has lr" \
	err 'use a new --out'
mkdir other && echo x >other/file
run "$F" sweep --store s --out other --grid lr=1e-3,1e-2
t "a non-empty directory that is no sweep is refused" 1 err 'not a sweep directory'

[ "$failures" -eq 0 ]
