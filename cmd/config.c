/*
 * config.c - the YAML config file (libyaml).
 *
 * The file is read into a small tree of mappings and scalars (with line
 * numbers), then every key is checked against the table of known keys: an
 * unknown key, a wrong type or a bad value is an error that names the key
 * and its line. Scalars may hold ${VAR} or ${VAR:-default}, expanded from
 * the environment; an unset variable without a default is an error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "cmd/cmd.h"

#define CFG_MAX_BYTES (1u << 20)
#define CFG_MAX_NODES 4096
#define CFG_MAX_DEPTH 8

enum cfg_kind { CFG_MAP, CFG_SCALAR, CFG_SEQ };

struct cfg_node {
	enum cfg_kind kind;
	char *key;   /* within a mapping */
	char *value; /* scalars */
	int line;
	struct cfg_node *child, *next;
};

static void cfg_free(struct cfg_node *n)
{
	while (n) {
		struct cfg_node *next = n->next;

		cfg_free(n->child);
		free(n->key);
		free(n->value);
		free(n);
		n = next;
	}
}

/* Expand ${VAR} and ${VAR:-default}; returns a malloc'd string or NULL. */
static char *expand(const char *s, int line, struct ltfs_err *err)
{
	struct ltfs_buf b;

	ltfs_buf_init(&b, CFG_MAX_BYTES);
	if (ltfs_buf_append(&b, "", 0) < 0)
		goto nomem;
	while (*s) {
		const char *end, *def;
		char name[256];
		const char *val;
		size_t len;

		if (s[0] != '$' || s[1] != '{') {
			if (ltfs_buf_append(&b, s, 1) < 0)
				goto nomem;
			s++;
			continue;
		}
		end = strchr(s, '}');
		if (!end) {
			ltfs_err_set(err, LTFS_E_CONFIG, "line %d: '${' without a closing '}'", line);
			goto fail;
		}
		def = strstr(s, ":-");
		len = (size_t)((def && def < end ? def : end) - (s + 2));
		if (len == 0 || len >= sizeof(name)) {
			ltfs_err_set(err, LTFS_E_CONFIG, "line %d: bad variable name in '%.*s'",
				     line, (int)(end - s + 1), s);
			goto fail;
		}
		memcpy(name, s + 2, len);
		name[len] = '\0';
		val = getenv(name);
		if ((!val || !*val) && def && def < end) {
			if (ltfs_buf_append(&b, def + 2, (size_t)(end - def - 2)) < 0)
				goto nomem;
		} else if (!val) {
			ltfs_err_set(err, LTFS_E_CONFIG,
				     "line %d: environment variable '%s' is not set (use ${%s:-default} for a default)",
				     line, name, name);
			goto fail;
		} else if (ltfs_buf_append(&b, val, strlen(val)) < 0) {
			goto nomem;
		}
		s = end + 1;
	}
	return (char *)b.data;
nomem:
	ltfs_err_set(err, -ENOMEM, NULL);
fail:
	ltfs_buf_release(&b);
	return NULL;
}

struct parser {
	yaml_parser_t yp;
	int nodes;
	struct ltfs_err *err;
};

static int next_event(struct parser *p, yaml_event_t *ev)
{
	if (!yaml_parser_parse(&p->yp, ev))
		return ltfs_err_set(p->err, LTFS_E_CONFIG, "line %zu: %s",
				    p->yp.problem_mark.line + 1,
				    p->yp.problem ? p->yp.problem : "invalid YAML");
	return 0;
}

static int parse_value(struct parser *p, yaml_event_t *ev, int depth,
		       struct cfg_node **out);

