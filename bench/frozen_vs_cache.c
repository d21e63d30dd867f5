/*
 * bench/frozen_vs_cache.c - the reason featcache exists, measured: training
 * a projection head on a frozen ResNet-50 the PyTorch way (the backbone runs
 * on every batch of every epoch: bench/peer_frozen.py) against featcache
 * (extract once, then train over the cache), on the same real JPEGs, in one
 * invocation. Prints the total time of each and the ratio for E = 1 and
 * E = 10 epochs, and for a sweep of 16 configurations of 10 epochs each.
 *
 * PyTorch's epoch time is its measured time per image (over --peer-images
 * images after a warm-up batch) times the dataset size: an extrapolation,
 * and labelled so. featcache's times are whole runs of the CLI.
 *
 * Usage: frozen_vs_cache [--model FILE] [--photos DIR] [--n N] [--peer-images N]
 * Defaults: build/models/resnet50.onnx (exported when missing),
 * build/bench-data/frozen, 2400 photos (12 classes: one per source
 * wallpaper of Debian's mate-backgrounds), 192 images for the peer.
 */
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench/benchlib.h"

/* Run a shell command; its wall time, or -1 if it failed. */
static double timed(const char *cmd)
{
	double t0 = bench_now();

	return bench_sh("frozen_vs_cache", cmd) ? -1 : bench_now() - t0;
}

