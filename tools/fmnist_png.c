/*
 * fmnist_png - turn Fashion-MNIST's idx files into a class-per-folder PNG tree.
 *
 * Reads {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz from SRC (Debian's
 * dataset-fashion-mnist by default) and writes
 *     OUT/{train,val,test}/<class name>/<n>.png
 * as 8-bit grayscale 28x28 PNGs, <n> being the item's index in its idx file,
 * zero-padded to 5 digits. This is the layout `featcache extract --data`
 * reads, so `make demo` can start from real image files.
 *
 * Every header is checked and all labels are read before anything is
 * written; OUT/.complete is written last and records the counts, so a rerun
 * over a finished tree does nothing and an interrupted run is redone.
 * It is a demo helper, not a general idx converter: it knows only this
 * dataset's shapes and class names.
 *
 * usage: fmnist_png [--src DIR] [--val N] OUT
 *
 * --val N moves the last N training images to OUT/val (the demo holds out
 * 5,000 to pick the best epoch, so the test split stays unseen).
 */
#include <errno.h>
#include <png.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define ROWS 28
#define COLS 28
#define PIXELS (ROWS * COLS)
#define NCLASS 10
#define MAGIC_IMAGES 0x00000803u
#define MAGIC_LABELS 0x00000801u
/* Speed over size: the tree is an intermediate that is rebuilt at will, and
 * at level 1 the 70,000 files take a few seconds, not tens. */
#define ZLEVEL 1

static const char *const class_names[NCLASS] = {
	"t-shirt_top", "trouser", "pullover", "dress", "coat",
	"sandal", "shirt", "sneaker", "bag", "ankle_boot",
};

struct split {
	const char *name;   /* output folder */
	const char *prefix; /* idx file prefix */
	char ipath[4096];   /* the image file, for messages */
	gzFile images;      /* positioned after the header */
	uint32_t count;
	unsigned char *labels; /* count of them, each < NCLASS */
};

