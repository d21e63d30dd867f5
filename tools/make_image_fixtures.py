#!/usr/bin/python3
"""tools/make_image_fixtures.py - fixtures for tests/test_image.c: JPEG and
PNG files of many kinds and what PIL + torchvision make of them.

  make_image_fixtures.py [--photo JPG] [OUTDIR [CORPUS]]
      OUTDIR defaults to tests/fixtures/images, CORPUS (the seeds of
      tests/fuzz_image.c) to tests/corpus/fuzz_image

Needs Debian's python3-pil (9.x, linked to the system libjpeg-turbo, as the
C side is), python3-torch and python3-torchvision (0.14), numpy, and the
zstd command. The test suite needs none of them.

The pictures are cut from one real photograph (a circuit board, f3.jpg of
the Rust Embedded Book, MIT/Apache-2.0, found under ~/.rustup on the
machine that made the fixtures; pass --photo to use another), so that the
JPEG coder, the resampling filters and the rounding see natural content.
Files PIL cannot write (16-bit RGB, 1/2/4-bit, interlaced PNG) come from the
small PNG writer below.

Written to OUTDIR:
  <input>.jpg / .png      the inputs
  <input>.<spec>.zst      an expected output (format below)
  huge_*.png / .jpg       headers claiming too many pixels
  manifest.txt            one line per expectation: "<input> <spec> <file>"

Specs: "decode" is Image.open(f).convert('RGB'), after
ImageOps.exif_transpose for JPEG. Otherwise the crop PIL hands to ToTensor
(u8, H x W x 3) after
  torchvision<N>          Resize(N * 8 // 7, BILINEAR), CenterCrop(N)
  finetuner<N>            Resize((N, N), BICUBIC)
  s<S>:c<W>x<H>:<f>       Resize(S), CenterCrop((H, W)), f = bl | bc
  r<W>x<H>:c<W>x<H>:<f>   Resize((H, W)), CenterCrop((H, W))
and with a ":norm" suffix the tensor after ToTensor and ImageNet's
Normalize instead (f32, 3 x H x W). Both are computed from PIL's decoded
image, so the preprocessing tests do not depend on the decoder.

Expected-output file: zstd frame of
  "FCFX" | u32 version = 1 | u32 dtype (1 = u8, 2 = f32) | u32 d0, d1, d2
  | data (C order, little-endian)
"""
import io
import os
import warnings
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode as IM

DEFAULT_PHOTO = os.path.expanduser(
    "~/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/share/doc/rust/html/"
    "embedded-book/assets/f3.jpg")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------- outputs

class Out:
    def __init__(self, outdir):
        self.dir = outdir
        self.manifest = []

    def path(self, name):
        return os.path.join(self.dir, name)

    def write_input(self, name, data):
        with open(self.path(name), "wb") as f:
            f.write(data)

    def expect(self, name, spec, arr):
        arr = np.ascontiguousarray(arr)
        if arr.dtype == np.uint8:
            dtype = 1
        else:
            arr = arr.astype("<f4")
            dtype = 2
        assert arr.ndim == 3
        blob = b"FCFX" + struct.pack("<5I", 1, dtype, *arr.shape) + arr.tobytes()
        fname = "%s.%s.zst" % (name, spec.replace(":", "_"))
        # through a file, so that the frame records its content size
        with tempfile.NamedTemporaryFile() as tmp:
            tmp.write(blob)
            tmp.flush()
            subprocess.run(["zstd", "-q", "-19", "-f", tmp.name, "-o", self.path(fname)],
                           check=True)
        os.chmod(self.path(fname), 0o644)  # zstd copies the temporary's 0600
        self.manifest.append("%s %s %s" % (name, spec, fname))

    def finish(self):
        with open(self.path("manifest.txt"), "w") as f:
            f.write("# input spec expected (tools/make_image_fixtures.py)\n")
            f.write("\n".join(self.manifest) + "\n")


# ------------------------------------------------------- PIL + torchvision

