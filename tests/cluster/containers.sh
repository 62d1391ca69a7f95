#!/bin/sh
# What the container examples in deploy/ rely on, tested with the kernel's
# namespaces directly (no container engine runs here; docs/containers.md
# says what stays untested):
#   - ltfs mounts over a volume at its mount dir (refusing only FUSE there);
#   - sidecar: ltfs mounts in its own mount namespace onto a shared mount
#     point; an app in another mount namespace (a slave, made before the
#     mount, like Kubernetes' HostToContainer) sees the mount come and go
#     and writes through it; one with private propagation sees nothing;
#   - a primary in its own network namespace, reachable only through a veth
#     pair, and a replica outside it: with the token rows replicate,
#     without it the replica is refused;
#   - --allow-other: a non-root app user creates and writes databases; without
#     the option the kernel refuses that user (EACCES);
#   - the files in deploy/: YAML parses, compose and Kubernetes objects have
#     the shape the docs promise, ltfs accepts their configs, the systemd
#     unit verifies, the Dockerfile installs what the binary links.
. tests/lib.sh

# The app user of the --allow-other case (any non-root user will do).
APP_USER=nobody
# Debian's python3 with python3-yaml (.ci/deps), not one from PATH.
PY=/usr/bin/python3

# Network namespaces of runs that died without their trap: ltfs-ct-PID.
for _ns in $(ip netns list 2>/dev/null | sed -n 's/^\(ltfs-ct-[0-9]*\).*/\1/p'); do
	kill -0 "${_ns#ltfs-ct-}" 2>/dev/null || ip netns del "$_ns" 2>/dev/null || true
done

# wait_until DESC TENTHS COMMAND...: until COMMAND succeeds, at most
# TENTHS/10 s; fails the case with DESC otherwise.
wait_until() {
	_what=$1
	_max=$2
	shift 2
	_i=0
	while ! "$@" >/dev/null 2>&1; do
		_i=$((_i + 1))
		if [ $_i -gt "$_max" ]; then
			echo "    timed out waiting for: $_what" >&2
			return 1
		fi
		sleep 0.1
	done
}

# fuse_in PID DIR: the mount namespace of PID has a FUSE mount on DIR.
fuse_in() { awk -v d="$2" '$5 == d && / - fuse/ { f = 1 } END { exit !f }' "/proc/$1/mountinfo"; }
no_fuse_in() { ! fuse_in "$@"; }

# fails COMMAND...: COMMAND fails (its output dropped).
fails() { ! "$@" >/dev/null 2>&1; }

# ns_holder NAME PROPAGATION: a process (pid in $T/ltfs.pid.NAME, so that a
# failed case kills it) holding a new mount namespace with PROPAGATION.
ns_holder() {
	unshare --mount --propagation "$2" sh -c "echo \$\$ >'$T/ltfs.pid.$1'; exec sleep 300" &
	wait_until "namespace $1" 50 test -s "$T/ltfs.pid.$1"
	_h=$(cat "$T/ltfs.pid.$1")
	check "$1 has its own mount namespace" \
		[ "$(readlink "/proc/$_h/ns/mnt")" != "$(readlink /proc/self/ns/mnt)" ]
}

# in_ns NAME COMMAND...: run COMMAND in holder NAME's mount namespace.
in_ns() {
	_h=$(cat "$T/ltfs.pid.$1")
	shift
	nsenter --target "$_h" --mount "$@"
}

# ---- sidecar: one mount shared between mount namespaces -----------------

