/*
 * run.c - "ltfs run --on-primary -- CMD": a command run on the primary,
 * whichever node it is asked from (schema migrations from any node).
 *
 * POST /v1/run {"argv": [...], "timeout_ms": N} on the primary runs argv
 * in the primary's mount dir, stdin from /dev/null. The answer streams
 * the command's output (stdout and stderr together) in frames, then its
 * exit code:
 *
 *   "o LEN\n" and LEN bytes of output, any number of times
 *   "x CODE\n" once, last
 *
 * Running commands is a root shell for whoever holds the token, so the
 * node must have a token and be started with --allow-run (docs/protocol.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "cluster/cluster_int.h"

#define RUN_ARGS_MAX 256
#define RUN_ARG_BYTES 4096
#define RUN_TIMEOUT_DEFAULT_MS 600000u
#define RUN_TIMEOUT_MAX_MS (24u * 3600000u)
#define RUN_FRAME_HEAD 24          /* "o 18446744073709551615\n" */

struct cl_run {
	struct cluster *c;
	pid_t pid;                 /* 0 once reaped */
	int fd;                    /* the command's output; -1 at its end */
	int64_t deadline;          /* monotonic ms */
	int code;
	bool timed_out, sent_code;
	char cmd[64];              /* for the log */
	char chunk[STREAM_BODY_MAX / 16];
};

static int parse_argv(const char *body, size_t len, char ***argv, unsigned *timeout_ms,
		      struct ltfs_err *err)
{
	json_error_t jerr;
	json_t *o = json_loadb(body, len, 0, &jerr), *a, *t;
	size_t n;
	char **v;
	int rc = 0;

	if (!o)
		return ltfs_err_set(err, LTFS_E_USAGE, "body: %s", jerr.text);
	a = json_object_get(o, "argv");
	t = json_object_get(o, "timeout_ms");
	n = json_array_size(a);
	if (n == 0 || n > RUN_ARGS_MAX) {
		json_decref(o);
		return ltfs_err_set(err, LTFS_E_USAGE, "'argv' must be a list of 1 to %d strings",
				    RUN_ARGS_MAX);
	}
	*timeout_ms = RUN_TIMEOUT_DEFAULT_MS;
	if (t && (!json_is_integer(t) || json_integer_value(t) < 1 ||
		  json_integer_value(t) > RUN_TIMEOUT_MAX_MS)) {
		json_decref(o);
		return ltfs_err_set(err, LTFS_E_USAGE, "'timeout_ms' must be 1..%u", RUN_TIMEOUT_MAX_MS);
	}
	if (t)
		*timeout_ms = (unsigned)json_integer_value(t);
	v = calloc(n + 1, sizeof(*v));
	for (size_t i = 0; v && rc == 0 && i < n; i++) {
		const char *s = json_string_value(json_array_get(a, i));

		if (!s || strlen(s) > RUN_ARG_BYTES)
			rc = ltfs_err_set(err, LTFS_E_USAGE, "argv[%zu] must be a string of at most %d bytes",
					  i, RUN_ARG_BYTES);
		else if (!(v[i] = strdup(s)))
			rc = ltfs_err_set(err, -ENOMEM, NULL);
	}
	json_decref(o);
	if (!v)
		return ltfs_err_set(err, -ENOMEM, NULL);
	if (rc < 0) {
		for (size_t i = 0; i < n; i++)
			free(v[i]);
		free(v);
		return rc;
	}
	*argv = v;
	return 0;
}

/*
 * The command in its own session (so that a timeout or a vanished client
 * kills all it started), in the mount dir, with no descriptor of ours.
 */
static int spawn(struct cl_run *r, char **argv, struct ltfs_err *err)
{
	const char *dir = fs_mountpoint(r->c->fs);
	int out[2], null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC), e;
	pid_t pid;

	if (null_fd < 0)
		return ltfs_err_set(err, -errno, "/dev/null: %s", strerror(errno));
	if (pipe2(out, O_CLOEXEC) < 0) {
		e = errno;
		close(null_fd);
		return ltfs_err_set(err, -e, "pipe: %s", strerror(e));
	}
	pid = fork();
	if (pid == 0) {
		sigset_t none;

		sigemptyset(&none);
		pthread_sigmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		setsid();
		if (dup2(null_fd, 0) < 0 || dup2(out[1], 1) < 0 || dup2(out[1], 2) < 0 ||
		    chdir(dir) < 0)
			_exit(126);
		close_range(3, ~0u, 0);
		execvp(argv[0], argv);
		/* no strerror() here: it may take a lock another thread held at fork */
		e = errno;
		dprintf(2, "ltfs run: cannot run '%s': %s\n", argv[0],
			e == ENOENT ? "No such file or directory" : e == EACCES ? "Permission denied"
			: strerrorname_np(e) ? strerrorname_np(e) : "exec failed");
		_exit(e == ENOENT ? 127 : 126);
	}
	e = errno;
	close(null_fd);
	close(out[1]);
	if (pid < 0) {
		close(out[0]);
		return ltfs_err_set(err, -e, "fork: %s", strerror(e));
	}
	r->pid = pid;
	r->fd = out[0];
	return 0;
}