/* After MAPPING-START: key/value pairs until MAPPING-END. */
static int parse_map(struct parser *p, int depth, struct cfg_node *map)
{
	struct cfg_node **tail = &map->child;

	for (;;) {
		yaml_event_t ev;
		struct cfg_node *v = NULL;
		char *key;
		int line, rc;

		if ((rc = next_event(p, &ev)) < 0)
			return rc;
		if (ev.type == YAML_MAPPING_END_EVENT) {
			yaml_event_delete(&ev);
			return 0;
		}
		if (ev.type != YAML_SCALAR_EVENT) {
			line = (int)ev.start_mark.line + 1;
			yaml_event_delete(&ev);
			return ltfs_err_set(p->err, LTFS_E_CONFIG, "line %d: keys must be plain names", line);
		}
		key = strdup((const char *)ev.data.scalar.value);
		line = (int)ev.start_mark.line + 1;
		yaml_event_delete(&ev);
		if (!key)
			return ltfs_err_set(p->err, -ENOMEM, NULL);
		for (struct cfg_node *c = map->child; c; c = c->next) {
			if (strcmp(c->key, key) == 0) {
				rc = ltfs_err_set(p->err, LTFS_E_CONFIG,
						  "line %d: key '%s' repeats line %d", line, key, c->line);
				free(key);
				return rc;
			}
		}
		if ((rc = next_event(p, &ev)) < 0) {
			free(key);
			return rc;
		}
		rc = parse_value(p, &ev, depth + 1, &v);
		yaml_event_delete(&ev);
		if (rc < 0) {
			free(key);
			return rc;
		}
		v->key = key;
		v->line = line;
		*tail = v;
		tail = &v->next;
	}
}

static int parse_value(struct parser *p, yaml_event_t *ev, int depth,
		       struct cfg_node **out)
{
	struct cfg_node *n;
	int line = (int)ev->start_mark.line + 1, rc = 0;

	if (depth > CFG_MAX_DEPTH || ++p->nodes > CFG_MAX_NODES)
		return ltfs_err_set(p->err, LTFS_E_LIMIT, "line %d: config nested too deep or too large", line);
	n = calloc(1, sizeof(*n));
	if (!n)
		return ltfs_err_set(p->err, -ENOMEM, NULL);
	n->line = line;
	switch (ev->type) {
	case YAML_SCALAR_EVENT:
		n->kind = CFG_SCALAR;
		n->value = expand((const char *)ev->data.scalar.value, line, p->err);
		if (!n->value)
			rc = p->err ? p->err->code : -ENOMEM;
		break;
	case YAML_MAPPING_START_EVENT:
		n->kind = CFG_MAP;
		rc = parse_map(p, depth, n);
		break;
	case YAML_SEQUENCE_START_EVENT: {
		struct cfg_node **tail = &n->child;

		n->kind = CFG_SEQ;
		for (;;) {
			yaml_event_t e;
			struct cfg_node *item = NULL;

			if ((rc = next_event(p, &e)) < 0)
				break;
			if (e.type == YAML_SEQUENCE_END_EVENT) {
				yaml_event_delete(&e);
				break;
			}
			rc = parse_value(p, &e, depth + 1, &item);
			yaml_event_delete(&e);
			if (rc < 0)
				break;
			*tail = item;
			tail = &item->next;
		}
		break;
	}
	default:
		rc = ltfs_err_set(p->err, LTFS_E_CONFIG, "line %d: anchors and aliases are not supported", line);
	}
	if (rc < 0) {
		cfg_free(n);
		return rc;
	}
	*out = n;
	return 0;
}

static int cfg_parse(const char *path, struct cfg_node **root, struct ltfs_err *err)
{
	struct parser p = { .err = err };
	yaml_event_t ev;
	FILE *f;
	long size;
	int rc = 0;

	*root = NULL;
	f = fopen(path, "rb");
	if (!f)
		return ltfs_err_set(err, LTFS_E_CONFIG, "'%s': %s", path, strerror(errno));
	if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 ||
	    size > (long)CFG_MAX_BYTES) {
		fclose(f);
		return ltfs_err_set(err, LTFS_E_CONFIG, "'%s': unreadable or larger than %u bytes",
				    path, CFG_MAX_BYTES);
	}
	if (!yaml_parser_initialize(&p.yp)) {
		fclose(f);
		return ltfs_err_set(err, -ENOMEM, NULL);
	}
	yaml_parser_set_input_file(&p.yp, f);
	/* STREAM-START, DOCUMENT-START, then the top-level value */
	while (rc == 0 && (rc = next_event(&p, &ev)) == 0) {
		yaml_event_type_t t = ev.type;

		if (t == YAML_STREAM_START_EVENT || t == YAML_DOCUMENT_START_EVENT) {
			yaml_event_delete(&ev);
			continue;
		}
		if (t == YAML_STREAM_END_EVENT || t == YAML_DOCUMENT_END_EVENT) {
			yaml_event_delete(&ev);
			break;
		}
		if (t != YAML_MAPPING_START_EVENT) {
			rc = ltfs_err_set(err, LTFS_E_CONFIG, "line %zu: the config must be a mapping of keys",
					  ev.start_mark.line + 1);
			yaml_event_delete(&ev);
			break;
		}
		rc = parse_value(&p, &ev, 0, root);
		yaml_event_delete(&ev);
		break;
	}
	yaml_parser_delete(&p.yp);
	fclose(f);
	if (rc < 0) {
		cfg_free(*root);
		*root = NULL;
	} else if (!*root) {
		*root = calloc(1, sizeof(**root)); /* an empty file is an empty mapping */
		if (!*root)
			return ltfs_err_set(err, -ENOMEM, NULL);
	}
	return rc;
}

