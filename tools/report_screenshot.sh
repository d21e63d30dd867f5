#!/bin/sh
# tools/report_screenshot.sh PAGE.html OUT.png [WIDTHxHEIGHT] - a PNG of a
# featcache report's neighbour galleries, as the README shows them
# (docs/report-galleries.png from `make demo`'s build/demo/report.html).
#
# The page's head (its CSS) and its galleries section are copied into a
# page of their own, which headless Chromium opens and photographs from
# the top: chromium --headless --screenshot=OUT --window-size=W,H.
set -eu
page=${1:?usage: tools/report_screenshot.sh PAGE.html OUT.png [WIDTHxHEIGHT]}
out=${2:?usage: tools/report_screenshot.sh PAGE.html OUT.png [WIDTHxHEIGHT]}
size=${3:-1000x1400}
browser=$(command -v chromium || command -v chromium-browser) || { echo "chromium is not installed" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
grep -q '<section class="gallery"' "$page" || { echo "'$page' has no galleries" >&2; exit 1; }
{
	sed -n '1,/<main>/p' "$page"
	sed -n '/<section class="gallery"/,/<\/section>/p' "$page"
	echo '</main></body></html>'
} >"$tmp/galleries.html"
timeout 120 "$browser" --headless=new --no-sandbox --disable-gpu --no-first-run --hide-scrollbars \
	--user-data-dir="$tmp/profile" --window-size="${size%x*},${size#*x}" --virtual-time-budget=3000 \
	--screenshot="$tmp/shot.png" "file://$tmp/galleries.html" >/dev/null 2>&1
cp "$tmp/shot.png" "$out"
echo "$out: $(wc -c <"$out") bytes"
