#!/bin/sh
# kiln-jail-pool.sh: the four commands of a Kiln `exec` pool, for FreeBSD: every worker instance
# is a jail on its own ZFS clone of a prepared jail root.
#
#   kiln-jail-pool.sh start|check|stop|list
#
# The server runs it with ONE JSON object on stdin; it answers JSON on stdout and exits 0, or exits
# non-zero with the reason as its last stderr line (the protocol: src/server/latent/exec-provider.ts
# and docs/deploy.md, "Your own commands (exec)"). It runs as root (zfs, jail and jexec need it).
#   start  {id, owner, pool, name, command: ["kiln", "worker", ...], env: {...}, ...}  -> {"ref": JAIL}
#   check  {id, ref}  -> {"alive": true} | {"alive": false, "reason": "..."}
#   stop   {id, ref}  -> (nothing); exit 0 once neither the jail nor the clone is left
#   list   {owner}    -> [{"id", "ref", "pool", "name"}, ...]: this owner's instances, found by the
#                        exact ids recorded on the clones, never by a name prefix
#
# Needs jq (`pkg install jq`), and base's zfs, jail, jexec, jls, pgrep, mount, umount and ps.
#
# UNTESTED on FreeBSD (none was available where it was written): checked with `sh -n`, `dash -n`,
# checkbashisms and shellcheck, and run under dash on Linux against stand-in zfs, jail, jexec, jls,
# pgrep, mount and umount commands (test/integration/jail-pool-example.test.ts). Try it on a test
# host first. Preparing the snapshot: docs/deploy.md ("FreeBSD: a jail on a ZFS clone per job").
#
# Settings, from the environment (the pool's `options.env`):
#   KILN_JAIL_SNAPSHOT  the prepared root (default zroot/jails/kiln-base@clean); clones are made next
#                       to its dataset: zroot/jails/kiln_<instance>
#   KILN_JAIL_USER      user in the jail that runs the worker and its jobs (default kiln)
#   KILN_JAIL_NODE      node in the jail (default /usr/local/bin/node)
#   KILN_JAIL_KILN      Kiln's tree in the jail (default /opt/kiln)
#
# Per instance <owner>/<uuid>:
#   - jail `kiln_<uuid with - as _>` (the ref the server keeps), on the clone
#     <parent of the snapshot's dataset>/<jail name>, made with the user properties kiln:instance
#     (the exact id), kiln:owner, kiln:pool and kiln:name (set by `zfs clone -o`: no clone exists
#     without them). `list` and `stop` find clones by these, set locally, never by their names.
#   - in the jail: /var/log/kiln-worker.log (the worker's output) and /var/run/kiln-worker.pid (its
#     pid), both written by this script as root: jobs in the jail cannot rewrite them.
#
# The token (and the rest of `env`) never appears on a command line or in a file: the values are
# written as `export NAME='value'` lines (quoted by jq's @sh) into a here-document (a pipe, in
# FreeBSD's sh and in dash), the stdin of
#   env -i PATH=... jexec -U USER JAIL /bin/sh -c 'eval "$(cat)" && exec "$@" </dev/null' ...
# whose shell reads them, then execs node (same pid: jexec and sh exec in turn, so `$!` is the
# worker's pid). `env -i`: the worker gets PATH and `env` only, not this script's environment (the
# pool's options.env is for the commands, not the instances). The worker's environment holds the
# token, as for any `kiln worker`: root and the jail's user can read it (`ps -e`, `procstat -e`).
#
# The worker runs in the background of this script and stays in its process group. Kiln runs each
# command in a process group of its own, and kills that group only if the command outlives the
# pool's `timeout`: a start that hangs takes its worker with it; the server's own signals (Ctrl-C
# in a terminal) do not reach the workers.
set -eu
set -f # no globbing anywhere

LC_ALL=C
export LC_ALL
# The caller's PATH first; then where FreeBSD keeps zfs, jail (/sbin, /usr/sbin) and jq.
PATH=${PATH:-/usr/bin:/bin}:/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin
export PATH

me='kiln-jail-pool'
nl='
'
# The worker's PATH in the jail.
jail_path=/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin
# Where the worker's output and pid go, in the jail.
log_file=/var/log/kiln-worker.log
pid_file=/var/run/kiln-worker.pid
# Seconds a stopped worker may drain (its --drain-timeout is 10s, then its jobs get 3s).
stop_wait=20

snapshot=${KILN_JAIL_SNAPSHOT:-zroot/jails/kiln-base@clean}
jail_user=${KILN_JAIL_USER:-kiln}
node=${KILN_JAIL_NODE:-/usr/local/bin/node}
kiln=${KILN_JAIL_KILN:-/opt/kiln}