/* ---- the schema ------------------------------------------------------- */

static int want_bool(const struct cfg_node *n, bool *out, struct ltfs_err *err)
{
	if (n->kind == CFG_SCALAR) {
		if (!strcmp(n->value, "true") || !strcmp(n->value, "yes") || !strcmp(n->value, "on")) {
			*out = true;
			return 0;
		}
		if (!strcmp(n->value, "false") || !strcmp(n->value, "no") || !strcmp(n->value, "off")) {
			*out = false;
			return 0;
		}
	}
	return ltfs_err_set(err, LTFS_E_CONFIG, "line %d: '%s' must be true or false", n->line, n->key);
}

static int want_str(const struct cfg_node *n, char **out, struct ltfs_err *err)
{
	if (n->kind != CFG_SCALAR || !n->value[0])
		return ltfs_err_set(err, LTFS_E_CONFIG, "line %d: '%s' must be a non-empty string",
				    n->line, n->key);
	free(*out);
	*out = strdup(n->value);
	return *out ? 0 : ltfs_err_set(err, -ENOMEM, NULL);
}

static int want_uint(const struct cfg_node *n, unsigned lo, unsigned hi,
		     unsigned *out, struct ltfs_err *err)
{
	if (n->kind == CFG_SCALAR && cmd_parse_uint(n->value, lo, hi, out) == 0)
		return 0;
	return ltfs_err_set(err, LTFS_E_CONFIG, "line %d: '%s' must be a number in %u..%u",
			    n->line, n->key, lo, hi);
}

static int unknown(const struct cfg_node *n, const char *where, struct ltfs_err *err)
{
	return ltfs_err_set(err, LTFS_E_CONFIG, "line %d: unknown key '%s'%s%s (see docs/ltfs.example.yml)",
			    n->line, n->key, where ? " in " : "", where ? where : "");
}