static void err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void err(const char *fmt, ...)
{
	va_list ap;

	fputs("fmnist_png: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Report a failed gzread; zlib's message starts with the path, which ours
 * already names. */
static void gz_fail(gzFile f, const char *path)
{
	int zerr;
	const char *msg = gzerror(f, &zerr);
	size_t len = strlen(path);

	if (zerr == Z_ERRNO)
		msg = strerror(errno);
	else if (strncmp(msg, path, len) == 0 && msg[len] == ':' && msg[len + 1] == ' ')
		msg += len + 2;
	err("cannot read '%s': %s", path, msg);
}

/* Read exactly len bytes; 0 on success, else prints why (path for context). */
static int read_exact(gzFile f, const char *path, void *dst, size_t len, const char *what)
{
	unsigned char *p = dst;

	while (len > 0) {
		/* gzread takes an unsigned count: feed it in pieces. */
		unsigned chunk = len > (1u << 30) ? 1u << 30 : (unsigned)len;
		int n = gzread(f, p, chunk);
		if (n < 0) {
			gz_fail(f, path);
			return -1;
		}
		if (n == 0) {
			err("'%s' is truncated (in the %s)", path, what);
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Fail unless f is at its end: trailing bytes mean the header lied. */
static int expect_eof(gzFile f, const char *path)
{
	unsigned char extra;
	int n = gzread(f, &extra, 1);

	if (n < 0) {
		gz_fail(f, path);
		return -1;
	}
	if (n > 0) {
		err("'%s' has data past the count in its header", path);
		return -1;
	}
	return 0;
}

static gzFile open_gz(const char *path)
{
	gzFile f;

	errno = 0;
	f = gzopen(path, "rb");

	if (!f)
		err("cannot open '%s': %s", path, errno ? strerror(errno) : "out of memory");
	return f;
}

/*
 * Read and check the label file whole, and the image file's header, leaving
 * s->images positioned at the first pixel. The labels are read into a
 * buffer grown as data arrives, never sized from the header alone, so a
 * corrupt count cannot ask for gigabytes.
 */
static int split_open(struct split *s, const char *src)
{
	char *ipath = s->ipath, lpath[4096];
	unsigned char hdr[16];
	gzFile lf = NULL;
	uint32_t nlabels;
	size_t have = 0, cap = 0;
	int rc = -1;

	if ((size_t)snprintf(ipath, sizeof s->ipath, "%s/%s-images-idx3-ubyte.gz", src, s->prefix) >= sizeof s->ipath ||
	    (size_t)snprintf(lpath, sizeof lpath, "%s/%s-labels-idx1-ubyte.gz", src, s->prefix) >= sizeof lpath) {
		err("source path '%s' is too long", src);
		return -1;
	}

	if (!(lf = open_gz(lpath)) || read_exact(lf, lpath, hdr, 8, "header") < 0)
		goto out;
	if (be32(hdr) != MAGIC_LABELS) {
		err("'%s' is not an idx label file (magic 0x%08x, want 0x%08x)", lpath, (unsigned)be32(hdr),
		    MAGIC_LABELS);
		goto out;
	}
	nlabels = be32(hdr + 4);
	if (nlabels > 99999) {
		/* The names are zero-padded to 5 digits; more would not sort. */
		err("'%s' holds %u items, at most 99999 fit the file names", lpath, (unsigned)nlabels);
		goto out;
	}
	for (;;) {
		int n;
		if (have == cap) {
			size_t ncap = cap ? cap * 2 : 65536;
			unsigned char *p = realloc(s->labels, ncap);
			if (!p) {
				err("out of memory reading '%s'", lpath);
				goto out;
			}
			s->labels = p;
			cap = ncap;
		}
		n = gzread(lf, s->labels + have, (unsigned)(cap - have < 65536 ? cap - have : 65536));
		if (n < 0) {
			gz_fail(lf, lpath);
			goto out;
		}
		if (n == 0)
			break;
		have += (size_t)n;
		if (have > nlabels)
			break;
	}
	if (have != nlabels) {
		err("'%s' holds %zu%s labels, its header says %u", lpath, have, have > nlabels ? " or more" : "",
		    (unsigned)nlabels);
		goto out;
	}
	for (size_t i = 0; i < have; i++)
		if (s->labels[i] >= NCLASS) {
			err("'%s': label %u of item %zu is not in 0-9", lpath, s->labels[i], i);
			goto out;
		}

	if (!(s->images = open_gz(ipath)) || read_exact(s->images, ipath, hdr, 16, "header") < 0)
		goto out;
	if (be32(hdr) != MAGIC_IMAGES) {
		err("'%s' is not an idx image file (magic 0x%08x, want 0x%08x)", ipath, (unsigned)be32(hdr),
		    MAGIC_IMAGES);
		goto out;
	}
	if (be32(hdr + 4) != nlabels) {
		err("'%s' holds %u images but '%s' holds %u labels", ipath, (unsigned)be32(hdr + 4), lpath,
		    (unsigned)nlabels);
		goto out;
	}
	if (be32(hdr + 8) != ROWS || be32(hdr + 12) != COLS) {
		err("'%s' has %ux%u images, want %ux%u", ipath, (unsigned)be32(hdr + 8), (unsigned)be32(hdr + 12),
		    ROWS, COLS);
		goto out;
	}
	s->count = nlabels;
	rc = 0;
out:
	if (lf)
		gzclose(lf);
	return rc;
}

static void split_close(struct split *s)
{
	if (s->images)
		gzclose(s->images);
	free(s->labels);
	s->images = NULL;
	s->labels = NULL;
}

static int make_dir(const char *path)
{
	if (mkdir(path, 0777) == 0 || errno == EEXIST)
		return 0;
	err("cannot create '%s': %s", path, strerror(errno));
	return -1;
}

/*
 * Write one 8-bit grayscale PNG. libpng reports errors by longjmp: nothing
 * below setjmp is modified afterwards, so no local needs volatile.
 */
static int write_png(const char *path, unsigned char *pixels)
{
	png_structp png = NULL;
	png_infop info = NULL;
	png_bytep rows[ROWS];
	FILE *f = fopen(path, "wb");
	int rc = -1;

	if (!f) {
		err("cannot create '%s': %s", path, strerror(errno));
		return -1;
	}
	for (int r = 0; r < ROWS; r++)
		rows[r] = pixels + (size_t)r * COLS;
	png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
	info = png ? png_create_info_struct(png) : NULL;
	if (!info) {
		err("cannot write '%s': out of memory", path);
		goto out;
	}
	if (setjmp(png_jmpbuf(png))) {
		err("cannot write '%s': libpng failed", path);
		goto out;
	}
	png_init_io(png, f);
	png_set_compression_level(png, ZLEVEL);
	png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_NONE);
	png_set_IHDR(png, info, COLS, ROWS, 8, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
		     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
	png_set_rows(png, info, rows);
	png_write_png(png, info, PNG_TRANSFORM_IDENTITY, NULL);
	rc = 0;
out:
	png_destroy_write_struct(&png, &info);
	if (fclose(f) != 0 && rc == 0) {
		err("cannot write '%s': %s", path, strerror(errno));
		rc = -1;
	}
	return rc;
}

/* Make OUT/<dir>/<class> for every class; path receives OUT/<dir>. */
static int make_tree(char *path, size_t cap, const char *out, const char *dir)
{
	if ((size_t)snprintf(path, cap, "%s/%s", out, dir) >= cap - 64) {
		err("output path '%s' is too long", out);
		return -1;
	}
	if (make_dir(path) < 0)
		return -1;
	size_t base = strlen(path);
	for (int c = 0; c < NCLASS; c++) {
		snprintf(path + base, cap - base, "/%s", class_names[c]);
		if (make_dir(path) < 0)
			return -1;
	}
	path[base] = '\0';
	return 0;
}

/* Write a split's images; items from index val_from on go to OUT/val. */
static int split_write(struct split *s, const char *out, uint32_t val_from)
{
	char path[4096], vpath[4096], file[4200];
	unsigned char pixels[PIXELS];

	if (make_tree(path, sizeof path, out, s->name) < 0)
		return -1;
	if (val_from < s->count && make_tree(vpath, sizeof vpath, out, "val") < 0)
		return -1;
	for (uint32_t i = 0; i < s->count; i++) {
		if (read_exact(s->images, s->ipath, pixels, PIXELS, "pixels") < 0)
			return -1;
		snprintf(file, sizeof file, "%s/%s/%05u.png", i < val_from ? path : vpath, class_names[s->labels[i]],
			 (unsigned)i);
		if (write_png(file, pixels) < 0)
			return -1;
	}
	return expect_eof(s->images, s->ipath);
}

static void usage(void)
{
	fputs("usage: fmnist_png [--src DIR] [--val N] OUT\n"
	      "  DIR  holds {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz\n"
	      "       (default /usr/share/datasets/fashion-mnist)\n"
	      "  N    the last N training images go to OUT/val (default 0)\n",
	      stderr);
}

int main(int argc, char **argv)
{
	const char *src = "/usr/share/datasets/fashion-mnist";
	const char *out = NULL;
	uint32_t n_val = 0;
	struct split splits[2] = {
		{ .name = "train", .prefix = "train" },
		{ .name = "test", .prefix = "t10k" },
	};
	char marker[4096], tmp[4096], want[128], have[128] = "";
	FILE *f;
	int rc = 1;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--src") == 0 && i + 1 < argc) {
			src = argv[++i];
		} else if (strcmp(argv[i], "--val") == 0 && i + 1 < argc) {
			char *end;
			unsigned long v = strtoul(argv[++i], &end, 10);
			if (*end || v > 99999) {
				usage();
				return 1;
			}
			n_val = (uint32_t)v;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage();
			return 0;
		} else if (argv[i][0] == '-' || out) {
			usage();
			return 1;
		} else {
			out = argv[i];
		}
	}
	if (!out) {
		usage();
		return 1;
	}
	if ((size_t)snprintf(marker, sizeof marker, "%s/.complete", out) >= sizeof marker ||
	    (size_t)snprintf(tmp, sizeof tmp, "%s/.complete.tmp", out) >= sizeof tmp) {
		err("output path '%s' is too long", out);
		return 1;
	}

	for (int s = 0; s < 2; s++)
		if (split_open(&splits[s], src) < 0)
			goto out;
	if (n_val >= splits[0].count) {
		err("--val %u leaves no training images (%u in all)", (unsigned)n_val, (unsigned)splits[0].count);
		goto out;
	}
	snprintf(want, sizeof want, "fmnist_png 2 train=%u val=%u test=%u\n", (unsigned)(splits[0].count - n_val),
		 (unsigned)n_val, (unsigned)splits[1].count);

	if ((f = fopen(marker, "r"))) {
		size_t n = fread(have, 1, sizeof have - 1, f);
		have[n] = '\0';
		fclose(f);
	}
	if (strcmp(have, want) == 0) {
		printf("fmnist_png: '%s' is complete: %s", out, want + 13);
		rc = 0;
		goto out;
	}
	/* A stale marker must not survive a half-done rewrite. */
	if (remove(marker) != 0 && errno != ENOENT) {
		err("cannot remove '%s': %s", marker, strerror(errno));
		goto out;
	}
	if (make_dir(out) < 0)
		goto out;
	for (int s = 0; s < 2; s++)
		if (split_write(&splits[s], out, s == 0 ? splits[0].count - n_val : UINT32_MAX) < 0)
			goto out;

	if (!(f = fopen(tmp, "w"))) {
		err("cannot create '%s': %s", tmp, strerror(errno));
		goto out;
	}
	if (fputs(want, f) == EOF) {
		err("cannot write '%s': %s", tmp, strerror(errno));
		fclose(f);
		goto out;
	}
	if (fclose(f) != 0) {
		err("cannot write '%s': %s", tmp, strerror(errno));
		goto out;
	}
	if (rename(tmp, marker) != 0) {
		err("cannot rename '%s' to '%s': %s", tmp, marker, strerror(errno));
		goto out;
	}
	printf("fmnist_png: wrote %u train, %u val and %u test images to '%s'\n",
	       (unsigned)(splits[0].count - n_val), (unsigned)n_val, (unsigned)splits[1].count, out);
	rc = 0;
out:
	for (int s = 0; s < 2; s++)
		split_close(&splits[s]);
	if (fflush(stdout) != 0) {
		err("cannot write to stdout: %s", strerror(errno));
		rc = 1;
	}
	return rc;
}
