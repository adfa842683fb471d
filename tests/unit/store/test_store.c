/* Unit tests for store: the SQLite state database and task log files. Every test works
 * in its own fresh temporary directory, removed afterwards. */
#include <criterion/criterion.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dagd/store.h"

static char tmpdir[64];
static char *state; /* tmpdir/state */

static void setup(void) {
    strcpy(tmpdir, "/tmp/dagd-store-test-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
    state = xasprintf("%s/state", tmpdir);
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    return remove(p);
}

static void teardown(void) {
    nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(state);
    state = NULL;
}

TestSuite(store, .init = setup, .fini = teardown);

static dg_store *open_ok(void) {
    dg_store *st = NULL;
    dg_error err = {0};
    int r = dg_store_open(state, &st, &err);
    cr_assert_eq(r, 0, "open: %d %s", r, err.msg ? err.msg : "");
    cr_assert_not_null(st);
    return st;
}

static void put_run(dg_store *st, const char *dag, const char *run, int64_t logical) {
    dg_run_rec r = {.dag_id = (char *)dag, .run_id = (char *)run, .run_type = "scheduled",
                    .state = "queued", .logical_ms = logical, .conf_json = "{\"k\":1}"};
    cr_assert_eq(dg_store_put_run(st, &r), 0, "%s", dg_store_errmsg(st));
}

static void put_ti(dg_store *st, const char *dag, const char *run, const char *task,
                   const char *state_) {
    dg_ti_rec t = {.dag_id = (char *)dag, .run_id = (char *)run, .task_id = (char *)task,
                   .state = (char *)state_, .try_number = 1, .max_tries = 3};
    cr_assert_eq(dg_store_put_ti(st, &t), 0, "%s", dg_store_errmsg(st));
}

/* A second, plain connection to look at what the store wrote. */
static sqlite3 *raw_db(void) {
    _cleanup_free_ char *path = xasprintf("%s/dagd.db", state);
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    return db;
}

static char *raw_text(sqlite3 *db, const char *sql) {
    sqlite3_stmt *s = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
    const unsigned char *t = sqlite3_column_text(s, 0);
    char *r = xstrdup(t ? (const char *)t : "NULL");
    sqlite3_finalize(s);
    return r;
}

Test(store, open_creates_dir_and_db) {
    free(state);
    state = xasprintf("%s/a/b/state", tmpdir);
    dg_store *st = open_ok();
    cr_assert_str_eq(dg_store_dir(st), state);
    struct stat sb;
    cr_assert_eq(stat(state, &sb), 0);
    cr_assert(S_ISDIR(sb.st_mode));
    cr_assert_eq(sb.st_mode & 0777, 0700);
    _cleanup_free_ char *db = xasprintf("%s/dagd.db", state);
    cr_assert_eq(stat(db, &sb), 0);
    cr_assert_str_eq(dg_store_errmsg(st), "");
    dg_store_close(st);
    dg_store_close(NULL);
}

Test(store, open_refuses_bad_dir) {
    dg_store *st = NULL;
    dg_error err = {0};
    cr_assert_eq(dg_store_open(NULL, &st, &err), -EINVAL);
    cr_assert_not_null(err.msg);
    dg_error_clear(&err);

    /* The state dir path is a regular file. */
    FILE *f = fopen(state, "w");
    cr_assert_not_null(f);
    fclose(f);
    cr_assert_lt(dg_store_open(state, &st, &err), 0);
    cr_assert_null(st);
    cr_assert_not_null(strstr(err.msg, state), "%s", err.msg);
    dg_error_clear(&err);
}

Test(store, reopen_keeps_data) {
    dg_store *st = open_ok();
    put_run(st, "d", "r1", 1000);
    put_ti(st, "d", "r1", "t", "success");
    dg_store_close(st);

    st = open_ok();
    dg_run_rec *r = NULL;
    cr_assert_eq(dg_store_get_run(st, "d", "r1", &r), 0);
    cr_assert_str_eq(r->state, "queued");
    cr_assert_eq(r->logical_ms, 1000);
    cr_assert_str_eq(r->conf_json, "{\"k\":1}");
    dg_run_rec_free(r);
    dg_ti_rec *t = NULL;
    cr_assert_eq(dg_store_get_ti(st, "d", "r1", "t", &t), 0);
    cr_assert_str_eq(t->state, "success");
    cr_assert_eq(t->max_tries, 3);
    dg_ti_rec_free(t);
    dg_store_close(st);
}

Test(store, wal_mode_and_schema_version) {
    dg_store *st = open_ok();
    sqlite3 *db = raw_db();
    _cleanup_free_ char *mode = raw_text(db, "PRAGMA journal_mode");
    cr_assert_str_eq(mode, "wal");
    _cleanup_free_ char *ver = raw_text(db, "PRAGMA user_version");
    _cleanup_free_ char *want = xasprintf("%d", DG_STORE_SCHEMA_VERSION);
    cr_assert_str_eq(ver, want);
    _cleanup_free_ char *tables = raw_text(
        db, "SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_master "
            "WHERE type='table' ORDER BY name)");
    cr_assert_str_eq(tables, "dag_runs,dags,task_instances,task_tries");
    sqlite3_close(db);
    dg_store_close(st);
}

Test(store, newer_schema_refused) {
    dg_store_close(open_ok());
    sqlite3 *db = raw_db();
    cr_assert_eq(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    dg_store *st = NULL;
    dg_error err = {0};
    cr_assert_eq(dg_store_open(state, &st, &err), -EPROTO);
    cr_assert_null(st);
    cr_assert_eq(err.code, -EPROTO);
    cr_assert_not_null(strstr(err.msg, "99"), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, "newer"), "%s", err.msg);
    dg_error_clear(&err);
}

Test(store, garbage_file_refused) {
    cr_assert_eq(dg_mkdir_p(state, 0700), 0);
    _cleanup_free_ char *path = xasprintf("%s/dagd.db", state);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < 200; i++) fputs("this is not a database at all\n", f);
    fclose(f);

    dg_store *st = NULL;
    dg_error err = {0};
    int r = dg_store_open(state, &st, &err);
    cr_assert_lt(r, 0);
    cr_assert_null(st);
    cr_assert_eq(err.code, r);
    cr_assert_not_null(strstr(err.msg, "not a dagd state database"), "%s", err.msg);
    dg_error_clear(&err);
}

