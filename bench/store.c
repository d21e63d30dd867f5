/*
 * bench/store.c - the store benchmark: bytes per feature vector on disk,
 * write rate and load-into-RAM rate of the feature store for every storage
 * dtype x codec, next to the plain numpy .npy files a user would otherwise
 * keep (docs/design.md "Benchmarks": f16 <= 3.7 KB/vector, f32 lossless <= 7.3 KB,
 * load >= 1 GB/s f32-equivalent).
 *
 * For each configuration it writes N vectors into a fresh store the way
 * extract does: batches of --batch vectors, each with its items (a key
 * like "class-3/00012345.jpg", size, mtime, label, split), through an
 * fc_store_writer that gathers them into chunks of >= 64 KiB, one synced
 * commit each (--legacy: a format-1 store and one chunk and commit per
 * batch, as featcache wrote before store format 2). It measures data.mdb
 * (everything: chunks, index, items, labels, LMDB's pages), reopens the store read-only and times fc_store_load_all (best of
 * a few runs, default OpenMP threads and one thread), then checks the loaded
 * matrix against the originals (bit-exact for f32, max relative error for
 * the lossy dtypes). Each store is deleted as soon as it is measured.
 *
 * The peers, measured in the same invocation because the machine is noisy:
 * the same vectors as f32 and f16 .npy files (written here), loaded into an
 * f32 matrix by numpy through bench/peer_npy.py.
 *
 * A reference line says what copying into a fresh matrix costs here at all
 * (page faults included), the ceiling for any loader that returns one.
 *
 * This is not a test: correctness is tests/test_store.c's job. The checks
 * here only make sure the figures describe a store that round-trips.
 *
 * Vectors are synthetic by default (see gen_vectors) or read from an f32
 * .npy of real features with --real.
 */
#include "featcache/featcache.h"
#include "featcache/store.h"
#include "store/chunk.h"

#include "bench/benchlib.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROG "bench/store"

/* docs/design.md targets. "KB" there is 1000 bytes: the fp16 .npy it quotes as
 * 4.1 KB is 4096 bytes of data plus its share of the header. */
#define TARGET_F16_BYTES 3700.0
#define TARGET_F32_BYTES 7300.0
#define TARGET_LOAD_GBS 1.0
#define TARGET_DIM 2048 /* the size targets are for vectors of this dim */

#define MAX_PATH 4096

/* ---- small helpers ---- */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void cleanup_now(void);

static void die(const char *fmt, ...)
{
	va_list ap;
	fflush(stdout);
	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	cleanup_now();
	exit(1);
}

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_error(const char *fmt, ...)
{
	va_list ap;
	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n" PROG ": try '--help'\n", stderr);
	exit(2);
}

static void *xaligned(size_t bytes)
{
	size_t rounded = (bytes + 63) & ~(size_t)63;
	if (rounded < bytes)
		die("out of memory for %zu bytes", bytes);
	void *p = aligned_alloc(64, rounded ? rounded : 64);
	if (!p)
		die("out of memory for %zu bytes", bytes);
	return p;
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		die("out of memory for %zu x %zu bytes", n, size);
	return p;
}

/* "48k", "1.23M": rates for the summary lines. */
static const char *si(char *buf, size_t cap, double x)
{
	if (x >= 1e6)
		snprintf(buf, cap, "%.2fM", x / 1e6);
	else if (x >= 1e4)
		snprintf(buf, cap, "%.0fk", x / 1e3);
	else if (x >= 1e3)
		snprintf(buf, cap, "%.1fk", x / 1e3);
	else
		snprintf(buf, cap, "%.0f", x);
	return buf;
}

/* dir + "/" + name into buf[MAX_PATH]; a path that does not fit is fatal. */
static void path_join(char *buf, const char *dir, const char *name)
{
	if (snprintf(buf, MAX_PATH, "%s/%s", dir, name) >= MAX_PATH)
		die("path too long: '%s/%s'", dir, name);
}

static uint64_t file_size(const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0)
		die("cannot stat '%s': %s", path, strerror(errno));
	return (uint64_t)st.st_size;
}

/* ---- temporary files, removed on exit and on SIGINT/SIGTERM ---- */

/* Fixed slots rather than a list: the signal handler may only call
 * async-signal-safe functions, so it walks plain arrays with unlink/rmdir. */
enum { TMP_NPY32, TMP_NPY16, TMP_DATA, TMP_LOCK, TMP_STORE, TMP_DIR, TMP_SLOTS };
static char tmp_path[TMP_SLOTS][MAX_PATH];
static volatile sig_atomic_t tmp_live[TMP_SLOTS];

static void tmp_set(int slot, const char *path)
{
	if (snprintf(tmp_path[slot], MAX_PATH, "%s", path) >= MAX_PATH)
		die("path too long: '%s'", path);
	tmp_live[slot] = 1;
}

static void tmp_remove(int slot)
{
	if (!tmp_live[slot])
		return;
	tmp_live[slot] = 0;
	if (slot == TMP_STORE || slot == TMP_DIR)
		rmdir(tmp_path[slot]);
	else
		unlink(tmp_path[slot]);
}

static void cleanup_now(void)
{
	for (int i = 0; i < TMP_SLOTS; i++) /* files first, then the store dir, then the temp dir */
		tmp_remove(i);
}

