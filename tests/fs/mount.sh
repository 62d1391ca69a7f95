# `ltfs mount` itself: flags, config file, refusals, signals, stale mounts,
# and input SQLite never produces.
. tests/lib.sh

case_help_and_usage() {
	expect_exit 0 "$LTFS" mount --help
	check "usage" contains "$T/out" "usage: ltfs mount"
	expect_exit 2 "$LTFS" mount
	check "one line" [ "$(wc -l <"$T/err")" -eq 1 ]
	expect_exit 2 "$LTFS" mount --threads 0 "$T/m"
	expect_exit 2 "$LTFS" mount a b
}

case_refuses_nested_dirs() {
	mkdir -p "$T/m/inner"
	expect_exit 2 "$LTFS" mount --data "$T/m" "$T/m"
	check "says why" contains "$T/err" "must be separate"
	expect_exit 2 "$LTFS" mount --data "$T/m/inner" "$T/m"
	expect_exit 2 "$LTFS" mount --data "$T" "$T/m"
	check "nothing mounted" [ -z "$(grep " $T/m " /proc/mounts)" ]
}

case_config_file() {
	cat >"$T/ok.yml" <<-EOT
	# comment
	mount-dir: \${TEST_MNT}
	data-dir: \${TEST_DATA:-$T/cdata}
	threads: 4
	http:
	  addr: 127.0.0.1:\${TEST_PORT}
	log:
	  level: debug
	  format: json
	EOT
	TEST_MNT=$T/cm
	TEST_PORT=$((PORT_BASE + 18))
	export TEST_MNT TEST_PORT
	mkdir -p "$T/cm"
	"$LTFS" mount --config "$T/ok.yml" >"$T/ltfs.log" 2>&1 &
	echo $! >"$T/ltfs.pid"
	i=0
	while ! grep -q " $T/cm fuse" /proc/mounts && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
	sqlite3 "$T/cm/x.db" "CREATE TABLE t(x);"
	check "data dir from the default" [ -e "$T/cdata/dbs/x.db/database" ]
	ltfs_umount "$T/cm"
	check "json log" contains "$T/ltfs.log" '"level":"info","subsys":"fs"'
	check "debug level" contains "$T/ltfs.log" '"level":"debug"'
	check "http addr from the config" contains "$T/ltfs.log" "listening on 127.0.0.1:$TEST_PORT"

	printf 'mount-dir: /x\nlog:\n  level: info\n  colour: red\n' >"$T/bad.yml"
	expect_exit 2 "$LTFS" mount --config "$T/bad.yml"
	check "names key and line" contains "$T/err" "line 4: unknown key 'colour' in 'log'"
	printf 'mount-dir: /x\nthreads: many\n' >"$T/bad2.yml"
	expect_exit 2 "$LTFS" mount --config "$T/bad2.yml"
	check "bad value" contains "$T/err" "line 2: 'threads' must be a number"
	printf 'mount-dir: ${NO_SUCH_VAR_FOR_LTFS}\n' >"$T/bad3.yml"
	expect_exit 2 "$LTFS" mount --config "$T/bad3.yml"
	check "unset variable" contains "$T/err" "'NO_SUCH_VAR_FOR_LTFS' is not set"
	printf 'mount-dir: /x\nmount-dir: /y\n' >"$T/bad4.yml"
	expect_exit 2 "$LTFS" mount --config "$T/bad4.yml"
	check "repeated key" contains "$T/err" "key 'mount-dir' repeats line 1"
	printf 'mount-dir: [unclosed\n' >"$T/bad5.yml"
	expect_exit 2 "$LTFS" mount --config "$T/bad5.yml"
	check "yaml error with line" contains "$T/err" "line "
	expect_exit 2 "$LTFS" mount --config "$T/missing.yml"
	printf 'mount-dir: /x\ns3:\n  url: s3://bkt/p\n  part-size: 4MiB\n' >"$T/bad6.yml"
	expect_exit 2 "$LTFS" mount --config "$T/bad6.yml"
	check "part size below S3's smallest" contains "$T/err" "line 4: 'part-size' must be from 5MiB to 5GiB"
	# the example in docs/ parses (all its keys are known)
	expect_exit 2 "$LTFS" mount --config docs/ltfs.example.yml --threads 999
	check "example parses" contains "$T/err" "--threads"
}

