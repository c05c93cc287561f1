# EVE storage appliance. `make run` boots it in qemu; `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := image

CACHE      ?= $(HOME)/.cache/eve-storage
OUT        ?= out
VERSION    ?= dev
TARGET     := x86_64-unknown-linux-gnu
# eve-init runs in the initramfs, so it (and the agent) are static, built in their own target dir;
# storage binaries link Debian's libtss2 and use the image's glibc.
STATIC_BINS := target/static/$(TARGET)/release
BINS       := target/$(TARGET)/release
MANIFESTS  := linuxkit/eve-storage.yml linuxkit/dev.yml
CARGO      ?= cargo
# Shipped binaries are static so they run in the initramfs and in LinuxKit's scratch images alike.
STATIC     := RUSTFLAGS="-C target-feature=+crt-static"

.PHONY: deps binaries image run test unit vmtest bench fuzz lint check clean

deps:
	@scripts/host-deps.sh

binaries:
	$(STATIC) CARGO_TARGET_DIR=target/static $(CARGO) build --release --locked --target $(TARGET) -p eve-init -p eve-agent
	$(CARGO) build --release --locked --target $(TARGET) -p storage -p storagectl -p abupdate -p volumes

# The builder caches downloads and the ZFS module build under $(CACHE); a rebuild takes about a minute.
image: deps binaries
	$(CARGO) run --release --locked -q -p imgbuild -- build $(addprefix --manifest ,$(MANIFESTS)) \
	    --bins $(STATIC_BINS) --bins $(BINS) --out $(OUT) --cache $(CACHE) --version $(VERSION)

check:
	$(CARGO) run --release --locked -q -p imgbuild -- check $(addprefix --manifest ,$(MANIFESTS))

run: image
	$(CARGO) run --release --locked -q -p eve-vmtest --bin eve-vm -- run --image $(OUT)/eve-storage.raw

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

# Unit tier: pure logic, fixture trees, in-memory GPT; plus the repository manifest check.
unit:
	$(CARGO) test --locked --workspace --exclude eve-vmtest
	$(CARGO) test --locked -p eve-vmtest --lib

# VM tier: the built image in qemu. Two tests at a time suit a 2-core machine under TCG.
vmtest: image
	EVE_IMAGE=$(abspath $(OUT)/eve-storage.raw) $(CARGO) test --locked -p eve-vmtest --test '*' -- --test-threads=2

test: deps lint unit vmtest

# Benchmarks (figures, not assertions): about 22 minutes on 2 cores under TCG. Results in results/.
bench: image
	$(CARGO) run --release --locked -q -p eve-vmtest --bin eve-bench -- --image $(OUT)/eve-storage.raw --out results

# Coverage-guided fuzzing of every parser of outside input (opt-in, not part of `make test`):
# FUZZ_SECONDS per target. cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable
# toolchain accept them. Crashes land in fuzz/artifacts/<target>/.
FUZZ_SECONDS ?= 60
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && set -o pipefail && for t in policy spec update_header grubenv kernel_and_tools; do \
	    echo "fuzz: $$t ($(FUZZ_SECONDS) s)"; \
	    RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) 2>&1 | tail -n 2 || exit 1; \
	done

clean:
	rm -rf $(OUT) target