static void on_signal(int sig)
{
	cleanup_now();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Name the filesystem so the output says whether it ran on a disk. */
static const char *fs_kind(const char *path, int *is_ram)
{
	struct statfs sf;
	*is_ram = 0;
	if (statfs(path, &sf) != 0)
		return "unknown filesystem";
	switch ((unsigned long)sf.f_type) {
	case 0xEF53UL: return "ext2/3/4";
	case 0x58465342UL: return "xfs";
	case 0x9123683EUL: return "btrfs";
	case 0x2FC12FC1UL: return "zfs";
	case 0x794C7630UL: return "overlayfs";
	case 0x6969UL: return "nfs";
	case 0x01021994UL: *is_ram = 1; return "tmpfs";
	case 0x858458F6UL: *is_ram = 1; return "ramfs";
	default: return "other filesystem";
	}
}

/* ---- the synthetic features ---- */

/*
 * What pooled post-ReLU CNN features (a ResNet-50 global average pool) look
 * like, closely enough for compression and conversion to behave the same:
 * every dimension d has its own scale s_d, lognormal with sigma 0.5 and mean
 * 0.45 (mu = ln 0.45 - sigma^2/2); a value is s_d * Exp(1), except that 3 % of
 * the values are exactly 0 (channels that never fired anywhere in the image).
 * So the values are non-negative, mostly below 1, skewed with a long tail,
 * and share no exact bit patterns beyond the zeros: close to the worst case
 * for zstd, which is what real features are too.
 *
 * Deterministic for a seed and independent of the thread count: the scales
 * come from stream 0 and row r from its own stream r + 1 of a splitmix64
 * generator.
 */
#define GEN_SIGMA 0.5
#define GEN_MEAN 0.45
#define GEN_ZEROS 0.03

typedef struct rng {
	uint64_t s;
} rng;

/* splitmix64 (Steele, Lea, Flood 2014): a 64-bit counter through a mixer. */
static uint64_t rng_next(rng *r)
{
	uint64_t z = (r->s += 0x9E3779B97F4A7C15ULL);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

static rng rng_stream(uint64_t seed, uint64_t stream)
{
	rng r = { seed ^ (stream * 0xD1B54A32D192ED03ULL) };
	rng_next(&r); /* decorrelate neighbouring streams */
	r.s ^= rng_next(&r);
	return r;
}

/* uniform in (0, 1): never exactly 0 or 1, so log() is always finite */
static double rng_unit(rng *r)
{
	return ((double)(rng_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static void gen_vectors(float *x, size_t n, size_t dim, uint64_t seed)
{
	double *scale = xcalloc(dim, sizeof *scale);
	const double mu = log(GEN_MEAN) - GEN_SIGMA * GEN_SIGMA / 2;
	rng r = rng_stream(seed, 0);
	for (size_t d = 0; d < dim; d++) { /* Box-Muller: one normal per pair of uniforms */
		double z = sqrt(-2.0 * log(rng_unit(&r))) * cos(2.0 * M_PI * rng_unit(&r));
		scale[d] = exp(mu + GEN_SIGMA * z);
	}
#pragma omp parallel for schedule(static)
	for (size_t i = 0; i < n; i++) {
		rng ri = rng_stream(seed, i + 1);
		float *row = x + i * dim;
		for (size_t d = 0; d < dim; d++) {
			/* One uniform decides both: below GEN_ZEROS a zero, above it
			 * rescaled to (0, 1] and turned into Exp(1) by inversion. */
			double u = rng_unit(&ri);
			row[d] = u < GEN_ZEROS ? 0.0f
					       : (float)(scale[d] * -log((u - GEN_ZEROS) / (1.0 - GEN_ZEROS)));
		}
	}
	free(scale);
}

/* The content hash of row i: bytes 8..15 carry i, so a loaded row names
 * the original it must equal. */
static void make_hashes(uint8_t (*h)[FC_HASH_LEN], size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++) {
		rng r = rng_stream(seed ^ 0x5EEDULL, i);
		uint64_t a = rng_next(&r);
		for (int b = 0; b < 8; b++) {
			h[i][b] = (uint8_t)(a >> (56 - 8 * b));
			h[i][8 + b] = (uint8_t)((uint64_t)i >> (56 - 8 * b));
		}
	}
}

static uint64_t hash_row(const uint8_t *h)
{
	uint64_t v = 0;
	for (int b = 0; b < 8; b++)
		v = v << 8 | h[8 + b];
	return v;
}

/* ---- .npy files (format 1.0 written; 1.0, 2.0 and 3.0 read) ---- */

/* NEP 1 / numpy.lib.format: magic "\x93NUMPY", major, minor, header length
 * (u16 LE for 1.0, u32 LE for 2.0 and 3.0), then an ASCII Python dict
 * literal padded with spaces and ended with '\n' so that the data starts at
 * a multiple of 64 bytes. */
static const char npy_magic[6] = { '\x93', 'N', 'U', 'M', 'P', 'Y' };

static void npy_write(const char *path, const float *x, size_t n, size_t dim, int half)
{
	char dict[256];
	int dl = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%zu, %zu), }",
			  half ? "<f2" : "<f4", n, dim);
	if (dl < 0 || (size_t)dl >= sizeof dict)
		die("npy header too long");
	size_t total = (10 + (size_t)dl + 1 + 63) & ~(size_t)63; /* preamble + dict + '\n', padded */
	size_t hlen = total - 10;
	if (hlen > UINT16_MAX)
		die("npy header too long");
	char head[512];
	memcpy(head, npy_magic, 6);
	head[6] = 1;
	head[7] = 0;
	head[8] = (char)(hlen & 0xFF);
	head[9] = (char)(hlen >> 8);
	memcpy(head + 10, dict, (size_t)dl);
	memset(head + 10 + dl, ' ', hlen - (size_t)dl - 1);
	head[total - 1] = '\n';

	FILE *f = fopen(path, "wb");
	if (!f)
		die("cannot create '%s': %s", path, strerror(errno));
	int ok = fwrite(head, 1, total, f) == total;
	if (!half) {
		ok = ok && fwrite(x, sizeof(float), n * dim, f) == n * dim;
	} else {
		enum { BLOCK = 1 << 16 };
		uint16_t *h = xcalloc(BLOCK, sizeof *h);
		for (size_t done = 0; ok && done < n * dim; done += BLOCK) {
			size_t m = n * dim - done < BLOCK ? n * dim - done : BLOCK;
			fci_f32_to_f16(h, x + done, m);
			ok = fwrite(h, sizeof *h, m, f) == m;
		}
		free(h);
	}
	ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
	if (fclose(f) != 0)
		ok = 0;
	if (!ok)
		die("cannot write '%s': %s", path, strerror(errno));
}

/* A tiny reader for the dict literal: 'key': value pairs where a value is a
 * quoted string, True/False or a tuple of non-negative integers. */
typedef struct npy_hdr {
	char descr[16];
	int fortran; /* -1 = not given */
	int ndim;    /* -1 = not given */
	uint64_t shape[8];
} npy_hdr;

static const char *skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	return p;
}

/* A quoted string into out (truncation is an error). NULL on bad syntax. */
static const char *parse_str(const char *p, char *out, size_t cap)
{
	char q = *p;
	if (q != '\'' && q != '"')
		return NULL;
	size_t n = 0;
	for (p++; *p && *p != q; p++) {
		if (n + 1 >= cap)
			return NULL;
		out[n++] = *p;
	}
	if (*p != q)
		return NULL;
	out[n] = '\0';
	return p + 1;
}

