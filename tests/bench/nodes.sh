# tests/bench/nodes.sh - nodes on loopback for the benchmark scripts
# (sourced after B, the benchmark's dir, and LTFS are set). Node NAME has
# mount $B/NAME, pid file $B/NAME.pid and log $B/NAME.log.

# alive PID: running (a killed child of this shell stays a zombie until
# waited for, and kill -0 still reaches it)
alive() { kill -0 "$1" 2>/dev/null && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; }

stop_pid() { # PIDFILE: wait up to 10 s for the process, then TERM, then KILL
	[ -s "$1" ] || return 0
	_p=$(cat "$1")
	_i=0
	while alive "$_p" && [ $_i -lt 100 ]; do
		_i=$((_i + 1))
		[ $_i = 50 ] && kill "$_p" 2>/dev/null
		sleep 0.1
	done
	alive "$_p" && kill -9 "$_p" 2>/dev/null
	wait "$_p" 2>/dev/null
	rm -f "$1"
}

mounted() { grep -q " $1 fuse" /proc/mounts; }

# node_stop NAME: unmount the node (the daemon then exits) and wait for it.
node_stop() {
	if mounted "$B/$1"; then
		umount "$B/$1" 2>/dev/null || umount -l "$B/$1" 2>/dev/null
	fi
	stop_pid "$B/$1.pid"
}

# next_port: set PORTNO to the next port from $PORT that no socket here
# uses (listening or connected).
next_port() {
	_i=0
	while grep -qi "$(printf ':%04X ' "$PORT")" /proc/net/tcp /proc/net/tcp6 2>/dev/null &&
		[ $_i -lt 1000 ]; do
		PORT=$((PORT + 1))
		_i=$((_i + 1))
	done
	PORTNO=$PORT
	PORT=$((PORT + 1))
}

# node_mount NAME DATADIR PORT SECONDS [ARGS...]: start a node, wait (at
# most SECONDS) until its mount answers.
node_mount() {
	_n=$1
	_d=$2
	_port=$3
	_t=$4
	shift 4
	mkdir -p "$B/$_n"
	"$LTFS" mount --data "$_d" --http "127.0.0.1:$_port" "$@" "$B/$_n" >>"$B/$_n.log" 2>&1 &
	echo $! >"$B/$_n.pid"
	_i=0
	while ! { mounted "$B/$_n" && stat -f "$B/$_n" >/dev/null 2>&1; }; do
		_i=$((_i + 1))
		if [ $_i -gt $((_t * 20)) ] || ! kill -0 "$(cat "$B/$_n.pid")" 2>/dev/null; then
			echo "  node '$_n' did not mount; its log ($B/$_n.log) ends:"
			tail -5 "$B/$_n.log" | sed 's/^/    /'
			return 1
		fi
		sleep 0.05
	done
}
