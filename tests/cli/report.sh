#!/bin/sh
# tests/cli/report.sh - `featcache report` end to end: a real training log
# from `featcache train` on a synthetic store, hand-written sweep results
# (a few configurations with a categorical key, NaN and missing metrics,
# hostile strings; and 120 configurations), logs from resumed and
# unevaluated runs, and bad input that must fail with file and line and
# leave no half-written page. Then the pictures of what a head learned, on
# a store of real image files (tool_mkimage, extracted with a fixture
# model): galleries with thumbnails, the per-class table, the map, from
# train --report, report LOG --store and report --store --head; a deleted
# image, a moved dataset (--data), a store that does not record its
# images, and the same page twice from the same seed. The pages are
# loaded in headless Chromium: the page's own check says every chart drew
# visible marks and every thumbnail decoded, with no console message, and a
# screenshot shows something. Without chromium the browser checks fail,
# unless FC_NO_BROWSER=1 asks to skip them.
NAME=report
. "$(dirname "$0")/lib.inc"
export OMP_NUM_THREADS=2

# Classes in noise, so that the head has something to learn.
run "$MK" --store st --dim 16 --items 400 --classes 8 --noise 200 --mixed-splits --dtype f32
t "tool_mkstore makes a small store" 0
run "$F" train --store st --out h.safetensors --output-dim 8 --batch-size 32 --epochs 4 --seed 1 -q
t "train writes a log to report on" 0
ok_if "the log has a header and 4 epochs" [ "$(grep -c '"epoch"' h.safetensors.jsonl)" -eq 4 ]

run "$F" train --store st --out hr.safetensors --output-dim 8 --batch-size 32 --epochs 2 --seed 1 -q --report
t "train --report writes the page beside the head" 0 \
	out "^report written to 'hr.safetensors.html' \(4 charts, 0 gallery queries\)$"
ok_if "train --report: the per-class table and the map, without images" \
	sh -c "grep -q 'id=\"chart-map\"' hr.safetensors.html && grep -q '<section id=\"classes\">' hr.safetensors.html"
ok_if "a store that does not record its images says so" grep -q 'does not record where its images are' hr.safetensors.html
cp hr.safetensors.html hr.html
ok_if "train --report: a complete page" grep -q '</html>' hr.safetensors.html
run "$F" sweep --store st --out swr --grid lr=1e-3,1e-4 --output-dim 8 --batch-size 32 --epochs 2 -q --report
t "sweep --report writes DIR/report.html" 0 out "^report written to 'swr/report.html' \([0-9]+ charts"
ok_if "sweep --report: a complete page with the lr chart" grep -q '</html>' swr/report.html
run "$F" sweep --store st --out swx --grid report=1,0 --epochs 1 -q
t "--report cannot be swept" 2 err "report cannot be swept"

run "$F" report h.safetensors.jsonl --out train.html
t "report on a training log" 0 out "^report written to 'train.html' \(3 charts\)$"
ok_if "the page is complete HTML" grep -q '</html>' train.html
for id in chart-loss chart-metric chart-bars; do
	ok_if "train page has $id" grep -q "id=\"$id\"" train.html
done
ok_if "train page names the run, the extractor and the data" \
	grep -Eq 'One training run' train.html
ok_if "train page says the extractor and the splits" sh -c \
	"grep -q 'trained on .*train.*evaluated on .*val.*k = 20' train.html && grep -Eq '<dd>[0-9a-f]{32}</dd>' train.html"
