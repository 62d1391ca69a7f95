# The `ltfs ltx` commands, driven as a user would, on the reference fixtures
# and on databases made by the sqlite3 CLI.
. tests/lib.sh

D=$LTFS_TEST_DATA
CK=$D/v3-block/chain-checksum
NC=$D/v3-block/chain-nochecksum
f() { printf '%016x-%016x.ltx' "$1" "$1"; }

case_help() {
	for sub in dump verify checksum encode-db apply compact; do
		expect_exit 0 "$LTFS" ltx "$sub" --help
		check "$sub --help shows usage" contains "$T/out" "usage: ltfs ltx $sub"
	done
	expect_exit 0 "$LTFS" help ltx
	check "help ltx" contains "$T/out" "encode-db"
	expect_exit 0 "$LTFS" --help
	expect_exit 0 "$LTFS" version
	check "version" contains "$T/out" "ltfs "
}

case_usage_errors() {
	expect_exit 2 "$LTFS" ltx
	expect_exit 2 "$LTFS" ltx frobnicate
	check "names the subcommand" contains "$T/err" "unknown subcommand 'frobnicate'"
	check "one line" [ "$(wc -l <"$T/err")" -eq 1 ]
	expect_exit 2 "$LTFS" ltx dump
	expect_exit 2 "$LTFS" ltx dump a b
	expect_exit 2 "$LTFS" ltx encode-db "$D/src/db-v1.sqlite"
	expect_exit 2 "$LTFS" ltx encode-db --encoding zip -o x "$D/src/db-v1.sqlite"
	check "names the bad value" contains "$T/err" "'zip'"
	expect_exit 2 "$LTFS" ltx compact "$CK/$(f 1)"
	expect_exit 2 "$LTFS" ltx apply only-db
	expect_exit 2 "$LTFS" nosuchcommand
	expect_exit 2 "$LTFS" --log-level loud version
	# options after the operands, as the usage lines show them
	expect_exit 0 "$LTFS" ltx encode-db "$D/src/db-v1.sqlite" -o "$T/after.ltx"
	expect_exit 0 "$LTFS" --log-level warn ltx verify "$T/after.ltx"
}

