#!/bin/sh
# The S3 test server (tests/tools/s3-server): it comes up on loopback with
# the test bucket, stores objects, honours If-None-Match, checks signatures,
# can be paused or lose radosgw and come back, and stop leaves nothing of
# it running. Needs the Ceph packages (.ci/deps installs them).
. tests/lib.sh

S3SERVER=${S3SERVER:-tests/tools/s3-server}

# Whatever a case left running is stopped when the suite ends.
trap 'for _d in "$_base"/*/s3*; do "$S3SERVER" stop "$_d" 2>/dev/null; done; _cleanup' EXIT

# up [NAME]: start a server in $T/NAME (default s3), stopped when the case
# ends; sets EP and the variables of its s3.env.
up() {
	_dir=$T/${1:-s3}
	trap 'for _d in "$T"/s3*; do "$S3SERVER" stop "$_d" 2>/dev/null; done' EXIT
	EP=$("$S3SERVER" start "$_dir" 2>>"$T/server.log") || {
		sed 's/^/    | /' "$T/server.log" >&2
		return 1
	}
	. "$_dir/s3.env"
}

# req CURL-ARGS...: a request signed with the env's key (or $SECRET);
# prints the HTTP status (000: no answer), the body goes to $T/body.
req() {
	curl -s --max-time "${WAIT:-10}" -o "$T/body" -w '%{http_code}' \
		--aws-sigv4 "aws:amz:$AWS_REGION:s3" --user "$AWS_ACCESS_KEY_ID:${SECRET:-$AWS_SECRET_ACCESS_KEY}" \
		-H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@" || true
}

# status WANT CURL-ARGS...: the request gets HTTP status WANT.
status() {
	_want=$1
	shift
	_got=$(req "$@")
	[ "$_got" = "$_want" ] && return 0
	echo "    $* -> HTTP $_got, want $_want" >&2
	sed 's/^/    | /' "$T/body" 2>/dev/null | head -5 >&2
	return 1
}

# procs_of DIR: pids of the processes started with DIR's ceph.conf.
procs_of() {
	for _c in /proc/[0-9]*/cmdline; do
		case "$(tr '\0' ' ' 2>/dev/null <"$_c")" in
		*"$1/ceph.conf"*) _p=${_c%/cmdline} && echo "${_p#/proc/}" ;;
		esac
	done
}

