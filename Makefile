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
# One set of manifests, two images: production (the base alone) and development (+ dev.yml:
# console shell and test agent, for `make run` and the VM tests).
MANIFESTS_prod := linuxkit/eve-storage.yml
MANIFESTS_dev  := linuxkit/eve-storage.yml linuxkit/dev.yml
# Update signing: SIGNING_KEY=path/to/key.pem (PKCS#8 ed25519; `eve-imgbuild new-key`). Without
# it a development key is made once in $(CACHE)/keys and images are marked dev-signed; RELEASE=1
# refuses to build without a real key. SECURITY_EPOCH, TRUSTED_KEYS (public key files) and
# ROTATION (from `eve-imgbuild rotate-keys`) and KEY_SERIAL (the image's key list serial) are
# passed through.
SIGNING_KEY    ?=
# Secure Boot: BOOT_KEYS=dir (`eve-imgbuild new-boot-keys`: firmware PK/KEK/db and GRUB's OpenPGP
# key); without it a development set is made once in $(CACHE)/keys/dev-boot.
BOOT_KEYS      ?=
RELEASE        ?=
SECURITY_EPOCH ?= 0
TRUSTED_KEYS   ?=
ROTATION       ?=
KEY_SERIAL     ?= 1
# REVOKE_LOADERS: older boot loader files (GRUB or shim .efi) this release revokes: their
# Authenticode hashes go into a KEK-signed dbx append the image carries, which a box writes to
# its firmware once this release is good on it and its loader is on the ESP.
REVOKE_LOADERS ?=
# MGMT_CA=dir: the management API's operator CAs (admin-ca.pem, reader-ca.pem: client
# certificates from the first get the admin role, from the second the reader role). Without it
# a development pair is made once in $(CACHE)/keys/mgmt-dev with a client certificate from each
# (admin.pem/.key, reader.pem/.key); RELEASE=1 refuses to build without it.
MGMT_CA        ?=
SIGN_FLAGS := $(if $(SIGNING_KEY),--signing-key $(abspath $(SIGNING_KEY))) $(if $(RELEASE),--release) \
    $(if $(BOOT_KEYS),--boot-keys $(abspath $(BOOT_KEYS))) \
    --security-epoch $(SECURITY_EPOCH) --key-serial $(KEY_SERIAL) $(addprefix --trusted-key ,$(TRUSTED_KEYS)) \
    $(if $(ROTATION),--rotation $(abspath $(ROTATION))) $(addprefix --revoke-loader ,$(abspath $(REVOKE_LOADERS))) \
    $(if $(MGMT_CA),--mgmt-ca $(abspath $(MGMT_CA)))
# A development build is never signed with the vendor's keys and never released: it gets its own
# keys in the cache, which no production image trusts (the builder refuses SIGNING_KEY, BOOT_KEYS
# and --release with the dev profile).
DEV_SIGN_FLAGS := --security-epoch $(SECURITY_EPOCH) --key-serial $(KEY_SERIAL) $(addprefix --revoke-loader ,$(abspath $(REVOKE_LOADERS)))
IMGBUILD = $(CARGO) run --release --locked -q -p imgbuild --
CARGO      ?= cargo
# Shipped binaries are static so they run in the initramfs and in LinuxKit's scratch images alike.
STATIC     := RUSTFLAGS="-C target-feature=+crt-static"

.PHONY: help deps binaries image dev-image release repro run test test-long unit vmtest bench campaign fuzz lint check clean
.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /\1\t/' | awk -F'\t' '{ printf "  make %-10s %s\n", $$1, $$2 }'


deps: ## install the Debian packages the build and the tests need (as root)
	@scripts/host-deps.sh

binaries: ## build the appliance's Rust programs (release, static where shipped)
	$(STATIC) CARGO_TARGET_DIR=target/static $(CARGO) build --release --locked --target $(TARGET) -p eve-init -p eve-agent
	$(CARGO) build --release --locked --target $(TARGET) -p storage -p storagectl -p storaged -p abupdate -p volumes -p mgmt -p manuals
	rm -rf $(OUT)/manuals && $(BINS)/eve-manuals --out $(OUT)/manuals

# The builder caches downloads and the ZFS module build under $(CACHE); a rebuild takes about a minute.
# `make image`: the production image, out/eve-storage.{raw,raw.zst,update,build.json}.
image: deps binaries ## the production image: out/eve-storage.{raw,raw.zst,update,build.json}
	$(IMGBUILD) build --profile prod $(addprefix --manifest ,$(MANIFESTS_prod)) \
	    --bins $(STATIC_BINS) --bins $(BINS) --overlay $(OUT)/manuals --out $(OUT) --cache $(CACHE) --version $(VERSION) $(SIGN_FLAGS)

# `make dev-image`: the development image, out/eve-storage-dev.*, for `make run` and the VM tests.
dev-image: deps binaries ## the development image (shell, agent): out/eve-storage-dev.*
	$(IMGBUILD) build --profile dev $(addprefix --manifest ,$(MANIFESTS_dev)) \
	    --bins $(STATIC_BINS) --bins $(BINS) --overlay $(OUT)/manuals --out $(OUT) --cache $(CACHE) --version $(VERSION) $(DEV_SIGN_FLAGS)