case_sigterm_and_stale_mount() {
	M=$T/mnt
	ltfs_mount "$M"
	sqlite3 "$M/s.db" "CREATE TABLE t(x); INSERT INTO t VALUES (1);"
	kill -TERM "$(cat "$T/ltfs.pid")"
	wait "$(cat "$T/ltfs.pid")"
	check "exit 0 on SIGTERM" [ $? -eq 0 ]
	check "unmounted" [ -z "$(grep " $M fuse" /proc/mounts)" ]
	ltfs_mount "$M"
	kill -9 "$(cat "$T/ltfs.pid")"
	wait "$(cat "$T/ltfs.pid")" 2>/dev/null || true
	check "stale mount left" [ -n "$(grep " $M fuse" /proc/mounts)" ]
	ltfs_mount "$M"
	check "stale mount cleaned" contains "$T/ltfs.log" "stale mount"
	check "data intact" [ "$(sqlite3 "$M/s.db" 'SELECT count(*) FROM t')" = 1 ]
	expect_exit 1 "$LTFS" mount --data "$T/data" "$M"
	check "refuses a live mount" contains "$T/err" "already mounted"
	ltfs_umount "$M"
}

case_debug_logs_requests() {
	M=$T/mnt
	ltfs_mount "$M" -d
	ls "$M" >/dev/null
	ltfs_umount "$M"
	check "requests logged" contains "$T/ltfs.log" "opcode: OPENDIR"
}

# Writes SQLite never makes are refused, logged with the file's name, and
# leave the database as it was.
# Under systemd (JOURNAL_STREAM names stderr) records carry syslog
# priorities and no time of their own; --log-format json wins over that.
case_journald_format() {
	: >"$T/ltfs.log"
	JOURNAL_STREAM=$(stat -c '%d:%i' "$T/ltfs.log") ltfs_mount "$T/mnt"
	ltfs_umount "$T/mnt"
	check "journal lines: $(head -1 "$T/ltfs.log")" grep -q "^<6>fs: mounted " "$T/ltfs.log"
	lacks "$T/ltfs.log" "INFO"
	: >"$T/ltfs.log"
	JOURNAL_STREAM=1:2 ltfs_mount "$T/mnt"
	ltfs_umount "$T/mnt"
	check "text elsewhere" grep -q "INFO  fs: mounted " "$T/ltfs.log"
	: >"$T/ltfs.log"
	JOURNAL_STREAM=$(stat -c '%d:%i' "$T/ltfs.log") \
		sh -c '"$LTFS" --log-format json mount --data "$1/data" --http off "$1/mnt" 2>>"$1/ltfs.log" &
		echo $! >"$1/ltfs.pid"' - "$T"
	_wait_mounted "$T/mnt" "$T/ltfs.pid" "$T/ltfs.log"
	ltfs_umount "$T/mnt"
	check "json wins" grep -q '"level":"info","subsys":"fs","msg":"mounted ' "$T/ltfs.log"
}