/* Returns NULL and sets *why on any problem. */
static const char *npy_parse_dict(const char *p, npy_hdr *h, const char **why)
{
	h->descr[0] = '\0';
	h->fortran = -1;
	h->ndim = -1;
	*why = "malformed header dict";
	p = skip_ws(p);
	if (*p++ != '{')
		return NULL;
	for (;;) {
		p = skip_ws(p);
		if (*p == '}')
			return p + 1;
		char key[32];
		if (!(p = parse_str(p, key, sizeof key)))
			return NULL;
		p = skip_ws(p);
		if (*p++ != ':')
			return NULL;
		p = skip_ws(p);
		if (strcmp(key, "descr") == 0) {
			if (!(p = parse_str(p, h->descr, sizeof h->descr))) {
				*why = "'descr' is not a simple dtype string (structured arrays are not supported)";
				return NULL;
			}
		} else if (strcmp(key, "fortran_order") == 0) {
			if (strncmp(p, "True", 4) == 0) {
				h->fortran = 1;
				p += 4;
			} else if (strncmp(p, "False", 5) == 0) {
				h->fortran = 0;
				p += 5;
			} else {
				return NULL;
			}
		} else if (strcmp(key, "shape") == 0) {
			if (*p++ != '(')
				return NULL;
			h->ndim = 0;
			for (;;) {
				p = skip_ws(p);
				if (*p == ')') {
					p++;
					break;
				}
				if (*p < '0' || *p > '9')
					return NULL;
				uint64_t v = 0;
				for (; *p >= '0' && *p <= '9'; p++) {
					if (v > (UINT64_MAX - 9) / 10) {
						*why = "a dimension in 'shape' overflows 64 bits";
						return NULL;
					}
					v = v * 10 + (uint64_t)(*p - '0');
				}
				if (h->ndim == (int)(sizeof h->shape / sizeof h->shape[0])) {
					*why = "'shape' has too many dimensions";
					return NULL;
				}
				h->shape[h->ndim++] = v;
				p = skip_ws(p);
				if (*p == ',')
					p++;
				else if (*p != ')')
					return NULL;
			}
		} else {
			*why = "unknown key in header dict";
			return NULL;
		}
		p = skip_ws(p);
		if (*p == ',')
			p++;
		else if (*p != '}')
			return NULL;
	}
}

/* Read an f32, C-order, 2-D .npy. At most max_rows rows (0 = all). Dies
 * with a message that names the file and the problem. */
static float *npy_read_f32(const char *path, size_t max_rows, size_t *rows_out, size_t *dim_out)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		die("cannot open '%s': %s", path, strerror(errno));
	struct stat st;
	if (fstat(fileno(f), &st) != 0)
		die("cannot stat '%s': %s", path, strerror(errno));
	uint64_t fsize = (uint64_t)st.st_size;
	unsigned char pre[12];
	if (fsize < 10 || fread(pre, 1, 10, f) != 10 || memcmp(pre, npy_magic, 6) != 0)
		die("cannot read '%s': not a .npy file (no \\x93NUMPY magic)", path);
	uint64_t hlen, off;
	if (pre[6] == 1) {
		hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8;
		off = 10;
	} else if (pre[6] == 2 || pre[6] == 3) {
		if (fread(pre + 10, 1, 2, f) != 2)
			die("cannot read '%s': truncated .npy preamble", path);
		hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8 | (uint64_t)pre[10] << 16 |
		       (uint64_t)pre[11] << 24;
		off = 12;
	} else {
		die("cannot read '%s': .npy format version %u.%u is not supported (1.0 to 3.0 are)", path,
		    pre[6], pre[7]);
	}
	/* Real headers are ~128 bytes; cap what we allocate for a hostile one. */
	if (hlen > (1u << 20) || hlen > fsize - off)
		die("cannot read '%s': header length %llu does not fit the %llu-byte file", path,
		    (unsigned long long)hlen, (unsigned long long)fsize);
	char *text = xcalloc((size_t)hlen + 1, 1);
	if (fread(text, 1, (size_t)hlen, f) != hlen)
		die("cannot read '%s': truncated header", path);
	if (memchr(text, '\0', (size_t)hlen))
		die("cannot read '%s': header contains a NUL byte", path);
	npy_hdr h;
	const char *why;
	if (!npy_parse_dict(text, &h, &why))
		die("cannot read '%s': %s", path, why);
	free(text);
	if (h.descr[0] == '\0' || h.fortran < 0 || h.ndim < 0)
		die("cannot read '%s': header lacks 'descr', 'fortran_order' or 'shape'", path);
	if (strcmp(h.descr, "<f4") != 0)
		die("cannot read '%s': dtype '%s' is not little-endian float32 ('<f4'): save x.astype('<f4')",
		    path, h.descr);
	if (h.fortran)
		die("cannot read '%s': Fortran-order array: save np.ascontiguousarray(x)", path);
	if (h.ndim != 2)
		die("cannot read '%s': a %d-D array, expected 2-D (vectors x dim)", path, h.ndim);
	uint64_t rows = h.shape[0], dim = h.shape[1];
	if (rows == 0 || dim == 0)
		die("cannot read '%s': empty array (%llu x %llu)", path, (unsigned long long)rows,
		    (unsigned long long)dim);
	if (dim > FC_CHUNK_MAX_DIM)
		die("cannot read '%s': dim %llu exceeds the store's limit of %u", path,
		    (unsigned long long)dim, FC_CHUNK_MAX_DIM);
	if (rows > UINT64_MAX / dim / sizeof(float) || rows * dim * sizeof(float) > SIZE_MAX / 2)
		die("cannot read '%s': %llu x %llu floats overflow the address space", path,
		    (unsigned long long)rows, (unsigned long long)dim);
	uint64_t need = rows * dim * sizeof(float);
	if (fsize - off - hlen != need)
		die("cannot read '%s': the header promises %llu data bytes, the file has %llu (%s)", path,
		    (unsigned long long)need, (unsigned long long)(fsize - off - hlen),
		    fsize - off - hlen < need ? "truncated" : "trailing bytes");
	if (max_rows && rows > max_rows)
		rows = max_rows;
	size_t count = (size_t)(rows * dim);
	float *x = xaligned(count * sizeof(float));
	if (fread(x, sizeof(float), count, f) != count)
		die("cannot read '%s': %s", path, ferror(f) ? strerror(errno) : "unexpected end of file");
	fclose(f);
	*rows_out = (size_t)rows;
	*dim_out = (size_t)dim;
	return x;
}

/* ---- the numpy peer ---- */

/* Run argv, capture up to cap-1 bytes of stdout. Returns the exit status,
 * or -1 if it could not run or died of a signal. */
