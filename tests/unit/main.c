/*
 * The unit-test runner: each registered test runs in a forked child with a
 * time limit and a private temp dir. Prints one line per test and ends with
 * "unit: N passed, N failed"; exits 1 if anything failed.
 *
 *   build/test-unit [-v] [SUBSTRING...]   run tests whose name contains one
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "t.h"

#define T_MAX 1024
#define T_TIMEOUT_S 120

struct t_case {
	const char *name;
	const char *file;
	t_fn fn;
};

/* Test-only registry, filled by constructors before main(). */
static struct t_case t_cases[T_MAX];
static int t_ncases;
static char t_tmp[4096];

void t_register(const char *name, const char *file, t_fn fn)
{
	if (t_ncases >= T_MAX) {
		fprintf(stderr, "too many tests (raise T_MAX)\n");
		abort();
	}
	t_cases[t_ncases].name = name;
	t_cases[t_ncases].file = file;
	t_cases[t_ncases].fn = fn;
	t_ncases++;
}

void t_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "    %s:%d: ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
	_exit(1);
}

const char *t_errmsg(const struct ltfs_err *err)
{
	return err ? err->msg : "";
}

const char *t_data_dir(void)
{
	const char *d = getenv("LTFS_TEST_DATA");
	return d && *d ? d : "tests/data";
}

char *t_data_path(char *out, size_t n, const char *rel)
{
	snprintf(out, n, "%s/%s", t_data_dir(), rel);
	return out;
}

const char *t_tmpdir(void)
{
	return t_tmp;
}

uint8_t *t_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *p;
	long n;

	if (!f)
		t_fail(__FILE__, __LINE__, "open '%s': %s", path, strerror(errno));
	if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) != 0)
		t_fail(__FILE__, __LINE__, "seek '%s'", path);
	p = malloc((size_t)n + 1);
	if (!p)
		t_fail(__FILE__, __LINE__, "out of memory");
	if (n > 0 && fread(p, 1, (size_t)n, f) != (size_t)n)
		t_fail(__FILE__, __LINE__, "read '%s'", path);
	fclose(f);
	*len = (size_t)n;
	return p;
}

void t_write_file(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");

	if (!f || (n > 0 && fwrite(p, 1, n, f) != n) || fclose(f) != 0)
		t_fail(__FILE__, __LINE__, "write '%s': %s", path, strerror(errno));
}

static int rm_entry(const char *path, const struct stat *st, int flag,
		    struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int run_one(const struct t_case *c, const char *base)
{
	pid_t pid;
	int status = 0;

	snprintf(t_tmp, sizeof(t_tmp), "%s/%s", base, c->name);
	if (mkdir(t_tmp, 0700) != 0 && errno != EEXIST) {
		fprintf(stderr, "mkdir '%s': %s\n", t_tmp, strerror(errno));
		return 1;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		perror("fork");
		return 1;
	}
	if (pid == 0) {
		alarm(T_TIMEOUT_S);
		c->fn();
		fflush(NULL);
		_exit(0);
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	nftw(t_tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	if (WIFSIGNALED(status)) {
		fprintf(stderr, "    killed by signal %d%s\n", WTERMSIG(status),
			WTERMSIG(status) == SIGALRM ? " (timeout)" : "");
		return 1;
	}
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

static int selected(const char *name, int argc, char **argv)
{
	int any = 0;

	for (int i = 1; i < argc; i++) {
		if (argv[i][0] == '-')
			continue;
		any = 1;
		if (strstr(name, argv[i]))
			return 1;
	}
	return !any;
}

int main(int argc, char **argv)
{
	char base[] = "/tmp/ltfs-unit-XXXXXX";
	int passed = 0, failed = 0;

	if (!mkdtemp(base)) {
		perror("mkdtemp");
		return 1;
	}
	for (int i = 0; i < t_ncases; i++) {
		const struct t_case *c = &t_cases[i];
		double t0;
		int rc;

		if (!selected(c->name, argc, argv))
			continue;
		t0 = now_s();
		rc = run_one(c, base);
		printf("%s %s (%.2fs)\n", rc ? "FAIL" : "ok  ", c->name,
		       now_s() - t0);
		fflush(stdout);
		if (rc)
			failed++;
		else
			passed++;
	}
	rmdir(base);
	printf("unit: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