case_bad_writes() {
	M=$T/mnt
	ltfs_mount "$M"
	sqlite3 "$M/b.db" "PRAGMA journal_mode=wal; CREATE TABLE t(x); INSERT INTO t VALUES (1);" >/dev/null
	before=$(cat "$M/b.db-pos")
	expect_exit 1 dd if=/dev/zero of="$M/b.db" bs=10 count=1 seek=5 oflag=seek_bytes conv=notrunc
	check "logged" contains "$T/ltfs.log" "'b.db': unaligned write of 10 bytes at offset 5"
	sqlite3 "$M/b.db" "SELECT 1" >/dev/null # keeps the WAL file around
	mkfifo "$T/fifo"
	sqlite3 "$M/b.db" <"$T/fifo" >/dev/null &
	exec 4>"$T/fifo"
	echo "SELECT count(*) FROM t;" >&4
	sleep 0.2
	expect_exit 1 truncate -s 100 "$M/b.db-wal"
	check "logged wal" contains "$T/ltfs.log" "truncate to 100 bytes refused"
	exec 4>&-
	rm -f "$T/fifo"
	sleep 0.2
	check "position unchanged" [ "$(cat "$M/b.db-pos")" = "$before" ]
	check "integrity" [ "$(sqlite3 "$M/b.db" 'PRAGMA integrity_check')" = ok ]
	expect_exit 2 sh -c "echo x > '$M/b.db-pos'"
	ltfs_umount "$M"
}

# Odd things an app may do through the mount: none of them may take the
# daemon down, and the database keeps working.
try() { "$@" >/dev/null 2>&1 || true; }

case_hostile_operations() {
	M=$T/mnt
	ltfs_mount "$M"
	sqlite3 "$M/h.db" "CREATE TABLE t(x); INSERT INTO t VALUES (1);"
	try mkdir "$M/h.db"
	try sh -c 'echo junk >"$1"' _ "$M/orphan.db-wal"
	try sh -c 'echo junk >"$1"' _ "$M/h.db-journal"
	try rm -f "$M/h.db-journal"
	try sh -c ': >"$1"' _ "$M/.lag"
	try ln -s h.db "$M/link"
	head -c 300 /dev/urandom >"$M/random.bin"
	cat "$M/random.bin" >/dev/null
	try rmdir "$M"
	try truncate -s 7 "$M/h.db"
	try touch "$M/x-pos" "$M/.primary"
	name=$(printf 'n%0250d' 0)
	try sh -c ': >"$1"' _ "$M/$name"
	try sh -c ': >"$1"' _ "$M/${name}xxxxxxxxxx"
	try sh -c 'head -c 5000 /dev/urandom >"$1"' _ "$M/h.db-wal"
	check "daemon alive" kill -0 "$(cat "$T/ltfs.pid")"
	check "db works" [ "$(sqlite3 "$M/h.db" 'SELECT count(*) FROM t')" = 1 ]
	sqlite3 "$M/h.db" "INSERT INTO t VALUES (2);"
	check "integrity" [ "$(sqlite3 "$M/h.db" 'PRAGMA integrity_check')" = ok ]
	# mv of a database is a copy (EXDEV) and a deletion: both recorded
	mv "$M/h.db" "$M/h2.db"
	check "moved" [ "$(sqlite3 "$M/h2.db" 'SELECT count(*) FROM t')" = 2 ]
	check "old name gone" [ ! -e "$M/h.db" ]
	ltfs_umount "$M"
}

# Started under the usual soft limit of 1024 open files, the daemon takes
# the hard limit (it keeps a descriptor per open file and per history file
# waiting for its sync).
case_open_file_limit() {
	M=$T/mnt
	(
		ulimit -Sn 1024
		ltfs_mount "$M"
	)
	soft=$(awk '/Max open files/ { print $4 }' "/proc/$(cat "$T/ltfs.pid")/limits")
	hard=$(awk '/Max open files/ { print $5 }' "/proc/$(cat "$T/ltfs.pid")/limits")
	check "soft limit raised from 1024 to the hard limit ($soft of $hard)" [ "$soft" = "$hard" ]
	ltfs_umount "$M"
}

run_case help_and_usage
run_case refuses_nested_dirs
run_case config_file
run_case sigterm_and_stale_mount
run_case debug_logs_requests
run_case journald_format
run_case bad_writes
run_case hostile_operations
run_case open_file_limit
finish
