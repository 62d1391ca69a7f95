/*
 * exec.c - the app supervisor of "ltfs mount DIR -- CMD" and exec: in the
 * config.
 *
 * The commands start once the node serves (the primary with writes open,
 * or a replica caught up), so the app never sees a database behind its
 * primary. All but the last must succeed (migrations); the last is the app.
 * SIGINT, SIGTERM and SIGHUP go to the app instead of unmounting; when the
 * app exits, the mount stops and ltfs exits with the app's code.
 *
 * Signals: the mount blocks them in every thread before any starts
 * (cmd_sup_block_signals), and this thread alone takes them with
 * sigtimedwait(), together with SIGCHLD. No handler runs, so there is no
 * async-signal-safety to worry about beyond fork() and exec.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "cmd/cmd.h"
#include "fs/fs.h"

#define SUP_TICK_MS 100
#define SUP_GRACE_MS 10000  /* an app asked to stop by an unmount: then SIGKILL */
#define SUP_WORDS_MAX 256

struct supervisor {
	struct cmd_exec_plan plan;
	struct fs *fs;
	struct cluster *cl;
	struct ltfs_log *log;
	sigset_t taken;        /* what this thread waits for */
	sigset_t child_mask;   /* the mask the mount started with */
	pthread_t thread;

	size_t next;           /* command to start next */
	pid_t child;           /* 0: none running */
	const char *child_cmd; /* for messages */
	bool child_is_app;
	bool stopping;         /* no further command starts */
	bool app_started;
	int code;              /* what "ltfs mount" exits with */
	bool code_set;
	bool finished;         /* atomic: fs_run() returned */
	int64_t kill_at;       /* monotonic ms: SIGKILL the app then; 0 = not yet */
};

int cmd_sup_block_signals(sigset_t *old)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGCHLD);
	return -pthread_sigmask(SIG_BLOCK, &set, old);
}

/*
 * Split a command into words as a shell would for plain words and quotes:
 * blanks separate, '...' keeps everything, "..." and \ escape. No
 * expansion, pipes or redirections (write `sh -c '...'` for those).
 */
int cmd_split_words(const char *s, char ***out, struct ltfs_err *err)
{
	size_t len = strlen(s), n = 0;
	char **argv = calloc(SUP_WORDS_MAX + 1, sizeof(*argv));
	char *buf = malloc(len + 1);
	char *w = buf;

	*out = NULL;
	if (!argv || !buf) {
		free(argv);
		free(buf);
		return ltfs_err_set(err, -ENOMEM, NULL);
	}
	while (*s) {
		char quote = 0;

		while (*s == ' ' || *s == '\t' || *s == '\n')
			s++;
		if (!*s)
			break;
		if (n == SUP_WORDS_MAX) {
			free(buf);
			free(argv);
			return ltfs_err_set(err, LTFS_E_CONFIG, "more than %d words", SUP_WORDS_MAX);
		}
		argv[n++] = w;
		for (; *s && (quote || (*s != ' ' && *s != '\t' && *s != '\n')); s++) {
			if (quote == '\'' && *s == '\'') {
				quote = 0;
			} else if (quote == '\'') {
				*w++ = *s;
			} else if (*s == '\\' && s[1]) {
				*w++ = *++s;
			} else if (*s == quote) {
				quote = 0;
			} else if (!quote && (*s == '\'' || *s == '"')) {
				quote = *s;
			} else {
				*w++ = *s;
			}
		}
		if (quote) {
			free(buf);
			free(argv);
			return ltfs_err_set(err, LTFS_E_CONFIG, "a %c quote is not closed", quote);
		}
		*w++ = '\0';
	}
	if (n == 0) {
		free(buf);
		free(argv);
		return ltfs_err_set(err, LTFS_E_CONFIG, "the command is empty");
	}
	/* argv[0] is buf: freeing argv[0] then argv frees both */
	*out = argv;
	return 0;
}