static int run_capture(char *const argv[], char *out, size_t cap)
{
	int fd[2];
	out[0] = '\0';
	if (pipe(fd) != 0)
		return -1;
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0) {
		close(fd[0]);
		close(fd[1]);
		return -1;
	}
	if (pid == 0) {
		dup2(fd[1], STDOUT_FILENO);
		close(fd[0]);
		close(fd[1]);
		execv(argv[0], argv);
		_exit(127);
	}
	close(fd[1]);
	size_t n = 0;
	for (;;) {
		ssize_t r = read(fd[0], out + n, cap - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
		if (n == cap - 1) { /* drain the rest so the child cannot block */
			char sink[256];
			while (read(fd[0], sink, sizeof sink) > 0)
				;
			break;
		}
	}
	out[n] = '\0';
	close(fd[0]);
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	if (!WIFEXITED(status))
		return -1;
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
		out[--n] = '\0';
	return WEXITSTATUS(status);
}

typedef struct peer {
	const char *python, *script;
	int ok;             /* python and numpy are there */
	char why[512];      /* why not, or the numpy version */
} peer;

static int file_exists(const char *p)
{
	return access(p, R_OK) == 0;
}

/* bench/peer_npy.py next to the working directory (make runs from the top),
 * else in a parent of the binary's directory (build/<x>/bench/store). */
static const char *find_script(char *buf, size_t cap)
{
	if (file_exists("bench/peer_npy.py"))
		return "bench/peer_npy.py";
	char exe[MAX_PATH];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n <= 0)
		return NULL;
	exe[n] = '\0';
	for (int up = 0; up < 8; up++) {
		char *slash = strrchr(exe, '/');
		if (!slash)
			return NULL;
		*slash = '\0';
		if (snprintf(buf, cap, "%s/bench/peer_npy.py", exe) < (int)cap && file_exists(buf))
			return buf;
	}
	return NULL;
}

static void peer_probe(peer *p)
{
	p->ok = 0;
	if (access(p->python, X_OK) != 0) {
		snprintf(p->why, sizeof p->why, "%s not found", p->python);
		return;
	}
	if (!p->script) {
		snprintf(p->why, sizeof p->why,
			 "bench/peer_npy.py not found (run from the repository top or pass --peer-script)");
		return;
	}
	char *argv[] = { (char *)p->python, (char *)p->script, (char *)"--version", NULL };
	char out[512];
	int rc = run_capture(argv, out, sizeof out);
	if (rc != 0) {
		snprintf(p->why, sizeof p->why, "%s", rc == 3 && out[0] ? out : "peer script failed");
		return;
	}
	p->ok = 1;
	snprintf(p->why, sizeof p->why, "%s", out);
}

/* Best-of-runs seconds for numpy to load `path` into an f32 matrix, or a
 * negative value (with *why) when the peer could not run. */
static double peer_time(const peer *p, const char *path, int runs, char *why, size_t why_cap)
{
	if (!p->ok) {
		snprintf(why, why_cap, "%s", p->why);
		return -1;
	}
	char nruns[16];
	snprintf(nruns, sizeof nruns, "%d", runs);
	char *argv[] = { (char *)p->python, (char *)p->script, (char *)path, nruns, NULL };
	char out[256];
	int rc = run_capture(argv, out, sizeof out);
	char *end;
	double t = strtod(out, &end);
	if (rc != 0 || end == out || !(t > 0)) {
		snprintf(why, why_cap, "peer failed (status %d): %s", rc, out);
		return -1;
	}
	return t;
}

/* ---- one configuration ---- */

typedef struct result {
	fc_dtype dtype;
	fc_codec codec;
	int ok;
	char err[512];
	double disk_bpv, chunk_bpv;
	double write_s, load_s, load1_s; /* load1: one thread */
	double max_rel;                  /* lossy dtypes */
	int exact;                       /* f32: every bit equal */
} result;

typedef struct bench {
	const float *x;
	const uint8_t (*hashes)[FC_HASH_LEN];
	size_t n, dim, batch;
	int level, runs, threads;
	int legacy; /* format 1, one chunk per batch */
	const char *tmpdir;
} bench;

#define BENCH_CLASSES 10

static void store_fail(result *r, fc_store *s, const char *what, int err);

/* Write the vectors with their items as extract does (see the top). */
static int write_items(fc_store *s, const bench *b, const uint8_t *id, result *r)
{
	static const char *const names[BENCH_CLASSES] = { "class-0", "class-1", "class-2", "class-3", "class-4",
							  "class-5", "class-6", "class-7", "class-8", "class-9" };
	uint32_t labels[BENCH_CLASSES];
	fc_store_writer *w = NULL;
	fc_item *items = xcalloc(b->batch, sizeof *items);
	char (*keys)[32] = xcalloc(b->batch, 32);
	int err = fc_store_label_ids(s, names, BENCH_CLASSES, labels);
	if (err)
		store_fail(r, s, "labels", err);
	else if (!b->legacy && (err = fc_store_writer_new(&w, s, id, 0)) != 0)
		store_fail(r, s, "writer", err);
	for (size_t i = 0; !err && i < b->n; i += b->batch) {
		size_t m = b->n - i < b->batch ? b->n - i : b->batch;
		for (size_t k = 0; k < m; k++) {
			/* extract writes in key order: the classes one after the other */
			uint64_t h = hash_row(b->hashes[i + k]);
			size_t c = (i + k) * BENCH_CLASSES / b->n;
			snprintf(keys[k], sizeof keys[k], "class-%zu/%08zu.jpg", c, i + k);
			items[k] = (fc_item){ .key = keys[k], .size = 60000 + h % 100000,
					      .mtime_ns = 1764806400000000000ll + (int64_t)(h % 1000000000000ull),
					      .label = labels[c],
					      .split = h % 10 == 0 ? FC_SPLIT_VAL : FC_SPLIT_TRAIN };
			memcpy(items[k].hash, b->hashes[i + k], FC_HASH_LEN);
		}
		fc_store_batch bt = { .exid = id, .vecs = b->x + i * b->dim, .hashes = b->hashes + i, .n_vecs = m,
				      .items = items, .n_items = m };
		err = b->legacy ? fc_store_write_batch(s, &bt, NULL) : fc_store_writer_add(w, &bt);
		if (err)
			store_fail(r, s, "write", err);
	}
	if (!err && w && (err = fc_store_writer_flush(w)) != 0)
		store_fail(r, s, "write", err);
	fc_store_writer_free(w);
	free(items);
	free(keys);
	return err;
}

