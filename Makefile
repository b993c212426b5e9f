# netbootgen: the two set-up commands of the README.
#   make demo  - install what is needed, then boot the built-in example under QEMU and print the stage timeline
#   make test  - install what is needed, then run the whole test suite (QEMU boots included)
# Both are idempotent; apt packages are installed through sudo when not root.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
APT_PACKAGES := qemu-system-x86 qemu-utils dracut-core pxelinux syslinux-common ipxe-qemu busybox-static \
	e2fsprogs vblade aoetools shellcheck systemd iproute2 mount kmod cpio gcc libc6-dev python3-dev zstd lz4 \
	dnsmasq-base grub-efi-amd64-bin ovmf chromium make pkg-config libkmod-dev \
	mmdebstrap xfsprogs
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
STAMP := $(VENV)/.installed

.PHONY: demo test deps venv kernel clean dracut-ng

demo: deps venv kernel
	$(VENV)/bin/netbootgen boot-test --via pxe --json demo-report.json

test: deps venv kernel dracut-ng
	$(VENV)/bin/pytest -v -ra

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	else echo "Debian packages: all present"; fi
	@# apt-get download (the kernel) needs package lists
	@ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 || $(SUDO) apt-get update -qq

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py netbootgen/aoe/_fastpath.c
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

kernel: venv
	$(VENV)/bin/python -c "from netbootgen.kernel.fetch import fetch_kernel; from netbootgen.cache import cache_dir; \
	t = fetch_kernel('auto', cache_dir()); print('kernel', t.version, 'in', t.root)"

# dracut-ng 106 (Debian 13's dracut) from Debian's trixie source, built into the cache for --dracut ng
dracut-ng: venv
	$(VENV)/bin/python -c "from netbootgen.modules.dracut_ng import fetch_dracut_ng; from netbootgen.cache import cache_dir; \
	d = fetch_dracut_ng(cache_dir()); print(d.version(), 'in', d.basedir)"

clean:
	rm -rf $(VENV) demo-report.json
