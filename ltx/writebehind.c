/*
 * writebehind.c - pages of a database being built, written from a thread
 * of their own.
 *
 * A restore decodes on one thread while the S3 server sends on the other
 * core. Writing through the page cache on the decoding thread made the
 * restore's time swing by 2x from run to run: on this kind of VM the
 * copy into freshly allocated page cache is sometimes five times slower
 * (the host backs the guest's pages lazily). Long runs therefore go out
 * through a second descriptor opened with O_DIRECT, from user buffers
 * that are reused and stay warm, and the writes overlap the decoding.
 *
 * Runs shorter than WB_DIRECT_MIN (the scattered pages of small
 * transactions) go through the page cache: one synchronous device write
 * per page would cost far more. Both descriptors name the same file and
 * every write leaves this one thread in order, so a later run always
 * lands on top of an earlier one; the kernel keeps the page cache
 * coherent with direct writes to the same range. A file system or device
 * that refuses a direct write (EINVAL: no O_DIRECT, or an alignment
 * larger than the page size) gets the same bytes through the page cache,
 * from then on.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ltx/ltx_int.h"

#define WB_BUFS 4
#define WB_BUF_SIZE (4u << 20)
#define WB_DIRECT_MIN (256u << 10)
#define WB_ALIGN 4096

struct wb_buf {
	uint8_t *data;
	size_t len;
	uint64_t off;
};

struct ltx_wb {
	int fd, dfd;              /* dfd: O_DIRECT, or -1 */
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t work, idle;
	struct wb_buf buf[WB_BUFS];
	unsigned head, queued;    /* the writer takes buf[head]; queued are full */
	unsigned fill;            /* (head + queued) % WB_BUFS: the caller's only */
	bool stop;
	int rc;                   /* the first failed write */
	uint64_t err_off;
};

static int write_run(struct ltx_wb *wb, const struct wb_buf *b)
{
	if (wb->dfd >= 0 && b->len >= WB_DIRECT_MIN) {
		int rc = ltx_pwrite_full(wb->dfd, b->data, b->len, b->off);

		if (rc != -EINVAL)
			return rc;
		wb->dfd = -1; /* only this thread reads it once started */
	}
	return ltx_pwrite_full(wb->fd, b->data, b->len, b->off);
}

static void *wb_main(void *arg)
{
	struct ltx_wb *wb = arg;

	pthread_setname_np(pthread_self(), "write-behind");
	pthread_mutex_lock(&wb->mu);
	for (;;) {
		struct wb_buf *b;
		int rc;

		while (wb->queued == 0 && !wb->stop)
			pthread_cond_wait(&wb->work, &wb->mu);
		if (wb->queued == 0)
			break;
		b = &wb->buf[wb->head];
		pthread_mutex_unlock(&wb->mu);
		/* after a failure nothing more is written: the file is discarded */
		rc = wb->rc ? 0 : write_run(wb, b);
		pthread_mutex_lock(&wb->mu);
		if (rc < 0 && wb->rc == 0) {
			wb->rc = rc;
			wb->err_off = b->off;
		}
		b->len = 0;
		wb->head = (wb->head + 1) % WB_BUFS;
		wb->queued--;
		pthread_cond_broadcast(&wb->idle);
	}
	pthread_mutex_unlock(&wb->mu);
	return NULL;
}

static void wb_free(struct ltx_wb *wb)
{
	for (unsigned i = 0; i < WB_BUFS; i++)
		free(wb->buf[i].data);
	free(wb);
}

int ltx_wb_open(struct ltx_wb **out, int fd, int direct_fd, struct ltfs_err *err)
{
	struct ltx_wb *wb = calloc(1, sizeof(*wb));

	*out = NULL;
	if (!wb)
		return ltfs_err_set(err, -ENOMEM, NULL);
	wb->fd = fd;
	wb->dfd = direct_fd;
	for (unsigned i = 0; i < WB_BUFS; i++) {
		if (posix_memalign((void **)&wb->buf[i].data, WB_ALIGN, WB_BUF_SIZE) != 0) {
			wb->buf[i].data = NULL;
			wb_free(wb);
			return ltfs_err_set(err, -ENOMEM, NULL);
		}
	}
	pthread_mutex_init(&wb->mu, NULL);
	pthread_cond_init(&wb->work, NULL);
	pthread_cond_init(&wb->idle, NULL);
	if (pthread_create(&wb->thread, NULL, wb_main, wb) != 0) {
		pthread_cond_destroy(&wb->work);
		pthread_cond_destroy(&wb->idle);
		pthread_mutex_destroy(&wb->mu);
		wb_free(wb);
		return ltfs_err_set(err, -EAGAIN, "cannot start the write-behind thread");
	}
	*out = wb;
	return 0;
}

static int failed(struct ltx_wb *wb, struct ltfs_err *err)
{
	return ltfs_err_set(err, wb->rc, "write database at offset %llu: %s",
			    (unsigned long long)wb->err_off, ltfs_strerror(wb->rc));
}

/* The buffer being filled goes to the writer; then wait (mu held) until
 * the next one is free. */
static int submit(struct ltx_wb *wb, struct ltfs_err *err)
{
	wb->queued++;
	wb->fill = (wb->fill + 1) % WB_BUFS;
	pthread_cond_signal(&wb->work);
	while (wb->queued == WB_BUFS && wb->rc == 0)
		pthread_cond_wait(&wb->idle, &wb->mu);
	return wb->rc ? failed(wb, err) : 0;
}

int ltx_wb_add(struct ltx_wb *wb, const uint8_t *page, uint32_t page_size, uint64_t off,
	       struct ltfs_err *err)
{
	struct wb_buf *b;
	int rc = 0;

	if (page_size > WB_BUF_SIZE)
		return ltfs_err_set(err, LTFS_E_USAGE, "page size %u", page_size);
	/* The filling buffer is the caller's: no lock but once per run. */
	b = &wb->buf[wb->fill];
	if (b->len && (off != b->off + b->len || b->len + page_size > WB_BUF_SIZE)) {
		pthread_mutex_lock(&wb->mu);
		rc = submit(wb, err);
		b = &wb->buf[wb->fill];
		pthread_mutex_unlock(&wb->mu);
		if (rc < 0)
			return rc;
	}
	if (b->len == 0)
		b->off = off;
	memcpy(b->data + b->len, page, page_size);
	b->len += page_size;
	return 0;
}

int ltx_wb_wait(struct ltx_wb *wb, struct ltfs_err *err)
{
	int rc = 0;

	pthread_mutex_lock(&wb->mu);
	if (wb->buf[wb->fill].len)
		rc = submit(wb, err);
	while (rc == 0 && wb->queued > 0)
		pthread_cond_wait(&wb->idle, &wb->mu);
	if (rc == 0 && wb->rc)
		rc = failed(wb, err);
	pthread_mutex_unlock(&wb->mu);
	return rc;
}

void ltx_wb_close(struct ltx_wb *wb)
{
	if (!wb)
		return;
	pthread_mutex_lock(&wb->mu);
	wb->stop = true;
	pthread_cond_signal(&wb->work);
	pthread_mutex_unlock(&wb->mu);
	pthread_join(wb->thread, NULL);
	pthread_cond_destroy(&wb->work);
	pthread_cond_destroy(&wb->idle);
	pthread_mutex_destroy(&wb->mu);
	wb_free(wb);
}