/* Compare the loaded matrix with the originals, row by row via the hashes. */
static int check_matrix(const bench *b, const fc_matrix *m, result *r)
{
	if (m->rows != b->n || m->dim != b->dim) {
		snprintf(r->err, sizeof r->err, "loaded %zu x %zu, wrote %zu x %zu", m->rows, m->dim, b->n,
			 b->dim);
		return -1;
	}
	unsigned char *seen = xcalloc(b->n, 1);
	int bad_map = 0;
	size_t not_exact = 0;
	double worst = 0;
	for (size_t i = 0; i < m->rows; i++) {
		uint64_t src = hash_row(m->hashes[i]);
		if (src >= b->n || seen[src] || memcmp(m->hashes[i], b->hashes[src], FC_HASH_LEN)) {
			bad_map = 1;
			break;
		}
		seen[src] = 1;
	}
	free(seen);
	if (bad_map) {
		snprintf(r->err, sizeof r->err, "loaded rows do not map one-to-one onto the written hashes");
		return -1;
	}
#pragma omp parallel for schedule(static) reduction(max : worst) reduction(+ : not_exact)
	for (size_t i = 0; i < m->rows; i++) {
		const float *got = m->data + i * b->dim;
		const float *want = b->x + hash_row(m->hashes[i]) * b->dim;
		if (memcmp(got, want, b->dim * sizeof(float)) != 0)
			not_exact++;
		double amax = 0, dmax = 0;
		for (size_t d = 0; d < b->dim; d++) {
			double a = fabs((double)want[d]), e = fabs((double)got[d] - (double)want[d]);
			if (a > amax)
				amax = a;
			if (e > dmax || e != e) /* NaN counts as the worst error */
				dmax = e != e ? INFINITY : e;
		}
		double rel = amax > 0 ? dmax / amax : (dmax > 0 ? INFINITY : 0);
		if (rel > worst)
			worst = rel;
	}
	r->max_rel = worst;
	r->exact = not_exact == 0;
	return 0;
}

static void store_fail(result *r, fc_store *s, const char *what, int err)
{
	snprintf(r->err, sizeof r->err, "%s: %s", what, s && fc_store_errmsg(s)[0] ? fc_store_errmsg(s) : fc_strerror(err));
}

static double time_load(fc_store *s, const uint8_t *id, int runs, const bench *b, result *r, int check)
{
	double best = INFINITY;
	for (int k = 0; k < runs; k++) {
		fc_matrix m;
		double t0 = bench_now();
		int err = fc_store_load_all(s, id, &m);
		double t = bench_now() - t0;
		if (err) {
			store_fail(r, s, "load", err);
			return -1;
		}
		if (t < best)
			best = t;
		if (check && k == 0 && check_matrix(b, &m, r) != 0) {
			fc_matrix_free(&m);
			return -1;
		}
		fc_matrix_free(&m);
	}
	return best;
}

static void run_config(const bench *b, result *r)
{
	char store[MAX_PATH], path[MAX_PATH], name[64];
	snprintf(name, sizeof name, "store-%s-%s", fc_dtype_name(r->dtype), fc_codec_name(r->codec));
	path_join(store, b->tmpdir, name);
	tmp_set(TMP_STORE, store);
	path_join(path, store, "data.mdb");
	tmp_set(TMP_DATA, path);
	path_join(path, store, "lock.mdb");
	tmp_set(TMP_LOCK, path);

	uint8_t id[FC_HASH_LEN] = "bench-store";
	id[12] = (uint8_t)r->dtype;
	id[13] = (uint8_t)r->codec;
	fc_extractor ex = { .dim = (uint32_t)b->dim, .dtype = r->dtype, .codec = r->codec,
			    .level = b->level, .descriptor = "{\"bench\": \"store\"}" };
	memcpy(ex.id, id, sizeof id);

	/* Write as extract does: defaults (1 GiB map, growing) and synced commits. */
	fc_store_opts wo = { .create = 1, .format = b->legacy ? 1 : 0 };
	fc_store *s = NULL;
	int err = fc_store_open(&s, store, &wo);
	if (err) {
		store_fail(r, s, "create", err);
		goto out;
	}
	if ((err = fc_store_put_extractor(s, &ex)) != 0) {
		store_fail(r, s, "put extractor", err);
		goto out;
	}
	double t0 = bench_now();
	if ((err = write_items(s, b, id, r)) != 0)
		goto out;
	r->write_s = bench_now() - t0;
	fc_store_stats st;
	if ((err = fc_store_stats_get(s, &st)) != 0) {
		store_fail(r, s, "stats", err);
		goto out;
	}
	r->chunk_bpv = st.n_extractors == 1 ? (double)st.extractors[0].chunk_bytes / (double)b->n : NAN;
	free(st.extractors);
	fc_store_free(s);
	s = NULL;
	r->disk_bpv = (double)file_size(tmp_path[TMP_DATA]) / (double)b->n;

	/* Load as train does: a read-only handle on the finished store. The
	 * first run also checks the values. */
	fc_store_opts ro = { .readonly = 1 };
	if ((err = fc_store_open(&s, store, &ro)) != 0) {
		store_fail(r, s, "reopen", err);
		goto out;
	}
	if ((r->load_s = time_load(s, id, b->runs, b, r, 1)) < 0)
		goto out;
	omp_set_num_threads(1);
	r->load1_s = time_load(s, id, b->runs, b, r, 0);
	omp_set_num_threads(b->threads);
	if (r->load1_s < 0)
		goto out;
	r->ok = 1;
out:
	fc_store_free(s);
	tmp_remove(TMP_DATA);
	tmp_remove(TMP_LOCK);
	tmp_remove(TMP_STORE);
}

/* ---- what any loader pays here ---- */

/*
 * A reference, not the store: the rate of copying the vectors, batch by
 * batch on the default threads, into a freshly allocated f32 matrix, as
 * fc_store_load_all's decode must (it returns a new matrix each time). On a
 * VM with memory cgroups the first-touch page faults of that matrix cost
 * more than the copy itself, so this bounds every store load from above.
 * With hugepage = 1 the matrix is 2 MiB aligned and madvise(MADV_HUGEPAGE)'d,
 * which is what numpy does for its own arrays of 4 MiB and more; on a
 * kernel whose THP mode is "madvise" that cuts the faults 512-fold.
 */
