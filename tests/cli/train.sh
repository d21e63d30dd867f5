#!/bin/sh
# tests/cli/train.sh - train, eval and embed end to end on small synthetic
# stores: the head beats the raw features, the loss falls, a seed gives
# bit-identical heads, a killed run resumes to the same head, the outputs
# load in numpy/PyTorch, bad options are usage errors with a reason, and a
# store of train and test only: --val-from-train, and messages naming the
# splits there are.
NAME=train
. "$(dirname "$0")/lib.inc"

# Classes hidden in noise three times their size; every split has every class.
run "$MK" --store s --dim 64 --items 6000 --classes 10 --noise 300 --mixed-splits --dtype f32
t "tool_mkstore makes a training store" 0
export OMP_NUM_THREADS=2

run "$F" train --store s --out h.safetensors --output-dim 16 --batch-size 64 --epochs 6 --seed 3
t "train runs" 0 out '^before \(raw features\): ' out '^after \(head, epoch [0-9]+\): ' \
	out "^head written to 'h.safetensors'"
ok_if "train writes the head, the log and the checkpoint" [ -s h.safetensors ] && [ -s h.safetensors.jsonl ] &&
	[ -s h.safetensors.ckpt ]
before=$(sed -n 's/^before (raw features): *mAP@20 \([0-9.]*\).*/\1/p' out | head -n 1)
after=$(sed -n 's/^after (head, epoch [0-9]*): *mAP@20 \([0-9.]*\).*/\1/p' out)
ok_if "the head beats the raw features (mAP@20 $before -> $after)" \
	awk -v a="$before" -v b="$after" 'BEGIN { exit !(b > a + 0.1) }'
l1=$(sed -n 's/^epoch *1\/6 *loss \([0-9.]*\).*/\1/p' out)
l6=$(sed -n 's/^epoch *6\/6 *loss \([0-9.]*\).*/\1/p' out)
ok_if "the loss falls ($l1 -> $l6)" awk -v a="$l1" -v b="$l6" 'BEGIN { exit !(b < a) }'
py "the log is one JSON object per line, before + 6 epochs" h.safetensors.jsonl '
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert "before" in lines[0] and lines[0]["config"]["output_dim"] == 16, lines[0]
assert [l["epoch"] for l in lines[1:]] == [1, 2, 3, 4, 5, 6]
assert all(0 <= l["metrics"]["average_precision"] <= 1 for l in lines[1:])'

# The same seed, the same bytes; another seed, another head.
run "$F" train --store s --out h2.safetensors --output-dim 16 --batch-size 64 --epochs 6 --seed 3 -q
ok_if "the same seed gives a bit-identical head" cmp -s h.safetensors h2.safetensors
run "$F" train --store s --out h3.safetensors --output-dim 16 --batch-size 64 --epochs 6 --seed 4 -q
ok_if "another seed gives another head" sh -c '! cmp -s h.safetensors h3.safetensors'
run env OMP_NUM_THREADS=1 "$F" train --store s --out h4.safetensors --output-dim 16 --batch-size 64 \
	--epochs 6 --seed 3 -q
ok_if "the thread count does not change the head" cmp -s h.safetensors h4.safetensors

# Resume: 3 epochs, then (as if killed) go on from the checkpoint to 6.
run "$F" train --store s --out r.safetensors --output-dim 16 --batch-size 64 --epochs 6 --seed 3 -q
cp r.safetensors.ckpt full.ckpt
"$F" train --store s --out k.safetensors --output-dim 16 --batch-size 64 --epochs 6 --seed 3 -q \
	>/dev/null 2>&1 &
pid=$!
# Kill it once the checkpoint of some epoch before the last exists.
i=0
while [ $i -lt 400 ]; do
	n=$(cat k.safetensors.jsonl 2>/dev/null | grep -c '"epoch"')
	[ "$n" -ge 2 ] && break
	sleep 0.01
	i=$((i + 1))