def pil_decode(data, is_jpeg):
    im = Image.open(io.BytesIO(data))
    if is_jpeg:
        im = ImageOps.exif_transpose(im)
    return im.convert("RGB")


def parse_spec(spec):
    """(resize transform, crop size (h, w) or None, normalise?)"""
    norm = spec.endswith(":norm")
    if norm:
        spec = spec[: -len(":norm")]
    if spec.startswith("torchvision"):
        n = int(spec[len("torchvision"):])
        return T.Resize(n * 8 // 7, interpolation=IM.BILINEAR), (n, n), norm
    if spec.startswith("finetuner"):
        n = int(spec[len("finetuner"):])
        return T.Resize((n, n), interpolation=IM.BICUBIC), None, norm
    rs, cs, fs = spec.split(":")
    interp = {"bl": IM.BILINEAR, "bc": IM.BICUBIC}[fs]
    cw, ch = map(int, cs[1:].split("x"))
    if rs[0] == "s":
        resize = T.Resize(int(rs[1:]), interpolation=interp)
    else:
        rw, rh = map(int, rs[1:].split("x"))
        resize = T.Resize((rh, rw), interpolation=interp)
    return resize, (ch, cw), norm


def torchvision_out(img, spec):
    resize, crop, norm = parse_spec(spec)
    steps = [resize] + ([T.CenterCrop(crop)] if crop else [])
    u8img = T.Compose(steps)(img)
    if not norm:
        return np.asarray(u8img, dtype=np.uint8)
    t = T.Normalize(MEAN, STD)(T.ToTensor()(u8img))
    assert t.dtype == torch.float32
    return t.numpy()


# ------------------------------------------------------- a small PNG writer

ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2)]


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def pack_row(samples, depth):
    """samples: 1-D ints of one row (all channels interleaved), filter 0"""
    if depth == 16:
        body = samples.astype(">u2").tobytes()
    elif depth == 8:
        body = samples.astype(np.uint8).tobytes()
    else:
        bits = (samples[:, None] >> np.arange(depth - 1, -1, -1)) & 1
        body = np.packbits(bits.astype(np.uint8).ravel()).tobytes()
    return b"\0" + body


def png_bytes(samples, depth, ctype, plte=None, trns=None, interlace=False):
    """samples: (h, w, channels) array of sample values"""
    h, w = samples.shape[:2]
    raw = []
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    for x0, y0, dx, dy in passes:
        sub = samples[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        for row in sub:
            raw.append(pack_row(row.reshape(-1), depth))
    out = b"\x89PNG\r\n\x1a\n"
    out += png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, int(interlace)))
    if plte is not None:
        out += png_chunk(b"PLTE", bytes(np.asarray(plte, dtype=np.uint8).ravel()))
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    out += png_chunk(b"IDAT", zlib.compress(b"".join(raw), 9))
    out += png_chunk(b"IEND", b"")
    return out


# ------------------------------------------------------------------ inputs

def cut(photo, w, h, x=None, y=None):
    """a w x h picture from the photo: the largest crop of that aspect
    (centred unless x, y given in 0..1), resized with LANCZOS"""
    pw, ph = photo.size
    if pw * h > ph * w:
        cw, ch = ph * w // h, ph
    else:
        cw, ch = pw, pw * h // w
    cw, ch = max(cw, 1), max(ch, 1)
    left = int((pw - cw) * (0.5 if x is None else x))
    top = int((ph - ch) * (0.5 if y is None else y))
    return photo.crop((left, top, left + cw, top + ch)).resize((w, h), Image.LANCZOS)