static double fresh_copy_gbs(const bench *b, int hugepage)
{
	size_t bytes = b->n * b->dim * sizeof(float);
	size_t align = hugepage ? (size_t)1 << 21 : 64;
	size_t rounded = (bytes + align - 1) & ~(align - 1);
	size_t rows = b->batch;
	double best = INFINITY;
	for (int k = 0; k < b->runs; k++) {
		double t0 = bench_now();
		float *m = aligned_alloc(align, rounded);
		if (!m)
			die("out of memory for %zu bytes", rounded);
		if (hugepage)
			madvise(m, rounded, MADV_HUGEPAGE); /* advice only: failure just means 4 KiB pages */
#pragma omp parallel for schedule(dynamic, 1)
		for (size_t i = 0; i < b->n; i += rows) {
			size_t r = b->n - i < rows ? b->n - i : rows;
			memcpy(m + i * b->dim, b->x + i * b->dim, r * b->dim * sizeof(float));
		}
		double t = bench_now() - t0;
		free(m);
		if (t < best)
			best = t;
	}
	return (double)bytes / best / 1e9;
}

/* ---- output ---- */

typedef struct npy_peer {
	const char *name;
	double bpv;
	double load_s; /* < 0: unavailable */
	char why[512];
} npy_peer;

static const char *verdict(int pass)
{
	return pass ? "PASS" : "MISS";
}

/* The .npy a row is compared with: f32 with f32, everything lossy with f16. */
static const npy_peer *peer_of(const result *r, const npy_peer *p32, const npy_peer *p16)
{
	return r->dtype == FC_DTYPE_F32 ? p32 : p16;
}

static double gbs(const bench *b, double s)
{
	return (double)b->n * (double)b->dim * 4.0 / s / 1e9;
}

static void print_summary(const bench *b, const result *r, const npy_peer *p32, const npy_peer *p16)
{
	char name[64], k1[32];
	snprintf(name, sizeof name, "%s/%s", fc_dtype_name(r->dtype), fc_codec_name(r->codec));
	if (!r->ok) {
		printf("store %s: FAILED: %s\n", name, r->err);
		return;
	}
	printf("store %s: %.0f B/vector on disk = %.3f× raw f16 (all of data.mdb: items, index, chunks)", name,
	       r->disk_bpv, r->disk_bpv / (2.0 * (double)b->dim));
	int sized = b->dim == TARGET_DIM; /* the size targets are for 2048-d vectors only */
	if (sized && r->dtype == FC_DTYPE_F16)
		printf(" (target ≤ %.0f %s)", TARGET_F16_BYTES, verdict(r->disk_bpv <= TARGET_F16_BYTES));
	else if (sized && r->dtype == FC_DTYPE_F32)
		printf(" (lossless target ≤ %.0f %s)", TARGET_F32_BYTES,
		       verdict(r->disk_bpv <= TARGET_F32_BYTES));
	double load = gbs(b, r->load_s);
	printf(", chunks %.0f B/vector, write %s vec/s (%.0f MB/s), load %.2f GB/s (target ≥ %.1f %s; "
	       "1 thread %.2f GB/s), ",
	       r->chunk_bpv, si(k1, sizeof k1, (double)b->n / r->write_s),
	       (double)b->n * (double)b->dim * 4.0 / r->write_s / 1e6, load, TARGET_LOAD_GBS,
	       verdict(load >= TARGET_LOAD_GBS), gbs(b, r->load1_s));
	if (r->dtype == FC_DTYPE_F32)
		printf("%s", r->exact ? "bit-exact" : "NOT BIT-EXACT");
	else
		printf("max rel err %.1e", r->max_rel);
	const npy_peer *p = peer_of(r, p32, p16);
	printf("; %.2f× the bytes of %s", r->disk_bpv / p->bpv, p->name);
	if (p->load_s > 0)
		printf(", load %.2f× numpy (%.2f× with 1 thread)", p->load_s / r->load_s,
		       p->load_s / r->load1_s);
	else
		printf(", numpy peer unavailable");
	printf("\n");
}

static void print_table(const bench *b, const result *res, size_t nres, const npy_peer *p32,
			const npy_peer *p16)
{
	printf("\n| storage | B/vector on disk | × raw f16 | chunk B/vector | vs .npy bytes | write vec/s | write MB/s "
	       "| load GB/s (%d thr) | load GB/s (1 thr) | load vs numpy | max rel err |\n",
	       b->threads);
	printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	for (size_t i = 0; i < nres; i++) {
		const result *r = &res[i];
		if (!r->ok) {
			printf("| %s/%s | failed: %s | | | | | | | | | |\n", fc_dtype_name(r->dtype),
			       fc_codec_name(r->codec), r->err);
			continue;
		}
		const npy_peer *p = peer_of(r, p32, p16);
		char err[32], vs[32];
		if (r->dtype == FC_DTYPE_F32)
			snprintf(err, sizeof err, "%s", r->exact ? "0 (bit-exact)" : "NOT bit-exact");
		else
			snprintf(err, sizeof err, "%.1e", r->max_rel);
		if (p->load_s > 0)
			snprintf(vs, sizeof vs, "%.2f× %s", p->load_s / r->load_s,
				 r->dtype == FC_DTYPE_F32 ? "f32" : "f16");
		else
			snprintf(vs, sizeof vs, "n/a");
		printf("| %s/%s | %.0f | %.3f | %.0f | %.2f× %s | %.0f | %.0f | %.2f | %.2f | %s | %s |\n",
		       fc_dtype_name(r->dtype), fc_codec_name(r->codec), r->disk_bpv,
		       r->disk_bpv / (2.0 * (double)b->dim), r->chunk_bpv,
		       r->disk_bpv / p->bpv, r->dtype == FC_DTYPE_F32 ? "f32" : "f16",
		       (double)b->n / r->write_s, (double)b->n * (double)b->dim * 4.0 / r->write_s / 1e6,
		       gbs(b, r->load_s), gbs(b, r->load1_s), vs, err);
	}
	const npy_peer *ps[2] = { p32, p16 };
	for (int i = 0; i < 2; i++) {
		char load[32];
		/* numpy loads on one thread whatever is available: same figure in both columns */
		if (ps[i]->load_s > 0)
			snprintf(load, sizeof load, "%.2f", gbs(b, ps[i]->load_s));
		else
			snprintf(load, sizeof load, "n/a");
		printf("| peer: %s, numpy | %.0f | %.3f | | 1.00× | | | %s | %s | 1.00× | %s |\n", ps[i]->name,
		       ps[i]->bpv, ps[i]->bpv / (2.0 * (double)b->dim), load, load, i == 0 ? "0 (bit-exact)" : "f16 rounding");
	}
}