int main(int argc, char **argv)
{
	bench_photo_opts po = { "build/models/resnet50.onnx", "build/bench-data/frozen", 2400 };
	int peer_images = 192, c;
	static const struct option opts[] = {
		BENCH_PHOTO_OPTIONS,
		{ "peer-images", required_argument, NULL, 'P' },
		{ NULL, 0, NULL, 0 },
	};
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'P')
			peer_images = atoi(optarg);
		else if (!bench_photo_opt(&po, c, optarg))
			return 2;
	}
	const char *model = po.model, *photos = po.photos;
	int n = po.n;
	if (n < 120 || peer_images < 32 || strlen(photos) > 1000 || strlen(model) > 1000)
		return fprintf(stderr, "frozen_vs_cache: need --n >= 120, --peer-images >= 32\n"), 2;
	/* The featcache binary and tools sit beside this program's directory. */
	char self[2048], bin[2200], tool[2200], cmd[16384];
	snprintf(self, sizeof self, "%s", argv[0]);
	const char *bdir = dirname(dirname(self));
	snprintf(bin, sizeof bin, "%s/featcache", bdir);
	snprintf(tool, sizeof tool, "%s/tests/tool_mkimage", bdir);
	if (access(model, R_OK) != 0) {
		char mdir[1100];
		snprintf(mdir, sizeof mdir, "%s", model);
		snprintf(cmd, sizeof cmd, "/usr/bin/python3 tools/export_models.py --full resnet50 --out '%s' >&2",
			 dirname(mdir));
		if (timed(cmd) < 0)
			return 1;
	}

	/* 12 classes, one per source photo, n / 12 crops each. */
	static const char *const src[] = { "Aqua",	"Blinds",   "Dune",	 "FreshFlower", "Garden",   "GreenMeadow",
					   "LadyBird", "RainDrops", "Storm", "TwoWings",	"Wood", "YellowFlower" };
	int per = n / 12;
	n = per * 12;
	char marker[1200];
	snprintf(marker, sizeof marker, "%s/.complete-%d", photos, n);
	if (access(marker, F_OK) != 0) {
		snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", photos, photos);
		if (timed(cmd) < 0)
			return 1;
		for (int k = 0; k < 12; k++) {
			snprintf(cmd, sizeof cmd, "mkdir -p '%s/%s' && '%s' --crops '%s/%s' %d %d %s/%s.jpg", photos, src[k],
				 tool, photos, src[k], per, 100 + k, BENCH_PHOTO_SRC, src[k]);
			if (timed(cmd) < 0)
				return 1;
		}
		snprintf(cmd, sizeof cmd, "touch '%s'", marker);
		timed(cmd);
	}
	printf("ResNet-50 (%s), %d JPEGs of 500x375 in 12 classes, 224x224 torchvision preprocessing, 2 threads\n",
	       model, n);

	/* featcache: extract once, then train over the cache. */
	char store[1200];
	snprintf(store, sizeof store, "%s.store", photos);
	snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s.sweep'", store, store);
	timed(cmd);
	snprintf(cmd, sizeof cmd, "'%s' extract --store '%s' --model '%s' --data '%s' --batch 32 --quiet >/dev/null", bin,
		 store, model, photos);
	double t_extract = timed(cmd);
	double t_train[2];
	const int epochs[2] = { 1, 10 };
	for (int i = 0; i < 2; i++) {
		snprintf(cmd, sizeof cmd,
			 "'%s' train --store '%s' --out '%s.head' --epochs %d --miner semihard --eval-split none "
			 "--quiet >/dev/null",
			 bin, store, store, epochs[i]);
		t_train[i] = timed(cmd);
	}
	/* 16 configurations of 10 epochs: one `featcache sweep` when it exists. */
	snprintf(cmd, sizeof cmd, "'%s' help sweep >/dev/null 2>&1", bin);
	int have_sweep = system(cmd) == 0;
	double t_sweep;
	if (have_sweep) {
		snprintf(cmd, sizeof cmd,
			 "'%s' sweep --store '%s' --grid lr=1e-3,3e-4,1e-4,3e-5 --grid output_dim=64,128,256,512 "
			 "--epochs 10 --miner semihard --eval-split val --out '%s.sweep' --quiet >/dev/null",
			 bin, store, store);
		t_sweep = timed(cmd);
	} else {
		t_sweep = t_train[1] < 0 ? -1 : 16 * t_train[1];
	}
	if (t_extract < 0 || t_train[0] < 0 || t_train[1] < 0 || t_sweep < 0)
		return 1;

	/* PyTorch: time per image of frozen-backbone training. */
	snprintf(cmd, sizeof cmd, "/usr/bin/python3 bench/peer_frozen.py --data '%s' --images %d", photos, peer_images);
	FILE *p = popen(cmd, "r");
	double per_image = -1;
	int measured = 0;
	if (!p || fscanf(p, "per_image_s %lf images %d", &per_image, &measured) != 2)
		per_image = -1;
	if (p)
		pclose(p);
	if (per_image <= 0)
		return fprintf(stderr, "frozen_vs_cache: the PyTorch peer failed\n"), 1;
	double epoch_pt = per_image * n;

	printf("  featcache extract     %8.1f s (%.1f images/s)\n", t_extract, n / t_extract);
	printf("  featcache train       %8.1f s for 1 epoch, %.1f s for 10 (whole CLI runs: load, train, save)\n",
	       t_train[0], t_train[1]);
	printf("  featcache sweep       %8.1f s for 16 configurations x 10 epochs%s\n", t_sweep,
	       have_sweep ? " (one featcache sweep, evaluating every epoch)" : " (computed: 16 x the 10-epoch train run)");
	printf("  pytorch frozen        %8.3f s per image (%d images measured) -> %.1f s per epoch (extrapolated)\n",
	       per_image, measured, epoch_pt);
	for (int i = 0; i < 2; i++) {
		double a = epoch_pt * epochs[i], b = t_extract + t_train[i];
		printf("frozen-vs-cache: E=%d: pytorch %.0f s (extrapolated) vs featcache %.0f s (extract %.0f + train "
		       "%.1f) = %.1fx faster\n",
		       epochs[i], a, b, t_extract, t_train[i], a / b);
	}
	double a = epoch_pt * 160, b = t_extract + t_sweep;
	printf("frozen-vs-cache: 16-config sweep of 10 epochs: pytorch %.0f s (extrapolated) vs featcache %.0f s "
	       "(extract %.0f + %s %.1f) = %.1fx faster\n",
	       a, b, t_extract, have_sweep ? "sweep" : "16 trains", t_sweep, a / b);
	return 0;
}