static int apply_log(const struct cfg_node *map, struct cmd_config *c,
		     struct ltfs_err *err)
{
	for (const struct cfg_node *n = map->child; n; n = n->next) {
		char *v = NULL;
		int rc;

		if (strcmp(n->key, "level") == 0) {
			rc = want_str(n, &v, err);
			if (rc == 0 && ltfs_log_parse_level(v, &c->log_level) < 0)
				rc = ltfs_err_set(err, LTFS_E_CONFIG,
						  "line %d: 'level' must be error, warn, info or debug", n->line);
		} else if (strcmp(n->key, "format") == 0) {
			rc = want_str(n, &v, err);
			if (rc == 0 && ltfs_log_parse_format(v, &c->log_format) < 0)
				rc = ltfs_err_set(err, LTFS_E_CONFIG,
						  "line %d: 'format' must be text, json or journal", n->line);
		} else {
			rc = unknown(n, "'log'", err);
		}
		free(v);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int apply_http(const struct cfg_node *map, struct cmd_config *c,
		      struct ltfs_err *err)
{
	for (const struct cfg_node *n = map->child; n; n = n->next) {
		int rc;

		if (strcmp(n->key, "addr") == 0)
			rc = want_str(n, &c->http_addr, err);
		else if (strcmp(n->key, "token") == 0)
			rc = want_str(n, &c->http_token, err);
		else if (strcmp(n->key, "allow-run") == 0)
			rc = want_bool(n, &c->allow_run, err);
		else
			rc = unknown(n, "'http'", err);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int want_duration(const struct cfg_node *n, unsigned lo, unsigned hi, unsigned *out,
			 struct ltfs_err *err)
{
	if (n->kind == CFG_SCALAR && cmd_parse_duration_ms(n->value, hi, out) == 0 && *out >= lo)
		return 0;
	return ltfs_err_set(err, LTFS_E_CONFIG,
			    "line %d: '%s' must be a duration from %u%s to %uh (e.g. 30s, 5m, 24h)",
			    n->line, n->key, lo >= 1000 ? lo / 1000 : lo, lo >= 1000 ? "s" : "ms",
			    hi / 3600000);
}

/* One of the words of choices ("a|b|c"). */
static int want_choice(const struct cfg_node *n, const char *choices, char **out,
		       struct ltfs_err *err)
{
	size_t len = n->kind == CFG_SCALAR ? strlen(n->value) : 0;

	for (const char *p = choices; len && *p;) {
		const char *bar = strchr(p, '|');
		size_t k = bar ? (size_t)(bar - p) : strlen(p);

		if (k == len && strncmp(p, n->value, k) == 0)
			return want_str(n, out, err);
		p += k + (bar ? 1 : 0);
	}
	return ltfs_err_set(err, LTFS_E_CONFIG, "line %d: '%s' must be one of %s", n->line, n->key,
			    choices);
}

/* s3.levels: a list of compaction intervals, each longer than the last. */
static int want_levels(const struct cfg_node *n, struct cmd_config *c, struct ltfs_err *err)
{
	unsigned k = 0;

	if (n->kind != CFG_SEQ || !n->child)
		return ltfs_err_set(err, LTFS_E_CONFIG,
				    "line %d: 'levels' must be a list of durations, e.g. [30s, 5m, 1h]",
				    n->line);
	for (const struct cfg_node *i = n->child; i; i = i->next, k++) {
		if (k >= 8)
			return ltfs_err_set(err, LTFS_E_CONFIG, "line %d: at most 8 levels", i->line);
		if (i->kind != CFG_SCALAR || cmd_parse_duration_ms(i->value, 30 * 86400000u,
								   &c->levels_ms[k]) < 0 ||
		    c->levels_ms[k] < 1000 || (k > 0 && c->levels_ms[k] <= c->levels_ms[k - 1]))
			return ltfs_err_set(err, LTFS_E_CONFIG,
					    "line %d: level %u of 'levels' must be a duration of at least "
					    "1s, longer than the level before",
					    i->line, k + 1);
	}
	c->nlevels = k;
	return 0;
}

/* A byte size: a number with an optional unit B, KiB, MiB or GiB. */
static int want_size(const struct cfg_node *n, unsigned long long *out, struct ltfs_err *err)
{
	static const struct { const char *unit; unsigned shift; } units[] = {
		{ "", 0 }, { "B", 0 }, { "KiB", 10 }, { "MiB", 20 }, { "GiB", 30 },
	};
	char *end;
	unsigned long long v;

	if (n->kind == CFG_SCALAR && n->value[0] >= '0' && n->value[0] <= '9') {
		errno = 0;
		v = strtoull(n->value, &end, 10);
		end += strspn(end, " ");
		for (size_t i = 0; !errno && i < sizeof(units) / sizeof(units[0]); i++) {
			if (strcmp(end, units[i].unit) == 0 && v > 0 && v <= (1ull << 40) >> units[i].shift) {
				*out = v << units[i].shift;
				return 0;
			}
		}
	}
	return ltfs_err_set(err, LTFS_E_CONFIG,
			    "line %d: '%s' must be a size from 1 to 1TiB, e.g. 64MiB", n->line, n->key);
}

static int apply_s3(const struct cfg_node *map, struct cmd_config *c,
		    struct ltfs_err *err)
{
	for (const struct cfg_node *n = map->child; n; n = n->next) {
		unsigned ms;
		bool b;
		int rc;

		if (strcmp(n->key, "url") == 0) {
			rc = want_str(n, &c->s3_url, err);
			if (rc == 0 && strncmp(c->s3_url, "s3://", 5) != 0)
				rc = ltfs_err_set(err, LTFS_E_CONFIG,
						  "line %d: 'url' must look like s3://BUCKET/PREFIX", n->line);
		} else if (strcmp(n->key, "endpoint") == 0) {
			rc = want_str(n, &c->s3_endpoint, err);
		} else if (strcmp(n->key, "region") == 0) {
			rc = want_str(n, &c->s3_region, err);
		} else if (strcmp(n->key, "access-key-id") == 0) {
			rc = want_str(n, &c->s3_access_key, err);
		} else if (strcmp(n->key, "secret-access-key") == 0) {
			rc = want_str(n, &c->s3_secret_key, err);
		} else if (strcmp(n->key, "path-style") == 0) {
			rc = want_bool(n, &b, err);
			c->s3_path_style = b;
		} else if (strcmp(n->key, "part-size") == 0) {
			rc = want_size(n, &c->s3_part_size, err);
			if (rc == 0 && (c->s3_part_size < (5ull << 20) || c->s3_part_size > (5ull << 30)))
				rc = ltfs_err_set(err, LTFS_E_CONFIG,
						  "line %d: 'part-size' must be from 5MiB to 5GiB "
						  "(S3's limits of one part)", n->line);
		} else if (strcmp(n->key, "levels") == 0) {
			rc = want_levels(n, c, err);
		} else if (strcmp(n->key, "snapshot-interval") == 0) {
			rc = want_duration(n, 1000, 30 * 86400000u, &c->snapshot_ms, err);
		} else if (strcmp(n->key, "retention") == 0) {
			rc = want_duration(n, 1000, 3650u * 86400000u / 10, &c->retention_ms, err);
		} else if (strcmp(n->key, "l0-retention") == 0) {
			rc = want_duration(n, 1000, 30 * 86400000u, &c->l0_retention_ms, err);
		} else if (strcmp(n->key, "upload-interval") == 0) {
			rc = n->kind == CFG_SCALAR && cmd_parse_duration_ms(n->value, 3600000, &ms) == 0
				     ? 0
				     : ltfs_err_set(err, LTFS_E_CONFIG,
						    "line %d: 'upload-interval' must be a duration up to 1h "
						    "(e.g. 1s, 250ms, 0)",
						    n->line);
			c->upload_interval_ms = (int)ms;
		} else {
			rc = unknown(n, "'s3'", err);
		}
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* A command that will split into words when it runs. */
static int check_words(const char *cmd, int line, struct ltfs_err *err)
{
	char **argv;
	int rc = cmd_split_words(cmd, &argv, err);

	if (rc < 0) {
		ltfs_err_prefix(err, "line %d: exec command '%s'", line, cmd);
		return rc;
	}
	free(argv[0]);
	free(argv);
	return 0;
}

/* One item of exec: a command, or {cmd, if-candidate, if-primary}. */
static int want_exec_item(const struct cfg_node *n, struct cmd_exec *e, struct ltfs_err *err)
{
	static const char what[] = "must be a command or a mapping (cmd, if-candidate, if-primary)";

	if (n->kind == CFG_SCALAR) {
		e->cmd = strdup(n->value);
		return e->cmd ? check_words(e->cmd, n->line, err) : ltfs_err_set(err, -ENOMEM, NULL);
	}
	if (n->kind != CFG_MAP)
		return ltfs_err_set(err, LTFS_E_CONFIG, "line %d: an exec item %s", n->line, what);
	for (const struct cfg_node *k = n->child; k; k = k->next) {
		int rc;

		if (strcmp(k->key, "cmd") == 0)
			rc = want_str(k, &e->cmd, err);
		else if (strcmp(k->key, "if-candidate") == 0)
			rc = want_bool(k, &e->if_candidate, err);
		else if (strcmp(k->key, "if-primary") == 0)
			rc = want_bool(k, &e->if_primary, err);
		else
			rc = unknown(k, "an 'exec' item", err);
		if (rc < 0)
			return rc;
	}
	if (!e->cmd)
		return ltfs_err_set(err, LTFS_E_CONFIG, "line %d: an exec item has no 'cmd'", n->line);
	return check_words(e->cmd, n->line, err);
}

/* exec: one command, or a list of them (all but the last must succeed). */
static int want_exec(const struct cfg_node *n, struct cmd_config *c, struct ltfs_err *err)
{
	const struct cfg_node *first = n->kind == CFG_SEQ ? n->child : n;
	size_t count = 0;

	for (const struct cfg_node *i = first; i; i = n->kind == CFG_SEQ ? i->next : NULL)
		count++;
	if (count == 0 || count > 64)
		return ltfs_err_set(err, LTFS_E_CONFIG, "line %d: 'exec' must hold 1 to 64 commands",
				    n->line);
	c->exec = calloc(count, sizeof(*c->exec));
	if (!c->exec)
		return ltfs_err_set(err, -ENOMEM, NULL);
	c->nexec = count;
	count = 0;
	for (const struct cfg_node *i = first; i; i = n->kind == CFG_SEQ ? i->next : NULL) {
		int rc = want_exec_item(i, &c->exec[count++], err);

		if (rc < 0)
			return rc;
	}
	return 0;
}

/* A list of path patterns into v[*count]. */
static int want_patterns(const struct cfg_node *n, char **v, unsigned *count, struct ltfs_err *err)
{
	if (n->kind != CFG_SEQ)
		return ltfs_err_set(err, LTFS_E_CONFIG,
				    "line %d: '%s' must be a list of path patterns, e.g. [\"/admin/*\"]",
				    n->line, n->key);
	for (const struct cfg_node *i = n->child; i; i = i->next) {
		if (*count >= CMD_PROXY_PATTERNS_MAX)
			return ltfs_err_set(err, LTFS_E_CONFIG, "line %d: at most %d patterns", i->line,
					    CMD_PROXY_PATTERNS_MAX);
		if (i->kind != CFG_SCALAR || i->value[0] != '/')
			return ltfs_err_set(err, LTFS_E_CONFIG,
					    "line %d: a pattern of '%s' must be a path starting with /",
					    i->line, n->key);
		v[*count] = strdup(i->value);
		if (!v[*count])
			return ltfs_err_set(err, -ENOMEM, NULL);
		(*count)++;
	}
	return 0;
}

static int apply_proxy(const struct cfg_node *map, struct cmd_proxy_config *p,
		       struct ltfs_err *err)
{
	for (const struct cfg_node *n = map->child; n; n = n->next) {
		int rc;

		if (strcmp(n->key, "addr") == 0)
			rc = want_str(n, &p->addr, err);
		else if (strcmp(n->key, "target") == 0)
			rc = want_str(n, &p->target, err);
		else if (strcmp(n->key, "db") == 0)
			rc = want_str(n, &p->db, err);
		else if (strcmp(n->key, "advertise-url") == 0)
			rc = want_str(n, &p->advertise_url, err);
		else if (strcmp(n->key, "max-lag") == 0)
			rc = want_duration(n, 100, 3600000, &p->max_lag_ms, err);
		else if (strcmp(n->key, "timeout") == 0)
			rc = want_duration(n, 100, 3600000, &p->timeout_ms, err);
		else if (strcmp(n->key, "wait") == 0)
			rc = want_duration(n, 10, 3600000, &p->wait_ms, err);
		else if (strcmp(n->key, "max-body") == 0)
			rc = want_size(n, &p->max_body, err);
		else if (strcmp(n->key, "always-forward") == 0)
			rc = want_patterns(n, p->always_forward, &p->n_always_forward, err);
		else if (strcmp(n->key, "passthrough") == 0)
			rc = want_patterns(n, p->passthrough, &p->n_passthrough, err);
		else
			rc = unknown(n, "'proxy'", err);
		if (rc < 0)
			return rc;
	}
	return 0;
}

void cmd_config_init(struct cmd_config *c, const struct cmd_ctx *ctx)
{
	memset(c, 0, sizeof(*c));
	c->log_level = ctx->log.level;
	c->log_format = ctx->log.format;
	c->s3_path_style = -1;
	c->upload_interval_ms = -1;
	c->candidate = -1;
}

int cmd_config_load(const char *path, struct cmd_config *c, struct ltfs_err *err)
{
	struct cfg_node *root;
	int rc = cfg_parse(path, &root, err);

	if (rc < 0) {
		ltfs_err_prefix(err, "config '%s'", path);
		return rc;
	}
	for (const struct cfg_node *n = root->child; rc == 0 && n; n = n->next) {
		if (strcmp(n->key, "mount-dir") == 0)
			rc = want_str(n, &c->mount_dir, err);
		else if (strcmp(n->key, "data-dir") == 0)
			rc = want_str(n, &c->data_dir, err);
		else if (strcmp(n->key, "debug") == 0)
			rc = want_bool(n, &c->debug, err);
		else if (strcmp(n->key, "allow-other") == 0)
			rc = want_bool(n, &c->allow_other, err);
		else if (strcmp(n->key, "threads") == 0)
			rc = want_uint(n, 1, 256, &c->threads, err);
		else if (strcmp(n->key, "history-keep") == 0)
			rc = want_uint(n, 1, 10000000, &c->history_keep, err);
		else if (strcmp(n->key, "replica-of") == 0)
			rc = want_str(n, &c->replica_of, err);
		else if (strcmp(n->key, "lease") == 0)
			rc = want_choice(n, "s3|none", &c->lease, err);
		else if (strcmp(n->key, "lease-ttl") == 0)
			rc = want_duration(n, 2000, 3600000, &c->lease_ttl_ms, err);
		else if (strcmp(n->key, "lease-renew-interval") == 0)
			rc = want_duration(n, 100, 1800000, &c->lease_renew_ms, err);
		else if (strcmp(n->key, "candidate") == 0) {
			bool v = true;

			rc = want_bool(n, &v, err);
			c->candidate = v;
		} else if (strcmp(n->key, "advertise-url") == 0)
			rc = want_str(n, &c->advertise_url, err);
		else if (strcmp(n->key, "sync") == 0)
			rc = n->kind == CFG_SCALAR && cmd_parse_sync(n->value, NULL, NULL) == 0
				     ? want_str(n, &c->sync, err)
				     : ltfs_err_set(err, LTFS_E_CONFIG,
						    "line %d: 'sync' must be none, s3 or replicas=N (N 1..16)",
						    n->line);
		else if (strcmp(n->key, "exec") == 0)
			rc = want_exec(n, c, err);
		else if (strcmp(n->key, "skip-sync") == 0)
			rc = want_bool(n, &c->skip_sync, err);
		else if (strcmp(n->key, "http") == 0)
			rc = n->kind == CFG_MAP ? apply_http(n, c, err)
						: ltfs_err_set(err, LTFS_E_CONFIG,
							       "line %d: 'http' must be a mapping (addr, token)",
							       n->line);
		else if (strcmp(n->key, "s3") == 0)
			rc = n->kind == CFG_MAP ? apply_s3(n, c, err)
						: ltfs_err_set(err, LTFS_E_CONFIG,
							       "line %d: 's3' must be a mapping (url, endpoint, ...)",
							       n->line);
		else if (strcmp(n->key, "proxy") == 0)
			rc = n->kind == CFG_MAP ? apply_proxy(n, &c->proxy, err)
						: ltfs_err_set(err, LTFS_E_CONFIG,
							       "line %d: 'proxy' must be a mapping (addr, target, ...)",
							       n->line);
		else if (strcmp(n->key, "log") == 0)
			rc = n->kind == CFG_MAP ? apply_log(n, c, err)
						: ltfs_err_set(err, LTFS_E_CONFIG,
							       "line %d: 'log' must be a mapping (level, format)",
							       n->line);
		else
			rc = unknown(n, NULL, err);
	}
	cfg_free(root);
	if (rc < 0)
		ltfs_err_prefix(err, "config '%s'", path);
	return rc;
}

void cmd_config_release(struct cmd_config *c)
{
	free(c->mount_dir);
	free(c->data_dir);
	free(c->http_addr);
	free(c->http_token);
	free(c->replica_of);
	free(c->lease);
	free(c->advertise_url);
	free(c->sync);
	free(c->s3_url);
	free(c->s3_endpoint);
	free(c->s3_region);
	free(c->s3_access_key);
	if (c->s3_secret_key)
		explicit_bzero(c->s3_secret_key, strlen(c->s3_secret_key));
	free(c->s3_secret_key);
	for (size_t i = 0; i < c->nexec; i++)
		free(c->exec[i].cmd);
	free(c->exec);
	free(c->proxy.addr);
	free(c->proxy.target);
	free(c->proxy.db);
	free(c->proxy.advertise_url);
	for (unsigned i = 0; i < c->proxy.n_always_forward; i++)
		free(c->proxy.always_forward[i]);
	for (unsigned i = 0; i < c->proxy.n_passthrough; i++)
		free(c->proxy.passthrough[i]);
	memset(c, 0, sizeof(*c));
}