case_sidecar_propagation() {
	S=$T/shared # the emptyDir both containers mount
	mkdir -p "$S"
	mount --bind "$S" "$S"
	mount --make-shared "$S"
	# the app container (mountPropagation: HostToContainer) and one without
	# propagation (None), both started before ltfs mounts
	ns_holder app slave
	ns_holder none private
	# the ltfs container (Bidirectional): its mounts on S reach the peers
	unshare --mount --propagation unchanged "$LTFS" mount --data "$T/data" \
		--http "127.0.0.1:$((PORT_BASE + 1))" "$S" >"$T/ltfs.log" 2>&1 &
	echo $! >"$T/ltfs.pid"
	L=$(cat "$T/ltfs.pid")
	wait_until "the mount in ltfs's namespace" 100 fuse_in "$L" "$S"
	check "ltfs has its own mount namespace" \
		[ "$(readlink "/proc/$L/ns/mnt")" != "$(readlink "/proc/$(cat "$T/ltfs.pid.app")/ns/mnt")" ]
	wait_until "the mount in the app's namespace" 100 fuse_in "$(cat "$T/ltfs.pid.app")" "$S"
	# the readiness probe's answer
	check "healthz" [ "$(curl -s -m 5 "http://127.0.0.1:$((PORT_BASE + 1))/healthz")" = "ok: primary" ]

	# the app writes through the mount, in WAL and in DELETE mode
	in_ns app sqlite3 -bail -cmd ".timeout 10000" "$S/app.db" \
		"PRAGMA journal_mode=wal; CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);" >/dev/null
	in_ns app sqlite3 -bail -cmd ".timeout 10000" "$S/app.db" "INSERT INTO t VALUES (3);"
	in_ns app sqlite3 -bail -cmd ".timeout 10000" "$S/other.db" "CREATE TABLE u(y); INSERT INTO u VALUES ('x');"
	check "the app reads its rows" [ "$(in_ns app sqlite3 "$S/app.db" 'SELECT sum(x) FROM t')" = 6 ]
	# recorded: the position names the newest LTX file, and the history
	# rebuilds a database with the position's checksum
	p=$(in_ns app cat "$S/app.db-pos")
	txid=${p%/*}
	check "position '$p'" [ $((0x$txid)) -ge 3 ]
	ltx=$T/data/dbs/app.db/ltx
	check "history ends at $txid" [ -e "$ltx/$txid-$txid.ltx" ]
	"$LTFS" ltx apply "$T/rebuilt.db" "$ltx"/*.ltx >"$T/apply.out"
	check "history rebuilds the app's database" contains "$T/apply.out" "txid $((0x$txid)), "
	contains "$T/apply.out" "checksum ${p#*/}"
	check "other.db recorded" [ -n "$(ls "$T/data/dbs/other.db/ltx")" ]
	# no propagation, no mount: the app would write into the bare directory
	check "a namespace without propagation has no mount" no_fuse_in "$(cat "$T/ltfs.pid.none")" "$S"
	check "nor the databases" [ -z "$(in_ns none ls -A "$S")" ]

	# ltfs stops: the mount leaves the app's namespace too
	kill -TERM "$L"
	_wait_exit "$T/ltfs.pid" "$T/ltfs.log"
	wait_until "the mount gone from the app's namespace" 50 no_fuse_in "$(cat "$T/ltfs.pid.app")" "$S"
	check "the app sees the bare directory" [ -z "$(in_ns app ls -A "$S")" ]
	kill "$(cat "$T/ltfs.pid.app")" "$(cat "$T/ltfs.pid.none")"
	umount "$S"
}

# The mount dir is often a mount already (a volume, an emptyDir, a bind
# mount): ltfs mounts over it, and leaves it as it was. Only a live FUSE
# mount there is refused.
case_mount_over_volume() {
	M=$T/vol
	mkdir -p "$M"
	mount -t tmpfs -o size=4m ltfs-test-volume "$M"
	echo below >"$M/below.txt"
	ltfs_mount "$M"
	check "ltfs on top" fuse_in self "$M"
	sql "$M/app.db" "CREATE TABLE t(x); INSERT INTO t VALUES (1);"
	check "the volume is hidden" [ ! -e "$M/below.txt" ]
	expect_exit 1 "$LTFS" mount --data "$T/data2" --http off "$M"
	contains "$T/err" "already mounted"
	ltfs_umount "$M"
	check "the volume is back, untouched" [ "$(ls -A "$M")" = below.txt ]
	umount "$M"
}

# ---- a node in its own network namespace ---------------------------------

case_netns_token() {
	NS=ltfs-ct-$$
	VH=lt$$h # 15 characters at most
	VN=lt$$n
	# a private /30 per run: 10.201.A.B+1 in the namespace, .B+2 outside
	a=$(($$ % 256))
	b=$(((($$ / 256) % 64) * 4))
	_tries=0
	# taken when the host side of another run's veth has it
	while ip -o addr show | grep -q "inet 10\.201\.$a\.$((b + 2))/"; do
		b=$(((b + 4) % 256))
		_tries=$((_tries + 1))
		check "a free /30 in 10.201.$a.0/24" [ $_tries -lt 64 ]
	done
	IN=10.201.$a.$((b + 1))
	OUT=10.201.$a.$((b + 2))
	# always, also when a check fails (set -e must not cut the trap short)
	trap 'set +e; kill -9 $(cat "$T/ltfs.pid.1" 2>/dev/null) 2>/dev/null
		ip link del "$VH" 2>/dev/null; ip netns del "$NS" 2>/dev/null' EXIT
	ip netns add "$NS"
	ip link add "$VH" type veth peer name "$VN"
	ip link set "$VN" netns "$NS"
	ip addr add "$OUT/30" dev "$VH"
	ip link set "$VH" up
	ip -n "$NS" addr add "$IN/30" dev "$VN"
	ip -n "$NS" link set "$VN" up
	ip -n "$NS" link set lo up
	PORT=$((PORT_BASE + 1))
	URL=http://$IN:$PORT
	# only the network namespace changes: the mount stays visible here
	NET=--net=/run/netns/$NS

	# a non-loopback address without a token: refused at start
	unset LTFS_TOKEN
	mkdir -p "$T/m1"
	expect_exit 2 timeout 20 nsenter "$NET" "$LTFS" mount --data "$T/d1" --http "$IN:$PORT" "$T/m1"
	contains "$T/err" "is not a loopback address"

	export LTFS_TOKEN=secret-$$
	nsenter "$NET" "$LTFS" mount --data "$T/d1" --http "$IN:$PORT" "$T/m1" >>"$T/n1.log" 2>&1 &
	echo $! >"$T/ltfs.pid.1"
	_wait_mounted "$T/m1" "$T/ltfs.pid.1" "$T/n1.log"
	sql "$T/m1/app.db" "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);"
	check "reachable through the veth" \
		[ "$(curl -s -m 5 "$URL/healthz")" = "ok: primary" ]
	check "not on this namespace's loopback" \
		[ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/healthz" || true)" = 000 ]
	check "loopback inside the namespace" \
		nsenter "$NET" sh -c "ip addr show lo | grep -q 'inet 127.0.0.1'"

	# a replica outside without the token: refused, nothing replicated
	unset LTFS_TOKEN
	node_start 2 --replica-of "$URL"
	wait_until "the replica refused" 100 grep -qF "answered 401" "$T/n2.log"
	check "the primary refused the replica's address" \
		contains "$T/n1.log" "401 for POST /v1/stream from $OUT"
	check "nothing replicated" [ ! -e "$T/m2/app.db" ]
	node_stop 2
	rm -rf "$T/d2"

	# with the token: rows replicate, also the next write
	export LTFS_TOKEN=secret-$$
	node_start 2 --replica-of "$URL"
	wait_sync app.db 1 2
	check "rows on the replica" [ "$(sql "$T/m2/app.db" 'SELECT sum(x) FROM t')" = 3 ]
	sql "$T/m1/app.db" "INSERT INTO t VALUES (3);"
	wait_sync app.db 1 2
	check "the next row too" [ "$(sql "$T/m2/app.db" 'SELECT sum(x) FROM t')" = 6 ]
	check "the replica names the primary" [ "$(cat "$T/m2/.primary")" = "$URL" ]
	node_stop 2
	node_stop 1
}

# ---- --allow-other and a non-root app --------------------------------------

# as_app COMMAND...: COMMAND as the app user, no supplementary groups.
as_app() {
	setpriv --reuid="$(id -u "$APP_USER")" --regid="$(id -g "$APP_USER")" --clear-groups "$@"
}

case_allow_other_non_root() {
	check "the app user is not root" [ "$(as_app id -u)" != 0 ]
	# the user reaches the mount dir (mktemp made the suite's dir 0700)
	chmod 0711 "$_base" "$T"
	M=$T/mnt
	ltfs_mount "$M" --allow-other
	check "not root: cannot write outside the mount" fails as_app sh -c "echo x >'$T/outside'"
	as_app sqlite3 -bail -cmd ".timeout 10000" "$M/app.db" \
		"PRAGMA journal_mode=wal; CREATE TABLE t(x); INSERT INTO t VALUES (1);" >/dev/null
	as_app sqlite3 -bail -cmd ".timeout 10000" "$M/app.db" "INSERT INTO t VALUES (2);"
	as_app mkdir "$M/sub"
	as_app sqlite3 -bail "$M/sub/j.db" "PRAGMA journal_mode=delete; CREATE TABLE u(y); INSERT INTO u VALUES (7);" >/dev/null
	as_app sh -c "echo note >'$M/sub/notes.txt'"
	check "the app reads its rows" [ "$(as_app sqlite3 "$M/app.db" 'SELECT sum(x) FROM t')" = 3 ]
	check "recorded" [ "$(cut -d/ -f1 "$M/app.db-pos")" = 0000000000000004 ]
	check "in the history" [ -e "$T/data/dbs/app.db/ltx/0000000000000004-0000000000000004.ltx" ]
	check "sub/j.db recorded" [ -n "$(ls "$T/data/dbs/$(esc sub/j.db)/ltx")" ]
	# the permission model: files belong to the user running ltfs (root here)
	check "owned by ltfs's user" [ "$(stat -c %u "$M/app.db" "$T/data/dbs/app.db/database" | sort -u)" = 0 ]
	ltfs_umount "$M"

	# without --allow-other the kernel answers nobody but ltfs's user
	ltfs_mount "$M"
	set +e
	as_app stat "$M/app.db" >/dev/null 2>"$T/stat.err"
	rc_stat=$?
	as_app sqlite3 "$M/app.db" "SELECT count(*) FROM t" >/dev/null 2>"$T/sql.err"
	rc_sql=$?
	set -e
	check "stat refused" [ $rc_stat -ne 0 ]
	contains "$T/stat.err" "Permission denied"
	check "sqlite3 refused" [ $rc_sql -ne 0 ]
	check "root still reads" [ "$(sql "$M/app.db" 'SELECT sum(x) FROM t')" = 3 ]
	ltfs_umount "$M"
}

# ---- the files in deploy/ -------------------------------------------------

# stage_has STAGE WORD: the Dockerfile's stage STAGE (FROM ... AS STAGE)
# names WORD outside comments.
stage_has() {
	awk -v s="$1" '/^FROM / { on = ($NF == s) } on && !/^[[:space:]]*#/' Dockerfile | grep -qw -- "$2"
}

# py SCRIPT ARGS...: a python3 check; its output names what is wrong.
py() {
	_s=$1
	shift
	if ! "$PY" -c "$_s" "$@" >"$T/py.out" 2>&1; then
		sed 's/^/    | /' "$T/py.out" >&2
		return 1
	fi
}

# A config accepted up to the point where ltfs would start: a flag that
# conflicts with its lease is the first thing refused (exit 2 and that
# message), so the file parsed, its variables resolved and the bucket's
# settings were accepted.
config_ok() {
	expect_exit 2 env POD_NAME=ltfs-0 POD_NAMESPACE=default \
		AWS_ACCESS_KEY_ID=k AWS_SECRET_ACCESS_KEY=s LTFS_TOKEN=t \
		"$LTFS" mount --config "$1" --replica-of http://127.0.0.1:1 "$T/cm"
	contains "$T/err" "--lease s3 and --replica-of exclude each other"
}

case_deploy_files() {
	check "python3-yaml" "$PY" -c "import yaml"
	py '
import sys, yaml
for f in sys.argv[1:]:
    list(yaml.safe_load_all(open(f)))
' deploy/*.yml deploy/k8s/*.yaml

	# compose: three ltfs nodes with the FUSE privileges on one bucket
	py '
import yaml
c = yaml.safe_load(open("deploy/docker-compose.yml"))
s = c["services"]
nodes = [n for n in s if n.startswith("ltfs")]
assert len(nodes) == 3, nodes
for n in nodes:
    d = s[n]
    assert "/dev/fuse" in " ".join(d["devices"]), n
    assert "SYS_ADMIN" in d["cap_add"], n
    assert {"apparmor=unconfined", "apparmor:unconfined"} & set(d["security_opt"]), n
    cfg = [v for v in d["volumes"] if v.split(":")[1] == "/etc/ltfs/ltfs.yml"]
    assert cfg, n + ": no config mounted"
    src = "deploy/" + cfg[0].split(":")[0].lstrip("./")
    l = yaml.safe_load(open(src))
    assert l["lease"] == "s3", src
    print(src)
s3 = [n for n in s if n not in nodes]
assert s3 and all("s3" in s[n].get("depends_on", {}) for n in nodes), s3
'
	mkdir -p "$T/cm"
	for f in $(cat "$T/py.out"); do
		check "$f exists" [ -f "$f" ]
		config_ok "$f"
	done

	# Kubernetes: a StatefulSet of 3 with ltfs as a privileged sidecar
	py '
import yaml, glob
objs = [o for f in sorted(glob.glob("deploy/k8s/*.yaml")) for o in yaml.safe_load_all(open(f)) if o]
kind = lambda k: [o for o in objs if o["kind"] == k]
ss, = kind("StatefulSet")
assert ss["spec"]["replicas"] == 3
pod = ss["spec"]["template"]["spec"]
cs = {c["name"]: c for c in pod.get("initContainers", []) + pod["containers"]}
ltfs, app = cs["ltfs"], cs["app"]
assert ltfs["securityContext"]["privileged"] is True
vol = [v for v in pod["volumes"] if "emptyDir" in v]
assert len(vol) == 1
m = lambda c: [x for x in c["volumeMounts"] if x["name"] == vol[0]["name"]][0]
assert m(ltfs)["mountPropagation"] == "Bidirectional"
assert m(app)["mountPropagation"] == "HostToContainer"
assert m(ltfs)["mountPath"] == m(app)["mountPath"]
rp = ltfs["readinessProbe"]["httpGet"]
assert rp["path"] == "/healthz"
cm, = kind("ConfigMap")
conf = yaml.safe_load(cm["data"]["ltfs.yml"])
assert conf["lease"] == "s3"
assert conf["mount-dir"] == m(ltfs)["mountPath"]
port = int(conf["http"]["addr"].rsplit(":", 1)[1])
named = {p["name"]: p["containerPort"] for p in ltfs["ports"]}
assert rp["port"] in (port, *[n for n, v in named.items() if v == port]), rp
assert "POD_NAME" in conf["advertise-url"] and ss["spec"]["serviceName"] in conf["advertise-url"]
svcs = {o["metadata"]["name"]: o for o in kind("Service")}
assert svcs[ss["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
assert svcs[ss["spec"]["serviceName"]]["spec"]["publishNotReadyAddresses"] is True
assert len(svcs) == 2
sec, = kind("Secret")
keys = set(sec.get("stringData", {})) | set(sec.get("data", {}))
refs = {e["valueFrom"]["secretKeyRef"]["key"] for e in ltfs["env"] if "secretKeyRef" in e.get("valueFrom", {})}
assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "LTFS_TOKEN"} <= refs <= keys, (refs, keys)
env = {e["name"]: e for e in ltfs["env"]}
assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
assert app.get("securityContext", {}).get("runAsNonRoot") is True
open("'"$T"'/k8s.yml", "w").write(cm["data"]["ltfs.yml"])
'
	config_ok "$T/k8s.yml"

	# systemd: the unit verifies (its binary path pointed at this build)
	sed "s#/usr/local/bin/ltfs#$LTFS#g" deploy/ltfs.service >"$T/ltfs.service"
	check "the unit names its binary" [ "$(grep -c "$LTFS" "$T/ltfs.service")" -ge 1 ]
	if ! systemd-analyze verify "$T/ltfs.service" >"$T/verify.out" 2>&1; then
		sed 's/^/    | /' "$T/verify.out" >&2
		exit 1
	fi
	check "verify said nothing" [ ! -s "$T/verify.out" ]
	for k in Type=simple "Restart=on-failure" KillSignal=SIGTERM "After=network-online.target" \
		"DeviceAllow=/dev/fuse rw"; do
		contains deploy/ltfs.service "$k"
	done
	# its ExecStart parses here: global options before the command
	exec_start=$(sed -n 's/^ExecStart=//p' "$T/ltfs.service")
	# shellcheck disable=SC2086
	expect_exit 2 env HOSTNAME=h AWS_ACCESS_KEY_ID=k AWS_SECRET_ACCESS_KEY=s LTFS_TOKEN=t \
		$(echo "$exec_start" | sed "s#/etc/ltfs/ltfs.yml#deploy/compose/ltfs-1.yml#") --replica-of http://127.0.0.1:1
	contains "$T/err" "exclude each other"

	# Dockerfile: Debian 12 stages, the build stage installs every -dev
	# package of .ci/deps, the runtime stage every library the binary
	# links (sanitizer runtimes aside), fuse3 and sqlite3
	df=Dockerfile
	check "multi-stage on Debian 12" [ "$(grep -c '^FROM debian:12' $df)" -ge 2 ]
	check "entrypoint" grep -qx 'ENTRYPOINT \["ltfs"\]' $df
	check "a non-root app user" stage_has runtime useradd
	check "ltfs stays root (mount(2))" fails grep -qE '^USER ' $df
	check "build output stays out of the context" grep -qx build .dockerignore
	# instructions only (continuations aside)
	bad=$(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' $df | grep -vE '^[[:space:]]*(#|$)' |
		grep -vE '^(FROM|RUN|COPY|ARG|ENV|WORKDIR|USER|ENTRYPOINT|CMD|LABEL|EXPOSE|VOLUME|STOPSIGNAL|HEALTHCHECK|SHELL) ' || true)
	check "unknown instructions: $bad" [ -z "$bad" ]
	for p in $(sed -n '/^PACKAGES="/,/"$/p' .ci/deps | tr -d '"' | tr ' ' '\n' | grep -- '-dev$' | grep -v clang); do
		check "build stage installs $p" stage_has build "$p"
	done
	libs=$(readelf -d "$LTFS" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' |
		grep -vE '^(libc|libm|libpthread|libdl|librt|ld-linux.*|libasan|libubsan|liblsan|libgcc_s|libstdc\+\+)\.so')
	check "the binary links libraries" [ -n "$libs" ]
	for l in $libs; do
		path=$(ldconfig -p | awk -v l="$l" '$1 == l { print $NF; exit }')
		# dpkg knows a file by the path its package ships (/lib or /usr/lib)
		real=$(readlink -f "$path")
		pkg=$(for c in "$path" "/usr$path" "$real" "${real#/usr}"; do
			dpkg -S "$c" 2>/dev/null && break
		done | head -1 | cut -d: -f1)
		check "$l: its Debian package ($pkg)" [ -n "$pkg" ]
		check "runtime stage installs $pkg ($l)" stage_has runtime "$pkg"
	done
	for p in fuse3 sqlite3 user_allow_other; do
		check "runtime stage has $p" stage_has runtime "$p"
	done
}

run_case sidecar_propagation
run_case mount_over_volume
run_case netns_token
run_case allow_other_non_root
run_case deploy_files
finish