# A vendor build: the production image signed with SIGNING_KEY, never with a development key.
release: ## the production image signed with SIGNING_KEY (a vendor build)
	$(MAKE) image RELEASE=1

# Reproducibility: a second build of the production image must be byte-identical to the first.
repro: image ## build the production image twice and compare the bytes
	rm -rf $(OUT)/repro
	$(IMGBUILD) build --profile prod $(addprefix --manifest ,$(MANIFESTS_prod)) \
	    --bins $(STATIC_BINS) --bins $(BINS) --overlay $(OUT)/manuals --out $(OUT)/repro --cache $(CACHE) --version $(VERSION) $(SIGN_FLAGS)
	cmp $(OUT)/eve-storage.raw $(OUT)/repro/eve-storage.raw
	cmp $(OUT)/eve-storage.update $(OUT)/repro/eve-storage.update
	@echo "repro: two builds gave the same image and update: sha256 $$(sha256sum < $(OUT)/eve-storage.raw | cut -c1-16)..."
	rm -rf $(OUT)/repro

check: ## check the image manifests against the repository
	$(IMGBUILD) check $(addprefix --manifest ,$(MANIFESTS_dev))

run: dev-image ## boot the development image in qemu with blank disks
	$(CARGO) run --release --locked -q -p eve-vmtest --bin eve-vm -- run --image $(OUT)/eve-storage-dev.raw

lint: ## rustfmt and clippy, warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

# Unit tier: pure logic, fixture trees, in-memory GPT; plus the repository manifest check.
unit: ## the unit tier (cargo test)
	$(CARGO) test --locked --workspace --exclude eve-vmtest
	$(CARGO) test --locked -p eve-vmtest --lib

# VM tier: the built image in qemu. Two tests at a time suit a 2-core machine under TCG.
# LONG_VM_TESTS run in `make test-long` instead, so `make test` fits its hour: run both before a
# change is called done.
LONG_VM_TESTS := d_storage::power_cut_during_first_boot_setup_always_converges \
	ab_update::v2_installs_and_becomes_good_while_unbootable_and_unhealthy_v3_roll_back_by_themselves
VM_ENV = EVE_IMAGE=$(abspath $(OUT)/eve-storage-dev.raw) EVE_PROD_IMAGE=$(abspath $(OUT)/eve-storage.raw)
vmtest: image dev-image ## the VM tier (qemu, two guests at a time), without LONG_VM_TESTS
	$(VM_ENV) $(CARGO) test --locked -p eve-vmtest --test vm -- --test-threads=2 $(foreach t,$(LONG_VM_TESTS),--skip $(t))

test-long: image dev-image ## the VM tests too long for make test
	$(VM_ENV) $(CARGO) test --locked -p eve-vmtest --test vm -- --test-threads=2 --exact $(LONG_VM_TESTS)

test: deps lint unit repro vmtest ## everything CI runs: lint, unit, repro, VM tier

# Benchmarks (figures, not assertions): about 30 minutes on 2 cores under TCG (BENCH_ARGS="--volumes 100" for a shorter run). Results in results/.
bench: dev-image ## benchmarks (figures, about 30 min) into results/ and BENCHMARKS.md
	$(CARGO) run --release --locked -q -p eve-vmtest --bin eve-bench -- --image $(OUT)/eve-storage-dev.raw --out results --benchmarks BENCHMARKS.md $(BENCH_ARGS)

# The randomized fault campaign (opt-in, not part of `make test`): SCENARIOS random operations on
# the development image, each under a random fault at a random instant, every invariant checked
# after recovery; at most CAMPAIGN_MINUTES. SEED=S replays a run, SCENARIO=N one scenario of it.
# Results in results/campaign-*.json and RELIABILITY.md. Needs the host's apt to reach
# bookworm-backports once (zinject, from zfs-test of the image's ZFS release).
SCENARIOS ?= 100
CAMPAIGN_MINUTES ?= 60
campaign: dev-image ## randomized fault campaign (SEED=, SCENARIO=, SCENARIOS=100) into RELIABILITY.md
	$(CARGO) run --release --locked -q -p eve-campaign -- --image $(OUT)/eve-storage-dev.raw \
	    --update $(OUT)/eve-storage-dev.update --scenarios $(SCENARIOS) --minutes $(CAMPAIGN_MINUTES) \
	    $(if $(SEED),--seed $(SEED)) $(if $(SCENARIO),--scenario $(SCENARIO))

# Coverage-guided fuzzing of every parser of outside input (opt-in, not part of `make test`):
# FUZZ_SECONDS per target. cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable
# toolchain accept them. Crashes land in fuzz/artifacts/<target>/.
FUZZ_SECONDS ?= 60
fuzz: ## coverage-guided fuzzing of every outside-input parser, FUZZ_SECONDS each
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && set -o pipefail && for t in policy spec update_header grubenv kernel_and_tools mgmt_request; do \
	    echo "fuzz: $$t ($(FUZZ_SECONDS) s)"; \
	    RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) 2>&1 | tail -n 2 || exit 1; \
	done

clean: ## remove out/ and target/
	rm -rf $(OUT) target
