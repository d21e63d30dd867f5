# featcache - build, test and benchmark.
#
#   make            libfeatcache.a and the featcache binary in build/
#   make deps       install the missing Debian packages (tools/deps.sh)
#   make test       the whole suite, warnings as errors (build/test/)
#   make asan       the whole suite under ASan+UBSan (build/asan/)
#   make fuzz       libFuzzer targets with clang (build/fuzz/), FUZZ_SECONDS each
#   make bench      every benchmark in bench/
#   make conformance  full-size torchvision CNNs: engine vs PyTorch (build/conformance/)
#   make install    PREFIX=/usr/local DESTDIR=

CC ?= cc
CFLAGS ?= -O2 -g
PREFIX ?= /usr/local
BUILD ?= build
WERROR ?=
SAN ?=
FUZZ_SECONDS ?= 60

WARN = -std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
       -Wformat=2 -Wvla -Wpointer-arith -Wundef
PKGS = lmdb libzstd jansson libxxhash libprotobuf-c libturbojpeg libpng
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null)

ALL_CFLAGS = $(WARN) $(WERROR) $(CFLAGS) $(SAN) -fopenmp -fno-math-errno -D_GNU_SOURCE -Iinclude -I. -I$(BUILD)/gen $(PKG_CFLAGS) -MMD -MP
LDLIBS = $(PKG_LIBS) -ldnnl -lm
ALL_LDFLAGS = $(LDFLAGS) $(SAN) -fopenmp

