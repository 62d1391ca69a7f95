# ltfs - build, test, fuzz and benchmark.
#
#   make            build build/ltfs (installs missing Debian packages when root)
#   make test       build and run every test; ends with "N passed, N failed"
#   make asan       the same tests under AddressSanitizer + UBSan (build-asan/)
#   make fuzz       libFuzzer on the LTX decoder, the stream frame parser and
#                   the proxy's HTTP head parser, FUZZ_TIME seconds in all
#   make bench      benchmarks next to their baselines (reports, never fails)
#   make run        build and mount ./mnt with the embedded default config
#   make install    install build/ltfs into $(PREFIX)/bin
#   make clean

PREFIX ?= /usr/local
BUILD ?= build
CC ?= cc
CFLAGS ?= -g -O2
SAN ?=
FUZZ_TIME ?= 60
MNT ?= mnt

# Every library we link, by pkg-config name.
PKGS := fuse3 sqlite3 libcurl jansson liblz4 libmicrohttpd yaml-0.1

WARN := -Wall -Wextra -Werror -Wstrict-prototypes -Wmissing-prototypes \
	-Wwrite-strings -Wpointer-arith -Wformat=2 -Wvla -Wshadow -fno-common \
	-Wno-format-truncation
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 \
	-DFUSE_USE_VERSION=312 -I. -I$(BUILD)/gen $(WARN)

# pkg-config runs once, when first needed: after the deps step installed it.
PKG_CFLAGS = $(eval PKG_CFLAGS := $$(shell pkg-config --cflags $(PKGS)))$(PKG_CFLAGS)
PKG_LIBS = $(eval PKG_LIBS := $$(shell pkg-config --libs $(PKGS)))$(PKG_LIBS)

ALL_CFLAGS = $(BASE_CFLAGS) $(PKG_CFLAGS) $(CFLAGS) $(SAN)
LDLIBS = $(PKG_LIBS) -lpthread