done
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
done_epochs=$(cat k.safetensors.jsonl 2>/dev/null | grep -c '"epoch"')
run "$F" train --store s --out k.safetensors --output-dim 16 --batch-size 64 --epochs 6 --seed 3 \
	--resume k.safetensors.ckpt
t "a killed run resumes from its checkpoint (killed after $done_epochs epochs)" 0 \
	out '^(resuming after epoch [0-9]+ of 6|head written)'
ok_if "the resumed run ends with the same head as an uninterrupted one" cmp -s k.safetensors r.safetensors
run "$F" train --store s --out k.safetensors --output-dim 32 --batch-size 64 --epochs 6 --seed 3 \
	--resume k.safetensors.ckpt
t "resuming with other options is refused" 2 err 'other options'

# Extending a finished run (issue 16: refused as "other options"): its
# checkpoint resumes with more epochs, the log goes on to the new count under
# the new count's schedule (from the resumed step, the lr a run planned for
# it uses), and any other change is still refused.
for sched in linear cosine; do
	common="--store s --output-dim 16 --batch-size 64 --seed 3 --scheduler $sched --warmup-steps 20 -q"
	run "$F" train $common --out x-$sched.safetensors --epochs 2
	run "$F" train $common --out x-$sched.safetensors --epochs 4 --resume x-$sched.safetensors.ckpt
	t "a finished 2-epoch $sched run extends to 4 by resume" 0
	run "$F" train $common --out p-$sched.safetensors --epochs 4
	py "the extended $sched run has epochs 1-4 and a 4-epoch run's lr from epoch 3 on" x-$sched.safetensors.jsonl '
import json, sys
x = [json.loads(l) for l in open(sys.argv[1])]
p = [json.loads(l) for l in open("p-'$sched'.safetensors.jsonl")]
assert x[0]["config"]["epochs"] == 4 and x[0]["config"] == p[0]["config"], x[0]
assert [l["epoch"] for l in x[1:]] == [1, 2, 3, 4], x
assert [l["steps"] for l in x[1:]] == [l["steps"] for l in p[1:]]
assert [l["lr"] for l in x[3:]] == [l["lr"] for l in p[3:]], (x, p)
assert x[2]["lr"] < p[2]["lr"], (x[2], p[2])  # epoch 2 ran under the 2-epoch schedule'
done
run "$F" train $common --out x-cosine.safetensors --epochs 4 --resume x-cosine.safetensors.ckpt
t "resuming a finished run at its own epoch count trains nothing more" 0 out "head written to 'x-cosine.safetensors' \(epoch [1-4]\)"
run "$F" train $common --out x-cosine.safetensors --epochs 3 --resume x-cosine.safetensors.ckpt
t "fewer epochs than the checkpoint has done are refused" 2 err 'has 4 epochs done, more than the 3 asked for: give at least 4'
run "$F" train $common --out x-cosine.safetensors --epochs 6 --lr 0.01 --resume x-cosine.safetensors.ckpt
t "extending with another lr is refused" 2 err 'other options or data; resume with the same ones \(only the epoch count may change\)'
run "$F" train $common --out x-cosine.safetensors --epochs 6 --scheduler linear --resume x-cosine.safetensors.ckpt
t "extending with another schedule is refused" 2 err 'other options'
common="--store s --output-dim 16 --batch-size 64 --seed 3 --scheduler step -q"
run "$F" train $common --out st.safetensors --epochs 3 --step-size 1
run "$F" train $common --out st.safetensors --epochs 6 --resume st.safetensors.ckpt
t "extending a step run without its --step-size is refused" 2 err 'other options'
run "$F" train $common --out st.safetensors --epochs 6 --step-size 2 --resume st.safetensors.ckpt
t "extending a step run with another --step-size is refused" 2 err 'other options'
run "$F" train $common --out st.safetensors --epochs 6 --step-size 1 --resume st.safetensors.ckpt
t "extending a step run with the same --step-size goes on to 6" 0 out 'head written'
ok_if "its log has 6 epochs" [ "$(grep -c '"epoch"' st.safetensors.jsonl)" -eq 6 ]