/* The docs/design.md targets, each judged on the rows that can meet it. */
static void print_targets(const bench *b, const result *res, size_t nres)
{
	char met[512], missed[512];
	for (int t = 0; t < 2; t++) {
		fc_dtype dt = t == 0 ? FC_DTYPE_F16 : FC_DTYPE_F32;
		double lim = t == 0 ? TARGET_F16_BYTES : TARGET_F32_BYTES;
		size_t lm = 0, lx = 0;
		int any = 0;
		met[0] = missed[0] = '\0';
		for (size_t i = 0; i < nres; i++) {
			const result *r = &res[i];
			if (!r->ok || r->dtype != dt || (dt == FC_DTYPE_F32 && !r->exact))
				continue;
			any = 1;
			char *buf = r->disk_bpv <= lim ? met : missed;
			size_t *len = r->disk_bpv <= lim ? &lm : &lx;
			int w = snprintf(buf + *len, 512 - *len, "%s%s %.0f B", *len ? ", " : "",
					 fc_codec_name(r->codec), r->disk_bpv);
			if (w > 0 && *len + (size_t)w < 512)
				*len += (size_t)w;
		}
		printf("target %s ≤ %.1f KB/vector on disk: ", t == 0 ? "f16" : "f32 lossless", lim / 1000);
		if (b->dim != TARGET_DIM)
			printf("n/a (it is for %d-d vectors, these have %zu)\n", TARGET_DIM, b->dim);
		else if (!any)
			printf("not measured\n");
		else
			printf("%s (met by: %s; missed by: %s)\n", verdict(met[0] != '\0'),
			       met[0] ? met : "none", missed[0] ? missed : "none");
	}
	size_t pass = 0, all = 0;
	double worst = INFINITY;
	const result *wr = NULL;
	for (size_t i = 0; i < nres; i++) {
		if (!res[i].ok)
			continue;
		all++;
		double g = gbs(b, res[i].load_s);
		pass += g >= TARGET_LOAD_GBS;
		if (g < worst) {
			worst = g;
			wr = &res[i];
		}
	}
	printf("target load ≥ %.1f GB/s f32-equivalent on %d threads: ", TARGET_LOAD_GBS, b->threads);
	if (!all)
		printf("not measured\n");
	else
		printf("%s (%zu of %zu configurations; slowest %s/%s %.2f GB/s)\n", verdict(pass == all), pass,
		       all, fc_dtype_name(wr->dtype), fc_codec_name(wr->codec), worst);
}

/* ---- main ---- */

static size_t parse_size(const char *opt, const char *v, size_t lo, size_t hi)
{
	char *end;
	errno = 0;
	unsigned long long x = strtoull(v, &end, 10);
	if (errno || end == v || *end || v[0] == '-' || x < lo || x > hi)
		usage_error("invalid %s '%s': expected an integer from %zu to %zu", opt, v, lo, hi);
	return (size_t)x;
}

static void help(void)
{
	printf("usage: %s [options]\n"
	       "Store size, write and load rates per dtype x codec, against numpy .npy peers.\n"
	       "  --n N             vectors (default 100000; with --real: at most N rows of the file)\n"
	       "  --dim D           dimension of the synthetic vectors (default 2048)\n"
	       "  --batch B         vectors per batch, as extract's --batch (default 64)\n"
	       "  --seed S          generator seed (default 1)\n"
	       "  --level L         zstd level (default 3)\n"
	       "  --runs R          load runs, best taken (default 3)\n"
	       "  --dir DIR         where the temporary stores go (default /var/tmp; use a disk)\n"
	       "  --only LIST       comma-separated dtype/codec pairs, e.g. f16/shuffle-zstd,f32/raw\n"
	       "  --real FILE.npy   real features (f32, C order, 2-D) instead of synthetic ones\n"
	       "  --python PATH     the peer's interpreter (default /usr/bin/python3)\n"
	       "  --peer-script P   bench/peer_npy.py (default: found from the cwd or the binary)\n"
	       "  --legacy          write as featcache did before store format 2: a format-1 store,\n"
	       "                    one chunk and one commit per batch\n",
	       PROG);
}

static int only_has(const char *only, fc_dtype t, fc_codec c)
{
	if (!only)
		return 1;
	char want[64];
	snprintf(want, sizeof want, "%s/%s", fc_dtype_name(t), fc_codec_name(c));
	size_t wl = strlen(want);
	for (const char *p = only; *p;) {
		size_t l = strcspn(p, ",");
		if (l == wl && strncmp(p, want, l) == 0)
			return 1;
		p += l;
		if (*p == ',')
			p++;
	}
	return 0;
}

/* Every item of --only must name a real pair: a typo should not silently
 * measure nothing. */
static void only_check(const char *only)
{
	for (const char *p = only; *p;) {
		size_t l = strcspn(p, ",");
		char item[64], *slash;
		if (l == 0 || l >= sizeof item)
			usage_error("invalid --only '%s'", only);
		memcpy(item, p, l);
		item[l] = '\0';
		fc_dtype t;
		fc_codec c;
		if (!(slash = strchr(item, '/')))
			usage_error("invalid --only item '%s': expected dtype/codec", item);
		*slash = '\0';
		if (fc_dtype_parse(item, &t) || fc_codec_parse(slash + 1, &c))
			usage_error("invalid --only item '%s/%s': dtypes f32 f16 bf16 u8, codecs raw zstd "
				    "shuffle-zstd",
				    item, slash + 1);
		p += l;
		if (*p == ',')
			p++;
	}
}