int cl_run_open(struct cluster *c, const char *body, size_t len, const char *peer,
		struct cl_run **out, struct ltfs_err *err)
{
	struct cl_run *r;
	char **argv = NULL;
	unsigned timeout_ms;
	int rc;

	*out = NULL;
	if (!c->allow_run || !c->token[0])
		return ltfs_err_set(err, LTFS_E_STATE, "this node does not run commands: start it with "
						       "--allow-run and an http.token");
	if (!cl_is_primary(c))
		return ltfs_err_set(err, LTFS_E_NOT_PRIMARY, "this node is not the primary");
	rc = parse_argv(body, len, &argv, &timeout_ms, err);
	if (rc < 0)
		return rc;
	r = calloc(1, sizeof(*r));
	if (!r)
		rc = ltfs_err_set(err, -ENOMEM, NULL);
	if (rc == 0) {
		r->c = c;
		r->fd = -1;
		r->deadline = cl_mono_ms() + timeout_ms;
		snprintf(r->cmd, sizeof(r->cmd), "%s", argv[0]);
		rc = spawn(r, argv, err);
	}
	for (size_t i = 0; argv[i]; i++)
		free(argv[i]);
	free(argv);
	if (rc < 0) {
		free(r);
		return rc;
	}
	ltfs_info(c->log, "run", "%s runs '%s' (pid %d) in '%s'", peer, r->cmd, (int)r->pid,
		  fs_mountpoint(c->fs));
	*out = r;
	return 0;
}

static void kill_group(struct cl_run *r)
{
	if (r->pid > 0) {
		kill(-r->pid, SIGKILL);
		waitpid(r->pid, NULL, 0);
		r->pid = 0;
	}
}

/* The output as it comes, then the exit code; blocks (one thread per
 * connection) for at most a second at a time to notice the deadline. */
ssize_t cl_run_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct cl_run *r = cls;
	int st;

	(void)pos;
	if (r->sent_code)
		return MHD_CONTENT_READER_END_OF_STREAM;
	if (max < RUN_FRAME_HEAD + 1)
		return 0;
	while (r->fd >= 0) {
		struct pollfd p = { .fd = r->fd, .events = POLLIN };
		int64_t left = r->deadline - cl_mono_ms();
		size_t room = max - RUN_FRAME_HEAD;
		ssize_t n;

		if (left <= 0 || __atomic_load_n(&r->c->stopping, __ATOMIC_RELAXED)) {
			r->timed_out = left <= 0;
			kill_group(r);
			close(r->fd);
			r->fd = -1;
			break;
		}
		if (poll(&p, 1, left < 1000 ? (int)left : 1000) <= 0)
			continue;
		if (room > sizeof(r->chunk))
			room = sizeof(r->chunk);
		n = read(r->fd, r->chunk, room);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			close(r->fd);
			r->fd = -1;
			break;
		}
		st = snprintf(buf, max, "o %zd\n", n);
		memcpy(buf + st, r->chunk, (size_t)n);
		return st + n;
	}
	/* the output ended: the command exits now, or is made to by the deadline */
	while (r->pid > 0) {
		pid_t w = waitpid(r->pid, &st, WNOHANG);

		if (w == r->pid) {
			r->code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
			r->pid = 0;
		} else if (cl_mono_ms() >= r->deadline) {
			r->timed_out = true;
			kill_group(r);
		} else {
			usleep(10000);
		}
	}
	if (r->timed_out) {
		r->code = 124;
		ltfs_warn(r->c->log, "run", "'%s' killed at its deadline", r->cmd);
	} else {
		ltfs_info(r->c->log, "run", "'%s' exited with %d", r->cmd, r->code);
	}
	r->sent_code = true;
	return snprintf(buf, max, "x %d\n", r->code);
}