ok_if "train page has the config table (loss triplet)" grep -q '<code>loss</code></td><td>triplet</td>' train.html
# Self-contained: nothing fetched, one script (the render check), no JS library.
# (Text from the logs is escaped, so a raw "<" always starts real markup.)
selfcontained() {
	! grep -Eiq '<(link|iframe|object|embed|audio|video)[[:space:]>]|@import|url\(' "$1" &&
		[ -z "$(grep -Eio '<[^>]*[[:space:]](src|href)="[^"]{0,24}' "$1" | grep -v 'src="data:image/jpeg;base64,')" ] &&
		[ -z "$(grep -Eio 'https?://[^"< ]*' "$1" | grep -vx 'http://www.w3.org/2000/svg')" ] &&
		[ "$(grep -o '<script' "$1" | wc -l)" -eq 1 ] && [ "$(sed -n '/<script>/,/<\/script>/p' "$1" | wc -c)" -lt 2000 ]
}
ok_if "the train page fetches nothing and has one small script" selfcontained train.html

# The default out is report.html; --metric takes short names; --title is escaped.
run "$F" report h.safetensors.jsonl --metric ndcg --title 'Mine & <yours>'
t "report --metric ndcg --title to the default report.html" 0 out "'report.html'"
ok_if "the metric chart is nDCG" grep -q 'nDCG@20 per epoch' report.html
ok_if "the title is escaped" grep -q '<title>Mine &amp; &lt;yours&gt;</title>' report.html
run "$F" report h.safetensors.jsonl --metric nonsense --out bad.html
t "an unknown metric is a usage error naming the accepted names" 2 \
	err "unknown metric 'nonsense' for --metric: expected .*reciprocal_rank \\(mrr\\)"
run "$F" report --out bad.html
t "no PATH is a usage error" 2 err 'no PATH'
ok_if "usage errors write nothing" [ ! -e bad.html ]
run "$F" help report
t "featcache help report" 0 out '^usage: featcache report PATH'

# A resumed run repeats an epoch when it was killed between the log line
# and the checkpoint: the later line counts, the epoch once.
{ cat h.safetensors.jsonl; sed -n '4p' h.safetensors.jsonl; } >resumed.jsonl
run "$F" report resumed.jsonl --out resumed.html
t "a log with a repeated epoch" 0
ok_if "the repeated epoch counts once" grep -q '4 epochs,' resumed.html

# A run without evaluation writes its configuration but no metrics: loss only.
run "$F" train --store st --out noeval.safetensors --output-dim 8 --batch-size 32 --epochs 2 --eval-split none -q
run "$F" report noeval.safetensors.jsonl --out noeval.html
t "a log without evaluation gives the loss chart only" 0 out '\(1 chart\)'
ok_if "and says why the rest is missing" grep -q 'No evaluation metrics per epoch' noeval.html
# Its log still starts with the configuration (issue 16: only an evaluated
# run wrote one, and the report said "the log holds no configuration").
ok_if "a log without evaluation starts with the configuration, no before-metrics" \
	sh -c 'head -n 1 noeval.safetensors.jsonl | grep -q "^{\"config\":{.*\"eval_split\":\"none\"" &&
		! head -n 1 noeval.safetensors.jsonl | grep -q "\"before\""'
ok_if "and the report shows that configuration" grep -q '<tr><td><code>eval_split</code></td><td>none</td></tr>' noeval.html
ok_if "not the note for a log without one" sh -c '! grep -q "holds no configuration" noeval.html'
sed 1d noeval.safetensors.jsonl >headless.jsonl
run "$F" report headless.jsonl --out headless.html
t "an older log without its configuration line still reads" 0 out '\(1 chart\)'
ok_if "and the page says it holds no configuration" grep -q 'holds no configuration' headless.html

# A one-epoch run.
run "$F" train --store st --out one.safetensors --output-dim 8 --batch-size 32 --epochs 1 -q
run "$F" report one.safetensors.jsonl --out one.html
t "a one-epoch run" 0 out '\(3 charts\)'

# Two training logs are compared like a sweep over what differs (lr).
run "$F" train --store st --out fast.safetensors --output-dim 8 --batch-size 32 --epochs 4 --seed 1 --lr 0.01 -q
run "$F" report h.safetensors.jsonl fast.safetensors.jsonl --out two.html
t "two training logs compared" 0 out '\(4 charts\)'
ok_if "over the key that differs" grep -q '2 training runs compared over <code>lr</code>' two.html

# A sweep as `featcache sweep` writes it (hand-made: 6 configurations over
# lr (log scale), output_dim and a categorical loss; c0004 diverged (NaN and
# null metrics, no best epoch), c0005 has one epoch and no "best" (derived
# from its epochs), c0002 a hostile id and config value).
mkdir sw
m() { # ap ndcg -> a metrics object
	printf '{"precision_at_k":0.2,"recall_at_k":0.8,"f1_score_at_k":0.3,"hit_at_k":0.9,"average_precision":%s,"reciprocal_rank":0.7,"r_precision":0.5,"dcg_at_k":2.5,"ndcg_at_k":%s}' "$1" "$2"
}
B=$(m 0.41 0.6)
cfg() { printf '{"featcache":"0.1.0","extractor":"00112233445566778899aabbccddeeff","input_dim":16,"output_dim":%s,"loss":"%s","optimizer":"adam","lr":%s,"epochs":3,"k":20,"train_split":"train","eval_split":"val","note":"%s"}' "$1" "$2" "$3" "$4"; }
line() { # id lr dim loss ap1 ap2 ap3 best_epoch note first-loss
	printf '{"id":"%s","config":%s,"swept":{"lr":%s,"output_dim":%s,"loss":"%s"},"before":%s,"epochs":[' \
		"$1" "$(cfg "$3" "$4" "$2" "$9")" "$2" "$3" "$4" "$B"
	printf '{"epoch":1,"loss":%s,"lr":%s,"seconds":1.5,"metrics":%s},' "${10}" "$2" "$(m "$5" 0.7)"
	printf '{"epoch":2,"loss":%s,"lr":%s,"seconds":1.5,"metrics":%s},' "$(awk "BEGIN{print ${10}*0.8}")" "$2" "$(m "$6" 0.75)"
	printf '{"epoch":3,"loss":%s,"lr":%s,"seconds":1.5,"metrics":%s}' "$(awk "BEGIN{print ${10}*0.7}")" "$2" "$(m "$7" 0.8)"
	printf '],"best_epoch":%s,"best":%s,"seconds":4.5}\n' "$8" "$(m "$7" 0.8)"
}
{
	line c0000 0.0001 64 triplet 0.42 0.45 0.47 3 plain 0.95
	line c0001 0.001 64 ntxent 0.50 0.58 0.61 3 plain 2.1
	line 'c0002<img src=x onerror=alert(1)>&amp;' 0.01 256 triplet 0.55 0.62 0.66 3 '</td><script>alert(\"x\")</script>' 0.8
	line c0003 0.001 256 ntxent 0.60 0.71 0.69 2 plain 1.9
	line c0004 0.01 64 ntxent NaN null NaN null plain 2.6 | sed 's/"best":{[^}]*}/"best":{"average_precision":NaN}/'
	printf '{"id":"c0005","config":%s,"swept":{"lr":0.0001,"output_dim":256,"loss":"triplet"},"before":%s,"epochs":[{"epoch":1,"loss":0.95,"lr":0.0001,"seconds":1.2,"metrics":%s}],"seconds":1.2}\n' \
		"$(cfg 256 triplet 0.0001 plain)" "$B" "$(m 0.44 0.62)"
} >sw/results.jsonl
run "$F" report sw --out sweep.html
t "report on a sweep directory" 0 out '\(6 charts\)'
for id in chart-loss chart-metric chart-bars chart-swept-1 chart-swept-2 chart-swept-3; do
	ok_if "sweep page has $id" grep -q "id=\"$id\"" sweep.html
done
ok_if "the sweep page fetches nothing and has one small script" selfcontained sweep.html
ok_if "lr spans 100x: log scale" grep -q 'lr (log scale)' sweep.html
ok_if "loss is categorical" grep -q 'loss (categories)' sweep.html
ok_if "output_dim spans 4x: linear" grep -q '>output_dim</text>' sweep.html
ok_if "the leaderboard puts the best (c0003, 0.69) first" \
	grep -q '<tr class="best"><td class="n">1</td><td><span class="sw" style="background:#1f6fb4"></span>c0003</td>' sweep.html
ok_if "a NaN metric shows as n/a, last in the leaderboard" \
	grep -Eq '<td class="n">6</td><td>(<span[^>]*></span>)?c0004</td>.*<td class="n">n/a</td>' sweep.html
ok_if "a missing best comes from the epochs (c0005: 0.4400)" grep -q 'c0005</td>.*<td class="n">0.4400</td>' sweep.html
ok_if "hostile strings are escaped" sh -c '[ -s sweep.html ] && ! grep -q "<img src=x\|<script>alert\|</td><script" sweep.html'
ok_if "and shown as text" grep -q 'c0002&lt;img src=x onerror=alert(1)&gt;&amp;amp;' sweep.html
run "$F" report sw/results.jsonl --out sweep2.html -q
t "report on results.jsonl itself, quietly" 0 !out .
ok_if "names the sweep by its directory" grep -q '<h1>featcache sweep report: sw</h1>' sweep2.html

# A sweep of one configuration.
mkdir sw1
head -n 1 sw/results.jsonl >sw1/results.jsonl
run "$F" report sw1 --out single.html
t "a sweep of one configuration" 0 out '\(6 charts\)'
ok_if "says so" grep -q 'A sweep of 1 configuration over' single.html

# 120 configurations: the per-epoch charts keep the 10 best and say so.
awk 'BEGIN {
	m = "\"precision_at_k\":0.2,\"recall_at_k\":0.8,\"f1_score_at_k\":0.3,\"hit_at_k\":0.9,\"reciprocal_rank\":0.7,\"r_precision\":0.5,\"dcg_at_k\":2.5,\"ndcg_at_k\":0.7"
	for (i = 0; i < 120; i++) {
		lr = 10 ^ (-5 + (i % 4)); d = 2 ^ (5 + int(i / 4) % 5); s = 0.3 + 0.4 * (0.5 + 0.5 * sin(i * 1.7))
		printf "{\"id\":\"c%04d\",\"config\":{\"lr\":%g,\"output_dim\":%d,\"k\":10},\"swept\":{\"lr\":%g,\"output_dim\":%d},", i, lr, d, lr, d
		printf "\"before\":{%s,\"average_precision\":0.3},\"epochs\":[", m
		for (e = 1; e <= 5; e++)
			printf "%s{\"epoch\":%d,\"loss\":%g,\"lr\":%g,\"seconds\":0.5,\"metrics\":{%s,\"average_precision\":%g}}", (e > 1 ? "," : ""), e, 1 / (e + i % 7), lr, m, s * (0.6 + 0.1 * e) / 1.1
		printf "],\"best_epoch\":5}\n"
	}
}' >big.jsonl
run "$F" report big.jsonl --out big.html
t "report on 120 configurations" 0 out '\(5 charts\)'
ok_if "the line charts show the 10 best and say so" grep -q 'the 10 best of 120 configurations by mAP@10' big.html
ok_if "the legends stay at 10 lines (+1 reference)" \
	[ "$(sed -n '/id="chart-metric"/,/<\/svg>/p' big.html | grep -c 'class="lg"')" -eq 11 ]
ok_if "the leaderboard has all 120" [ "$(grep -c '^<tr.*<td class="n">[0-9]*</td><td>' big.html)" -eq 120 ]


# ---- pictures: a store of real images (4 classes x 12 per split) ----
mkdir -p img
for c in 0 1 2 3; do
	for sp in train val; do
		mkdir -p img/$sp/c$c
		for i in 1 2 3 4 5 6 7 8 9 10 11 12; do
			"$FC_TOOLS/tool_mkimage" img/$sp/c$c/$i.jpg $((60 + i * 7)) $((50 + c * 20)) $((c * 100 + i + ${#sp} * 1000)) ||
				echo "# tool_mkimage failed"
		done
	done
done
run "$F" extract --store ist --data img --model "$FC_TOP/tests/fixtures/models/resnet18_narrow.onnx" --size 32 --batch 16 --quiet
t "extract a store of image files" 0
run "$F" train --store ist --out ih.safetensors --output-dim 8 --batch-size 16 --epochs 3 --seed 2 -q --report
t "train --report on it: galleries of 12 + 4 + 4 queries" 0 out "^report written to 'ih.safetensors.html' \(4 charts, 20 gallery queries\)$"
ok_if "thumbnails are inline JPEGs" grep -q '<img class="thumb[^"]*" width="[0-9]*" height="[0-9]*" alt="val/c[0-3]/[0-9]*.jpg" title="[^"]*" src="data:image/jpeg;base64,/9j/' ih.safetensors.html
ok_if "the train page with galleries is self-contained" selfcontained ih.safetensors.html
ok_if "the galleries mark same- and other-class neighbours" sh -c "grep -q 'figure class=\"it same\"' ih.safetensors.html && grep -q 'figure class=\"it other\"' ih.safetensors.html"
ok_if "queries: a seeded sample, improved most, hurt most" sh -c "grep -q '<b>sample</b>' ih.safetensors.html && grep -q '<b>improved most</b>' ih.safetensors.html && grep -q '<b>hurt most</b>' ih.safetensors.html"
ok_if "the per-class table has the 4 classes, the confused pairs table is there" \
	sh -c "[ \$(sed -n '/<section id=\"classes\">/,/<\/tbody>/p' ih.safetensors.html | grep -c '^<tr><td>c[0-3]</td>') -eq 4 ] && grep -q '<table id=\"pairs\">' ih.safetensors.html"
ok_if "the map has 48 points a side with hover titles" \
	[ "$(grep -o '<circle class="mark k[0-3]"[^>]*><title>val/c[0-3]/[0-9]*.jpg: c[0-3]</title>' ih.safetensors.html | wc -l)" -eq 96 ]

run "$F" report --store ist --head ih.safetensors --out sh.html
t "report --store --head: the views alone" 0 out "^report written to 'sh.html' \(1 chart, 20 gallery queries\)$"
ok_if "it names the head and the split" sh -c "grep -q '<h1>featcache report: ih.safetensors</h1>' sh.html && grep -q '<dd>&#39;val&#39;, k = 20</dd>' sh.html"
run "$F" report --store ist --head ih.safetensors --out sh2.html -q
ok_if "the same seed gives the same page (but for its time)" sh -c "strip_time() { grep -v '<dt>report made</dt>' \"\$1\"; }; strip_time sh.html >a.txt; strip_time sh2.html >b.txt; cmp -s a.txt b.txt"
run "$F" report --store ist --head ih.safetensors --out sh3.html -q --seed 7
ok_if "another seed, other sample queries" sh -c "! cmp -s sh.html sh3.html"
run "$F" report ih.safetensors.jsonl --store ist --out lg.html --neighbours 5 --queries 3
t "report LOG --store: charts and views, the head from the log's name" 0 out "\(4 charts, (7|8|9|10|11) gallery queries\)$"
ok_if "5 neighbours a row" [ "$(sed -n '/<div class="row">/p' lg.html | head -n 1 | grep -o '<figure' | wc -l)" -eq 5 ]
run "$F" report --store ist --out x.html --split val
t "report --store without a head or a log is a usage error" 2 err 'no PATH given'
run "$F" report --head ih.safetensors --out x.html
t "--head without --store is a usage error" 2 err 'need --store'

# A deleted image: a placeholder with its key, the page still whole.
gone=$(grep -o '<div class="q" data-key="[^"]*"' sh.html | head -n 1 | sed 's/.*data-key="//; s/"$//')
rm -f "img/$gone"
run "$F" report --store ist --head ih.safetensors --out gone.html
t "a report with a deleted image" 0
ok_if "the deleted image ($gone) is a placeholder with its key" \
	grep -q "<div class=\"ph\" data-key=\"$gone\" title=\"$gone\">image missing<br><code>$gone</code></div>" gone.html
ok_if "and the note counts it" grep -q 'images could not be read under' gone.html
# A moved dataset: --data says where it is now.
mv img img2
run "$F" report --store ist --head ih.safetensors --out moved.html
t "a moved dataset: every picture a placeholder" 0
ok_if "every picture a placeholder" sh -c "! grep -q 'img class=\"thumb' moved.html && grep -q 'class=\"ph\"' moved.html"
run "$F" report --store ist --head ih.safetensors --data img2 --out data.html
t "--data finds the moved images" 0
ok_if "--data gives thumbnails again (all but the deleted one)" sh -c "grep -q 'img class=\"thumb' data.html && [ \$(grep -o 'class=\"ph\"' data.html | wc -l) -eq \$(grep -o 'class=\"ph\"' gone.html | wc -l) ]"
mv img2 img
# A CSV dataset: keys relative to the CSV's directory, where the thumbnails are read.
mkdir -p csvds/pics
i=0
for f in img/train/c0/1.jpg img/train/c0/2.jpg img/train/c1/1.jpg img/train/c1/2.jpg img/val/c0/3.jpg img/val/c0/4.jpg img/val/c1/3.jpg img/val/c1/4.jpg; do
	i=$((i + 1))
	cp "$f" csvds/pics/$i.jpg
	sp=${f#img/}; sp=${sp%%/*}; c=${f#img/*/}; c=${c%%/*}
	echo "pics/$i.jpg,$c,$sp"
done >csvds/list.csv
run "$F" extract --store cst --data csvds/list.csv --model "$FC_TOP/tests/fixtures/models/resnet18_narrow.onnx" --size 32 --batch 8 --quiet
t "extract a CSV dataset" 0
run "$F" train --store cst --out ch.safetensors --output-dim 4 --batch-size 4 --items-per-class 2 --epochs 1 -q --report --data csvds
t "train --report --data on the CSV's store" 0 out "\(4 charts, [0-9]+ gallery queries\)$"
ok_if "the CSV's thumbnails decode from its directory" sh -c "grep -q 'img class=\"thumb' ch.safetensors.html && ! grep -q 'class=\"ph\"' ch.safetensors.html"
run "$F" report --store cst --head ch.safetensors --out csv.html -q
ok_if "and without --data, from the recorded root" sh -c "grep -q 'img class=\"thumb' csv.html && ! grep -q 'class=\"ph\"' csv.html"

# Bad input: a clear error naming file and line, exit 1, nothing written.
echo 'previous page' >keep.html
cp keep.html keep.orig
check_nothing_written() {
	cmp -s keep.html keep.orig && [ -z "$(ls | grep '\.tmp')" ]
}
run "$F" report nothere.jsonl --out keep.html
t "a missing path fails" 1 err "^featcache: cannot read 'nothere.jsonl': no such file"
{ sed -n '1,2p' h.safetensors.jsonl; echo '{"epoch": 3, "loss": oops}'; } >broken.jsonl
run "$F" report broken.jsonl --out keep.html
t "malformed JSON names the file and the line" 1 err "^featcache: cannot read log 'broken.jsonl': line 3: malformed JSON"
{ head -n 2 sw/results.jsonl; printf '{"id":"c9"'; } >trunc.jsonl
run "$F" report trunc.jsonl --out keep.html
t "a truncated last sweep line names the line" 1 err "cannot read sweep 'trunc.jsonl': line 3: malformed JSON"
echo '{"name": "x", "value": 1}' >foreign.jsonl
run "$F" report foreign.jsonl --out keep.html
t "a JSON-lines file that is not a featcache log" 1 err "'foreign.jsonl' is not a featcache training log or sweep results"
: >empty.jsonl
run "$F" report empty.jsonl --out keep.html
t "an empty file" 1 err "'empty.jsonl' is not a featcache .*: it is empty"
{ sed -n '1p' h.safetensors.jsonl; echo '[1, 2]'; } >array.jsonl
run "$F" report array.jsonl --out keep.html
t "a line that is not an object" 1 err "line 2: not a JSON object"
{ sed -n '1p' h.safetensors.jsonl; echo '{"steps": 3}'; } >noepoch.jsonl
run "$F" report noepoch.jsonl --out keep.html
t "a line that is neither header nor epoch" 1 err 'line 2: not a featcache training log line'
echo '{"id":"c1","epochs":5}' >badtype.jsonl
run "$F" report badtype.jsonl --out keep.html
t "a sweep field of the wrong type" 1 err "line 1: \"epochs\" has the wrong type"
mkdir nosweep
run "$F" report nosweep --out keep.html
t "a directory without results.jsonl" 1 err "cannot read sweep 'nosweep': it has no results.jsonl"
run "$F" report h.safetensors.jsonl broken.jsonl --out keep.html
t "one bad path among good ones fails the whole report" 1 err "broken.jsonl"
ok_if "failed reports leave the old page and no temp file" check_nothing_written
if [ "$(id -u)" -ne 0 ]; then
	cp h.safetensors.jsonl locked.jsonl
	chmod 000 locked.jsonl
	run "$F" report locked.jsonl --out keep.html
	t "an unreadable log" 1 err "cannot read log 'locked.jsonl': permission denied"
else
	echo "ok - an unreadable log # SKIP root reads everything"
fi
cp h.safetensors.jsonl self.jsonl
run "$F" report self.jsonl --out self.jsonl
t "a report over its own log is refused" 1 err "cannot write report 'self.jsonl': it is the log"
ok_if "and the log is intact" cmp -s self.jsonl h.safetensors.jsonl
run "$F" report h.safetensors.jsonl --out nodir/r.html
t "an unwritable out" 1 err "cannot write report 'nodir/r.html'"

# In a browser: the page's own check, then a screenshot.
browser=$(command -v chromium || command -v chromium-browser || true)
if [ "${FC_NO_BROWSER:-}" = 1 ]; then
	echo "ok - pages render in chromium # SKIP FC_NO_BROWSER=1"
elif [ -z "$browser" ]; then
	fail "pages render in chromium (not installed: tools/deps.sh installs it; FC_NO_BROWSER=1 skips)"
else
	chrome() {
		timeout 120 "$browser" --headless=new --no-sandbox --disable-gpu --no-first-run \
			--user-data-dir="$tmp/chrome" --hide-scrollbars --enable-logging=stderr --v=0 "$@" 2>"$tmp/chrome.log"
	}
	for page in train:3 sweep:6 single:6 big:5 noeval:1 one:3 two:4 hr:4; do
		p=${page%:*}
		n=${page#*:}
		chrome --virtual-time-budget=2000 --dump-dom "file://$tmp/$p.html" >"$p.dom"
		rc=$?
		t "chromium loads $p.html" 0
		got=$(grep -o '<p id="render-check">[^<]*' "$p.dom" | sed 's/.*>//')
		ok_if "$p.html: every chart draws (render check: ${got:-none})" \
			sh -c "echo '$got' | grep -q '^charts=$n ok.* errors=0$'"
		ok_if "$p.html: no console message" sh -c "! grep -q ':CONSOLE' '$tmp/chrome.log'"
	done
	# Pages with pictures: every thumbnail decodes, the page within its budget.
	cp ih.safetensors.html ih.html
	for page in ih:4:20:0 sh:1:20:0 lg:4:[0-9]*:0 gone:1:20:[1-9][0-9]* data:1:20:[1-9][0-9]* moved:1:20:[1-9][0-9]*; do
		p=${page%%:*}; rest=${page#*:}; n=${rest%%:*}; rest=${rest#*:}; nq=${rest%%:*}; ph=${rest#*:}
		chrome --virtual-time-budget=4000 --dump-dom "file://$tmp/$p.html" >"$p.dom"
		got=$(grep -o '<p id="render-check">[^<]*' "$p.dom" | sed 's/.*>//')
		case $p in moved) thumbs='' ;; *) thumbs=' thumbs=[0-9]* ok' ;; esac
		ok_if "$p.html: charts draw, thumbnails decode ($got)" \
			sh -c "echo '$got' | grep -Eq '^charts=$n ok \(marks=[0-9]*\)$thumbs queries=$nq placeholders=$ph errors=0$'"
		ok_if "$p.html: no console message" sh -c "! grep -q ':CONSOLE' '$tmp/chrome.log'"
		size=$(wc -c <"$p.html")
		ok_if "$p.html: $size bytes, within the 4 MB budget" [ "$size" -le 4000000 ]
	done
	chrome --window-size=1100,2400 --screenshot="$tmp/sweep.png" "file://$tmp/sweep.html" >/dev/null
	size=$(wc -c <sweep.png 2>/dev/null || echo 0)
	ok_if "a screenshot of the sweep page is not blank ($size bytes)" [ "$size" -gt 60000 ]
	if [ -n "${FC_REPORT_KEEP:-}" ]; then
		cp ./*.html sweep.png "$FC_REPORT_KEEP"/
	fi
fi

[ "$failures" -eq 0 ]