# SIGINT stops a quiet run as it stops a verbose one: after the current
# step, checkpoint intact, exit 1 with the resume hint.
"$F" train --store s --out q.safetensors --output-dim 16 --batch-size 64 --epochs 100000 --seed 3 -q \
	>q.out 2>q.err &
pid=$!
i=0
while [ $i -lt 500 ] && ! grep -q '"epoch"' q.safetensors.jsonl 2>/dev/null; do
	sleep 0.01
	i=$((i + 1))
done
kill -INT $pid 2>/dev/null
i=0
while [ $i -lt 500 ] && kill -0 $pid 2>/dev/null; do
	sleep 0.01
	i=$((i + 1))
done
if kill -0 $pid 2>/dev/null; then
	kill -9 $pid 2>/dev/null
	fail "train -q stops on SIGINT within 5 s"
else
	wait $pid
	qrc=$?
	ok_if "train -q stops on SIGINT (exit $qrc) with the resume hint" \
		sh -c "[ $qrc -eq 1 ] && grep -q 'interrupted; resume with --resume' q.err"
fi

# eval and embed with the head.
run "$F" eval --store s --head h.safetensors --json
t "eval --head prints raw and head metrics" 0 out '"raw"' out '"head"' out '"average_precision"'
run "$F" eval --store s --split test --index-split train -k 5
t "eval searches one split in another" 0 out '^average_precision ' out 'k 5$'

# A k above the candidates: the metrics are at the k used, and say so.
run "$MK" --store small --dim 16 --items 200 --classes 4 --noise 1 --mixed-splits --dtype f32
q=$("$F" eval --store small | sed -n 's/^queries \([0-9]*\), k .*/\1/p')
run "$F" eval --store small -k 100000
t "eval -k above the candidates: labelled with the k used ($((q - 1)))" 0 out "^queries $q, k $((q - 1))\$" \
	err "^featcache: warning: -k 100000 is more than the $((q - 1)) candidates each query of the val split is searched among: metrics are at k $((q - 1))\$"
run "$F" eval --store small --split val --index-split train -k 100000 --json
py "eval --json -k above the index split: k is the index size" out '
import json, sys
j = json.load(open(sys.argv[1]))
assert 0 < j["k"] < 200 and j["k"] != 100000, j["k"]'
run "$F" train --store small --out small.safetensors --output-dim 8 --batch-size 16 --epochs 1 -k 100000
t "train -k above the candidates: labelled with the k used" 0 out "^before \(raw features\): +mAP@$((q - 1)) " \
	out "^epoch +1/1 .* mAP@$((q - 1)) " !out "@100000" err "metrics are at k $((q - 1))\$"
run "$F" embed --store s --head h.safetensors --split val --out e.npy --keys e.keys
t "embed --head writes embeddings and keys" 0 out "^wrote 600 x 16 float32 to 'e.npy'"
py "embeddings load with numpy, L2-normalised, one key per row" e.npy '
import sys, numpy as np
e = np.load(sys.argv[1]); keys = open("e.keys").read().split("\n")[:-1]
assert e.shape == (600, 16) and e.dtype == np.float32 and len(keys) == 600, (e.shape, len(keys))
assert abs(np.linalg.norm(e, axis=1) - 1).max() < 1e-5
assert keys == sorted(keys)'
run "$F" embed --store s --split train --out raw.npy
t "embed without a head writes the raw features of train (and unsplit) items" 0 out "^wrote 4800 x 64 float32"
run "$F" embed --store s --head h.safetensors --split train --out ht.npy
if [ -n "$PY" ] && "$PY" -c 'import torch' 2>/dev/null; then
	py "the head loads into a PyTorch projection head with load_state_dict" h.safetensors '
import sys, json, struct, numpy as np, torch
b = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", b[:8])[0]; hdr = json.loads(b[8:8 + n])
meta = hdr.pop("__metadata__"); data = b[8 + n:]
sd = {}
for k, v in hdr.items():
    dt = {"F32": torch.float32, "I64": torch.int64}[v["dtype"]]
    s, e = v["data_offsets"]
    sd[k] = torch.frombuffer(bytearray(data[s:e]), dtype=dt).reshape(v["shape"])