LTX_SRC := $(filter-out ltx/crc64_gen.c,$(wildcard ltx/*.c))
FS_SRC := $(wildcard fs/*.c)
CLUSTER_SRC := $(wildcard cluster/*.c)
CMD_SRC := $(wildcard cmd/*.c)
UNIT_SRC := $(wildcard tests/unit/*.c)
BENCH_SRC := $(wildcard tests/bench/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
LTX_OBJ := $(call obj,$(LTX_SRC))
FS_OBJ := $(call obj,$(FS_SRC))
CLUSTER_OBJ := $(call obj,$(CLUSTER_SRC))
CMD_OBJ := $(call obj,$(CMD_SRC))
UNIT_OBJ := $(call obj,$(UNIT_SRC))
LIB_OBJ := $(LTX_OBJ) $(FS_OBJ) $(CLUSTER_OBJ)
GEN := $(BUILD)/gen/crc64_table.h
# The test build of the daemon: the same code plus fault-injection points
# (LTFS_FAULT=OP[:N]); only tests run it.
FAULT_OBJ := $(patsubst %.c,$(BUILD)/obj-faults/%.o,$(FS_SRC) $(CMD_SRC))

.PHONY: all deps test test-unit asan fuzz bench run install clean lint
# Keep objects of pattern-built programs (bench) between runs.
.SECONDARY:

# "make V=1" shows the full compiler command lines.
ifeq ($(V),1)
Q :=
else
Q := @
endif

all: $(BUILD)/ltfs

deps:
	@.ci/deps install

$(GEN): ltx/crc64_gen.c | deps
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -O2 -o $(BUILD)/gen/crc64_gen $<
	$(BUILD)/gen/crc64_gen > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/%.o: %.c $(GEN) | deps
	@mkdir -p $(dir $@)
	@[ "$(V)" = 1 ] || echo "  CC      $<"
	$(Q)$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/obj-faults/%.o: %.c $(GEN) | deps
	@mkdir -p $(dir $@)
	@[ "$(V)" = 1 ] || echo "  CC      $< (faults)"
	$(Q)$(CC) $(ALL_CFLAGS) -DLTFS_FAULTS -MMD -MP -c -o $@ $<

$(BUILD)/ltfs-faults: $(FAULT_OBJ) $(LTX_OBJ) $(CLUSTER_OBJ)
	@[ "$(V)" = 1 ] || echo "  LINK    $@"
	$(Q)$(CC) $(CFLAGS) $(SAN) -o $@ $^ $(LDLIBS)

$(BUILD)/libltfs.a: $(LIB_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(BUILD)/ltfs: $(CMD_OBJ) $(BUILD)/libltfs.a
	@[ "$(V)" = 1 ] || echo "  LINK    $@"
	$(Q)$(CC) $(CFLAGS) $(SAN) -o $@ $(CMD_OBJ) $(BUILD)/libltfs.a $(LDLIBS)

$(BUILD)/test-unit: $(UNIT_OBJ) $(BUILD)/libltfs.a
	@[ "$(V)" = 1 ] || echo "  LINK    $@"
	$(Q)$(CC) $(CFLAGS) $(SAN) -o $@ $(UNIT_OBJ) $(BUILD)/libltfs.a $(LDLIBS)

$(BUILD)/bench-%: $(BUILD)/obj/tests/bench/%.o $(BUILD)/libltfs.a
	@[ "$(V)" = 1 ] || echo "  LINK    $@"
	$(Q)$(CC) $(CFLAGS) $(SAN) -o $@ $^ $(LDLIBS)

# A stand-in primary for replica tests (libc only).
$(BUILD)/fake-primary: $(BUILD)/obj/tests/tools/fake_primary.o
	@[ "$(V)" = 1 ] || echo "  LINK    $@"
	$(Q)$(CC) $(CFLAGS) $(SAN) -o $@ $^

# The web app and raw client of the proxy tests and benchmark.
$(BUILD)/proxy-app: $(BUILD)/obj/tests/tools/proxy_app.o
	@[ "$(V)" = 1 ] || echo "  LINK    $@"
	$(Q)$(CC) $(CFLAGS) $(SAN) -o $@ $^ $(LDLIBS)

# A relay that makes the test S3 server misbehave: ignore conditional
# writes, drop connections, or answer 404 for an object (libc only).
$(BUILD)/s3-relay: $(BUILD)/obj/tests/tools/s3_relay.o
	@[ "$(V)" = 1 ] || echo "  LINK    $@"
	$(Q)$(CC) $(CFLAGS) $(SAN) -o $@ $^

# Waits in poll() for a database's -pos file to change (libc only).
$(BUILD)/pos-wait: $(BUILD)/obj/tests/tools/pos_wait.o
	@[ "$(V)" = 1 ] || echo "  LINK    $@"
	$(Q)$(CC) $(CFLAGS) $(SAN) -o $@ $^

test-unit: $(BUILD)/test-unit
	$(BUILD)/test-unit

# Drives the S3 client from shell tests.
$(BUILD)/s3-tool: $(BUILD)/obj/tests/tools/s3_tool.o $(BUILD)/libltfs.a
	@[ "$(V)" = 1 ] || echo "  LINK    $@"
	$(Q)$(CC) $(CFLAGS) $(SAN) -o $@ $^ $(LDLIBS)

test: $(BUILD)/ltfs $(BUILD)/ltfs-faults $(BUILD)/test-unit $(BUILD)/fake-primary $(BUILD)/s3-tool \
	$(BUILD)/proxy-app $(BUILD)/s3-relay $(BUILD)/pos-wait
	@tests/run $(BUILD)

# Sanitizers: -O1 keeps stacks readable; recover off so any report fails.
asan:
	@$(MAKE) --no-print-directory BUILD=build-asan CFLAGS="-g -O1" \
		SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" test

# The fuzzers share FUZZ_TIME (each at least 1 s: 0 would mean no limit):
# a fifth for the proxy's HTTP head parser, the rest halved.
FUZZ_HTTP1_TIME = $(shell t=$$(( $(FUZZ_TIME) / 5 )); echo $$(( t > 0 ? t : 1 )))
FUZZ_FRAME_TIME = $(shell t=$$(( ($(FUZZ_TIME) - $(FUZZ_HTTP1_TIME)) / 2 )); echo $$(( t > 0 ? t : 1 )))
FUZZ_LTX_TIME = $(shell t=$$(( $(FUZZ_TIME) - $(FUZZ_HTTP1_TIME) - $(FUZZ_FRAME_TIME) )); echo $$(( t > 0 ? t : 1 )))
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -g -O1 -I. -Ibuild-fuzz/gen \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
fuzz: deps
	@$(MAKE) --no-print-directory BUILD=build-fuzz build-fuzz/gen/crc64_table.h
	clang $(FUZZ_CFLAGS) -o build-fuzz/fuzz-ltx-dec tests/fuzz/fuzz_ltx_dec.c \
		$(LTX_SRC) $$(pkg-config --libs liblz4)
	clang $(FUZZ_CFLAGS) -o build-fuzz/fuzz-frame tests/fuzz/fuzz_frame.c \
		cluster/frame.c $(LTX_SRC) $$(pkg-config --libs liblz4)
	clang $(FUZZ_CFLAGS) -o build-fuzz/fuzz-http1 tests/fuzz/fuzz_http1.c cluster/http1.c
	@mkdir -p build-fuzz/corpus build-fuzz/corpus-frame build-fuzz/corpus-http1
	build-fuzz/fuzz-ltx-dec -max_total_time=$(FUZZ_LTX_TIME) -rss_limit_mb=1024 \
		-timeout=10 build-fuzz/corpus tests/fuzz/corpus/ltx-dec
	build-fuzz/fuzz-frame -max_total_time=$(FUZZ_FRAME_TIME) -rss_limit_mb=1024 \
		-timeout=10 build-fuzz/corpus-frame tests/fuzz/corpus/frame
	build-fuzz/fuzz-http1 -max_total_time=$(FUZZ_HTTP1_TIME) -rss_limit_mb=1024 \
		-timeout=10 -max_len=70000 build-fuzz/corpus-http1 tests/fuzz/corpus/http1

bench: $(BUILD)/ltfs $(BUILD)/proxy-app $(patsubst tests/bench/%.c,$(BUILD)/bench-%,$(BENCH_SRC))
	@tests/bench/run $(BUILD)

run: $(BUILD)/ltfs
	@mkdir -p $(MNT)
	$(BUILD)/ltfs mount $(MNT)

install: $(BUILD)/ltfs
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BUILD)/ltfs $(DESTDIR)$(PREFIX)/bin/ltfs

# Private headers stay in their folder; one public header per folder.
lint:
	@tests/lint

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILD)/obj $(BUILD)/obj-faults -name '*.d' 2>/dev/null)
