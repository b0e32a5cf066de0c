# Set-up and entry points for a fresh Debian 12 machine (run as root).
# `make demo` and `make test` install what is missing first.

APT_PACKAGES = qemu-utils qemu-system-x86 qemu-system-common libnbd0 libnbd-bin nbdkit \
	libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-daemon-system \
	openssh-server openssh-client g++ make libsqlite3-dev libssl-dev zlib1g-dev \
	debian-archive-keyring bacula-director bacula-director-sqlite3 bacula-sd bacula-fd \
	bacula-console sqlite3 iproute2 procps fdisk virtnbdbackup
# Not put on PATH: child Deno processes are started with Deno.execPath(), and
# `deno` inside a task is the task runner's own binary.
DENO = .tools/node_modules/.bin/deno

.PHONY: setup demo test bench check bacula-plugin bacula15
setup: .setup-done
.setup-done:
	@printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			-o DPkg::Lock::Timeout=300 --no-install-recommends $$missing; \
	fi
	@[ -x $(DENO) ] || npm install --prefix .tools --no-save --no-audit --no-fund deno@2.9.6
	@touch .setup-done

demo: setup
	$(DENO) task demo

test: setup bacula15
	$(DENO) task test

bench: setup bacula15
	$(DENO) task bench

check: setup
	$(DENO) task check

# Bacula 15.0.3 for the real-plugin tests: director (SQLite catalog), storage daemon, file
# daemon and bconsole built from Debian trixie's source package into .tools/bacula15, and the
# plugin built against it. Cached: a rerun builds nothing.
bacula15: setup
	@bacula-plugin/bacula-source.sh --install >/dev/null
	@$(MAKE) -s bacula-plugin BACULA_SRC=.tools/bacula-15.0.3

# The cloudstack-fd.so Bacula plugin, against Bacula 15.0.3 fetched with apt (private
# sources list under .tools/) or against your configured tree: make bacula-plugin BACULA_SRC=DIR
bacula-plugin:
	@src="$(BACULA_SRC)"; [ -n "$$src" ] || src=$$(bacula-plugin/bacula-source.sh | tail -n 1); \
	$(MAKE) -s -C bacula-plugin BACULA_SRC="$$(realpath "$$src")" DENO="$(abspath $(DENO))" && \
	echo "built $(abspath bacula-plugin/build/cloudstack-fd.so); install it and the backend with:" && \
	echo "  install -m 0644 $(abspath bacula-plugin/build/cloudstack-fd.so) PLUGIN_DIRECTORY/" && \
	echo "  install -m 0755 $(abspath lib/bacula/cloudstack_backend.sh) FD_EXE_DIR/cloudstack_backend" && \
	echo "(PLUGIN_DIRECTORY: the FD's Plugin Directory, e.g. /opt/bacula/plugins; FD_EXE_DIR: where bacula-fd is," && \
	echo " e.g. /opt/bacula/bin; cloudstack_backend runs FD_EXE_DIR/dirtybit: see docs/bacula.md)"