void cl_run_free(void *cls)
{
	struct cl_run *r = cls;

	if (!r)
		return;
	if (r->pid > 0)
		ltfs_warn(r->c->log, "run", "the client of '%s' went away: killing it", r->cmd);
	kill_group(r);
	if (r->fd >= 0)
		close(r->fd);
	free(r);
}

/* ---- the client ----------------------------------------------------------- */

struct run_client {
	int out_fd;
	char head[RUN_FRAME_HEAD + 1];
	size_t head_len;
	uint64_t left;             /* output bytes still to come in this frame */
	int code;                  /* -1 until "x CODE" */
	bool bad, started, is_error;
	struct ltfs_buf error;     /* a non-200 answer */
	long status;
};

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* One frame head ("o LEN" or "x CODE") is complete in rc->head. */
static void frame_head(struct run_client *rc)
{
	char *end;
	unsigned long long v;

	rc->head[rc->head_len] = '\0';
	errno = 0;
	v = strtoull(rc->head + 2, &end, 10);
	if (rc->head_len < 3 || rc->head[1] != ' ' || *end || errno || rc->code >= 0)
		rc->bad = true;
	else if (rc->head[0] == 'o')
		rc->left = v;
	else if (rc->head[0] == 'x' && v < 256)
		rc->code = (int)v;
	else
		rc->bad = true;
	rc->head_len = 0;
}

static size_t on_run_data(char *p, size_t size, size_t nmemb, void *ctx)
{
	struct run_client *rc = ctx;
	size_t n = size * nmemb, i = 0;

	/* errors come as {"error": ...}; the framing never starts with '{' */
	if (!rc->started && n && p[0] == '{')
		rc->is_error = true;
	rc->started = true;
	if (rc->is_error)
		return ltfs_buf_append(&rc->error, p, n) < 0 ? 0 : n;
	while (i < n && !rc->bad) {
		if (rc->left) {
			size_t k = n - i < rc->left ? n - i : (size_t)rc->left;

			if (write_all(rc->out_fd, p + i, k) < 0)
				return 0;
			rc->left -= k;
			i += k;
		} else if (p[i] == '\n') {
			frame_head(rc);
			i++;
		} else if (rc->head_len < RUN_FRAME_HEAD) {
			rc->head[rc->head_len++] = p[i++];
		} else {
			rc->bad = true;
		}
	}
	return rc->bad ? 0 : n;
}

int cluster_run(const struct cluster_run_opts *o, int *code, struct ltfs_err *err)
{
	struct run_client rc = { .out_fd = o->out_fd, .code = -1 };
	json_t *answer;
	json_t *body = json_pack("{s:[], s:I}", "argv", "timeout_ms",
				 (json_int_t)(o->timeout_ms ? o->timeout_ms : RUN_TIMEOUT_DEFAULT_MS));
	char url[URL_MAX + 16], *text = NULL;
	int r = 0;

	*code = -1;
	for (size_t i = 0; body && o->argv[i]; i++)
		if (json_array_append_new(json_object_get(body, "argv"), json_string(o->argv[i])) < 0)
			r = -ENOMEM;
	if (body && r == 0)
		text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	if (!text)
		return ltfs_err_set(err, -ENOMEM, NULL);
	snprintf(url, sizeof(url), "%s/v1/run", o->url);
	ltfs_buf_init(&rc.error, 64 * 1024);
	r = cl_http_request(url, o->token, text, on_run_data, &rc, &rc.status,
			    (long)(o->timeout_ms ? o->timeout_ms : RUN_TIMEOUT_DEFAULT_MS) + 30000,
			    err);
	free(text);
	answer = rc.error.len ? json_loadb((const char *)rc.error.data, rc.error.len, 0, NULL) : NULL;
	if (r == 0 && rc.status != 200)
		r = ltfs_err_set(err, rc.status == 409 ? LTFS_E_NOT_PRIMARY : -EIO, "%s answered %ld: %s",
				 url, rc.status,
				 json_string_value(json_object_get(answer, "error"))
					 ? json_string_value(json_object_get(answer, "error"))
					 : "(no message)");
	else if (r == 0 && (rc.bad || rc.code < 0))
		r = ltfs_err_set(err, LTFS_E_CORRUPT, "%s: the answer %s", url,
				 rc.bad ? "is not in the run framing" : "ended before the exit code");
	json_decref(answer);
	ltfs_buf_release(&rc.error);
	*code = rc.code;
	return r;
}
