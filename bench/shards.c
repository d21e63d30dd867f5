/*
 * bench/shards.c - one dataset over two workers against one process, on
 * this machine, with the merge counted:
 *
 *   one      featcache extract, 1 process x T threads (T = the cores)
 *   shards   featcache extract --shard I/W, W processes x T/W threads at
 *            once, each into its own store, then featcache merge of the W
 *            stores into one
 *   scaling  one's time / (shards' time + merge's time); the issue's
 *            target: >= 0.9. Merge throughput in vectors/s and MB/s of
 *            chunk bytes. The merged store's embed is checked bit for bit
 *            against one's.
 *
 * Usage: shards [--model FILE] [--photos DIR] [--n N] [--workers W]
 *               [--featcache BIN] [--tool PATH]
 * Defaults: build/models/resnet50.onnx, build/bench-data/photos, 400, 2,
 * build/featcache, build/tests/tool_mkimage. The photos (JPEG crops of
 * Debian's wallpapers) are made when DIR has fewer.
 */
#include <dirent.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/benchlib.h"

static int count_jpegs(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	while (d && (de = readdir(d)) != NULL)
		n += strstr(de->d_name, ".jpg") != NULL;
	if (d)
		closedir(d);
	return n;
}

/* The chunk bytes a store holds, from `featcache info --json`. */
static double chunk_bytes(const char *bin, const char *store)
{
	char cmd[4200], line[512];
	double total = 0;
	FILE *p;

	snprintf(cmd, sizeof cmd, "'%s' info --store '%s' --json", bin, store);
	if (!(p = popen(cmd, "r")))
		return -1;
	while (fgets(line, sizeof line, p)) {
		const char *k = strstr(line, "\"chunk_bytes\":");
		if (k)
			total += atof(k + 14);
	}
	pclose(p);
	return total;
}

int main(int argc, char **argv)
{
	bench_photo_opts po = { "build/models/resnet50.onnx", "build/bench-data/photos", 400 };
	const char *bin = "build/featcache", *tool = "build/tests/tool_mkimage";
	int workers = 2, cores = (int)sysconf(_SC_NPROCESSORS_ONLN), c;
	static const struct option opts[] = {
		BENCH_PHOTO_OPTIONS,
		{ "workers", required_argument, NULL, 'w' },
		{ "featcache", required_argument, NULL, 'f' },
		{ "tool", required_argument, NULL, 'T' },
		{ NULL, 0, NULL, 0 },
	};
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'w': workers = atoi(optarg); break;
		case 'f': bin = optarg; break;
		case 'T': tool = optarg; break;
		default:
			if (!bench_photo_opt(&po, c, optarg))
				return 2;
		}
	}
	if (po.n < 50 || workers < 2 || workers > 64 || strlen(po.photos) > 1000)
		return fprintf(stderr, "shards: need --n >= 50, 2 <= --workers <= 64, a shorter --photos\n"), 2;
	if (access(po.model, R_OK) != 0)
		return fprintf(stderr, "shards: no model '%s' (make bench exports it)\n", po.model), 1;
	int per = cores / workers > 0 ? cores / workers : 1;

	char cmd[32768], base[1200], dir[1300];
	snprintf(base, sizeof base, "%s/shards-%d", po.photos, po.n);
	if (count_jpegs(base) < po.n) {
		snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && '%s' --crops '%s' %d 7 %s/*.jpg", base, base,
			 tool, base, po.n, BENCH_PHOTO_SRC);
		if (bench_sh("shards", cmd))
			return 1;
	}
	snprintf(dir, sizeof dir, "%s/shards-run", po.photos);
	snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s/ds' && ln -s \"$(cd '%s' && pwd)\" '%s/ds/photos'", dir,
		 dir, base, dir);
	if (bench_sh("shards", cmd))
		return 1;
	printf("ResNet-50 (%s), %d JPEG crops, %d cores: 1 process x %d threads against %d workers x %d thread%s "
	       "+ merge\n",
	       po.model, po.n, cores, cores, workers, per, per == 1 ? "" : "s");

	/* Warm the page cache for both runs alike. */
	snprintf(cmd, sizeof cmd, "cat '%s'/*.jpg '%s' >/dev/null", base, po.model);
	bench_sh("shards", cmd);

	double t0 = bench_now();
	snprintf(cmd, sizeof cmd,
		 "'%s' extract --store '%s/one' --data '%s/ds' --model '%s' --threads %d --shard none --follow-outside -q >/dev/null", bin,
		 dir, dir, po.model, cores);
	if (bench_sh("shards", cmd))
		return 1;
	double t_one = bench_now() - t0;

	size_t len = (size_t)snprintf(cmd, sizeof cmd, "set -e; ");
	for (int w = 0; w < workers; w++)
		len += (size_t)snprintf(cmd + len, sizeof cmd - len,
					"OMP_NUM_THREADS=%d '%s' extract --store '%s/w-{rank}' --data '%s/ds' --model '%s' "
					"--threads %d --decode-threads 1 --shard %d/%d --follow-outside -q >/dev/null & p%d=$!; ",
					per, bin, dir, dir, po.model, per, w, workers, w);
	for (int w = 0; w < workers; w++)
		len += (size_t)snprintf(cmd + len, sizeof cmd - len, "wait $p%d; ", w);
	t0 = bench_now();
	if (bench_sh("shards", cmd))
		return 1;
	double t_shards = bench_now() - t0;

	len = (size_t)snprintf(cmd, sizeof cmd, "'%s' merge --store '%s/merged'", bin, dir);
	for (int w = 0; w < workers; w++)
		len += (size_t)snprintf(cmd + len, sizeof cmd - len, " '%s/w-%d'", dir, w);
	snprintf(cmd + len, sizeof cmd - len, " -q >/dev/null");
	t0 = bench_now();
	if (bench_sh("shards", cmd))
		return 1;
	double t_merge = bench_now() - t0;

	snprintf(cmd, sizeof cmd,
		 "'%s' embed --store '%s/one' --out '%s/one.npy' -q >/dev/null && '%s' embed --store '%s/merged' --out "
		 "'%s/merged.npy' -q >/dev/null && cmp -s '%s/one.npy' '%s/merged.npy' && cmp -s '%s/one.npy.keys' "
		 "'%s/merged.npy.keys'",
		 bin, dir, dir, bin, dir, dir, dir, dir, dir, dir);
	int same = system(cmd) == 0;
	char merged[1400];
	snprintf(merged, sizeof merged, "%s/merged", dir);
	double bytes = chunk_bytes(bin, merged);

	double eff = t_one / (t_shards + t_merge);
	printf("  one process      %6.2f s  %6.1f images/s\n", t_one, po.n / t_one);
	printf("  %d workers        %6.2f s  %6.1f images/s\n", workers, t_shards, po.n / t_shards);
	printf("  merge            %6.2f s  %6.0f vectors/s, %.1f MB/s of chunks (%.2f MB)\n", t_merge,
	       po.n / t_merge, bytes / 1e6 / t_merge, bytes / 1e6);
	printf("  merged store embeds bit-identical to the one-process store: %s\n", same ? "yes" : "NO");
	printf("shards: scaling efficiency %.2f = one %.2f s / (workers %.2f s + merge %.2f s) (target >= 0.9: %s)\n",
	       eff, t_one, t_shards, t_merge, eff >= 0.9 ? "PASS" : "MISS");
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	bench_sh("shards", cmd);
	return same ? 0 : 1;
}
