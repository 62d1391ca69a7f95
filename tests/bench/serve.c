/*
 * serve.c - the raw-download baseline of the replication benchmark: a bare
 * libmicrohttpd server on 127.0.0.1 that sends one file with
 * MHD_create_response_from_fd (sendfile where the kernel allows), as any
 * static file server would, with no work of its own. Not for use outside
 * the benchmark.
 *
 *   bench-serve FILE PORT [MAX_SECONDS]
 *       GET /file sends FILE; any other path answers "ok" (a readiness
 *       probe). Runs until SIGTERM or SIGINT, at most MAX_SECONDS
 *       (default 900).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

static enum MHD_Result reply_ok(struct MHD_Connection *conn)
{
	static const char ok[] = "ok\n";
	struct MHD_Response *r = MHD_create_response_from_buffer(sizeof(ok) - 1, (void *)ok,
								 MHD_RESPMEM_PERSISTENT);
	enum MHD_Result ret;

	if (!r)
		return MHD_NO;
	ret = MHD_queue_response(conn, 200, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
			      const char *method, const char *version,
			      const char *upload_data, size_t *upload_data_size,
			      void **con_cls)
{
	const char *path = cls;
	struct MHD_Response *r;
	enum MHD_Result ret;
	struct stat st;
	int fd;

	(void)version;
	(void)upload_data;
	(void)upload_data_size;
	if (!*con_cls) { /* first call: headers only */
		*con_cls = (void *)1;
		return MHD_YES;
	}
	if (strcmp(method, "GET") != 0 || strcmp(url, "/file") != 0)
		return reply_ok(conn);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "bench-serve: '%s': %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return MHD_NO;
	}
	r = MHD_create_response_from_fd((uint64_t)st.st_size, fd); /* owns fd */
	if (!r) {
		close(fd);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", "application/octet-stream");
	ret = MHD_queue_response(conn, 200, r);
	MHD_destroy_response(r);
	return ret;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct MHD_Daemon *d;
	struct timespec left;
	sigset_t set;
	long port, max_secs = 900;
	time_t end;

	if (argc < 3 || argc > 4 || parse_long(argv[2], 1, 65535, &port) < 0 ||
	    (argc == 4 && parse_long(argv[3], 1, 86400, &max_secs) < 0)) {
		fprintf(stderr, "usage: bench-serve FILE PORT [MAX_SECONDS]\n");
		return 2;
	}
	if (access(argv[1], R_OK) < 0) {
		fprintf(stderr, "bench-serve: '%s': %s\n", argv[1], strerror(errno));
		return 1;
	}
	/* the server's threads inherit the mask: only sigtimedwait sees these */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
			     MHD_USE_ERROR_LOG, 0, NULL, NULL, handle, argv[1],
			     MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
			     MHD_OPTION_CONNECTION_TIMEOUT, 60u,
			     MHD_OPTION_END);
	if (!d) {
		fprintf(stderr, "bench-serve: cannot listen on 127.0.0.1:%ld\n", port);
		return 1;
	}
	end = time(NULL) + max_secs;
	for (;;) {
		time_t now = time(NULL);

		if (now >= end)
			break;
		left.tv_sec = end - now;
		left.tv_nsec = 0;
		if (sigtimedwait(&set, NULL, &left) >= 0 || errno != EINTR)
			break;
	}
	MHD_stop_daemon(d);
	return 0;
}