def jpeg_bytes(img, **kw):
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def pil_png_bytes(img, **kw):
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def exif_orientation_blob(orient, big_endian):
    """an APP1 payload: Exif header, TIFF header, IFD0 with a make tag and
    the orientation (a SHORT), so the tag is not the first entry"""
    e = ">" if big_endian else "<"
    tiff = (b"MM\0*" if big_endian else b"II*\0") + struct.pack(e + "I", 8)
    entries = [
        struct.pack(e + "HHI", 0x010F, 2, 4) + b"cam\0",  # Make, ASCII inline
        struct.pack(e + "HHIH", 0x0112, 3, 1, orient) + b"\0\0",
    ]
    ifd = struct.pack(e + "H", len(entries)) + b"".join(entries) + struct.pack(e + "I", 0)
    return b"Exif\0\0" + tiff + ifd


def with_app1(jpeg, payload):
    """insert an APP1 segment right after SOI"""
    seg = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + seg + jpeg[2:]


def write_corpus(corpusdir, photo, rng):
    """tiny seeds, one of each kind the decoder handles, and a few bad ones"""
    def put(name, data):
        with open(os.path.join(corpusdir, name), "wb") as f:
            f.write(data)

    tiny = cut(photo, 8, 6, 0.3)
    put("rgb_8x6.jpg", jpeg_bytes(tiny, quality=80))
    put("prog_16x12.jpg", jpeg_bytes(cut(photo, 16, 12), quality=80, progressive=True))
    put("444_9x7.jpg", jpeg_bytes(cut(photo, 9, 7), quality=80, subsampling=0))
    put("gray_8x8.jpg", jpeg_bytes(tiny.convert("L"), quality=80))
    put("cmyk_8x6.jpg", jpeg_bytes(tiny.convert("CMYK"), quality=80))
    put("exif6_8x6.jpg", with_app1(jpeg_bytes(tiny, quality=80), exif_orientation_blob(6, False)))
    put("exif8be_8x6.jpg", with_app1(jpeg_bytes(tiny, quality=80), exif_orientation_blob(8, True)))
    a8 = np.asarray(tiny).astype(np.int64)
    put("rgb_8x6.png", pil_png_bytes(tiny))
    put("rgba_i_8x6.png", png_bytes(np.dstack([a8, a8[:, :, :1]]), 8, 6, interlace=True))
    put("rgb16_8x6.png", png_bytes(a8 * 257, 16, 2))
    put("gray16_i_8x6.png", png_bytes(a8[:, :, :1] * 3, 16, 0, interlace=True))
    put("la16_8x6.png", png_bytes(a8[:, :, :2] * 200, 16, 4))
    put("gray1_8x6.png", png_bytes(a8[:, :, :1] >> 7, 1, 0))
    put("gray4_i_8x6.png", png_bytes(a8[:, :, :1] >> 4, 4, 0, interlace=True))
    put("pal2_trns_8x6.png", png_bytes(a8[:, :, :1] >> 6, 2, 3,
                                       plte=[[0, 0, 0], [90, 0, 0], [0, 200, 0], [9, 9, 255]],
                                       trns=b"\x00\x80"))
    put("truncated.jpg", jpeg_bytes(tiny, quality=80)[:300])
    put("truncated.png", pil_png_bytes(tiny)[:60])
    put("not_an_image.txt", b"GIF89a is not supported\n")