cfg = json.loads(meta["featcache_config"])
D, H, O = cfg["input_dim"], cfg["hidden"], cfg["output_dim"]
layers = []
for i in range(cfg["head_layers"]):
    last = i == cfg["head_layers"] - 1
    layers += [torch.nn.Linear(D if i == 0 else H, O if last else H, bias=False),
               torch.nn.BatchNorm1d(O if last else H, eps=1e-5)]
    if not last: layers.append(torch.nn.ReLU())
class Head(torch.nn.Module):
    def __init__(self):
        super().__init__(); self.head_layers = torch.nn.ModuleList(layers)
    def forward(self, x):
        for l in self.head_layers: x = l(x)
        return x
m = Head(); m.load_state_dict(sd, strict=True); m.eval()
x = torch.tensor(np.load("raw.npy"))
y = torch.nn.functional.normalize(m(x), dim=1).detach().numpy()
ours = np.load("ht.npy")
assert np.abs(y - ours).max() < 1e-4, np.abs(y - ours).max()'

else
	echo "ok - the head loads into PyTorch # SKIP no torch"
fi

# A head knows the extractor it was trained on: two extractors of one dim in
# a store, the head's is the default, another one is refused by name.
run "$MK" --store two --dim 16 --items 400 --classes 4 --mixed-splits --dtype f32 --extractors 2
t "tool_mkstore makes a store with two 16-d extractors" 0
exa=$(sed -n 's/^extractor //p' out | sed -n 1p)
exb=$(sed -n 's/^extractor //p' out | sed -n 2p)
a12=$(printf %.12s "$exa")
b12=$(printf %.12s "$exb")
run "$F" train --store two --extractor "$exa" --out ha.safetensors --output-dim 8 --batch-size 16 --epochs 2 -q
t "train a head on the first extractor" 0
run "$F" eval --store two --head ha.safetensors --json
t "eval --head without --extractor uses the head's extractor" 0 out '"head"'
cp out eval-default.json
run "$F" eval --store two --head ha.safetensors --extractor "$exa" --json
t "eval --head --extractor naming the head's extractor" 0 out '"head"'
ok_if "the head's extractor by default gives the same metrics" cmp -s out eval-default.json
run "$F" eval --store two --head ha.safetensors --extractor "$exb"
t "eval --head on another extractor's features is refused, naming both" 1 \
	err "^featcache: cannot apply head 'ha.safetensors' to extractor $b12: it was trained on extractor $a12$"
run "$F" eval --store two --extractor "$exb"
t "eval without a head takes any extractor" 0 out '^average_precision '
run "$F" embed --store two --head ha.safetensors --out two.npy
t "embed --head without --extractor uses the head's extractor" 0 out "^wrote 400 x 8 float32 to 'two.npy'"
run "$F" embed --store two --head ha.safetensors --extractor "$exb" --out bad.npy
t "embed --head on another extractor's features is refused, naming both" 1 \
	err "^featcache: cannot apply head 'ha.safetensors' to extractor $b12: it was trained on extractor $a12$"
ok_if "the refused embed wrote nothing" [ ! -e bad.npy ] && [ ! -e bad.npy.keys ]
run "$MK" --store other --dim 16 --items 40 --classes 4 --mixed-splits --dtype f32 --seed 9
t "tool_mkstore makes a store with another 16-d extractor" 0
run "$F" eval --store other --head ha.safetensors --split all
t "a head on a store without its extractor is refused" 1 \
	err "^featcache: cannot apply head 'ha.safetensors' to store 'other': it was trained on extractor $a12, which the store does not hold"
run "$F" embed --store other --head ha.safetensors --out bad.npy
t "embed: a head on a store without its extractor is refused" 1 err "which the store does not hold"