int main(int argc, char **argv)
{
	size_t n = 100000, dim = 2048, batch = 64;
	int level = 3, runs = 3, n_given = 0, dim_given = 0, legacy = 0;
	uint64_t seed = 1;
	const char *dir = "/var/tmp", *only = NULL, *real = NULL;
	char script_buf[MAX_PATH];
	peer py = { .python = "/usr/bin/python3" };

	enum { O_N = 256, O_DIM, O_BATCH, O_SEED, O_LEVEL, O_RUNS, O_DIR, O_ONLY, O_REAL, O_PY, O_SCRIPT, O_LEGACY };
	static const struct option opts[] = {
		{ "n", required_argument, NULL, O_N },
		{ "dim", required_argument, NULL, O_DIM },
		{ "batch", required_argument, NULL, O_BATCH },
		{ "seed", required_argument, NULL, O_SEED },
		{ "level", required_argument, NULL, O_LEVEL },
		{ "runs", required_argument, NULL, O_RUNS },
		{ "dir", required_argument, NULL, O_DIR },
		{ "only", required_argument, NULL, O_ONLY },
		{ "real", required_argument, NULL, O_REAL },
		{ "python", required_argument, NULL, O_PY },
		{ "peer-script", required_argument, NULL, O_SCRIPT },
		{ "legacy", no_argument, NULL, O_LEGACY },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case O_N: n = parse_size("--n", optarg, 1, (size_t)1 << 40); n_given = 1; break;
		case O_DIM: dim = parse_size("--dim", optarg, 1, FC_CHUNK_MAX_DIM); dim_given = 1; break;
		case O_BATCH: batch = parse_size("--batch", optarg, 1, FC_CHUNK_MAX_COUNT); break;
		case O_SEED: seed = parse_size("--seed", optarg, 0, SIZE_MAX); break;
		case O_LEVEL: level = (int)parse_size("--level", optarg, 1, 19); break;
		case O_RUNS: runs = (int)parse_size("--runs", optarg, 1, 100); break;
		case O_DIR: dir = optarg; break;
		case O_ONLY: only = optarg; break;
		case O_REAL: real = optarg; break;
		case O_PY: py.python = optarg; break;
		case O_SCRIPT: py.script = optarg; break;
		case O_LEGACY: legacy = 1; break;
		case 'h': help(); return 0;
		default: usage_error("unknown option");
		}
	}
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	if (only)
		only_check(only);
	if (real && dim_given)
		usage_error("--dim conflicts with --real: the file gives the dimension");

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGHUP, on_signal);

	float *x;
	if (real) {
		x = npy_read_f32(real, n_given ? n : 0, &n, &dim);
	} else {
		if (n > SIZE_MAX / 8 / dim)
			usage_error("--n %zu x --dim %zu is too large", n, dim);
		x = xaligned(n * dim * sizeof(float));
		gen_vectors(x, n, dim, seed);
	}
	uint8_t (*hashes)[FC_HASH_LEN] = xcalloc(n, FC_HASH_LEN);
	make_hashes(hashes, n, seed);

	char tmpl[MAX_PATH];
	if (snprintf(tmpl, sizeof tmpl, "%s/featcache-bench-store.XXXXXX", dir) >= (int)sizeof tmpl)
		usage_error("--dir path too long");
	if (!mkdtemp(tmpl))
		die("cannot create a temporary directory in '%s': %s", dir, strerror(errno));
	tmp_set(TMP_DIR, tmpl);
	int is_ram;
	const char *fs = fs_kind(tmpl, &is_ram);

	bench b = { .x = x, .hashes = (const uint8_t (*)[FC_HASH_LEN])hashes, .n = n, .dim = dim,
		    .batch = batch, .level = level, .runs = runs, .threads = omp_get_max_threads(),
		    .legacy = legacy, .tmpdir = tmpl };

	printf("featcache %s store benchmark\n", fc_version());
	if (real)
		printf("vectors: %zu x %zu real features from '%s'\n", n, dim, real);
	else
		printf("vectors: %zu x %zu synthetic (per-dim scale lognormal sigma %.1f mean %.2f, value "
		       "scale*Exp(1), %.0f %% zeros), seed %llu\n",
		       n, dim, GEN_SIGMA, GEN_MEAN, GEN_ZEROS * 100, (unsigned long long)seed);
	if (legacy)
		printf("store format 1, batches of %zu vectors with their items, one chunk and one synced commit each",
		       batch);
	else
		printf("store format %d, batches of %zu vectors with their items, gathered into chunks of >= 64 KiB, "
		       "one synced commit each",
		       FC_STORE_FORMAT, batch);
	printf("; zstd level %d; load best of %d, OpenMP threads %d (omp_get_max_threads)\n", level, runs,
	       b.threads);
	printf("ran in %s (%s%s); loads read data.mdb from the page cache (hot)\n", tmpl, fs,
	       is_ram ? ": RAM, not disk" : "");

	printf("reference (not the store): copying the vectors into a fresh f32 matrix on %d threads runs "
	       "at %.2f GB/s with 4 KiB pages, %.2f GB/s with MADV_HUGEPAGE (page faults included)\n",
	       b.threads, fresh_copy_gbs(&b, 0), fresh_copy_gbs(&b, 1));

	/* Peers first: their files are deleted before the stores take the disk. */
	if (!py.script)
		py.script = find_script(script_buf, sizeof script_buf);
	peer_probe(&py);
	npy_peer p32 = { .name = "f32 .npy" }, p16 = { .name = "f16 .npy" };
	npy_peer *ps[2] = { &p32, &p16 };
	for (int i = 0; i < 2; i++) {
		char path[MAX_PATH];
		int slot = i == 0 ? TMP_NPY32 : TMP_NPY16;
		path_join(path, tmpl, i == 0 ? "peer-f32.npy" : "peer-f16.npy");
		tmp_set(slot, path);
		npy_write(path, x, n, dim, i == 1);
		ps[i]->bpv = (double)file_size(path) / (double)n;
		ps[i]->load_s = peer_time(&py, path, runs, ps[i]->why, sizeof ps[i]->why);
		tmp_remove(slot);
	}
	for (int i = 0; i < 2; i++) {
		if (ps[i]->load_s > 0)
			printf("peer %s: %.0f B/vector, numpy load into f32 %.2f GB/s (1 thread; %s)\n",
			       ps[i]->name, ps[i]->bpv, gbs(&b, ps[i]->load_s), py.why);
		else
			printf("peer %s: %.0f B/vector, numpy load unavailable: %s\n", ps[i]->name, ps[i]->bpv,
			       ps[i]->why);
	}
	fflush(stdout);

	static const fc_dtype dtypes[] = { FC_DTYPE_F32, FC_DTYPE_F16, FC_DTYPE_BF16, FC_DTYPE_U8 };
	static const fc_codec codecs[] = { FC_CODEC_RAW, FC_CODEC_ZSTD, FC_CODEC_SHUFFLE_ZSTD };
	result res[12];
	size_t nres = 0;
	int failed = 0;
	for (size_t i = 0; i < 4; i++) {
		for (size_t j = 0; j < 3; j++) {
			if (!only_has(only, dtypes[i], codecs[j]))
				continue;
			result *r = &res[nres++];
			memset(r, 0, sizeof *r);
			r->dtype = dtypes[i];
			r->codec = codecs[j];
			run_config(&b, r);
			failed |= !r->ok || (r->dtype == FC_DTYPE_F32 && !r->exact);
			print_summary(&b, r, &p32, &p16);
			fflush(stdout);
		}
	}
	print_table(&b, res, nres, &p32, &p16);
	printf("\n");
	print_targets(&b, res, nres);

	cleanup_now();
	free(hashes);
	free(x);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, PROG ": cannot write output: %s\n", strerror(errno));
		return 1;
	}
	return failed ? 1 : 0;
}
