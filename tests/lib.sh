# tests/lib.sh - helpers for the shell test suites (sourced, POSIX sh).
#
#   . tests/lib.sh
#   case_foo() { ...; check "text" [ "$a" = "$b" ]; }
#   run_case foo
#   finish
#
# Each case runs in a subshell with its own temp dir ($T) and `set -e`; a
# failing command or check fails the case and prints why.

: "${LTFS:?LTFS must point at the ltfs binary (run through tests/run)}"
: "${LTFS_TEST_DATA:=tests/data}"
SUITE=$(basename "$0" .sh)
_passed=0
_failed=0
_base=$(mktemp -d "/tmp/ltfs-$SUITE-XXXXXX")
trap 'rm -rf "$_base"' EXIT

# check DESCRIPTION COMMAND...: fail the case unless COMMAND succeeds.
check() {
	_what=$1
	shift
	if ! "$@"; then
		echo "    check failed: $_what" >&2
		exit 1
	fi
}

# expect_exit CODE COMMAND...: run COMMAND, its output in $T/out and
# $T/err, and require exit status CODE.
expect_exit() {
	_want=$1
	shift
	set +e
	"$@" >"$T/out" 2>"$T/err"
	_got=$?
	set -e
	if [ "$_got" -ne "$_want" ]; then
		echo "    '$*' exited $_got, want $_want" >&2
		sed 's/^/    out: /' "$T/out" | head -20 >&2
		sed 's/^/    err: /' "$T/err" | head -20 >&2
		exit 1
	fi
}

# contains FILE TEXT: FILE holds TEXT (fixed string).
contains() {
	if ! grep -qF -- "$2" "$1"; then
		echo "    '$1' lacks '$2':" >&2
		sed 's/^/    | /' "$1" | head -20 >&2
		return 1
	fi
}

run_case() {
	T="$_base/$1"
	mkdir -p "$T"
	# Not inside `if`: the shell ignores set -e in a tested command.
	(set -e; "case_$1")
	if [ $? -eq 0 ]; then
		echo "ok   $1"
		_passed=$((_passed + 1))
	else
		echo "FAIL $1"
		_failed=$((_failed + 1))
	fi
}

finish() {
	echo "$SUITE: $_passed passed, $_failed failed"
	[ "$_failed" -eq 0 ]
}