/* A page in the middle of the file overwritten: refused at open (docs/operations.md, "A
 * damaged database"), although the header page and the schema still read. */
Test(store, damaged_middle_page_refused) {
    dg_store *st = open_ok();
    char run[32];
    for (int i = 0; i < 1500; i++) {
        snprintf(run, sizeof run, "r%05d", i);
        put_run(st, "d", run, i);
    }
    dg_store_close(st);
    sqlite3 *db = raw_db();
    cr_assert_eq(sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    _cleanup_free_ char *path = xasprintf("%s/dagd.db", state);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    long pages = (long)(sb.st_size / 4096);
    cr_assert_gt(pages, 10, "%ld pages", pages);
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f);
    cr_assert_eq(fseek(f, (pages / 2) * 4096L, SEEK_SET), 0);
    for (int i = 0; i < 4096; i++) fputc((i * 131 + 7) & 0xff, f);
    fclose(f);

    dg_error err = {0};
    st = NULL;
    int r = dg_store_open(state, &st, &err);
    cr_assert_eq(r, -EBADMSG, "%d %s", r, err.msg ? err.msg : "");
    cr_assert_null(st);
    cr_assert_not_null(strstr(err.msg, path), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, "is damaged"), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, "restore a backup"), "%s", err.msg);
    dg_error_clear(&err);
}