case_verify_fixtures() {
	for dir in v3-block/chain-checksum v3-block/chain-nochecksum v3-frame \
		v1/uncompressed v1/lz4; do
		expect_exit 0 "$LTFS" ltx verify "$D/$dir"/*.ltx
		check "$dir all ok" contains "$T/out" "0 invalid"
	done
	expect_exit 0 "$LTFS" ltx verify "$D/v3-block/edge/$(f 7)"
	expect_exit 0 "$LTFS" ltx verify "$CK"/*.ltx "$D/v3-block/edge/$(f 6)"
}

case_verify_invalid() {
	for bad in "$D"/v3-block/invalid/*.ltx; do
		expect_exit 1 "$LTFS" ltx verify "$bad"
		check "names the file" contains "$T/out" "$bad: "
	done
	expect_exit 1 "$LTFS" ltx verify "$D/v3-block/invalid/bad-page-flag.ltx"
	check "names the rule" contains "$T/out" "invalid page header flags 0x0003"
	expect_exit 1 "$LTFS" ltx verify "$D/v3-block/invalid/bad-file-checksum.ltx"
	check "names the rule" contains "$T/out" "file checksum mismatch"
	expect_exit 1 "$LTFS" ltx verify "$T/missing.ltx"
	check "missing file" contains "$T/out" "No such file"
}

case_verify_chain() {
	expect_exit 1 "$LTFS" ltx verify "$CK/$(f 1)" "$CK/$(f 3)"
	check "gap" contains "$T/out" "chain broken: starts at TXID 3"
	# Same TXIDs, other lineage: the checksums do not link.
	expect_exit 1 "$LTFS" ltx verify "$CK/$(f 1)" "$CK/$(f 2)" "$CK/$(f 3)" \
		"$CK/$(f 4)" "$CK/$(f 5)" "$D/v3-block/edge/$(f 7)"
	check "not linked" contains "$T/out" "starts at TXID 7"
}

case_dump() {
	expect_exit 0 "$LTFS" ltx dump "$CK/$(f 3)"
	check "commit" contains "$T/out" "commit:     9"
	check "page 4" contains "$T/out" "a396e0078b3bc93d"
	check "post-apply" contains "$T/out" "post-apply: bf94c1b8cd5451bb"
	expect_exit 0 "$LTFS" ltx dump "$D/v1/lz4/$(f 2)"
	check "v1 version" contains "$T/out" "version:    1 (lz4 body)"
	expect_exit 1 "$LTFS" ltx dump "$D/v3-block/invalid/truncated.ltx"
	check "error names file" contains "$T/err" "truncated.ltx"
}

# JSON output, read back with SQLite's own JSON functions.
case_dump_json() {
	expect_exit 0 "$LTFS" ltx dump --json "$CK/$(f 3)"
	cp "$T/out" "$T/d.json"
	got=$(sqlite3 :memory: "select json_extract(readfile('$T/d.json'), '\$.header.commit'), json_array_length(readfile('$T/d.json'), '\$.pages'), json_extract(readfile('$T/d.json'), '\$.trailer.post_apply_checksum'), json_extract(readfile('$T/d.json'), '\$.valid')")
	check "json values ($got)" [ "$got" = "9|8|bf94c1b8cd5451bb|1" ]
	expect_exit 1 "$LTFS" ltx dump --json "$D/v3-block/invalid/bad-file-checksum.ltx"
	cp "$T/out" "$T/e.json"
	got=$(sqlite3 :memory: "select json_extract(readfile('$T/e.json'), '\$.valid')")
	check "invalid flagged" [ "$got" = "0" ]
}

case_checksum() {
	while read -r name pages ps sum; do
		got=$("$LTFS" ltx checksum "$D/src/$name")
		check "$name checksum" [ "$got" = "$sum" ]
	done <<-EOT
	$(grep -v '^#' "$D/src/checksums.txt")
	EOT
	printf 'not a database at all, just text padding.....................................................................' >"$T/x"
	expect_exit 1 "$LTFS" ltx checksum "$T/x"
	check "says why" contains "$T/err" "magic"
}

case_apply_fixture_chain() {
	expect_exit 0 "$LTFS" ltx apply "$T/db" "$CK"/*.ltx
	check "db-v5 rebuilt" cmp -s "$T/db" "$D/src/db-v5.sqlite"
	check "reports checksum" contains "$T/out" "f1e0f61723c2a504"
	expect_exit 0 "$LTFS" ltx apply "$T/db3" "$D"/v1/lz4/*.ltx
	check "v1 chain" cmp -s "$T/db3" "$D/src/db-v3.sqlite"
	expect_exit 0 "$LTFS" ltx apply "$T/dbf" "$D"/v3-frame/*.ltx
	check "frame chain" cmp -s "$T/dbf" "$D/src/db-v3.sqlite"
}

case_apply_refuses() {
	expect_exit 0 "$LTFS" ltx apply "$T/db" "$CK/$(f 1)"
	cp "$T/db" "$T/before"
	expect_exit 1 "$LTFS" ltx apply "$T/db" "$CK/$(f 3)"
	check "names the file" contains "$T/err" "$(f 3)"
	check "says why" contains "$T/err" "does not continue the database"
	check "db untouched" cmp -s "$T/db" "$T/before"
	expect_exit 1 "$LTFS" ltx apply "$T/db" "$D/v3-block/invalid/bad-payload-byte.ltx"
	check "db untouched" cmp -s "$T/db" "$T/before"
	printf 'garbage' >"$T/notdb"
	expect_exit 1 "$LTFS" ltx apply "$T/notdb" "$CK/$(f 1)"
}

case_compact() {
	expect_exit 0 "$LTFS" ltx compact -o "$T/c.ltx" "$CK"/*.ltx
	check "name" contains "$T/out" "txid 1-5"
	expect_exit 0 "$LTFS" ltx verify "$T/c.ltx"
	expect_exit 0 "$LTFS" ltx apply "$T/db" "$T/c.ltx"
	check "db-v5" cmp -s "$T/db" "$D/src/db-v5.sqlite"
	expect_exit 0 "$LTFS" ltx compact --encoding frame -o "$T/n.ltx" "$NC"/*.ltx
	expect_exit 0 "$LTFS" ltx apply "$T/dbn" "$T/n.ltx"
	check "db-v3" cmp -s "$T/dbn" "$D/src/db-v3.sqlite"
	expect_exit 1 "$LTFS" ltx compact -o "$T/bad.ltx" "$CK/$(f 1)" "$CK/$(f 3)"
	check "no output on error" [ ! -e "$T/bad.ltx" ]
	check "no temp left" [ -z "$(ls "$T" | grep tmp)" ]
}

# encode-db on real databases, every page size, both encodings, with and
# without checksums; apply gives the same bytes and a healthy database.
case_encode_roundtrip() {
	for ps in 512 4096 65536; do
		sqlite3 "$T/src$ps.db" "PRAGMA page_size=$ps; CREATE TABLE t(a, b);
			WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<3000)
			INSERT INTO t SELECT x, randomblob(x % 700) FROM c;
			CREATE INDEX ti ON t(b);"
		for enc in block frame; do
			for mode in "" --no-checksum; do
				rm -f "$T/s.ltx" "$T/out.db"
				expect_exit 0 "$LTFS" ltx encode-db --encoding $enc $mode \
					-o "$T/s.ltx" "$T/src$ps.db"
				expect_exit 0 "$LTFS" ltx verify "$T/s.ltx"
				expect_exit 0 "$LTFS" ltx apply "$T/out.db" "$T/s.ltx"
				check "$ps $enc $mode identical" cmp -s "$T/src$ps.db" "$T/out.db"
			done
		done
		check "integrity $ps" [ "$(sqlite3 "$T/out.db" 'PRAGMA integrity_check')" = ok ]
		check "checksum $ps" [ "$("$LTFS" ltx checksum "$T/out.db")" = \
			"$("$LTFS" ltx checksum "$T/src$ps.db")" ]
	done
}

# A database larger than 1 GiB: the lock page is skipped on encode and
# left as zeros on apply. Sparse file, 64 KiB pages (lock page 16385).
case_lock_page() {
	sqlite3 "$T/big.db" "PRAGMA page_size=65536; CREATE TABLE t(x); INSERT INTO t VALUES (1);"
	truncate -s $((16390 * 65536)) "$T/big.db"
	printf 'tail page marker' | dd of="$T/big.db" bs=65536 seek=16389 conv=notrunc 2>/dev/null
	expect_exit 0 "$LTFS" ltx encode-db -o "$T/big.ltx" "$T/big.db"
	check "pages" contains "$T/out" "16390 pages"
	expect_exit 0 "$LTFS" ltx dump --json "$T/big.ltx"
	cp "$T/out" "$T/big.json"
	got=$(sqlite3 :memory: "select json_array_length(readfile('$T/big.json'), '\$.pages'), (select count(*) from json_each(readfile('$T/big.json'), '\$.pages') where json_extract(value, '\$.pgno') = 16385)")
	check "lock page absent ($got)" [ "$got" = "16389|0" ]
	expect_exit 0 "$LTFS" ltx apply "$T/out.db" "$T/big.ltx"
	check "same bytes" cmp -s "$T/big.db" "$T/out.db"
	check "same checksum" [ "$("$LTFS" ltx checksum "$T/out.db")" = "$("$LTFS" ltx checksum "$T/big.db")" ]
}

# Outputs are renamed into place: a device must never be replaced.
case_refuses_device_output() {
	expect_exit 1 "$LTFS" ltx encode-db -o /dev/null "$D/src/db-v1.sqlite"
	check "says why" contains "$T/err" "not a regular file"
	expect_exit 1 "$LTFS" ltx compact -o /dev/null "$CK/$(f 1)"
	check "/dev/null intact" [ -c /dev/null ]
}

run_case help
run_case usage_errors
run_case verify_fixtures
run_case verify_invalid
run_case verify_chain
run_case dump
run_case dump_json
run_case checksum
run_case apply_fixture_chain
run_case apply_refuses
run_case compact
run_case encode_roundtrip
run_case lock_page
run_case refuses_device_output
finish