# Every loss trains and reports; each one should at least not lose to the raw features here.
for loss in siamese ntxent supcon arcface cosface; do
	run "$F" train --store s --out "$loss.safetensors" --output-dim 16 --batch-size 64 --epochs 4 --loss $loss -q
	b=$(sed -n 's/^before (raw features): *mAP@20 \([0-9.]*\).*/\1/p' out | head -n 1)
	a=$(sed -n 's/^after (head, epoch [0-9]*): *mAP@20 \([0-9.]*\).*/\1/p' out)
	t "train --loss $loss runs (mAP@20 $b -> $a)" 0 out '^after \(head'
	ok_if "train --loss $loss beats the raw features" awk -v a="$b" -v b="$a" 'BEGIN { exit !(b > a) }'
done
run "$F" train --store s --out bad.safetensors --loss arcface --distance euclidean
t "arcface with euclidean distance is a usage error" 2 err 'cosine similarity'

# Bad options: usage errors with a reason, nothing written.
run "$F" train --store s --out bad.safetensors --loss nonsense
t "an unknown loss is a usage error" 2 err "unknown loss 'nonsense'"
run "$F" train --store s --out bad.safetensors --batch-size 6 --items-per-class 4
t "a batch smaller than 2 classes x K is a usage error" 2 err 'smaller than 2 classes x 4'
run "$F" train --store s --out bad.safetensors --output-dim 0
t "output-dim 0 is a usage error" 2 err 'output-dim'
run "$F" train --store s --out bad.safetensors -k 0
t "k < 1 is a usage error" 2 err "'0' for --k"
run "$F" train --store s --out bad.safetensors --loss ntxent --miner hard
t "a miner with a loss other than triplet is a usage error" 2 err 'miners apply to the triplet loss only'
run "$F" train --store s --out bad.safetensors --early-stop map
t "a malformed --early-stop is a usage error" 2 err 'METRIC:PATIENCE'
ok_if "failed runs write no head" [ ! -e bad.safetensors ]
run "$MK" --store one --dim 8 --items 20 --classes 1
run "$F" train --store one --out bad.safetensors
t "a split with one class is a usage error" 2 err 'only one class'
run "$MK" --store nan --dim 16 --items 400 --classes 4 --mixed-splits --dtype f32 --poison 7
run "$F" train --store nan --out nan.safetensors --output-dim 8 --batch-size 16 --epochs 3 -q
t "a run that meets NaN stops with the step and a hint" 1 err 'not finite at step [0-9]+' err 'lower --lr'
ok_if "and writes no head" [ ! -e nan.safetensors ]
run "$F" eval --store s --head nothere.safetensors
t "eval with a missing head fails clearly" 1 err "cannot load head 'nothere.safetensors'"
printf 'garbage' >junk.safetensors
run "$F" eval --store s --head junk.safetensors
t "eval with a corrupt head fails clearly" 1 err "cannot load head 'junk.safetensors'"

# ---- a train/test dataset without val: --val-from-train, and messages
# that list the splits there are and say what to use ----
run "$MK" --store tt --dim 32 --items 600 --classes 6 --noise 100 --mixed-splits --no-val --dtype f32
t "tool_mkstore makes a train/test store" 0
splits_re="of store 'tt' \(splits: train 480, test 120\)"
run "$F" train --store tt --out tt.safetensors --output-dim 8 --batch-size 32 --epochs 1 -q
t "train without val warns, listing the splits and what to use" 0 \
	err "^featcache: warning: no items in split 'val' $splits_re: no evaluation; use --eval-split test, or --val-from-train 0\.1$"
run "$F" eval --store tt --head tt.safetensors
t "eval of the empty val split lists the splits and what to use" 1 \
	err "^featcache: no items in split 'val' $splits_re: use --split test, or --val-from-train 0\.1$"
run "$F" eval --store tt --split test --head tt.safetensors
t "eval --split test" 0 out '^queries 120, k 20$'
run "$F" embed --store tt --split val --out ttval.npy
t "embed of an empty split is an error, not a 0-row file" 1 \
	err "^featcache: no items in split 'val' $splits_re: use --split test, or --val-from-train 0\.1$"