Test(store, upserts_update) {
    dg_store *st = open_ok();
    put_run(st, "d", "r", 5);
    dg_run_rec r = {.dag_id = "d", .run_id = "r", .run_type = "manual", .state = "success",
                    .logical_ms = 5, .start_ms = 10, .end_ms = 20, .conf_json = "{}"};
    cr_assert_eq(dg_store_put_run(st, &r), 0);
    dg_run_rec *got = NULL;
    cr_assert_eq(dg_store_get_run(st, "d", "r", &got), 0);
    cr_assert_str_eq(got->state, "success");
    cr_assert_str_eq(got->run_type, "manual");
    cr_assert_eq(got->start_ms, 10);
    cr_assert_eq(got->end_ms, 20);
    cr_assert_str_eq(got->conf_json, "{}");
    dg_run_rec_free(got);

    put_ti(st, "d", "r", "t", "running");
    dg_ti_rec t = {.dag_id = "d", .run_id = "r", .task_id = "t", .state = "failed",
                   .try_number = 2, .max_tries = 2, .has_exit_code = true, .exit_code = 137,
                   .container_id = "abc", .image = "busybox", .output = "out", .message = "oom"};
    cr_assert_eq(dg_store_put_ti(st, &t), 0);
    dg_ti_rec *gt = NULL;
    cr_assert_eq(dg_store_get_ti(st, "d", "r", "t", &gt), 0);
    cr_assert_str_eq(gt->state, "failed");
    cr_assert_eq(gt->try_number, 2);
    cr_assert(gt->has_exit_code);
    cr_assert_eq(gt->exit_code, 137);
    cr_assert_str_eq(gt->container_id, "abc");
    cr_assert_null(gt->container_name);
    cr_assert_str_eq(gt->image, "busybox");
    cr_assert_str_eq(gt->output, "out");
    cr_assert_str_eq(gt->message, "oom");
    dg_ti_rec_free(gt);

    dg_run_rec **v = NULL;
    size_t n = 0, total = 0;
    cr_assert_eq(dg_store_list_runs(st, "d", 0, 0, &v, &n, &total), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(total, 1);
    dg_run_recs_free(v, n);
    dg_store_close(st);
}

Test(store, null_fields_roundtrip) {
    dg_store *st = open_ok();
    dg_run_rec r = {.dag_id = "d", .run_id = "r"};
    cr_assert_eq(dg_store_put_run(st, &r), 0, "%s", dg_store_errmsg(st));
    dg_run_rec *gr = NULL;
    cr_assert_eq(dg_store_get_run(st, "d", "r", &gr), 0);
    cr_assert_null(gr->run_type);
    cr_assert_null(gr->state);
    cr_assert_eq(gr->logical_ms, 0);
    cr_assert_eq(gr->interval_start_ms, 0);
    cr_assert_eq(gr->interval_end_ms, 0);
    cr_assert_eq(gr->start_ms, 0);
    cr_assert_eq(gr->end_ms, 0);
    cr_assert_str_eq(gr->conf_json, "{}");
    dg_run_rec_free(gr);

    dg_ti_rec t = {.dag_id = "d", .run_id = "r", .task_id = "t"};
    cr_assert_eq(dg_store_put_ti(st, &t), 0);
    dg_ti_rec *gt = NULL;
    cr_assert_eq(dg_store_get_ti(st, "d", "r", "t", &gt), 0);
    cr_assert_null(gt->state);
    cr_assert_null(gt->container_id);
    cr_assert_null(gt->container_name);
    cr_assert_null(gt->image);
    cr_assert_null(gt->output);
    cr_assert_null(gt->message);
    cr_assert_not(gt->has_exit_code);
    cr_assert_eq(gt->start_ms, 0);
    dg_ti_rec_free(gt);

    /* Exit code 0 is a real exit code, not "none". */
    t.has_exit_code = true;
    t.exit_code = 0;
    cr_assert_eq(dg_store_put_ti(st, &t), 0);
    cr_assert_eq(dg_store_get_ti(st, "d", "r", "t", &gt), 0);
    cr_assert(gt->has_exit_code);
    cr_assert_eq(gt->exit_code, 0);
    dg_ti_rec_free(gt);

    dg_try_rec y = {.dag_id = "d", .run_id = "r", .task_id = "t", .try_number = 1};
    cr_assert_eq(dg_store_put_try(st, &y), 0);
    dg_try_rec **ys = NULL;
    size_t n = 0;
    cr_assert_eq(dg_store_list_tries(st, "d", "r", "t", &ys, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_null(ys[0]->state);
    cr_assert_null(ys[0]->message);
    cr_assert_not(ys[0]->has_exit_code);
    cr_assert_eq(ys[0]->running_ms, 0);
    dg_try_recs_free(ys, n);

    /* running_ms, once known, is kept by a later put that does not know it (a try
     * re-adopted after a restart) */
    y.running_ms = 1700000000123;
    cr_assert_eq(dg_store_put_try(st, &y), 0);
    y.running_ms = 0;
    y.state = "success";
    cr_assert_eq(dg_store_put_try(st, &y), 0);
    cr_assert_eq(dg_store_list_tries(st, "d", "r", "t", &ys, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(ys[0]->state, "success");
    cr_assert_eq(ys[0]->running_ms, 1700000000123);
    dg_try_recs_free(ys, n);
    y.state = NULL;

    /* Unset times and exit codes are SQL NULLs, not zeros. */
    sqlite3 *db = raw_db();
    _cleanup_free_ char *a = raw_text(db, "SELECT quote(start_ms) || quote(logical_ms) "
                                          "|| quote(run_type) FROM dag_runs");
    cr_assert_str_eq(a, "NULLNULLNULL");
    _cleanup_free_ char *b = raw_text(db, "SELECT quote(exit_code) FROM task_tries");
    cr_assert_str_eq(b, "NULL");
    _cleanup_free_ char *c = raw_text(db, "SELECT quote(exit_code) FROM task_instances");
    cr_assert_str_eq(c, "0");
    sqlite3_close(db);
    dg_store_close(st);
}

Test(store, bad_puts_and_missing_gets) {
    dg_store *st = open_ok();
    dg_run_rec r = {.run_id = "r"};
    cr_assert_eq(dg_store_put_run(st, &r), -EINVAL);
    cr_assert_neq(strcmp(dg_store_errmsg(st), ""), 0);
    cr_assert_eq(dg_store_put_run(st, NULL), -EINVAL);

    /* A ti needs its run; a try needs its ti. */
    dg_ti_rec t = {.dag_id = "d", .run_id = "nope", .task_id = "t"};
    cr_assert_eq(dg_store_put_ti(st, &t), -ENOENT);
    put_run(st, "d", "r", 1);
    dg_try_rec y = {.dag_id = "d", .run_id = "r", .task_id = "t", .try_number = 1};
    cr_assert_eq(dg_store_put_try(st, &y), -ENOENT);

    dg_run_rec *gr = (dg_run_rec *)0x1;
    cr_assert_eq(dg_store_get_run(st, "d", "missing", &gr), -ENOENT);
    cr_assert_eq(gr, (dg_run_rec *)0x1);
    dg_ti_rec *gt = NULL;
    cr_assert_eq(dg_store_get_ti(st, "d", "r", "missing", &gt), -ENOENT);
    cr_assert_null(gt);

    dg_ti_rec **tv = (dg_ti_rec **)0x1;
    size_t n = 99;
    cr_assert_eq(dg_store_list_tis(st, "d", "r", &tv, &n), 0);
    cr_assert_eq(n, 0);
    cr_assert_null(tv);
    dg_store_close(st);
}

Test(store, list_runs_order_pagination_total) {
    dg_store *st = open_ok();
    /* Inserted out of order; two share a logical date and sort by run_id, descending. */
    put_run(st, "d", "r30", 30);
    put_run(st, "d", "r10", 10);
    put_run(st, "d", "r50", 50);
    put_run(st, "d", "r20b", 20);
    put_run(st, "d", "r40", 40);
    put_run(st, "d", "r20a", 20);
    put_run(st, "other", "x", 100);
    const char *want[] = {"r50", "r40", "r30", "r20b", "r20a", "r10"};

    dg_run_rec **v = NULL;
    size_t n = 0, total = 0;
    cr_assert_eq(dg_store_list_runs(st, "d", 0, 0, &v, &n, &total), 0);
    cr_assert_eq(n, 6);
    cr_assert_eq(total, 6);
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_eq(v[i]->run_id, want[i], "at %zu", i);
        cr_assert_str_eq(v[i]->dag_id, "d");
    }
    dg_run_recs_free(v, n);

    cr_assert_eq(dg_store_list_runs(st, "d", 2, 1, &v, &n, &total), 0);
    cr_assert_eq(n, 2);
    cr_assert_eq(total, 6);
    cr_assert_str_eq(v[0]->run_id, "r40");
    cr_assert_str_eq(v[1]->run_id, "r30");
    dg_run_recs_free(v, n);

    cr_assert_eq(dg_store_list_runs(st, "d", 4, 4, &v, &n, &total), 0);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(v[0]->run_id, "r20a");
    cr_assert_str_eq(v[1]->run_id, "r10");
    dg_run_recs_free(v, n);

    cr_assert_eq(dg_store_list_runs(st, "d", 10, 100, &v, &n, &total), 0);
    cr_assert_eq(n, 0);
    cr_assert_eq(total, 6);
    dg_run_recs_free(v, n);

    cr_assert_eq(dg_store_list_runs(st, "none", 10, 0, &v, &n, &total), 0);
    cr_assert_eq(n, 0);
    cr_assert_eq(total, 0);

    cr_assert_eq(dg_store_list_runs(st, NULL, 2, 0, &v, &n, &total), 0);
    cr_assert_eq(total, 7);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(v[0]->dag_id, "other");
    cr_assert_str_eq(v[1]->run_id, "r50");
    dg_run_recs_free(v, n);
    dg_store_close(st);
}

Test(store, list_tis_insertion_order) {
    dg_store *st = open_ok();
    put_run(st, "d", "r", 1);
    put_run(st, "d", "r2", 2);
    put_ti(st, "d", "r", "c", "none");
    put_ti(st, "d", "r2", "z", "none");
    put_ti(st, "d", "r", "a", "none");
    put_ti(st, "d", "r", "b", "none");
    put_ti(st, "d", "r", "a", "success"); /* an update keeps its place */

    dg_ti_rec **v = NULL;
    size_t n = 0;
    cr_assert_eq(dg_store_list_tis(st, "d", "r", &v, &n), 0);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(v[0]->task_id, "c");
    cr_assert_str_eq(v[1]->task_id, "a");
    cr_assert_str_eq(v[1]->state, "success");
    cr_assert_str_eq(v[2]->task_id, "b");
    dg_ti_recs_free(v, n);
    dg_store_close(st);
}

Test(store, prev_run) {
    dg_store *st = open_ok();
    put_run(st, "d", "a", 10);
    put_run(st, "d", "c", 30);
    put_run(st, "d", "b", 20);
    put_run(st, "other", "z", 25);
    dg_run_rec *r = NULL;
    cr_assert_eq(dg_store_prev_run(st, "d", 30, &r), 0);
    cr_assert_str_eq(r->run_id, "b");
    dg_run_rec_free(r);
    cr_assert_eq(dg_store_prev_run(st, "d", 25, &r), 0);
    cr_assert_str_eq(r->run_id, "b");
    dg_run_rec_free(r);
    cr_assert_eq(dg_store_prev_run(st, "d", 20, &r), 0);
    cr_assert_str_eq(r->run_id, "a");
    dg_run_rec_free(r);
    r = NULL;
    cr_assert_eq(dg_store_prev_run(st, "d", 10, &r), -ENOENT);
    cr_assert_null(r);
    dg_store_close(st);
}

Test(store, tries) {
    dg_store *st = open_ok();
    put_run(st, "d", "r", 1);
    put_ti(st, "d", "r", "t", "running");
    for (int i = 3; i >= 1; i--) {
        dg_try_rec y = {.dag_id = "d", .run_id = "r", .task_id = "t", .try_number = i,
                        .state = "failed", .start_ms = 100 * i, .end_ms = 100 * i + 50,
                        .has_exit_code = true, .exit_code = i, .container_id = "cid",
                        .container_name = "cname", .message = "boom"};
        cr_assert_eq(dg_store_put_try(st, &y), 0, "%s", dg_store_errmsg(st));
    }
    dg_try_rec y = {.dag_id = "d", .run_id = "r", .task_id = "t", .try_number = 2,
                    .state = "up_for_retry", .start_ms = 7};
    cr_assert_eq(dg_store_put_try(st, &y), 0);

    dg_try_rec **v = NULL;
    size_t n = 0;
    cr_assert_eq(dg_store_list_tries(st, "d", "r", "t", &v, &n), 0);
    cr_assert_eq(n, 3);
    for (size_t i = 0; i < n; i++) cr_assert_eq(v[i]->try_number, (int)i + 1);
    cr_assert_str_eq(v[0]->state, "failed");
    cr_assert_eq(v[0]->start_ms, 100);
    cr_assert_eq(v[0]->end_ms, 150);
    cr_assert_eq(v[0]->exit_code, 1);
    cr_assert_str_eq(v[0]->container_name, "cname");
    cr_assert_str_eq(v[0]->message, "boom");
    cr_assert_str_eq(v[1]->state, "up_for_retry");
    cr_assert_eq(v[1]->start_ms, 7);
    cr_assert_not(v[1]->has_exit_code);
    cr_assert_null(v[1]->container_id);
    cr_assert_eq(v[2]->exit_code, 3);
    dg_try_recs_free(v, n);

    cr_assert_eq(dg_store_list_tries(st, "d", "r", "other", &v, &n), 0);
    cr_assert_eq(n, 0);
    dg_store_close(st);
}

Test(store, two_connections_share_state) {
    dg_store *a = open_ok();
    dg_store *b = open_ok();
    put_run(a, "d", "r", 1);
    dg_run_rec *r = NULL;
    cr_assert_eq(dg_store_get_run(b, "d", "r", &r), 0);
    dg_run_rec_free(r);
    dg_store_close(a);
    dg_store_close(b);
}

Test(store, kill9_keeps_finished_state) {
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        dg_store *st = NULL;
        if (dg_store_open(state, &st, NULL) < 0) _exit(2);
        dg_run_rec r = {.dag_id = "d", .run_id = "manual__2025-01-01T00:00:00+00:00",
                        .state = "success", .logical_ms = 1735689600000};
        dg_ti_rec t = {.dag_id = "d", .run_id = r.run_id, .task_id = "t", .state = "success",
                       .try_number = 1, .has_exit_code = true, .exit_code = 0};
        if (dg_store_put_run(st, &r) < 0 || dg_store_put_ti(st, &t) < 0) _exit(3);
        kill(getpid(), SIGKILL);
        _exit(4);
    }
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFSIGNALED(status), "child status %d", status);
    cr_assert_eq(WTERMSIG(status), SIGKILL);

    dg_store *st = open_ok();
    dg_ti_rec *t = NULL;
    cr_assert_eq(dg_store_get_ti(st, "d", "manual__2025-01-01T00:00:00+00:00", "t", &t), 0);
    cr_assert_str_eq(t->state, "success");
    cr_assert(t->has_exit_code);
    cr_assert_eq(t->exit_code, 0);
    dg_ti_rec_free(t);
    dg_run_rec *r = NULL;
    cr_assert_eq(dg_store_get_run(st, "d", "manual__2025-01-01T00:00:00+00:00", &r), 0);
    cr_assert_str_eq(r->state, "success");
    cr_assert_eq(r->logical_ms, 1735689600000);
    dg_run_rec_free(r);
    dg_store_close(st);
}

Test(store, log_path) {
    _cleanup_free_ char *p =
        dg_store_log_path("/s", "etl", "scheduled__2025-01-01T00:00:00+00:00", "load", 2);
    cr_assert_str_eq(p, "/s/logs/etl/scheduled__2025-01-01T00:00:00+00:00/load/2.log");
    _cleanup_free_ char *q = dg_store_log_path("/s", "..", ".", "a/b", 1);
    cr_assert_str_eq(q, "/s/logs/%2E%2E/%2E/a%2Fb/1.log");
    _cleanup_free_ char *w = dg_store_log_path("/s", "50%", "...", "", 10);
    cr_assert_str_eq(w, "/s/logs/50%25/.../%00/10.log");
    /* "a%2Fb" and "a/b" must not share a file. */
    _cleanup_free_ char *x = dg_store_log_path("/s", "d", "r", "a%2Fb", 1);
    cr_assert_str_eq(x, "/s/logs/d/r/a%252Fb/1.log");
    cr_assert_null(dg_store_log_path(NULL, "d", "r", "t", 1));
}

static char *expected_line(int i) {
    return xasprintf("line %d %s", i, i % 7 == 0 ? "" : "with some text: \"quoted\" \t tab");
}

Test(store, tasklog_writes_and_appends) {
    _cleanup_free_ char *path = dg_store_log_path(state, "d", "manual__x+00:00", "t", 1);
    dg_tasklog *l = NULL;
    cr_assert_eq(dg_tasklog_open(path, &l), 0);
    for (int i = 0; i < 20000; i++) {
        _cleanup_free_ char *s = expected_line(i);
        dg_tasklog_line(l, i % 2 ? 2 : 1, s, strlen(s));
    }
    dg_tasklog_close(l);

    cr_assert_eq(dg_tasklog_open(path, &l), 0);
    dg_tasklog_line(l, 1, "tail", 4);
    dg_tasklog_line(l, 1, "partial-not-this", 7);
    dg_tasklog_line(l, 2, NULL, 0);
    dg_tasklog_close(l);

    dg_buf want = {0};
    for (int i = 0; i < 20000; i++) {
        _cleanup_free_ char *s = expected_line(i);
        dg_buf_printf(&want, "%s\n", s);
    }
    dg_buf_puts(&want, "tail\npartial\n\n");
    char *got = NULL;
    size_t len = 0;
    cr_assert_eq(dg_read_file(path, &got, &len), 0);
    cr_assert_eq(len, want.len);
    cr_assert(memcmp(got, want.data, len) == 0);
    free(got);
    dg_buf_free(&want);

    struct stat sb;
    _cleanup_free_ char *dir = xasprintf("%s/logs/d/manual__x+00:00/t", state);
    cr_assert_eq(stat(dir, &sb), 0);
    mode_t mask = umask(0);
    umask(mask);
    cr_assert_eq(sb.st_mode & 0777, 0750 & ~mask);
}

Test(store, tasklog_read_streams_tells_stdout_from_stderr) {
    _cleanup_free_ char *path = xasprintf("%s/streams/1.log", tmpdir);
    dg_tasklog *l = NULL;
    cr_assert_eq(dg_tasklog_open(path, &l), 0);
    dg_tasklog_line(l, 1, "out one", 7);
    dg_tasklog_line(l, 2, "err\tone", 7);
    dg_tasklog_line(l, 2, NULL, 0);
    dg_tasklog_line(l, 1, "out two", 7);
    cr_assert_eq(dg_tasklog_flush(l), 0);
    char *got = NULL;
    size_t len = 0;
    cr_assert_eq(dg_tasklog_read_streams(path, &got, &len), 0);
    cr_assert_str_eq(got, "stdout\tout one\nstderr\terr\tone\nstderr\t\nstdout\tout two\n");
    cr_assert_eq(len, strlen(got));
    free(got);
    dg_tasklog_close(l);
    /* the plain log is unchanged; a log without its streams file says it does not know */
    cr_assert_eq(dg_read_file(path, &got, &len), 0);
    cr_assert_str_eq(got, "out one\nerr\tone\n\nout two\n");
    free(got);
    _cleanup_free_ char *sp = xasprintf("%s/streams/1.streams", tmpdir);
    cr_assert_eq(unlink(sp), 0);
    cr_assert_eq(dg_tasklog_read_streams(path, &got, &len), 0);
    cr_assert_str_eq(got, "-\tout one\n-\terr\tone\n-\t\n-\tout two\n");
    free(got);
    _cleanup_free_ char *none = xasprintf("%s/streams/2.log", tmpdir);
    cr_assert_eq(dg_tasklog_read_streams(none, &got, &len), -ENOENT);
}

Test(store, tasklog_flush_and_null) {
    _cleanup_free_ char *path = xasprintf("%s/one.log", tmpdir);
    dg_tasklog *l = NULL;
    cr_assert_eq(dg_tasklog_open(path, &l), 0);
    dg_tasklog_line(l, 1, "hello", 5);
    cr_assert_eq(dg_tasklog_flush(l), 0);
    char *got = NULL;
    size_t len = 0;
    cr_assert_eq(dg_read_file(path, &got, &len), 0);
    cr_assert_str_eq(got, "hello\n");
    free(got);
    dg_tasklog_close(l);

    dg_tasklog_line(NULL, 1, "x", 1);
    cr_assert_eq(dg_tasklog_flush(NULL), 0);
    dg_tasklog_close(NULL);
    cr_assert_eq(dg_tasklog_open(NULL, &l), -EINVAL);
    _cleanup_free_ char *bad = xasprintf("%s/one.log/sub/x.log", tmpdir);
    cr_assert_lt(dg_tasklog_open(bad, &l), 0);
}

/* One run per logical date: the run at a date, whatever its type, or -ENOENT. */
Test(store, run_at) {
    dg_store *st = open_ok();
    put_run(st, "d", "scheduled__a", 10);
    put_run(st, "d", "b", 20);
    put_run(st, "other", "z", 30);
    dg_run_rec *r = NULL;
    cr_assert_eq(dg_store_run_at(st, "d", 10, &r), 0);
    cr_assert_str_eq(r->run_id, "scheduled__a");
    cr_assert_str_eq(r->conf_json, "{\"k\":1}");
    dg_run_rec_free(r);
    r = NULL;
    cr_assert_eq(dg_store_run_at(st, "d", 11, &r), -ENOENT);
    cr_assert_eq(dg_store_run_at(st, "d", 30, &r), -ENOENT);
    cr_assert_null(r);
    /* two runs at one date (a state from before the rule): the first by run id */
    put_run(st, "d", "backfill__a", 10);
    cr_assert_eq(dg_store_run_at(st, "d", 10, &r), 0);
    cr_assert_str_eq(r->run_id, "backfill__a");
    dg_run_rec_free(r);
    dg_store_close(st);
}

Test(store, daemon_queries) {
    dg_store *st = open_ok();
    bool paused = true;
    cr_assert_eq(dg_store_get_dag(st, "d", &paused), -ENOENT);
    cr_assert_eq(dg_store_put_dag(st, "d", true, "/dags/d.yml", 5), 0);
    cr_assert_eq(dg_store_get_dag(st, "d", &paused), 0);
    cr_assert(paused);
    cr_assert_eq(dg_store_put_dag(st, "d", false, "/dags/d2.yml", 6), 0);
    cr_assert_eq(dg_store_get_dag(st, "d", &paused), 0);
    cr_assert_not(paused);

    put_run(st, "d", "a", 10);
    put_run(st, "d", "b", 20);
    dg_run_rec r = {.dag_id = "d", .run_id = "s1", .run_type = "scheduled", .state = "success", .logical_ms = 5};
    cr_assert_eq(dg_store_put_run(st, &r), 0);
    r.run_id = "s2", r.logical_ms = 25, r.state = "running";
    cr_assert_eq(dg_store_put_run(st, &r), 0);
    dg_run_rec *last = NULL;
    cr_assert_eq(dg_store_last_run(st, "d", "scheduled", &last), 0);
    cr_assert_str_eq(last->run_id, "s2");
    dg_run_rec_free(last);
    cr_assert_eq(dg_store_last_run(st, "d", "backfill", &last), -ENOENT);

    dg_run_rec **v = NULL;
    size_t n = 0;
    cr_assert_eq(dg_store_unfinished_runs(st, &v, &n), 0);
    size_t running = 0;
    for (size_t i = 0; i < n; i++) running += !strcmp(v[i]->state, "running") || !strcmp(v[i]->state, "queued");
    cr_assert_eq(running, n, "only unfinished runs");
    cr_assert_geq(n, 1);
    dg_run_recs_free(v, n);

    char **states = NULL;
    int64_t *counts = NULL;
    cr_assert_eq(dg_store_count_states(st, false, &states, &counts, &n), 0);
    int64_t total = 0;
    for (size_t i = 0; i < n; i++) total += counts[i];
    cr_assert_eq(total, 4);
    dg_strv_free(states);
    free(counts);
    dg_store_close(st);
}

/* The image a try ran (schema 4): kept per try, a put without it keeps the stored one, a
 * copy carries it, and an instance reads its current try's. */
Test(store, try_image) {
    dg_store *st = open_ok();
    put_run(st, "d", "r", 1);
    put_ti(st, "d", "r", "t", "running");
    dg_try_rec y = {.dag_id = "d", .run_id = "r", .task_id = "t", .try_number = 1, .state = "running",
                    .image_id = "sha256:1111", .image_digest = "reg/x@sha256:2222"};
    cr_assert_eq(dg_store_put_try(st, &y), 0, "%s", dg_store_errmsg(st));
    dg_try_rec later = {.dag_id = "d", .run_id = "r", .task_id = "t", .try_number = 1, .state = "success"};
    cr_assert_eq(dg_store_put_try(st, &later), 0, "%s", dg_store_errmsg(st));
    dg_try_rec two = {.dag_id = "d", .run_id = "r", .task_id = "t", .try_number = 2, .state = "running",
                      .image_id = "sha256:3333"};
    cr_assert_eq(dg_store_put_try(st, &two), 0, "%s", dg_store_errmsg(st));

    dg_try_rec **v = NULL;
    size_t n = 0;
    cr_assert_eq(dg_store_list_tries(st, "d", "r", "t", &v, &n), 0);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(v[0]->state, "success");
    cr_assert_str_eq(v[0]->image_id, "sha256:1111");
    cr_assert_str_eq(v[0]->image_digest, "reg/x@sha256:2222");
    cr_assert_str_eq(v[1]->image_id, "sha256:3333");
    cr_assert_null(v[1]->image_digest);
    dg_try_rec *c = dg_try_rec_dup(v[0]);
    cr_assert(c->image_id != v[0]->image_id && c->image_digest != v[0]->image_digest);
    cr_assert_str_eq(c->image_id, "sha256:1111");
    cr_assert_str_eq(c->image_digest, "reg/x@sha256:2222");
    dg_try_rec_free(c);
    dg_try_recs_free(v, n);

    /* the instance is on try 1 (put_ti): that try's image; on try 2: the second's */
    dg_ti_rec *ti = NULL;
    cr_assert_eq(dg_store_get_ti(st, "d", "r", "t", &ti), 0);
    cr_assert_str_eq(ti->image_id, "sha256:1111");
    cr_assert_str_eq(ti->image_digest, "reg/x@sha256:2222");
    dg_ti_rec_free(ti);
    dg_ti_rec t2 = {.dag_id = "d", .run_id = "r", .task_id = "t", .state = "running", .try_number = 2,
                    .max_tries = 3, .image_id = "ignored"};
    cr_assert_eq(dg_store_put_ti(st, &t2), 0, "%s", dg_store_errmsg(st));
    dg_ti_rec **tv = NULL;
    cr_assert_eq(dg_store_list_tis(st, "d", "r", &tv, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(tv[0]->image_id, "sha256:3333");
    cr_assert_null(tv[0]->image_digest);
    dg_ti_recs_free(tv, n);
    /* an instance whose try has no record yet */
    put_ti(st, "d", "r", "u", "queued");
    cr_assert_eq(dg_store_get_ti(st, "d", "r", "u", &ti), 0);
    cr_assert_null(ti->image_id);
    cr_assert_null(ti->image_digest);
    dg_ti_rec_free(ti);
    dg_store_close(st);
}

/* A database of schema 3 (task_tries without the image columns) migrates on open: its
 * tries read back with no image, and new tries keep theirs. */
Test(store, migrates_schema_3) {
    dg_store *st = open_ok();
    put_run(st, "d", "r", 1);
    put_ti(st, "d", "r", "t", "success");
    dg_try_rec y = {.dag_id = "d", .run_id = "r", .task_id = "t", .try_number = 1, .state = "success",
                    .container_name = "old", .running_ms = 5};
    cr_assert_eq(dg_store_put_try(st, &y), 0, "%s", dg_store_errmsg(st));
    dg_store_close(st);

    /* back to what schema 3 was: version 3, task_tries without the two columns */
    sqlite3 *db = raw_db();
    cr_assert_eq(sqlite3_exec(db,
                              "ALTER TABLE task_tries DROP COLUMN image_id;"
                              "ALTER TABLE task_tries DROP COLUMN image_digest;"
                              "PRAGMA user_version = 3;",
                              NULL, NULL, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    _cleanup_free_ char *cols = raw_text(db, "SELECT group_concat(name) FROM pragma_table_info('task_tries')");
    cr_assert_null(strstr(cols, "image"), "%s", cols);
    sqlite3_close(db);

    st = open_ok();
    db = raw_db();
    _cleanup_free_ char *ver = raw_text(db, "PRAGMA user_version");
    cr_assert_str_eq(ver, "4");
    sqlite3_close(db);
    dg_try_rec **v = NULL;
    size_t n = 0;
    cr_assert_eq(dg_store_list_tries(st, "d", "r", "t", &v, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(v[0]->container_name, "old");
    cr_assert_eq(v[0]->running_ms, 5);
    cr_assert_null(v[0]->image_id);
    cr_assert_null(v[0]->image_digest);
    dg_try_recs_free(v, n);
    dg_try_rec z = {.dag_id = "d", .run_id = "r", .task_id = "t", .try_number = 2, .state = "success",
                    .image_id = "sha256:4444"};
    cr_assert_eq(dg_store_put_try(st, &z), 0, "%s", dg_store_errmsg(st));
    cr_assert_eq(dg_store_list_tries(st, "d", "r", "t", &v, &n), 0);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(v[1]->image_id, "sha256:4444");
    dg_try_recs_free(v, n);
    dg_store_close(st);
}

/* The header dagd writes first is marked 'd' beside the log; its length is what a reader
 * skips, and a log written anew loses its streams file too. */
Test(store, tasklog_header) {
    _cleanup_free_ char *path = xasprintf("%s/logs/d/r/t/1.log", tmpdir);
    _cleanup_free_ char *sp = xasprintf("%s/logs/d/r/t/1.streams", tmpdir);
    dg_tasklog *l = NULL;
    cr_assert_eq(dg_tasklog_open(path, &l), 0);
    cr_assert_eq(dg_tasklog_header_len(path), 0);
    dg_tasklog_line(l, DG_TASKLOG_HEADER, "[dagd] image x (id sha256:1, digest: none)", 42);
    dg_tasklog_line(l, 1, "out", 3);
    dg_tasklog_line(l, 2, "err", 3);
    dg_tasklog_close(l);
    cr_assert_eq(dg_tasklog_header_len(path), 43);
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    cr_assert_eq(dg_tasklog_read_streams(path, &text, &len), 0);
    cr_assert_str_eq(text, "dagd\t[dagd] image x (id sha256:1, digest: none)\nstdout\tout\nstderr\terr\n");
    dg_tasklog_remove(path);
    cr_assert_neq(access(path, F_OK), 0);
    cr_assert_neq(access(sp, F_OK), 0);
    cr_assert_eq(dg_tasklog_open(path, &l), 0);
    dg_tasklog_line(l, 1, "again", 5);
    dg_tasklog_close(l);
    cr_assert_eq(dg_tasklog_header_len(path), 0);
}