LIB_SRC := $(sort $(wildcard util/*.c store/*.c io/*.c extract/*.c train/*.c export/*.c report/*.c))
CLI_SRC := $(sort $(wildcard cli/*.c))
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TOOL_SRC := $(sort $(wildcard tests/tool_*.c))
BENCH_SRC := $(sort $(wildcard bench/*.c))
FUZZ_SRC := $(sort $(wildcard tests/fuzz_*.c))

LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
# The ONNX reader's protobuf code, generated from extract/onnx.proto by protoc-c.
GEN_SRC := $(BUILD)/gen/onnx.pb-c.c
GEN_HDR := $(BUILD)/gen/onnx.pb-c.h
GEN_OBJ := $(BUILD)/gen/onnx.pb-c.o
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/%.o)
LIB := $(BUILD)/libfeatcache.a
BIN := $(BUILD)/featcache
TESTS := $(TEST_SRC:%.c=$(BUILD)/%)
TOOLS := $(TOOL_SRC:%.c=$(BUILD)/%)
BENCHES := $(BENCH_SRC:%.c=$(BUILD)/%)

.PHONY: all deps test check asan valgrind fuzz bench conformance demo install clean
.DELETE_ON_ERROR:
.SECONDARY:

all: $(LIB) $(BIN)

# Every object may include the generated header: make it first.
$(BUILD)/%.o: %.c | $(GEN_HDR)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(GEN_SRC) $(GEN_HDR) &: extract/onnx.proto
	@mkdir -p $(@D)
	protoc-c --proto_path=extract --c_out=$(BUILD)/gen extract/onnx.proto

$(GEN_OBJ): $(GEN_SRC)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ) $(GEN_OBJ)
	@mkdir -p $(@D)
	rm -f $@
	ar rcs $@ $^

$(BIN): $(CLI_OBJ) $(LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $(CLI_OBJ) $(LIB) $(LDLIBS)

$(BUILD)/tests/test_%: $(BUILD)/tests/test_%.o $(LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $< $(LIB) $(CMOCKA_LIBS) $(LDLIBS)

$(BUILD)/tests/tool_%: $(BUILD)/tests/tool_%.o $(LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

# The demo's dataset converter (Fashion-MNIST idx files to PNGs): standalone,
# it needs only libpng and zlib.
$(BUILD)/tools/fmnist_png: tools/fmnist_png.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(shell pkg-config --cflags zlib) $(ALL_LDFLAGS) -o $@ $< $(shell pkg-config --libs libpng zlib)

deps:
	@sh tools/deps.sh

# The suite proper: unit tests (cmocka, TAP output) and CLI scripts, counted
# by tests/run.sh, which prints the closing "N passed, N failed" line.
check: $(BIN) $(TESTS) $(TOOLS)
	@FC_WRAP="$(FC_WRAP)" FC_WRAP_SKIP="$(FC_WRAP_SKIP)" sh tests/run.sh $(BUILD)

test: deps
	@$(MAKE) --no-print-directory BUILD=build/test WERROR=-Werror check

asan: deps
	@$(MAKE) --no-print-directory BUILD=build/asan WERROR=-Werror CFLAGS="-O1 -g -fno-omit-frame-pointer" \
		SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" check

# The unit tests under valgrind's memcheck (CLI scripts run natively).
# test_engine runs natively too: nearly all its work is oneDNN's JIT code,
# which reads whole vectors past its own buffers and which memcheck cannot
# attribute; `make asan` covers the engine's own code.
valgrind: deps
	@$(MAKE) --no-print-directory BUILD=build/valgrind WERROR=-Werror CFLAGS="-O1 -g" \
		FC_WRAP="valgrind -q --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite --suppressions=$(CURDIR)/tests/valgrind.supp" \
		FC_WRAP_SKIP=test_engine FC_TEST_PERF_N=0 check

# libFuzzer needs clang; the library is rebuilt with coverage instrumentation.
fuzz: deps
	@$(MAKE) --no-print-directory BUILD=build/fuzz CC=clang CFLAGS="-O1 -g -Wno-pass-failed" \
		SAN="-fsanitize=fuzzer-no-link,address,undefined" fuzz-run

FUZZERS := $(FUZZ_SRC:%.c=$(BUILD)/%)
$(BUILD)/tests/fuzz_%: $(BUILD)/tests/fuzz_%.o $(LIB)
	$(CC) $(ALL_LDFLAGS) -fsanitize=fuzzer -o $@ $< $(LIB) $(LDLIBS)

.PHONY: fuzz-run
fuzz-run: $(FUZZERS)
	@for f in $(FUZZERS); do \
		n=$$(basename $$f); mkdir -p $(BUILD)/corpus/$$n; \
		echo "fuzz: $$n for $(FUZZ_SECONDS)s"; \
		$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $(BUILD)/corpus/$$n tests/corpus/$$n 2>$(BUILD)/$$n.log \
			|| { tail -50 $(BUILD)/$$n.log; exit 1; }; \
		grep -E 'stat::number_of_executed_units' $(BUILD)/$$n.log; \
	done

# The demo: Fashion-MNIST through the demo backbone, then a head (tools/demo.sh).
demo: deps
	@$(MAKE) --no-print-directory all $(BUILD)/tools/fmnist_png
	@sh tools/demo.sh $(BUILD)

# The peers need PyTorch and numpy on a fast BLAS (Debian's default libblas
# is the reference one, 10x slower than OpenBLAS here).
bench:
	@FC_DEPS_EXTRA="python3-torch python3-torchvision python3-onnx python3-pil libopenblas0-pthread mate-backgrounds" sh tools/deps.sh
	@$(MAKE) --no-print-directory $(BIN) $(BENCHES) $(BUILD)/tests/tool_mkimage
	@sh bench/peer_ort_setup.sh $(BUILD)/npm || echo "bench: onnx runtime peer unavailable" >&2
	@sh bench/run.sh $(BUILD)

# Full-size torchvision models of every supported family, exported with
# random weights into $(BUILD)/conformance (~1.2 GB, kept for reruns), run
# by PyTorch and by the engine (f32 and bf16) on the same images.
conformance:
	@FC_DEPS_EXTRA="python3-torch python3-torchvision python3-onnx" sh tools/deps.sh
	@$(MAKE) --no-print-directory $(BUILD)/tests/tool_embed_model
	@/usr/bin/python3 tools/conformance.py --tool $(BUILD)/tests/tool_embed_model --out $(BUILD)/conformance

install: $(LIB) $(BIN)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include/featcache
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/featcache
	install -m 644 $(LIB) $(DESTDIR)$(PREFIX)/lib/libfeatcache.a
	install -m 644 include/featcache/*.h $(DESTDIR)$(PREFIX)/include/featcache/

clean:
	rm -rf build

-include $(LIB_OBJ:.o=.d) $(GEN_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TESTS:=.d) $(TOOLS:=.d) $(BENCHES:=.d)