def main():
    args = sys.argv[1:]
    photo_path = DEFAULT_PHOTO
    if args[:1] == ["--photo"]:
        photo_path, args = args[1], args[2:]
    outdir = args[0] if args else "tests/fixtures/images"
    corpusdir = args[1] if len(args) > 1 else "tests/corpus/fuzz_image"
    for d in (outdir, corpusdir):
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            os.remove(os.path.join(d, f))
    out = Out(outdir)
    # PIL warns about the deliberately short EXIF and about palettes with
    # alpha; both are what the fixtures are for
    warnings.simplefilter("ignore", UserWarning)
    photo = Image.open(photo_path).convert("RGB")
    rng = np.random.default_rng(20240611)

    def add(name, data, specs=()):
        is_jpeg = name.endswith(".jpg")
        out.write_input(name, data)
        img = pil_decode(data, is_jpeg)
        out.expect(name, "decode", np.asarray(img))
        for spec in specs:
            out.expect(name, spec, torchvision_out(img, spec))

    small = ("torchvision32", "finetuner32")

    # ---- JPEG
    add("photo_500x375.jpg", jpeg_bytes(cut(photo, 500, 375), quality=90),
        ("torchvision224", "finetuner224") + small + ("torchvision32:norm", "finetuner32:norm"))
    add("photo_240x180_prog.jpg", jpeg_bytes(cut(photo, 240, 180, 0.2), quality=85,
                                              progressive=True),
        small + (
                 # Python's round() halves to even: (33 - 30) / 2 -> 2,
                 # (33 - 28) / 2 -> 2, (44 - 31) / 2 -> 6
                 "s33:c32x30:bl", "s33:c31x28:bl", "s33:c32x28:bc"))
    add("photo_203x151_444.jpg", jpeg_bytes(cut(photo, 203, 151, 0.8, 0.3), quality=95,
                                             subsampling=0), small)
    add("photo_127x93_422.jpg", jpeg_bytes(cut(photo, 127, 93, 0.1, 0.9), quality=75,
                                            subsampling=1), small)
    add("gray_161x97.jpg", jpeg_bytes(cut(photo, 161, 97).convert("L"), quality=90), small)
    add("tall_60x300.jpg", jpeg_bytes(cut(photo, 60, 300, 0.6), quality=90), small)
    add("tiny_1x1.jpg", jpeg_bytes(cut(photo, 1, 1), quality=90), small)
    add("tiny_2x3.jpg", jpeg_bytes(cut(photo, 2, 3), quality=90), small)
    add("cmyk_40x30.jpg", jpeg_bytes(cut(photo, 40, 30, 0.3).convert("CMYK"), quality=90),
        ("finetuner32",))
    base = jpeg_bytes(cut(photo, 45, 30, 0.7, 0.2), quality=90)
    add("exif_o1_45x30.jpg", with_app1(base, exif_orientation_blob(1, False)))
    for o in range(2, 9):
        add("exif_o%d_45x30.jpg" % o, with_app1(base, exif_orientation_blob(o, False)),
            ("torchvision32",) if o in (3, 6, 8) else ())
    add("exif_o6_be_45x30.jpg", with_app1(base, exif_orientation_blob(6, True)))
    # only the first Exif APP1 counts (PIL keeps the first)
    add("exif_two_45x30.jpg", with_app1(with_app1(base, exif_orientation_blob(3, False)),
                                        exif_orientation_blob(6, False)))
    # a Exif segment whose IFD is cut short: no orientation
    add("exif_short_45x30.jpg", with_app1(base, exif_orientation_blob(6, False)[:24]))

    # ---- PNG, from PIL's writer
    rgb = cut(photo, 257, 129, 0.4, 0.6)
    add("rgb_257x129.png", pil_png_bytes(rgb),
        small + ("s20:c32x24:bl",          # crop larger than the image: zero padding
                 "s20:c33x17:bc",          # padding on one axis, odd
                 "r257x50:c257x50:bc",     # width kept: no horizontal pass
                 "r100x129:c90x129:bl",    # height kept: no vertical pass
                 "r257x129:c101x51:bl",    # nothing resized, just cropped
                 "s64:c48x40:bl:norm"))
    rgba = np.dstack([np.asarray(cut(photo, 100, 80)), rng.integers(0, 256, (80, 100), np.uint8)])
    add("rgba_100x80.png", pil_png_bytes(Image.fromarray(rgba, "RGBA")), ("finetuner32",))
    gray = cut(photo, 99, 51, 0.2).convert("L")
    add("gray_99x51.png", pil_png_bytes(gray), small)
    la = Image.merge("LA", (gray, Image.fromarray(rng.integers(0, 256, (51, 99), np.uint8))))
    add("la_99x51.png", pil_png_bytes(la))
    pal = cut(photo, 70, 50).quantize(colors=200)
    trns = bytes(rng.integers(0, 256, 200, np.uint8))
    add("pal_trns_70x50.png", pil_png_bytes(pal, transparency=trns), ("finetuner32",))
    add("wide_400x7.png", pil_png_bytes(cut(photo, 400, 7, 0.5, 0.5)),
        small + ("torchvision224",))
    add("tiny_1x1.png", pil_png_bytes(cut(photo, 1, 1)), small)
    add("tiny_2x3.png", pil_png_bytes(cut(photo, 2, 3, 0.9)), small + ("s5:c4x4:bc",))

    # ---- PNG, from the writer above
    a8 = np.asarray(cut(photo, 60, 40, 0.1)).astype(np.int64)
    # 16-bit: the high byte is the photo, the low byte noise, so taking the
    # high byte and rounding differ
    add("rgb16_60x40.png", png_bytes(a8 * 256 + rng.integers(0, 256, a8.shape), 16, 2),
        ("finetuner32",))
    rgba16 = np.dstack([a8 * 256 + rng.integers(0, 256, a8.shape),
                        rng.integers(0, 65536, (40, 60))])
    add("rgba16_60x40.png", png_bytes(rgba16, 16, 6))
    g8 = np.asarray(cut(photo, 61, 41, 0.6).convert("L")).astype(np.int64)
    # 16-bit gray: PIL clamps (mode I), so mix values below 256 with larger
    g16 = np.where(rng.random(g8.shape) < 0.5, g8, g8 * 256 + rng.integers(0, 256, g8.shape))
    add("gray16_61x41.png", png_bytes(g16[:, :, None], 16, 0), ("finetuner32",))
    add("la16_61x41.png", png_bytes(np.dstack([g16, rng.integers(0, 65536, g8.shape)]), 16, 4))
    for depth in (1, 2, 4):
        levels = g8 >> (8 - depth)
        add("gray%d_61x41.png" % depth, png_bytes(levels[:, :, None], depth, 0))
    pal16 = np.asarray(cut(photo, 31, 19).quantize(colors=16))
    plte16 = np.asarray(cut(photo, 31, 19).quantize(colors=16).getpalette()[:48]).reshape(16, 3)
    add("pal4_31x19.png", png_bytes(pal16[:, :, None], 4, 3, plte=plte16,
                                    trns=bytes(range(0, 256, 16))))
    add("interlaced_rgb_75x45.png", png_bytes(np.asarray(cut(photo, 75, 45, 0.3)), 8, 2,
                                              interlace=True), ("torchvision32",))
    add("interlaced_gray16_33x21.png",
        png_bytes(g16[:21, :33, None], 16, 0, interlace=True))
    pal4 = np.asarray(cut(photo, 20, 13).quantize(colors=4))
    plte4 = np.asarray(cut(photo, 20, 13).quantize(colors=4).getpalette()[:12]).reshape(4, 3)
    add("interlaced_pal2_20x13.png", png_bytes(pal4[:, :, None], 2, 3, plte=plte4,
                                               interlace=True))
    add("interlaced_rgba_7x5.png",
        png_bytes(np.asarray(Image.fromarray(rgba[:5, :7], "RGBA")), 8, 6, interlace=True))

    # ---- headers that claim too many pixels
    huge = b"\x89PNG\r\n\x1a\n" + png_chunk(
        b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
    huge += png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")
    out.write_input("huge_100000x100000.png", huge)
    j = bytearray(jpeg_bytes(cut(photo, 8, 8), quality=90))
    sof = j.find(b"\xff\xc0")
    struct.pack_into(">HH", j, sof + 5, 65000, 65000)  # height, width
    out.write_input("huge_65000x65000.jpg", bytes(j))

    out.finish()
    write_corpus(corpusdir, photo, rng)
    total = sum(os.path.getsize(out.path(f)) for f in os.listdir(outdir))
    print("%d expectations, %d files, %.0f kB in %s" % (
        len(out.manifest), len(os.listdir(outdir)), total / 1024, outdir))


if __name__ == "__main__":
    main()