static void free_words(char **argv)
{
	if (argv) {
		free(argv[0]);
		free(argv);
	}
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * fork + exec argv with the mount's original signal mask, no descriptor of
 * ours, and SIGPIPE back to default. A pipe that closes on exec tells
 * apart "started" from "could not be run" (with exec's errno).
 */
static int spawn(struct supervisor *s, char **argv, pid_t *out, struct ltfs_err *err)
{
	int p[2], e = 0;
	ssize_t n;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return ltfs_err_set(err, -errno, "pipe: %s", strerror(errno));
	pid = fork();
	if (pid < 0) {
		e = errno;
		close(p[0]);
		close(p[1]);
		return ltfs_err_set(err, -e, "fork: %s", strerror(e));
	}
	if (pid == 0) {
		/* the app must not hold /dev/fuse, sockets or data-dir files */
		if (p[1] > 3)
			close_range(3, (unsigned)p[1] - 1, 0);
		close_range((unsigned)p[1] + 1, ~0u, 0);
		signal(SIGPIPE, SIG_DFL);
		pthread_sigmask(SIG_SETMASK, &s->child_mask, NULL);
		execvp(argv[0], argv);
		e = errno;
		if (write(p[1], &e, sizeof(e)) < 0)
			_exit(127);
		_exit(127);
	}
	close(p[1]);
	do
		n = read(p[0], &e, sizeof(e));
	while (n < 0 && errno == EINTR);
	close(p[0]);
	if (n == (ssize_t)sizeof(e)) {
		waitpid(pid, NULL, 0);
		return ltfs_err_set(err, -e, "cannot run '%s': %s", argv[0], strerror(e));
	}
	*out = pid;
	return 0;
}

/* The exit code of a wait status, as a shell reports it. */
static int status_code(int st)
{
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return 1;
}

/* Stop starting commands and unmount; the first reason gives the code. */
static void request_stop(struct supervisor *s, int code)
{
	if (!s->code_set)
		s->code = code;
	s->code_set = true;
	s->stopping = true;
}

/* Start the next command whose conditions hold, if any. */
static void start_next(struct supervisor *s)
{
	const struct cmd_exec_plan *p = &s->plan;
	size_t n = p->argv ? 1 : p->n;
	bool primary = false;

	cluster_ready(s->cl, &primary);
	while (s->next < n) {
		size_t i = s->next++;
		const struct cmd_exec *e = p->argv ? NULL : &p->cmds[i];
		char **argv = p->argv;
		struct ltfs_err err = { 0 };
		int rc;

		if (e && e->if_candidate && !cluster_is_candidate(s->cl)) {
			ltfs_info(s->log, "exec", "skipping '%s' (if-candidate: this node never becomes the primary)",
				  e->cmd);
			continue;
		}
		if (e && e->if_primary && !primary) {
			ltfs_info(s->log, "exec", "skipping '%s' (if-primary: this node is a replica)", e->cmd);
			continue;
		}
		rc = e ? cmd_split_words(e->cmd, &argv, &err) : 0;
		if (rc == 0)
			rc = spawn(s, argv, &s->child, &err);
		s->child_cmd = e ? e->cmd : p->argv[0];
		s->child_is_app = s->next == n;
		if (rc < 0) {
			ltfs_error(s->log, "exec", "'%s': %s; stopping", s->child_cmd, err.msg);
			request_stop(s, rc == -ENOENT ? 127 : 126);
		} else {
			ltfs_info(s->log, "exec", "started %s '%s' (pid %d) as %s",
				  s->child_is_app ? "the app" : "command", s->child_cmd, (int)s->child,
				  primary ? "primary" : "replica");
			s->app_started = s->app_started || s->child_is_app;
		}
		if (e)
			free_words(argv);
		return;
	}
	if (!s->app_started) {
		ltfs_info(s->log, "exec", "no app to start on this node (its conditions do not hold); serving until stopped");
		s->app_started = true;
	}
}

static void on_exit_status(struct supervisor *s, int st)
{
	int code = status_code(st);

	s->child = 0;
	if (s->child_is_app) {
		ltfs_info(s->log, "exec", "the app '%s' exited with %d: unmounting", s->child_cmd, code);
		request_stop(s, code);
	} else if (code != 0) {
		ltfs_error(s->log, "exec", "'%s' exited with %d: the app is not started; unmounting",
			   s->child_cmd, code);
		request_stop(s, code);
	} else {
		ltfs_info(s->log, "exec", "'%s' succeeded", s->child_cmd);
	}
}

static void on_signal(struct supervisor *s, const siginfo_t *si)
{
	int sig = si->si_signo;

	if (s->child) {
		/* a terminal's ^C reached the app's process group already */
		if (si->si_code != SI_KERNEL)
			kill(s->child, sig);
		if (!s->child_is_app && sig != SIGHUP)
			s->stopping = true; /* no app after an interrupted migration */
		return;
	}
	ltfs_info(s->log, "exec", "%s with no command running: unmounting", strsignal(sig));
	request_stop(s, 0);
}

static void *sup_main(void *arg)
{
	struct supervisor *s = arg;
	bool ready = s->plan.skip_sync;

	pthread_setname_np(pthread_self(), "exec");
	if (!ready)
		ltfs_info(s->log, "exec", "waiting for the node to be primary or caught up before starting commands");
	for (;;) {
		struct timespec tick = { 0, SUP_TICK_MS * 1000000L };
		bool finished = __atomic_load_n(&s->finished, __ATOMIC_SEQ_CST);
		siginfo_t si;
		int sig, st;

		if (finished) {
			s->stopping = true;
			if (!s->child)
				break;
			if (!s->kill_at) {
				ltfs_info(s->log, "exec", "the mount stopped: sending SIGTERM to '%s'", s->child_cmd);
				kill(s->child, SIGTERM);
				s->kill_at = mono_ms() + SUP_GRACE_MS;
			} else if (mono_ms() >= s->kill_at) {
				ltfs_warn(s->log, "exec", "'%s' still runs %d s after SIGTERM: SIGKILL",
					  s->child_cmd, SUP_GRACE_MS / 1000);
				kill(s->child, SIGKILL);
				s->kill_at = INT64_MAX;
			}
		} else if (s->stopping && !s->child) {
			fs_stop(s->fs); /* again each tick: see fs_stop() */
		} else if (!s->child && !s->app_started) {
			if (!ready && cluster_ready(s->cl, NULL)) {
				ready = true;
				ltfs_info(s->log, "exec", "the node serves: starting commands");
			}
			if (ready)
				start_next(s);
			if (s->stopping)
				continue;
		}
		sig = sigtimedwait(&s->taken, &si, &tick);
		if (sig == SIGCHLD || (sig < 0 && s->child)) {
			/* SIGCHLDs coalesce: look on every wake-up */
			if (s->child && waitpid(s->child, &st, WNOHANG) == s->child)
				on_exit_status(s, st);
		} else if (sig > 0) {
			on_signal(s, &si);
		}
	}
	return NULL;
}

int cmd_sup_start(struct supervisor **out, const struct cmd_exec_plan *plan,
		  const sigset_t *child_mask, struct fs *fs, struct cluster *cl,
		  struct ltfs_log *log, struct ltfs_err *err)
{
	struct supervisor *s = calloc(1, sizeof(*s));
	int rc;

	*out = NULL;
	if (!s)
		return ltfs_err_set(err, -ENOMEM, NULL);
	s->plan = *plan;
	s->fs = fs;
	s->cl = cl;
	s->log = log;
	s->child_mask = *child_mask;
	sigemptyset(&s->taken);
	sigaddset(&s->taken, SIGINT);
	sigaddset(&s->taken, SIGTERM);
	sigaddset(&s->taken, SIGHUP);
	sigaddset(&s->taken, SIGCHLD);
	rc = pthread_create(&s->thread, NULL, sup_main, s);
	if (rc != 0) {
		free(s);
		return ltfs_err_set(err, -rc, "cannot start the exec supervisor: %s", strerror(rc));
	}
	*out = s;
	return 0;
}

int cmd_sup_finish(struct supervisor *s)
{
	int code;

	__atomic_store_n(&s->finished, true, __ATOMIC_SEQ_CST);
	pthread_join(s->thread, NULL);
	code = s->code;
	free(s);
	return code;
}
