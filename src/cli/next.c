/* cli/next — `dagd next FILE|DAG [--from TIME] [-n N] [--json] [--dags DIR]` (docs/cli.md):
 * offline, the next N scheduled runs of one DAG. "Next" means the data intervals whose end
 * (the moment the run is created) is after --from, so the interval holding --from comes
 * first, whatever `catchup` says. Times are printed in RFC 3339 UTC. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli_internal.h"
#include "dagd/cli.h"
#include "dagd/cron.h"

#define EXIT_USAGE 2
#define MAX_N 100000

static const char next_usage[] =
    "usage: dagd next FILE|DAG [--from TIME] [-n N] [--json] [--dags DIR]\n"
    "  prints the next N (default 5) scheduled runs after TIME (default now), one per line:\n"
    "  the logical date, then when the run is created (RFC 3339, UTC)\n";

static int parse_count(const char *s, int *ret) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > MAX_N) return -EINVAL;
    *ret = (int)v;
    return 0;
}

typedef struct next_args {
    const char *what, *from, *dags;
    int n;
    bool json;
} next_args;

/* Options may come before or after the DAG; --opt VALUE and --opt=VALUE, -n N and -nN. */
static int parse_next_args(int argc, char **argv, next_args *a) {
    *a = (next_args){.n = 5};
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i], *val = NULL;
        const char *opt = NULL;
        if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
            fputs(next_usage, stdout);
            return 1;
        }
        if (strcmp(s, "--json") == 0) {
            a->json = true;
            continue;
        }
        if (strcmp(s, "-n") == 0 || strcmp(s, "--from") == 0 || strcmp(s, "--dags") == 0) {
            opt = s;
            if (i + 1 >= argc) {
                fprintf(stderr, "dagd next: %s needs a value\n%s", s, next_usage);
                return -EINVAL;
            }
            val = argv[++i];
        } else if (dg_str_has_prefix(s, "--from=") || dg_str_has_prefix(s, "--dags=")) {
            opt = s[2] == 'f' ? "--from" : "--dags";
            val = strchr(s, '=') + 1;
        } else if (dg_str_has_prefix(s, "-n") && s[2]) {
            opt = "-n";
            val = s + 2;
        } else if (s[0] == '-' && s[1]) {
            fprintf(stderr, "dagd next: unknown option %s\n%s", s, next_usage);
            return -EINVAL;
        } else if (a->what) {
            fprintf(stderr, "dagd next: one DAG at a time ('%s' and '%s')\n%s", a->what, s,
                    next_usage);
            return -EINVAL;
        } else {
            a->what = s;
            continue;
        }
        if (strcmp(opt, "-n") == 0) {
            if (parse_count(val, &a->n) < 0) {
                fprintf(stderr, "dagd next: -n wants a count from 1 to %d, not '%s'\n", MAX_N,
                        val);
                return -EINVAL;
            }
        } else if (strcmp(opt, "--from") == 0) {
            a->from = val;
        } else {
            a->dags = val;
        }
    }
    if (!a->what) {
        fprintf(stderr, "dagd next: which DAG?\n%s", next_usage);
        return -EINVAL;
    }
    return 0;
}

static void add_time(json_t *o, const char *key, int64_t ms) {
    _cleanup_free_ char *s = dg_format_time(ms, true);
    json_object_set_new(o, key, json_string(s));
}

int dg__cli_next(int argc, char **argv) {
    next_args a;
    int r = parse_next_args(argc, argv, &a);
    if (r != 0) return r > 0 ? 0 : EXIT_USAGE;

    int64_t from = dg_now_ms();
    if (a.from && strcmp(a.from, "now") != 0 && dg_parse_time(a.from, &from) < 0) {
        fprintf(stderr, "dagd next: bad --from '%s' (use a date like 2025-01-01 or an RFC 3339 "
                        "time)\n", a.from);
        return EXIT_USAGE;
    }

    dg_dag *dag = NULL;
    if (dg__cli_load_dag(a.what, a.dags, NULL, &dag) < 0) return EXIT_USAGE;

    json_t *list = a.json ? json_array() : NULL;
    int rc = 0;
    dg_schedule s = {0};
    dg_error err = {0};
    if (!dag->schedule) {
        fprintf(stderr, "dagd next: %s has no schedule (manual runs only)\n", dag->dag_id);
    } else if (!dag->has_start_date) {
        fprintf(stderr, "dagd next: %s: a schedule needs a start_date\n", dag->dag_id);
        rc = EXIT_USAGE;
    } else if (dg_schedule_init(&s, dag->schedule, dag->timezone, &err) < 0) {
        fprintf(stderr, "dagd next: %s: %s\n", dag->dag_id, err.msg);
        rc = EXIT_USAGE;
    } else {
        int64_t end = dag->has_end_date ? dag->end_date_ms : 0;
        dg_interval iv, prev;
        int n = 0;
        for (r = dg_schedule_interval_after(&s, dag->start_date_ms, end, from, &iv);
             r == 0 && n < a.n;
             prev = iv, r = dg_schedule_next_interval(&s, dag->start_date_ms, end, &prev, &iv)) {
            n++;
            if (list) {
                json_t *o = json_object();
                add_time(o, "logical_date", iv.start_ms);
                add_time(o, "data_interval_start", iv.start_ms);
                add_time(o, "data_interval_end", iv.end_ms);
                add_time(o, "run_after", iv.end_ms);
                json_array_append_new(list, o);
            } else {
                _cleanup_free_ char *l = dg_format_time(iv.start_ms, true);
                _cleanup_free_ char *c = dg_format_time(iv.end_ms, true);
                printf("%s %s\n", l, c);
            }
        }
        if (n == 0)
            fprintf(stderr, "dagd next: %s has no more scheduled runs\n", dag->dag_id);
    }
    if (list && rc == 0) {
        json_t *doc = json_object();
        json_object_set_new(doc, "dag_id", json_string(dag->dag_id));
        json_object_set(doc, "next", list);
        char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        printf("%s\n", text);
        free(text);
        json_decref(doc);
    }
    json_decref(list);
    dg_error_clear(&err);
    dg_schedule_done(&s);
    dg_dag_free(dag);
    return rc;
}
