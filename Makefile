# Set-up and entry points for a fresh Debian 12 machine (run as root).
# `make demo` and `make test` install what is missing first.

APT_PACKAGES = qemu-utils qemu-system-x86 qemu-system-common libnbd0 libnbd-bin nbdkit \
	libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-daemon-system \
	openssh-server openssh-client bacula-director bacula-director-sqlite3 bacula-sd bacula-fd \
	bacula-console sqlite3 iproute2 procps
# Not put on PATH: child Deno processes are started with Deno.execPath(), and
# `deno` inside a task is the task runner's own binary.
DENO = .tools/node_modules/.bin/deno

.PHONY: setup demo test bench check
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

test: setup
	$(DENO) task test

bench: setup
	$(DENO) task bench

check: setup
	$(DENO) task check