ok_if "embed of an empty split writes nothing" [ ! -e ttval.npy ] && [ ! -e ttval.npy.keys ]
run "$F" train --store tt --out tt.safetensors --output-dim 8 --batch-size 32 --epochs 1 --train-split val
t "an empty train split is an error with the same advice" 1 \
	err "^featcache: no items in split 'val' $splits_re: use --train-split test, or --val-from-train 0\.1$"

run "$F" train --store tt --out vt.safetensors --output-dim 8 --batch-size 32 --epochs 2 --seed 1 \
	--val-from-train 0.2
t "train --val-from-train 0.2 evaluates on val carved from train" 0 \
	out '^train: [0-9]+ items, 6 classes, .*; eval: val \([0-9]+ queries\)$' out '^after \(head, epoch [0-9]+\): '
ntr=$(sed -n 's/^train: \([0-9]*\) items.*/\1/p' out)
nval=$(sed -n 's/^train: .*eval: val (\([0-9]*\) queries)$/\1/p' out)
ok_if "the carve splits the 480 train items, about a fifth as val ($ntr + $nval)" \
	awk -v a="$ntr" -v b="$nval" 'BEGIN { exit !(a + b == 480 && b > 60 && b < 135) }'
py "the carve is recorded in the log's configuration" vt.safetensors.jsonl '
import json, sys
c = json.loads(open(sys.argv[1]).readline())["config"]
assert abs(c["val_from_train"] - 0.2) < 1e-6 and c["eval_split"] == "val", c'
run "$F" train --store tt --out vt2.safetensors --output-dim 8 --batch-size 32 --epochs 2 --seed 1 \
	--val-from-train 0.2 -q
ok_if "the carve is the same every run: a bit-identical head" cmp -s vt.safetensors vt2.safetensors
run "$F" embed --store tt --split val --val-from-train 0.2 --out vtval.npy --keys vtval.keys
t "embed --split val --val-from-train: the carved rows" 0 out "^wrote $nval x 32 float32"
run "$F" embed --store tt --split train --val-from-train 0.2 --out vttr.npy --keys vttr.keys
t "embed --split train --val-from-train: the rest" 0 out "^wrote $ntr x 32 float32"
run "$F" embed --store tt --split train --out all.npy --keys all.keys
ok_if "carved val and the rest of train: disjoint, together the train split" \
	sh -c 'cat vtval.keys vttr.keys | LC_ALL=C sort | cmp -s - all.keys'
run "$F" eval --store tt --head vt.safetensors --val-from-train 0.2
t "eval --val-from-train: the run's val" 0 out "^queries $nval, k 20$"
run "$F" train --store tt --out vt.safetensors --output-dim 8 --batch-size 32 --epochs 3 --seed 1 \
	--val-from-train 0.2 --resume vt.safetensors.ckpt -q
t "resume with the same carve extends the run" 0
run "$F" train --store tt --out vt.safetensors --output-dim 8 --batch-size 32 --epochs 4 --seed 1 \
	--val-from-train 0.3 --resume vt.safetensors.ckpt -q
t "resume with another carve is refused" 2 err "cannot resume from 'vt.safetensors.ckpt'"
run "$F" train --store tt --out bad.safetensors --val-from-train 1
t "--val-from-train 1 is a usage error" 2 err "^featcache: bad value '1' for --val-from-train: must be from 0 to 0\.99$"
run "$F" sweep --store tt --out sw --grid val_from_train=0.1,0.2
t "--val-from-train cannot be swept" 2 err "--val-from-train cannot be swept"

# Early stopping stops before the last epoch and keeps the best head.
run "$F" train --store s --out es.safetensors --output-dim 16 --batch-size 64 --epochs 50 --lr 0.05 \
	--early-stop average_precision:2
t "early stopping stops a run that stopped improving" 0 out '^early stop: average_precision has not improved for 2 epochs'

[ "$failures" -eq 0 ]
