#!/bin/sh
# kiln-jail-worker.sh: a fresh FreeBSD jail on a fresh ZFS clone for every Kiln job.
#
# In the spirit of robur's builder: clone a snapshot of a prepared jail root, start a jail on the
# clone, run `kiln worker --once` in it (it takes one run, reports it and exits), then remove the
# jail and destroy the clone; again and again until stopped. On SIGTERM/SIGINT the worker in the
# jail drains (its run may finish for up to KILN_DRAIN_TIMEOUT) before everything is removed.
#
# UNTESTED on FreeBSD (none was available where it was written): it was checked with `sh -n`,
# `dash -n` and checkbashisms, and run on Linux against stand-in zfs/jail/jexec/jls commands.
# Try it on a test host first. Preparing the snapshot: docs/deploy.md ("FreeBSD jails").
#
# Settings, from the environment (the rc.d script kiln_worker passes them from rc.conf):
#   KILN_SERVER             server URL (required)
#   KILN_WORKER_TOKEN       worker token, or KILN_WORKER_TOKEN_FILE: a file holding it
#   KILN_PLATFORM           platform served (default freebsd-<major>, as `kiln worker` would say)
#   KILN_WORKER_NAME        worker name (default <short hostname>-jail-<pid of this script>)
#   KILN_WORKER_ARGS        more `kiln worker` options, split on spaces (e.g. "--label zfs=yes")
#   KILN_DRAIN_TIMEOUT      --drain-timeout of the worker (default 5m)
#   KILN_JAIL_SNAPSHOT      the prepared root (default zroot/jails/kiln-base@clean)
#   KILN_JAIL_USER          user in the jail that runs the worker and its jobs (default kiln)
#   KILN_JAIL_NODE          node in the jail (default /usr/local/bin/node)
#   KILN_JAIL_KILN          Kiln's tree in the jail (default /opt/kiln)
set -eu
set -f # no globbing: KILN_WORKER_ARGS is split on spaces, and nothing else

# Clear state: nothing the caller exported under these names is taken for ours.
clone=''
jail_name=''
child=''
stopping=''
rc=0
status=0
root=''
PATH=/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin
export PATH

die() {
	echo "kiln-jail-worker: $*" >&2
	exit 2
}

: "${KILN_SERVER:?set KILN_SERVER to the server URL}"
if [ -z "${KILN_WORKER_TOKEN:-}" ]; then
	[ -n "${KILN_WORKER_TOKEN_FILE:-}" ] || die "set KILN_WORKER_TOKEN or KILN_WORKER_TOKEN_FILE"
	KILN_WORKER_TOKEN=$(cat "$KILN_WORKER_TOKEN_FILE")
fi
# The worker reads both from its environment, which jexec passes on (the token stays out of ps).
export KILN_SERVER KILN_WORKER_TOKEN

platform=${KILN_PLATFORM:-freebsd-$(uname -r | cut -d. -f1)}
worker_name=${KILN_WORKER_NAME:-$(hostname -s)-jail-$$}
worker_args=${KILN_WORKER_ARGS:-}
drain=${KILN_DRAIN_TIMEOUT:-5m}
snapshot=${KILN_JAIL_SNAPSHOT:-zroot/jails/kiln-base@clean}
jail_user=${KILN_JAIL_USER:-kiln}
node=${KILN_JAIL_NODE:-/usr/local/bin/node}
kiln=${KILN_JAIL_KILN:-/opt/kiln}

case $snapshot in
*@*) ;;
*) die "KILN_JAIL_SNAPSHOT must name a snapshot (dataset@name), not '$snapshot'" ;;
esac
base=${snapshot%@*}
# The clone sits next to the base dataset: zroot/jails/kiln-base@clean -> zroot/jails/kiln-run-PID.
# One name per launcher: a clone that could not be destroyed stops this script instead of piling up.
clone_name=${base%/*}/kiln-run-$$
jail_target=kiln-run-$$

# Removes the jail and the clone, whatever state they are in. Safe to call twice.
cleanup() {
	if [ -n "$jail_name" ]; then
		if jls -j "$jail_name" jid >/dev/null 2>&1; then
			jail -r "$jail_name" >/dev/null || echo "kiln-jail-worker: could not remove jail $jail_name" >&2
		fi
		jail_name=''
	fi
	if [ -n "$clone" ]; then
		# -f unmounts it even if something (a devfs left mounted) keeps it busy.
		zfs destroy -f "$clone" || echo "kiln-jail-worker: could not destroy $clone: remove it by hand" >&2
		clone=''
	fi
}

# shellcheck disable=SC2317 # on_exit and on_signal run from traps
on_exit() {
	status=$?
	trap - EXIT
	cleanup
	exit "$status"
}

# First signal: stop after this job. The worker drains: its run may finish for up to --drain-timeout,
# then is cancelled and its result sent. jexec execs the worker, so $child is the worker itself.
# shellcheck disable=SC2317
on_signal() {
	stopping=1
	if [ -n "$child" ]; then
		kill -s TERM "$child" 2>/dev/null || true
	fi
}

trap on_exit EXIT
trap on_signal INT TERM HUP

while [ -z "$stopping" ]; do
	zfs clone "$snapshot" "$clone_name"
	clone=$clone_name
	root=$(zfs get -H -o value mountpoint "$clone")
	[ -d "$root" ] || die "clone $clone is not mounted (mountpoint: $root)"

	# persist: the jail outlives its processes until `jail -r`, which also unmounts its devfs.
	# ip4/ip6=inherit: the worker (and the jobs) use the host's addresses to reach the server.
	jail -c name="$jail_target" path="$root" host.hostname="$jail_target" \
		ip4=inherit ip6=inherit mount.devfs devfs_ruleset=4 \
		enforce_statfs=2 children.max=0 allow.raw_sockets=0 persist
	jail_name=$jail_target
	[ -z "$stopping" ] || break

	# Jobs run as a plain process group in the jail (--sandbox none): the jail is the sandbox.
	# shellcheck disable=SC2086 # $worker_args is split on purpose
	jexec -U "$jail_user" "$jail_name" "$node" "$kiln/bin/kiln.mjs" worker --once \
		--name "$worker_name" --platform "$platform" --sandbox none \
		--drain-timeout "$drain" $worker_args &
	child=$!
	rc=0
	wait "$child" || rc=$?
	# A signal interrupts `wait`; wait again until the draining worker has really exited.
	while kill -s 0 "$child" 2>/dev/null; do
		rc=0
		wait "$child" || rc=$?
	done
	child=''
	cleanup

	case $rc in
	0) ;;
	2 | 3)
		# 2: bad options; 3: refused by the server (bad token, protocol version, name in use).
		echo "kiln-jail-worker: the worker exited $rc; a restart cannot fix that, stopping" >&2
		exit "$rc"
		;;
	*)
		echo "kiln-jail-worker: the worker exited $rc; next one in 5s" >&2
		sleep 5
		;;
	esac
done
exit 0
