/*
 * frame.c - the replication stream's frames (docs/protocol.md):
 *
 *   type u8 | flags u8 (0) | name length u16 BE | payload length u64 BE
 *   | name | payload
 *
 * The parser is incremental (bytes arrive as the network delivers them),
 * bounds every field before trusting it, and knows nothing of sockets.
 */
#include <string.h>

#include "cluster/cluster_int.h"

void frame_header_encode(uint8_t *out, enum frame_type type, size_t name_len,
			 uint64_t payload_len)
{
	out[0] = (uint8_t)type;
	out[1] = 0;
	ltx_put_be16(out + 2, (uint16_t)name_len);
	ltx_put_be64(out + 4, payload_len);
}

void frame_parser_init(struct frame_parser *fp)
{
	memset(fp, 0, sizeof(*fp));
}

bool frame_parser_idle(const struct frame_parser *fp)
{
	return !fp->in_frame && fp->hdr_have == 0;
}

static const char *type_name(unsigned t)
{
	switch (t) {
	case FRAME_LTX: return "ltx";
	case FRAME_READY: return "ready";
	case FRAME_HEARTBEAT: return "heartbeat";
	case FRAME_DROP: return "drop";
	case FRAME_END: return "end";
	default: return "unknown";
	}
}

/* Check a complete header against the rules of its type. */
static int check_header(struct frame_parser *fp, struct ltfs_err *err)
{
	const uint8_t *h = fp->hdr;
	uint64_t at = fp->offset - FRAME_HEADER_SIZE;
	bool named;
	uint64_t min, max;

	if (h[0] < FRAME_LTX || h[0] > FRAME_END)
		return ltfs_err_set(err, LTFS_E_CORRUPT,
				    "stream offset %llu: frame type %u is unknown",
				    (unsigned long long)at, h[0]);
	if (h[1] != 0)
		return ltfs_err_set(err, LTFS_E_CORRUPT,
				    "stream offset %llu: %s frame flags %u, want 0",
				    (unsigned long long)(at + 1), type_name(h[0]), h[1]);
	fp->type = (enum frame_type)h[0];
	fp->name_len = ltx_get_be16(h + 2);
	fp->payload_len = ltx_get_be64(h + 4);
	named = fp->type == FRAME_LTX || fp->type == FRAME_DROP;
	if (named ? fp->name_len == 0 || fp->name_len > FRAME_NAME_MAX : fp->name_len != 0)
		return ltfs_err_set(err, LTFS_E_CORRUPT,
				    "stream offset %llu: %s frame name length %zu, want %s",
				    (unsigned long long)(at + 2), type_name(fp->type),
				    fp->name_len, named ? "1..4031" : "0");
	switch (fp->type) {
	case FRAME_LTX:
		min = LTX_HEADER_SIZE + LTX_TRAILER_SIZE;
		max = FRAME_LTX_MAX;
		break;
	case FRAME_READY:
	case FRAME_HEARTBEAT:
		min = max = 8;
		break;
	default:
		min = max = 0;
		break;
	}
	if (fp->payload_len < min || fp->payload_len > max)
		return ltfs_err_set(err, fp->payload_len > FRAME_LTX_MAX ? LTFS_E_LIMIT : LTFS_E_CORRUPT,
				    "stream offset %llu: %s frame payload length %llu, want %llu..%llu",
				    (unsigned long long)(at + 4), type_name(fp->type),
				    (unsigned long long)fp->payload_len,
				    (unsigned long long)min, (unsigned long long)max);
	return 0;
}

/* Copy input into dst until it holds `want` bytes: true once it does. */
static bool gather(struct frame_parser *fp, uint8_t *dst, size_t *have, size_t want,
		   const uint8_t **p, size_t *n)
{
	size_t take = want - *have < *n ? want - *have : *n;

	memcpy(dst + *have, *p, take);
	*have += take;
	fp->offset += take;
	*p += take;
	*n -= take;
	return *have == want;
}

int frame_parser_feed(struct frame_parser *fp, const uint8_t *p, size_t n,
		      const struct frame_handlers *h, void *ctx,
		      struct ltfs_err *err)
{
	size_t take;
	int rc;

	for (;;) {
		if (!fp->in_frame) {
			if (n == 0)
				return 0;
			if (!gather(fp, fp->hdr, &fp->hdr_have, FRAME_HEADER_SIZE, &p, &n))
				return 0;
			rc = check_header(fp, err);
			if (rc < 0)
				return rc;
			fp->in_frame = true;
			fp->started = false;
			fp->name_have = 0;
			fp->payload_have = 0;
		}
		if (!gather(fp, (uint8_t *)fp->name, &fp->name_have, fp->name_len, &p, &n))
			return 0;
		if (!fp->started) {
			fp->name[fp->name_len] = '\0';
			if (memchr(fp->name, '\0', fp->name_len))
				return ltfs_err_set(err, LTFS_E_CORRUPT,
						    "stream offset %llu: frame name has a NUL byte",
						    (unsigned long long)(fp->offset - fp->name_len));
			rc = h->begin(ctx, fp->type, fp->name, fp->payload_len, err);
			if (rc < 0)
				return rc;
			fp->started = true;
		}
		take = fp->payload_len - fp->payload_have < n
			       ? (size_t)(fp->payload_len - fp->payload_have) : n;
		if (take > 0) {
			rc = h->payload(ctx, p, take, err);
			if (rc < 0)
				return rc;
			fp->payload_have += take;
			fp->offset += take;
			p += take;
			n -= take;
		}
		if (fp->payload_have < fp->payload_len)
			return 0;
		fp->in_frame = false;
		fp->hdr_have = 0;
		fp->frames++;
		rc = h->end(ctx, err);
		if (rc < 0)
			return rc;
	}
}