# Start prints the endpoint, writes s3.env, creates the bucket, and every
# daemon listens on 127.0.0.1 only.
case_start() {
	up
	check "endpoint '$EP'" sh -c "echo '$EP' | grep -qxE 'http://127\.0\.0\.1:[0-9]+'"
	_port=${EP##*:}
	cat >"$T/want.env" <<EOF
export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$_port
export AWS_ACCESS_KEY_ID=ltfstestaccesskey
export AWS_SECRET_ACCESS_KEY=ltfstestsecretkey
export AWS_REGION=us-east-1
export LTFS_S3_BUCKET=ltfs-test
EOF
	check "s3.env as documented" cmp "$T/want.env" "$T/s3/s3.env"
	status 200 -I "$EP/$LTFS_S3_BUCKET"
	ss -Hltnp >"$T/ss"
	_n=0
	for _p in $(procs_of "$T/s3"); do
		grep "pid=$_p," "$T/ss" >>"$T/listen" || true
		_n=$((_n + 1))
	done
	check "three daemons, not $_n" [ "$_n" -eq 3 ]
	check "S3 listens on $_port" grep -q " 127.0.0.1:$_port " "$T/listen"
	check "mon listens on PORT+1" grep -q " 127.0.0.1:$((_port + 1)) " "$T/listen"
	check "listens on loopback only: $(awk '{print $4}' "$T/listen" | tr '\n' ' ')" \
		[ -z "$(awk '$4 !~ /^127\.0\.0\.1:/' "$T/listen")" ]
}

# A signed PUT, then GET, gives back the same bytes.
case_roundtrip() {
	up
	head -c 100000 /dev/urandom >"$T/obj"
	status 200 -T "$T/obj" "$EP/$LTFS_S3_BUCKET/dir/obj"
	status 200 "$EP/$LTFS_S3_BUCKET/dir/obj"
	check "same bytes back" cmp "$T/obj" "$T/body"
	status 404 "$EP/$LTFS_S3_BUCKET/dir/missing"
}

# PUT If-None-Match: * creates a missing key, and gets 412 on an existing
# one, which keeps its content.
case_if_none_match() {
	up
	echo first >"$T/v1"
	echo second >"$T/v2"
	status 200 -H 'If-None-Match: *' -T "$T/v1" "$EP/$LTFS_S3_BUCKET/lease"
	status 412 -H 'If-None-Match: *' -T "$T/v2" "$EP/$LTFS_S3_BUCKET/lease"
	status 200 "$EP/$LTFS_S3_BUCKET/lease"
	check "first write kept" cmp "$T/v1" "$T/body"
}

# A request signed with a wrong secret is refused; the right one is not.
case_wrong_secret() {
	up
	echo x >"$T/x"
	status 200 -T "$T/x" "$EP/$LTFS_S3_BUCKET/x"
	SECRET=wrongsecret
	status 403 "$EP/$LTFS_S3_BUCKET/x"
	status 403 -T "$T/x" "$EP/$LTFS_S3_BUCKET/y"
	check "says why" grep -q SignatureDoesNotMatch "$T/body"
	SECRET=
	status 404 "$EP/$LTFS_S3_BUCKET/y"
}

# Stop leaves no process of the DIR and frees the port; stopping again is fine.
case_stop() {
	up
	check "daemons running" [ -n "$(procs_of "$T/s3")" ]
	"$S3SERVER" stop "$T/s3"
	check "nothing left: $(procs_of "$T/s3")" [ -z "$(procs_of "$T/s3")" ]
	check "port ${EP##*:} free" [ -z "$(ss -Hltn "sport = :${EP##*:}")" ]
	"$S3SERVER" stop "$T/s3"
	"$S3SERVER" stop "$T/never-started"
}

# Two servers side by side: own ports, own objects.
case_side_by_side() {
	up s3a
	_a=$EP
	up s3b
	check "two endpoints" [ "$_a" != "$EP" ]
	echo b >"$T/b"
	status 200 -T "$T/b" "$EP/$LTFS_S3_BUCKET/only-b"
	status 404 "$_a/$LTFS_S3_BUCKET/only-b"
	status 200 "$_a/$LTFS_S3_BUCKET/"
}

# Pause: S3 does not answer; resume: it does, with the same objects.
case_pause() {
	up
	echo p >"$T/p"
	status 200 -T "$T/p" "$EP/$LTFS_S3_BUCKET/p"
	"$S3SERVER" pause "$T/s3"
	WAIT=2
	status 000 "$EP/$LTFS_S3_BUCKET/p"
	WAIT=
	"$S3SERVER" resume "$T/s3"
	status 200 "$EP/$LTFS_S3_BUCKET/p"
	check "same object" cmp "$T/p" "$T/body"
}

# kill-rgw: connections are refused; start-rgw: back with the objects.
case_rgw_restart() {
	up
	echo r >"$T/r"
	status 200 -T "$T/r" "$EP/$LTFS_S3_BUCKET/r"
	"$S3SERVER" kill-rgw "$T/s3"
	check "port closed" [ -z "$(ss -Hltn "sport = :${EP##*:}")" ]
	status 000 "$EP/$LTFS_S3_BUCKET/r"
	"$S3SERVER" start-rgw "$T/s3"
	status 200 "$EP/$LTFS_S3_BUCKET/r"
	check "same object" cmp "$T/r" "$T/body"
}

# Start does not wipe a directory it did not make.
case_no_wipe() {
	mkdir -p "$T/s3"
	echo keep >"$T/s3/precious"
	expect_exit 1 "$S3SERVER" start "$T/s3"
	contains "$T/err" "not wiping"
	check "file kept" [ "$(cat "$T/s3/precious")" = keep ]
	check "nothing started" [ -z "$(procs_of "$T/s3")" ]
}

for c in start roundtrip if_none_match wrong_secret stop side_by_side pause rgw_restart no_wipe; do
	run_case $c
done

finish