# Clear state: nothing the caller exported under these names is taken for ours.
reason=''
input=''
jq_out=''
jail=''
# Set from the input by eval.
id=''
owner=''
pool=''
name=''
ref=''
# What a start made so far, undone if it fails.
made_clone=''
made_jail=''
start_root=''
worker=''

say() {
	printf '%s: %s\n' "$me" "$*" >&2
}

# Fails: the exit trap undoes a half-made start, then prints the reason as the last stderr line.
fail() {
	reason=$(printf '%s' "$*" | tr '\n' ' ')
	exit 1
}

# try WHAT CMD [ARG...]: runs CMD (its stdout dropped); if it fails, fails with WHAT and the last
# line CMD wrote on stderr.
try() {
	try_what=$1
	shift
	if ! try_err=$("$@" 2>&1 >/dev/null); then
		try_err=${try_err##*"$nl"}
		fail "$try_what failed${try_err:+: $try_err}"
	fi
}

# jqr FILTER [JQ ARG...]: jq -r FILTER on the input, output in $jq_out; on error, fails with jq's
# message. (printf is a shell builtin: the input, token included, is in no command line.)
jqr() {
	if ! jq_out=$(printf '%s\n' "$input" | jq -r "$@" 2>&1); then
		fail "bad input on stdin: ${jq_out##*"$nl"}"
	fi
}

# jq functions (no regular expressions: a jq built without oniguruma has none). str($k): the
# non-empty one-line string at key $k, or an error naming it; isname: a shell variable name?
# shellcheck disable=SC2016 # jq's $k and $v
JQ_DEFS='def str($k): .[$k] as $v
  | if ($v | type) == "string" and $v != "" and ($v | contains("\t") or contains("\n") | not) then $v
    else error("\"\($k)\" must be a non-empty string on one line, not \($v | tojson)") end;
def isname: explode | length > 0 and (.[0] < 48 or .[0] > 57)
  and all(.[]; .==95 or (.>=48 and .<=57) or (.>=65 and .<=90) or (.>=97 and .<=122));'

# jail_for ID: sets $jail, the jail (and clone) name of instance ID (<owner>/<uuid>).
jail_for() {
	jail_tail=${1#*/}
	case $1 in
	*/*) ;;
	*) fail "instance id '$1' is not <owner>/<id>" ;;
	esac
	case $jail_tail in
	'' | *[!A-Za-z0-9_-]*) fail "instance id '$1': after the owner, only letters, digits, - and _ make a jail name" ;;
	esac
	[ "${#jail_tail}" -le 64 ] || fail "instance id '$1' is too long for a jail name"
	jail=kiln_$(printf '%s' "$jail_tail" | tr - _)
}

# in_jail JAIL PID: whether process PID runs in jail JAIL.
in_jail() {
	pgrep -j "$1" 2>/dev/null | grep -qx "$2"
}

# unmount_devfs ROOT: unmounts ROOT/dev if a devfs is mounted there (jail -r of a jail made on the
# command line, with no jail.conf entry, may leave it; it would keep the clone busy).
unmount_devfs() {
	if mount -p | awk -v dir="$1/dev" '$2 == dir { found = 1 } END { exit !found }'; then
		try "umount $1/dev" umount -f "$1/dev"
	fi
}

# log_tail ROOT: the last line of the worker's log in the jail at ROOT, cut short.
log_tail() {
	tail -n 1 "$1$log_file" 2>/dev/null | cut -c 1-300 || :
}

# Sets $instances: one line per clone with kiln properties set on it (not inherited):
# dataset<TAB>kiln:instance<TAB>kiln:owner<TAB>kiln:pool<TAB>kiln:name, unset ones as "-".
read_instances() {
	if ! all=$(zfs get -H -s local -o name,property,value -t filesystem kiln:instance,kiln:owner,kiln:pool,kiln:name 2>&1); then
		fail "zfs get failed: ${all##*"$nl"}"
	fi
	instances=$(printf '%s\n' "$all" | awk -F '\t' '
		NF == 3 {
			if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 }
			value[$1, $2] = $3
		}
		END {
			for (i = 1; i <= n; i++) {
				d = order[i]; line = d
				split("kiln:instance kiln:owner kiln:pool kiln:name", keys, " ")
				for (k = 1; k <= 4; k++) line = line "\t" ((d, keys[k]) in value ? value[d, keys[k]] : "-")
				print line
			}
		}')
}

# shellcheck disable=SC2317 # undo_start runs from the exit trap
# Undoes a start that failed: the worker, the jail, its devfs, the clone. Says what it could not.
undo_start() {
	if [ -n "$worker" ]; then
		kill -s KILL "$worker" 2>/dev/null || :
	fi
	if [ -n "$made_jail" ]; then
		jail -r "$made_jail" >/dev/null 2>&1 || say "could not remove jail $made_jail: remove it by hand"
	fi
	if [ -n "$start_root" ] && ! (unmount_devfs "$start_root") 2>/dev/null; then
		say "could not unmount $start_root/dev: unmount it by hand"
	fi
	if [ -n "$made_clone" ]; then
		zfs destroy -f "$made_clone" >/dev/null 2>&1 || say "could not destroy $made_clone: destroy it by hand"
	fi
}

# shellcheck disable=SC2317 # on_exit runs from the trap
on_exit() {
	status=$?
	trap - EXIT
	if [ "$status" -ne 0 ]; then
		undo_start
		say "${reason:-failed (exit $status)}"
	fi
	exit "$status"
}

# start: a clone, a jail on it, the worker in it; prints {"ref": JAIL}.
# shellcheck disable=SC2120 # its "$@" is the worker's arguments, set inside
do_start() {
	jqr "$JQ_DEFS"'[str("id"), str("owner"), str("pool"), str("name")] | @sh "id=\(.[0]) owner=\(.[1]) pool=\(.[2]) name=\(.[3])"'
	eval "$jq_out"
	case $owner in
	*/*) fail "owner '$owner' contains a slash" ;;
	esac
	case $id in
	"$owner"/*) ;;
	*) fail "instance id '$id' does not start with '$owner/'" ;;
	esac
	jail_for "$id"

	# What to run: the command without its "kiln", and the environment, as @sh-quoted shell words.
	jqr 'if (.command | type) == "array" and .command[0] == "kiln" and (.command | all(type == "string"))
	     then .command[1:] | @sh else error("\"command\" must be [\"kiln\", ...], not \(.command | tojson)") end'
	worker_args=$jq_out
	jqr "$JQ_DEFS"'if (.env | type) == "object" then .env else error("\"env\" must be an object") end
	     | to_entries[]
	     | if .key | isname then "export \(.key)=\(.value | tostring | @sh)"
	       else error("\"env\" has a key that is no variable name: \(.key | tojson)") end'
	env_lines=$jq_out

	case $snapshot in
	*@*) ;;
	*) fail "KILN_JAIL_SNAPSHOT must name a snapshot (dataset@name), not '$snapshot'" ;;
	esac
	base=${snapshot%@*}
	case $base in
	*/*) ;;
	*) fail "KILN_JAIL_SNAPSHOT: clones go next to its dataset, which cannot be a pool's root ('$snapshot')" ;;
	esac
	clone=${base%/*}/$jail
	jexec_bin=$(command -v jexec) || fail "jexec not found"

	# The clone, with the exact instance recorded on it as it is made.
	try "zfs clone $snapshot $clone" zfs clone -o "kiln:instance=$id" -o "kiln:owner=$owner" \
		-o "kiln:pool=$pool" -o "kiln:name=$name" "$snapshot" "$clone"
	made_clone=$clone
	root=$(zfs get -H -o value mountpoint "$clone" 2>/dev/null) || fail "cannot read the mountpoint of $clone"
	[ -d "$root" ] || fail "clone $clone is not mounted (mountpoint: $root)"
	start_root=$root

	# As kiln-jail-worker.sh: persist (the jail outlives its processes until `jail -r`), devfs with
	# ruleset 4, the host's addresses to reach the server; jobs run with --sandbox none, the
	# default: the jail is the sandbox.
	try "jail -c $jail" jail -c name="$jail" path="$root" host.hostname="$jail" \
		ip4=inherit ip6=inherit mount.devfs devfs_ruleset=4 \
		enforce_statfs=2 children.max=0 allow.raw_sockets=0 persist
	made_jail=$jail

	# Nothing has run in the new jail yet: its files are the snapshot's, safe to write as root.
	: >"$root$log_file" || fail "cannot create $root$log_file"
	eval "set -- $worker_args"
	# shellcheck disable=SC2016 # $(cat) and $@ are for the jail's shell
	env -i PATH="$jail_path" "$jexec_bin" -U "$jail_user" "$jail" \
		/bin/sh -c 'eval "$(cat)" && exec "$@" </dev/null' kiln-worker "$node" "$kiln/bin/kiln.mjs" "$@" \
		<<EOF >>"$root$log_file" 2>&1 &
$env_lines
EOF
	worker=$!
	printf '%s\n' "$worker" >"$root$pid_file" || fail "cannot write $root$pid_file"

	# Up after a second, in the jail? A wrong node path, a missing user fail here, not later.
	tries=0
	while :; do
		sleep 1
		state=$(ps -o stat= -p "$worker" 2>/dev/null) || state=''
		case $state in
		'' | Z*) fail "the worker exited at once: $(log_tail "$root")" ;;
		esac
		if in_jail "$jail" "$worker"; then
			break
		fi
		tries=$((tries + 1))
		[ "$tries" -lt 5 ] || fail "the worker (pid $worker) did not show up in jail $jail"
	done

	reply=$(jq -cn --arg ref "$jail" '{ref: $ref}') || fail "jq failed"
	made_clone=''
	made_jail=''
	start_root=''
	worker=''
	printf '%s\n' "$reply"
}

# check and stop: reads {id, ref}; the ref must be the jail of that id.
read_ref() {
	jqr "$JQ_DEFS"'[str("id"), str("ref")] | @sh "id=\(.[0]) ref=\(.[1])"'
	eval "$jq_out"
	jail_for "$id"
	[ "$ref" = "$jail" ] || fail "ref '$ref' is not the jail of instance $id (that is $jail)"
}

# dead REASON: the answer of check for a gone instance.
dead() {
	jq -cn --arg reason "$1" '{alive: false, reason: $reason}'
}

# check: alive while the jail exists and the worker started in it runs.
do_check() {
	read_ref
	if ! root=$(jls -j "$ref" path 2>/dev/null); then
		dead "jail $ref does not exist"
		return 0
	fi
	pid=$(cat "$root$pid_file" 2>/dev/null) || pid=''
	case $pid in
	'' | *[!0-9]*)
		dead "jail $ref has no worker pid in $pid_file"
		return 0
		;;
	esac
	if in_jail "$ref" "$pid"; then
		jq -cn '{alive: true}'
	else
		dead "the worker (pid $pid) in jail $ref has exited; its last words: $(log_tail "$root")"
	fi
}

# stop: the worker drains (up to $stop_wait s), then the jail and the clone go. Idempotent.
do_stop() {
	read_ref
	if root=$(jls -j "$ref" path 2>/dev/null); then
		pid=$(cat "$root$pid_file" 2>/dev/null) || pid=''
		case $pid in
		'' | *[!0-9]*) ;;
		*)
			if in_jail "$ref" "$pid"; then
				kill -s TERM "$pid" 2>/dev/null || :
				waited=0
				while [ "$waited" -lt "$stop_wait" ] && in_jail "$ref" "$pid"; do
					sleep 1
					waited=$((waited + 1))
				done
			fi
			;;
		esac
		# Kills whatever still runs in it.
		try "jail -r $ref" jail -r "$ref"
	fi
	# The clones of this exact instance (one, unless someone made more by hand).
	read_instances
	clones=$(printf '%s\n' "$instances" | awk -F '\t' -v id="$id" '$2 == id { print $1 }')
	old_ifs=$IFS
	IFS=$nl
	# shellcheck disable=SC2086 # one clone a line (and no globbing: set -f)
	set -- $clones
	IFS=$old_ifs
	for clone in "$@"; do
		if mountpoint=$(zfs get -H -o value mountpoint "$clone" 2>/dev/null) && [ -d "$mountpoint" ]; then
			unmount_devfs "$mountpoint"
		fi
		try "zfs destroy $clone" zfs destroy -f "$clone"
	done
	if jls -j "$ref" jid >/dev/null 2>&1; then
		fail "jail $ref is still there"
	fi
	read_instances
	left=$(printf '%s\n' "$instances" | awk -F '\t' -v id="$id" '$2 == id { print $1 }')
	[ -z "$left" ] || fail "clone $left of $id is still there"
}

# list: the clones whose kiln:owner is the owner and whose kiln:instance starts with "<owner>/".
do_list() {
	jqr "$JQ_DEFS"'str("owner") | @sh "owner=\(.)"'
	eval "$jq_out"
	case $owner in
	*/*) fail "owner '$owner' contains a slash" ;;
	esac
	read_instances
	printf '%s\n' "$instances" | jq -R -s -c --arg owner "$owner" '
		[ split("\n")[] | select(. != "") | split("\t") | select(length == 5)
		  | select(.[2] == $owner and (.[1] | startswith($owner + "/")))
		  | { id: .[1], ref: ("kiln_" + (.[1] | ltrimstr($owner + "/") | split("-") | join("_"))), pool: .[3], name: .[4] } ]' ||
		fail "jq failed"
}

case ${1:-} in
start | check | stop | list) verb=$1 ;;
*)
	say "usage: $0 start|check|stop|list (one JSON object on stdin)"
	exit 2
	;;
esac

trap on_exit EXIT
trap 'fail "stopped by a signal"' INT TERM HUP

command -v jq >/dev/null 2>&1 || fail "jq is not installed (pkg install jq)"
input=$(cat) || fail "cannot read stdin"
[ -n "$input" ] || fail "nothing on stdin (one JSON object expected)"
# shellcheck disable=SC2119 # do_start sets its own "$@"
case $verb in
start) do_start ;;
check) do_check ;;
stop) do_stop ;;
list) do_list ;;
esac
exit 0
