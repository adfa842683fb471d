/* store — the durable state of dagd in one SQLite database, <state_dir>/dagd.db.
 *
 * The store owns the connection and one cached prepared statement per query; records
 * handed in are borrowed for the duration of the call, records handed out belong to
 * the caller.
 *
 * Durability: the database runs in WAL mode with synchronous=NORMAL. A put is its own
 * transaction unless the caller opened one with dg_store_begin (the executor does, for
 * the puts of one loop iteration; docs/daemon.md, Crash recovery); a committed
 * transaction is in the WAL file (the kernel's page cache) before the call returns, so
 * it survives kill -9 of the process. Only a power loss or kernel crash can lose the
 * last transactions; that never corrupts the database.
 *
 * The schema is versioned with PRAGMA user_version; `migrations` lists the steps in
 * order and each runs in its own IMMEDIATE transaction, so two processes opening the
 * same fresh directory cannot both apply a step. A database written by a newer dagd is
 * refused rather than guessed at. */
#include <errno.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/stat.h>

#include "dagd/store.h"

enum {
    ST_PUT_RUN,
    ST_PUT_TI,
    ST_PUT_TRY,
    ST_GET_RUN,
    ST_GET_TI,
    ST_LIST_RUNS,
    ST_LIST_RUNS_ALL,
    ST_COUNT_RUNS,
    ST_COUNT_RUNS_ALL,
    ST_LIST_TIS,
    ST_LIST_TRIES,
    ST_PREV_RUN,
    ST_MAX,
};

struct dg_store {
    sqlite3 *db;
    char *dir;
    char *errmsg;
    sqlite3_stmt *stmt[ST_MAX];
    uint64_t writes;  /* write statements run (docs/daemon.md, Logs and metrics) */
    uint64_t commits; /* transactions committed */
    bool in_tx;       /* a transaction of dg_store_begin is open */
};

#define RUN_COLS                                                                        \
    "dag_id, run_id, run_type, state, logical_ms, interval_start_ms, interval_end_ms, " \
    "start_ms, end_ms, conf_json"
#define TI_COLS                                                                          \
    "dag_id, run_id, task_id, state, try_number, max_tries, start_ms, end_ms, exit_code, " \
    "container_id, container_name, image, output, message"
#define TRY_COLS                                                                        \
    "dag_id, run_id, task_id, try_number, state, start_ms, end_ms, exit_code, "        \
    "container_id, container_name, message, running_ms, rendered_json, image_id, image_digest"
/* Read with an instance: the image its current try ran (kept on the try, TRY_COLS) */
#define TI_IMAGE_OF(col)                                                                              \
    "(SELECT y." col " FROM task_tries y WHERE y.dag_id=task_instances.dag_id AND"                   \
    " y.run_id=task_instances.run_id AND y.task_id=task_instances.task_id AND"                       \
    " y.try_number=task_instances.try_number)"
#define TI_SELECT "SELECT " TI_COLS ", " TI_IMAGE_OF("image_id") ", " TI_IMAGE_OF("image_digest")

static const char *const migrations[] = {
    /* 1 */
    "CREATE TABLE dag_runs ("
    "  dag_id TEXT NOT NULL, run_id TEXT NOT NULL, run_type TEXT, state TEXT,"
    "  logical_ms INTEGER, interval_start_ms INTEGER, interval_end_ms INTEGER,"
    "  start_ms INTEGER, end_ms INTEGER, conf_json TEXT,"
    "  PRIMARY KEY (dag_id, run_id));"
    "CREATE INDEX dag_runs_by_logical ON dag_runs (dag_id, logical_ms, run_id);"
    "CREATE INDEX dag_runs_by_state ON dag_runs (state);"
    "CREATE TABLE task_instances ("
    "  dag_id TEXT NOT NULL, run_id TEXT NOT NULL, task_id TEXT NOT NULL, state TEXT,"
    "  try_number INTEGER NOT NULL DEFAULT 0, max_tries INTEGER NOT NULL DEFAULT 0,"
    "  start_ms INTEGER, end_ms INTEGER, exit_code INTEGER,"
    "  container_id TEXT, container_name TEXT, image TEXT, output TEXT, message TEXT,"
    "  PRIMARY KEY (dag_id, run_id, task_id),"
    "  FOREIGN KEY (dag_id, run_id) REFERENCES dag_runs (dag_id, run_id) ON DELETE CASCADE);"
    "CREATE INDEX task_instances_by_state ON task_instances (state);"
    "CREATE TABLE task_tries ("
    "  dag_id TEXT NOT NULL, run_id TEXT NOT NULL, task_id TEXT NOT NULL,"
    "  try_number INTEGER NOT NULL, state TEXT, start_ms INTEGER, end_ms INTEGER,"
    "  exit_code INTEGER, container_id TEXT, container_name TEXT, message TEXT,"
    "  PRIMARY KEY (dag_id, run_id, task_id, try_number),"
    "  FOREIGN KEY (dag_id, run_id, task_id)"
    "    REFERENCES task_instances (dag_id, run_id, task_id) ON DELETE CASCADE);"
    "CREATE INDEX task_tries_by_state ON task_tries (state);",
    /* 2: what the daemon remembers of each DAG across restarts */
    "CREATE TABLE dags ("
    "  dag_id TEXT PRIMARY KEY NOT NULL, is_paused INTEGER NOT NULL DEFAULT 0,"
    "  file TEXT, first_seen_ms INTEGER);",
    /* 3: when each try's container started running (start_ms is when it was queued) */
    "ALTER TABLE task_tries ADD COLUMN running_ms INTEGER;"
    "ALTER TABLE task_tries ADD COLUMN rendered_json TEXT;",
    /* 4: which image each try ran: the engine's image id and, when it has one, the
     * repository digest (docs/dags.md, "Tries") */
    "ALTER TABLE task_tries ADD COLUMN image_id TEXT;"
    "ALTER TABLE task_tries ADD COLUMN image_digest TEXT;",
};

_Static_assert(ARRAY_SIZE(migrations) == DG_STORE_SCHEMA_VERSION,
               "one migration per schema version");

static const char *const stmt_sql[ST_MAX] = {
    [ST_PUT_RUN] = "INSERT INTO dag_runs (" RUN_COLS ") VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)"
                   " ON CONFLICT (dag_id, run_id) DO UPDATE SET"
                   " run_type=excluded.run_type, state=excluded.state,"
                   " logical_ms=excluded.logical_ms, interval_start_ms=excluded.interval_start_ms,"
                   " interval_end_ms=excluded.interval_end_ms, start_ms=excluded.start_ms,"
                   " end_ms=excluded.end_ms, conf_json=excluded.conf_json",
    [ST_PUT_TI] = "INSERT INTO task_instances (" TI_COLS ")"
                  " VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)"
                  " ON CONFLICT (dag_id, run_id, task_id) DO UPDATE SET"
                  " state=excluded.state, try_number=excluded.try_number,"
                  " max_tries=excluded.max_tries, start_ms=excluded.start_ms,"
                  " end_ms=excluded.end_ms, exit_code=excluded.exit_code,"
                  " container_id=excluded.container_id, container_name=excluded.container_name,"
                  " image=excluded.image, output=excluded.output, message=excluded.message",
    [ST_PUT_TRY] = "INSERT INTO task_tries (" TRY_COLS ")"
                   " VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15)"
                   " ON CONFLICT (dag_id, run_id, task_id, try_number) DO UPDATE SET"
                   " state=excluded.state, start_ms=excluded.start_ms, end_ms=excluded.end_ms,"
                   " exit_code=excluded.exit_code, container_id=excluded.container_id,"
                   " container_name=excluded.container_name, message=excluded.message,"
                   " running_ms=coalesce(excluded.running_ms, running_ms),"
                   " rendered_json=coalesce(excluded.rendered_json, rendered_json),"
                   " image_id=coalesce(excluded.image_id, image_id),"
                   " image_digest=coalesce(excluded.image_digest, image_digest)",
    [ST_GET_RUN] = "SELECT " RUN_COLS " FROM dag_runs WHERE dag_id=?1 AND run_id=?2",
    [ST_GET_TI] = TI_SELECT " FROM task_instances WHERE dag_id=?1 AND run_id=?2 AND task_id=?3",
    [ST_LIST_RUNS] = "SELECT " RUN_COLS " FROM dag_runs WHERE dag_id=?1"
                     " ORDER BY logical_ms DESC, run_id DESC LIMIT ?2 OFFSET ?3",
    [ST_LIST_RUNS_ALL] = "SELECT " RUN_COLS " FROM dag_runs"
                         " ORDER BY logical_ms DESC, run_id DESC, dag_id LIMIT ?1 OFFSET ?2",
    [ST_COUNT_RUNS] = "SELECT count(*) FROM dag_runs WHERE dag_id=?1",
    [ST_COUNT_RUNS_ALL] = "SELECT count(*) FROM dag_runs",
    [ST_LIST_TIS] = TI_SELECT " FROM task_instances WHERE dag_id=?1 AND run_id=?2"
                    " ORDER BY rowid",
    [ST_LIST_TRIES] = "SELECT " TRY_COLS " FROM task_tries"
                      " WHERE dag_id=?1 AND run_id=?2 AND task_id=?3 ORDER BY try_number",
    [ST_PREV_RUN] = "SELECT " RUN_COLS " FROM dag_runs WHERE dag_id=?1 AND logical_ms<?2"
                    " ORDER BY logical_ms DESC, run_id DESC LIMIT 1",
};

static int errno_from_sqlite(int rc) {
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return 0;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_READONLY:
        return -EROFS;
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return -EACCES;
    case SQLITE_CANTOPEN:
        return -ENOENT;
    case SQLITE_CONSTRAINT:
        return rc == SQLITE_CONSTRAINT_FOREIGNKEY ? -ENOENT : -EINVAL;
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
        return -EBADMSG;
    case SQLITE_MISUSE:
    case SQLITE_RANGE:
    case SQLITE_MISMATCH:
    case SQLITE_TOOBIG:
        return -EINVAL;
    default:
        return -EIO;
    }
}

/* Keeps the message of the last failure; sqlite's own buffer is overwritten by the
 * reset that follows every statement. */
static int fail(dg_store *st, int rc) {
    free(st->errmsg);
    st->errmsg = xstrdup(sqlite3_errmsg(st->db));
    return errno_from_sqlite(rc);
}

static int count_commit(void *ud) {
    ((dg_store *)ud)->commits++;
    return 0; /* let it commit */
}

void dg_store_counts(const dg_store *st, uint64_t *ret_writes, uint64_t *ret_commits) {
    *ret_writes = st ? st->writes : 0;
    *ret_commits = st ? st->commits : 0;
}

const char *dg_store_errmsg(const dg_store *st) {
    return st && st->errmsg ? st->errmsg : "";
}

static void stmt_resetp(sqlite3_stmt **s) {
    if (!*s) return;
    sqlite3_reset(*s);
    sqlite3_clear_bindings(*s);
}
#define _cleanup_stmt_ _cleanup_(stmt_resetp)

static int bind_str(sqlite3_stmt *s, int i, const char *v) {
    return v ? sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(s, i);
}

static int bind_ms(sqlite3_stmt *s, int i, int64_t v) {
    return v ? sqlite3_bind_int64(s, i, v) : sqlite3_bind_null(s, i);
}

static int bind_exit(sqlite3_stmt *s, int i, bool has, int code) {
    return has ? sqlite3_bind_int(s, i, code) : sqlite3_bind_null(s, i);
}

static char *col_str(sqlite3_stmt *s, int i) {
    return xstrdup((const char *)sqlite3_column_text(s, i));
}

static int exec(dg_store *st, const char *sql) {
    int rc = sqlite3_exec(st->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : fail(st, rc);
}

static int query_int(dg_store *st, const char *sql, int64_t *ret) {
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK) return fail(st, rc);
    rc = sqlite3_step(s);
    int r = rc == SQLITE_ROW ? 0 : fail(st, rc == SQLITE_DONE ? SQLITE_ERROR : rc);
    if (r == 0) *ret = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return r;
}

static int query_text(dg_store *st, const char *sql, char **ret) {
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK) return fail(st, rc);
    rc = sqlite3_step(s);
    int r = rc == SQLITE_ROW ? 0 : fail(st, rc == SQLITE_DONE ? SQLITE_ERROR : rc);
    if (r == 0) *ret = col_str(s, 0);
    sqlite3_finalize(s);
    return r;
}

static int migrate(dg_store *st, const char *path, dg_error *err) {
    int64_t version;
    int r = query_int(st, "PRAGMA user_version", &version);
    if (r < 0) return dg_error_set(err, r, "%s: %s", path, st->errmsg);
    if (version > DG_STORE_SCHEMA_VERSION)
        return dg_error_set(err, -EPROTO,
                            "%s: schema version %lld is newer than this dagd supports (%d); "
                            "use a newer dagd or another state directory",
                            path, (long long)version, DG_STORE_SCHEMA_VERSION);
    for (int v = (int)version; v < (int)ARRAY_SIZE(migrations); v++) {
        r = exec(st, "BEGIN IMMEDIATE");
        if (r < 0) return dg_error_set(err, r, "%s: %s", path, st->errmsg);
        /* Another process may have migrated while we waited for the write lock. */
        int64_t now;
        r = query_int(st, "PRAGMA user_version", &now);
        if (r == 0 && now > v) {
            exec(st, "ROLLBACK");
            v = (int)now - 1;
            continue;
        }
        if (r == 0) r = exec(st, migrations[v]);
        if (r == 0) {
            _cleanup_free_ char *sql = xasprintf("PRAGMA user_version = %d", v + 1);
            r = exec(st, sql);
        }
        if (r == 0) r = exec(st, "COMMIT");
        if (r < 0) {
            _cleanup_free_ char *msg = xstrdup(st->errmsg);
            sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
            return dg_error_set(err, r, "%s: migration to schema version %d failed: %s", path,
                                v + 1, msg);
        }
    }
    return 0;
}

int dg_store_open(const char *state_dir, dg_store **ret, dg_error *err) {
    if (!state_dir || !*state_dir)
        return dg_error_set(err, -EINVAL, "no state directory given");
    int r = dg_mkdir_p(state_dir, 0700);
    if (r < 0)
        return dg_error_set(err, r, "cannot create state directory %s: %s", state_dir,
                            strerror(-r));

    _cleanup_free_ char *path = xasprintf("%s/dagd.db", state_dir);
    _cleanup_free_ char *mode = NULL, *check = NULL;
    dg_store *st = xcalloc(1, sizeof *st);
    st->dir = xstrdup(state_dir);
    int rc = sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        r = st->db ? fail(st, rc) : -ENOMEM;
        r = dg_error_set(err, r, "cannot open %s: %s", path, st->db ? st->errmsg : "no memory");
        goto fail;
    }
    sqlite3_extended_result_codes(st->db, 1);
    sqlite3_busy_timeout(st->db, 5000);
    sqlite3_commit_hook(st->db, count_commit, st);
    /* the database holds run confs and task outputs: its owner's only (its -wal and -shm
     * files take the database's mode when SQLite makes them) */
    static const char *const suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < ARRAY_SIZE(suffixes); i++) {
        _cleanup_free_ char *f = xasprintf("%s%s", path, suffixes[i]);
        if (chmod(f, 0600) < 0 && errno != ENOENT) {
            r = dg_error_set(err, -errno, "%s: %s", f, strerror(errno));
            goto fail;
        }
    }

    r = query_text(st, "PRAGMA journal_mode=WAL", &mode);
    if (r == -EBADMSG) {
        r = dg_error_set(err, r, "%s is not a dagd state database (%s)", path, st->errmsg);
        goto fail;
    }
    if (r < 0) {
        r = dg_error_set(err, r, "%s: cannot enable WAL: %s", path, st->errmsg);
        goto fail;
    }
    if (!mode || strcmp(mode, "wal") != 0) {
        r = dg_error_set(err, -EIO, "%s: cannot enable WAL (journal mode stays %s)", path,
                         mode ? mode : "unknown");
        goto fail;
    }
    /* a database damaged in its middle pages is refused now, not when a write or a
     * recovery first reads those pages (docs/operations.md, "A damaged database") */
    r = query_text(st, "PRAGMA quick_check(1)", &check);
    if (r < 0 || !check || strcmp(check, "ok") != 0) {
        r = dg_error_set(err, -EBADMSG,
                         "%s is damaged (integrity check: %s); dagd will not use it: stop dagd, move "
                         "the file (with its -wal and -shm files) aside, and restore a backup or start "
                         "with an empty state directory",
                         path, r < 0 ? st->errmsg : check ? check : "no answer");
        goto fail;
    }
    r = exec(st, "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON");
    if (r < 0) {
        r = dg_error_set(err, r, "%s: %s", path, st->errmsg);
        goto fail;
    }
    r = migrate(st, path, err);
    if (r < 0) goto fail;

    for (int i = 0; i < ST_MAX; i++) {
        rc = sqlite3_prepare_v3(st->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                &st->stmt[i], NULL);
        if (rc != SQLITE_OK) {
            r = fail(st, rc);
            r = dg_error_set(err, r, "%s: %s", path, st->errmsg);
            goto fail;
        }
    }
    *ret = st;
    return 0;
fail:
    dg_store_close(st);
    return r;
}

void dg_store_close(dg_store *st) {
    if (!st) return;
    dg_store_commit(st); /* one left open by its caller: written, not dropped */
    for (int i = 0; i < ST_MAX; i++) sqlite3_finalize(st->stmt[i]);
    sqlite3_close(st->db);
    free(st->dir);
    free(st->errmsg);
    free(st);
}

const char *dg_store_dir(const dg_store *st) { return st ? st->dir : NULL; }

/* A failed write inside a transaction of dg_store_begin ends it: none of it is written. */
static int tx_fail(dg_store *st, int r) {
    if (st->in_tx) {
        st->in_tx = false;
        if (!sqlite3_get_autocommit(st->db)) sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    }
    return r;
}

/* Runs a bound write statement to completion. */
static int step_done(dg_store *st, sqlite3_stmt *s, int bind_rc) {
    if (bind_rc != SQLITE_OK) return tx_fail(st, fail(st, bind_rc));
    st->writes++;
    int rc = sqlite3_step(s);
    return rc == SQLITE_DONE ? 0 : tx_fail(st, fail(st, rc));
}

int dg_store_begin(dg_store *st) {
    if (!st) return -EINVAL;
    if (st->in_tx) return 0;
    int r = exec(st, "BEGIN IMMEDIATE");
    if (r == 0) st->in_tx = true;
    return r;
}

bool dg_store_in_tx(const dg_store *st) { return st && st->in_tx; }

int dg_store_commit(dg_store *st) {
    if (!st || !st->in_tx) return 0;
    int r = exec(st, "COMMIT");
    return r < 0 ? tx_fail(st, r) : (st->in_tx = false, 0);
}

int dg_store_put_run(dg_store *st, const dg_run_rec *r) {
    if (!st || !r) return -EINVAL;
    _cleanup_stmt_ sqlite3_stmt *s = st->stmt[ST_PUT_RUN];
    int rc = bind_str(s, 1, r->dag_id);
    rc |= bind_str(s, 2, r->run_id);
    rc |= bind_str(s, 3, r->run_type);
    rc |= bind_str(s, 4, r->state);
    rc |= bind_ms(s, 5, r->logical_ms);
    rc |= bind_ms(s, 6, r->interval_start_ms);
    rc |= bind_ms(s, 7, r->interval_end_ms);
    rc |= bind_ms(s, 8, r->start_ms);
    rc |= bind_ms(s, 9, r->end_ms);
    rc |= bind_str(s, 10, r->conf_json);
    return step_done(st, s, rc);
}

int dg_store_put_ti(dg_store *st, const dg_ti_rec *r) {
    if (!st || !r) return -EINVAL;
    _cleanup_stmt_ sqlite3_stmt *s = st->stmt[ST_PUT_TI];
    int rc = bind_str(s, 1, r->dag_id);
    rc |= bind_str(s, 2, r->run_id);
    rc |= bind_str(s, 3, r->task_id);
    rc |= bind_str(s, 4, r->state);
    rc |= sqlite3_bind_int(s, 5, r->try_number);
    rc |= sqlite3_bind_int(s, 6, r->max_tries);
    rc |= bind_ms(s, 7, r->start_ms);
    rc |= bind_ms(s, 8, r->end_ms);
    rc |= bind_exit(s, 9, r->has_exit_code, r->exit_code);
    rc |= bind_str(s, 10, r->container_id);
    rc |= bind_str(s, 11, r->container_name);
    rc |= bind_str(s, 12, r->image);
    rc |= bind_str(s, 13, r->output);
    rc |= bind_str(s, 14, r->message);
    return step_done(st, s, rc);
}

int dg_store_put_try(dg_store *st, const dg_try_rec *r) {
    if (!st || !r) return -EINVAL;
    _cleanup_stmt_ sqlite3_stmt *s = st->stmt[ST_PUT_TRY];
    int rc = bind_str(s, 1, r->dag_id);
    rc |= bind_str(s, 2, r->run_id);
    rc |= bind_str(s, 3, r->task_id);
    rc |= sqlite3_bind_int(s, 4, r->try_number);
    rc |= bind_str(s, 5, r->state);
    rc |= bind_ms(s, 6, r->start_ms);
    rc |= bind_ms(s, 7, r->end_ms);
    rc |= bind_exit(s, 8, r->has_exit_code, r->exit_code);
    rc |= bind_str(s, 9, r->container_id);
    rc |= bind_str(s, 10, r->container_name);
    rc |= bind_str(s, 11, r->message);
    rc |= bind_ms(s, 12, r->running_ms);
    rc |= bind_str(s, 13, r->rendered);
    rc |= bind_str(s, 14, r->image_id);
    rc |= bind_str(s, 15, r->image_digest);
    return step_done(st, s, rc);
}

/* Rows come back in the column order of RUN_COLS / TI_COLS / TRY_COLS. */
static dg_run_rec *row_run(sqlite3_stmt *s) {
    dg_run_rec *r = xcalloc(1, sizeof *r);
    r->dag_id = col_str(s, 0);
    r->run_id = col_str(s, 1);
    r->run_type = col_str(s, 2);
    r->state = col_str(s, 3);
    r->logical_ms = sqlite3_column_int64(s, 4);
    r->interval_start_ms = sqlite3_column_int64(s, 5);
    r->interval_end_ms = sqlite3_column_int64(s, 6);
    r->start_ms = sqlite3_column_int64(s, 7);
    r->end_ms = sqlite3_column_int64(s, 8);
    r->conf_json = col_str(s, 9);
    if (!r->conf_json) r->conf_json = xstrdup("{}");
    return r;
}

static dg_ti_rec *row_ti(sqlite3_stmt *s) {
    dg_ti_rec *r = xcalloc(1, sizeof *r);
    r->dag_id = col_str(s, 0);
    r->run_id = col_str(s, 1);
    r->task_id = col_str(s, 2);
    r->state = col_str(s, 3);
    r->try_number = sqlite3_column_int(s, 4);
    r->max_tries = sqlite3_column_int(s, 5);
    r->start_ms = sqlite3_column_int64(s, 6);
    r->end_ms = sqlite3_column_int64(s, 7);
    r->has_exit_code = sqlite3_column_type(s, 8) != SQLITE_NULL;
    r->exit_code = sqlite3_column_int(s, 8);
    r->container_id = col_str(s, 9);
    r->container_name = col_str(s, 10);
    r->image = col_str(s, 11);
    r->output = col_str(s, 12);
    r->message = col_str(s, 13);
    r->image_id = col_str(s, 14);
    r->image_digest = col_str(s, 15);
    return r;
}

static dg_try_rec *row_try(sqlite3_stmt *s) {
    dg_try_rec *r = xcalloc(1, sizeof *r);
    r->dag_id = col_str(s, 0);
    r->run_id = col_str(s, 1);
    r->task_id = col_str(s, 2);
    r->try_number = sqlite3_column_int(s, 3);
    r->state = col_str(s, 4);
    r->start_ms = sqlite3_column_int64(s, 5);
    r->end_ms = sqlite3_column_int64(s, 6);
    r->has_exit_code = sqlite3_column_type(s, 7) != SQLITE_NULL;
    r->exit_code = sqlite3_column_int(s, 7);
    r->container_id = col_str(s, 8);
    r->container_name = col_str(s, 9);
    r->message = col_str(s, 10);
    r->running_ms = sqlite3_column_int64(s, 11);
    r->rendered = col_str(s, 12);
    r->image_id = col_str(s, 13);
    r->image_digest = col_str(s, 14);
    return r;
}

/* Steps a bound query expecting at most one row; -ENOENT when there is none. */
static int step_one(dg_store *st, sqlite3_stmt *s, int bind_rc) {
    if (bind_rc != SQLITE_OK) return fail(st, bind_rc);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) return 0;
    return rc == SQLITE_DONE ? -ENOENT : fail(st, rc);
}

int dg_store_get_run(dg_store *st, const char *dag, const char *run, dg_run_rec **ret) {
    if (!st || !dag || !run) return -EINVAL;
    _cleanup_stmt_ sqlite3_stmt *s = st->stmt[ST_GET_RUN];
    int r = step_one(st, s, bind_str(s, 1, dag) | bind_str(s, 2, run));
    if (r < 0) return r;
    *ret = row_run(s);
    return 0;
}

int dg_store_get_ti(dg_store *st, const char *dag, const char *run, const char *task,
                    dg_ti_rec **ret) {
    if (!st || !dag || !run || !task) return -EINVAL;
    _cleanup_stmt_ sqlite3_stmt *s = st->stmt[ST_GET_TI];
    int r = step_one(st, s, bind_str(s, 1, dag) | bind_str(s, 2, run) | bind_str(s, 3, task));
    if (r < 0) return r;
    *ret = row_ti(s);
    return 0;
}

int dg_store_prev_run(dg_store *st, const char *dag, int64_t logical_ms, dg_run_rec **ret) {
    if (!st || !dag) return -EINVAL;
    _cleanup_stmt_ sqlite3_stmt *s = st->stmt[ST_PREV_RUN];
    int r = step_one(st, s, bind_str(s, 1, dag) | sqlite3_bind_int64(s, 2, logical_ms));
    if (r < 0) return r;
    *ret = row_run(s);
    return 0;
}

/* Collects every row of a bound query through `row`; frees what it built on failure. */
static int collect(dg_store *st, sqlite3_stmt *s, int bind_rc, void *(*row)(sqlite3_stmt *),
                   void (*free_one)(void *), void ***ret, size_t *ret_n) {
    if (bind_rc != SQLITE_OK) return fail(st, bind_rc);
    void **v = NULL;
    size_t n = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            v = xrealloc(v, cap * sizeof *v);
        }
        v[n++] = row(s);
    }
    if (rc != SQLITE_DONE) {
        int r = fail(st, rc);
        for (size_t i = 0; i < n; i++) free_one(v[i]);
        free(v);
        return r;
    }
    *ret = v;
    *ret_n = n;
    return 0;
}

static void *row_run_v(sqlite3_stmt *s) { return row_run(s); }
static void *row_ti_v(sqlite3_stmt *s) { return row_ti(s); }
static void *row_try_v(sqlite3_stmt *s) { return row_try(s); }
static void run_free_v(void *p) { dg_run_rec_free(p); }
static void ti_free_v(void *p) { dg_ti_rec_free(p); }
static void try_free_v(void *p) { dg_try_rec_free(p); }

int dg_store_list_runs(dg_store *st, const char *dag, int limit, int offset, dg_run_rec ***ret,
                       size_t *ret_n, size_t *ret_total) {
    if (!st) return -EINVAL;
    if (limit <= 0) limit = -1;
    if (offset < 0) offset = 0;

    int64_t total = 0;
    {
        _cleanup_stmt_ sqlite3_stmt *c = st->stmt[dag ? ST_COUNT_RUNS : ST_COUNT_RUNS_ALL];
        int r = step_one(st, c, dag ? bind_str(c, 1, dag) : SQLITE_OK);
        if (r < 0) return r == -ENOENT ? fail(st, SQLITE_ERROR) : r;
        total = sqlite3_column_int64(c, 0);
    }

    _cleanup_stmt_ sqlite3_stmt *s = st->stmt[dag ? ST_LIST_RUNS : ST_LIST_RUNS_ALL];
    int p = 1, rc = SQLITE_OK;
    if (dag) rc |= bind_str(s, p++, dag);
    rc |= sqlite3_bind_int(s, p++, limit);
    rc |= sqlite3_bind_int(s, p, offset);
    void **v;
    size_t n;
    int r = collect(st, s, rc, row_run_v, run_free_v, &v, &n);
    if (r < 0) return r;
    *ret = (dg_run_rec **)v;
    *ret_n = n;
    if (ret_total) *ret_total = (size_t)total;
    return 0;
}

int dg_store_list_tis(dg_store *st, const char *dag, const char *run, dg_ti_rec ***ret,
                      size_t *ret_n) {
    if (!st || !dag || !run) return -EINVAL;
    _cleanup_stmt_ sqlite3_stmt *s = st->stmt[ST_LIST_TIS];
    void **v;
    size_t n;
    int r = collect(st, s, bind_str(s, 1, dag) | bind_str(s, 2, run), row_ti_v, ti_free_v, &v,
                    &n);
    if (r < 0) return r;
    *ret = (dg_ti_rec **)v;
    *ret_n = n;
    return 0;
}

int dg_store_list_tries(dg_store *st, const char *dag, const char *run, const char *task,
                        dg_try_rec ***ret, size_t *ret_n) {
    if (!st || !dag || !run || !task) return -EINVAL;
    _cleanup_stmt_ sqlite3_stmt *s = st->stmt[ST_LIST_TRIES];
    void **v;
    size_t n;
    int r = collect(st, s, bind_str(s, 1, dag) | bind_str(s, 2, run) | bind_str(s, 3, task),
                    row_try_v, try_free_v, &v, &n);
    if (r < 0) return r;
    *ret = (dg_try_rec **)v;
    *ret_n = n;
    return 0;
}

void dg_run_rec_free(dg_run_rec *r) {
    if (!r) return;
    free(r->dag_id);
    free(r->run_id);
    free(r->run_type);
    free(r->state);
    free(r->conf_json);
    free(r);
}

void dg_ti_rec_free(dg_ti_rec *r) {
    if (!r) return;
    free(r->dag_id);
    free(r->run_id);
    free(r->task_id);
    free(r->state);
    free(r->container_id);
    free(r->container_name);
    free(r->image);
    free(r->output);
    free(r->message);
    free(r->image_id);
    free(r->image_digest);
    free(r);
}

dg_try_rec *dg_try_rec_dup(const dg_try_rec *r) {
    dg_try_rec *c = xcalloc(1, sizeof *c);
    *c = *r;
    c->dag_id = xstrdup(r->dag_id);
    c->run_id = xstrdup(r->run_id);
    c->task_id = xstrdup(r->task_id);
    c->state = xstrdup(r->state);
    c->container_id = xstrdup(r->container_id);
    c->container_name = xstrdup(r->container_name);
    c->message = xstrdup(r->message);
    c->rendered = xstrdup(r->rendered);
    c->image_id = xstrdup(r->image_id);
    c->image_digest = xstrdup(r->image_digest);
    return c;
}

void dg_try_rec_free(dg_try_rec *r) {
    if (!r) return;
    free(r->dag_id);
    free(r->run_id);
    free(r->task_id);
    free(r->state);
    free(r->container_id);
    free(r->container_name);
    free(r->message);
    free(r->rendered);
    free(r->image_id);
    free(r->image_digest);
    free(r);
}

void dg_run_recs_free(dg_run_rec **v, size_t n) {
    if (!v) return;
    for (size_t i = 0; i < n; i++) dg_run_rec_free(v[i]);
    free(v);
}

void dg_ti_recs_free(dg_ti_rec **v, size_t n) {
    if (!v) return;
    for (size_t i = 0; i < n; i++) dg_ti_rec_free(v[i]);
    free(v);
}

void dg_try_recs_free(dg_try_rec **v, size_t n) {
    if (!v) return;
    for (size_t i = 0; i < n; i++) dg_try_rec_free(v[i]);
    free(v);
}

/* ---- the daemon's queries (rare: prepared per call) ---- */

static int prepare(dg_store *st, const char *sql, sqlite3_stmt **ret) {
    int rc = sqlite3_prepare_v2(st->db, sql, -1, ret, NULL);
    return rc == SQLITE_OK ? 0 : fail(st, rc);
}

int dg_store_get_dag(dg_store *st, const char *dag, bool *ret_paused) {
    sqlite3_stmt *s;
    int r = prepare(st, "SELECT is_paused FROM dags WHERE dag_id = ?1", &s);
    if (r < 0) return r;
    sqlite3_bind_text(s, 1, dag, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *ret_paused = sqlite3_column_int(s, 0) != 0;
        r = 0;
    } else {
        r = rc == SQLITE_DONE ? -ENOENT : fail(st, rc);
    }
    sqlite3_finalize(s);
    return r;
}

int dg_store_put_dag(dg_store *st, const char *dag, bool paused, const char *file, int64_t now_ms) {
    sqlite3_stmt *s;
    int r = prepare(st,
                    "INSERT INTO dags (dag_id, is_paused, file, first_seen_ms) VALUES (?1, ?2, ?3, ?4) "
                    "ON CONFLICT (dag_id) DO UPDATE SET is_paused = excluded.is_paused, file = excluded.file",
                    &s);
    if (r < 0) return r;
    sqlite3_bind_text(s, 1, dag, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(s, 2, paused ? 1 : 0);
    if (file) sqlite3_bind_text(s, 3, file, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 4, now_ms);
    st->writes++;
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? 0 : tx_fail(st, fail(st, rc));
}

static int collect_runs(dg_store *st, sqlite3_stmt *s, dg_run_rec ***ret, size_t *ret_n) {
    dg_run_rec **v = NULL;
    size_t n = 0;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        v = xrealloc(v, (n + 1) * sizeof *v);
        v[n++] = row_run(s);
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
        dg_run_recs_free(v, n);
        return fail(st, rc);
    }
    *ret = v;
    *ret_n = n;
    return 0;
}

int dg_store_unfinished_runs(dg_store *st, dg_run_rec ***ret, size_t *ret_n) {
    sqlite3_stmt *s;
    int r = prepare(st,
                    "SELECT " RUN_COLS " FROM dag_runs WHERE state IN ('queued', 'running') "
                    "ORDER BY logical_ms, run_id",
                    &s);
    return r < 0 ? r : collect_runs(st, s, ret, ret_n);
}

/* The first row of a run query, -ENOENT when there is none (finalizes s). */
static int first_run(dg_store *st, sqlite3_stmt *s, dg_run_rec **ret) {
    dg_run_rec **v = NULL;
    size_t n = 0;
    int r = collect_runs(st, s, &v, &n);
    if (r < 0) return r;
    if (n == 0) {
        free(v);
        return -ENOENT;
    }
    for (size_t i = 1; i < n; i++) dg_run_rec_free(v[i]);
    *ret = v[0];
    free(v);
    return 0;
}

int dg_store_last_run(dg_store *st, const char *dag, const char *run_type, dg_run_rec **ret) {
    sqlite3_stmt *s;
    int r = prepare(st,
                    "SELECT " RUN_COLS " FROM dag_runs WHERE dag_id = ?1 AND run_type = ?2 "
                    "ORDER BY logical_ms DESC, run_id DESC LIMIT 1",
                    &s);
    if (r < 0) return r;
    sqlite3_bind_text(s, 1, dag, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, run_type, -1, SQLITE_TRANSIENT);
    return first_run(st, s, ret);
}

int dg_store_run_at(dg_store *st, const char *dag, int64_t logical_ms, dg_run_rec **ret) {
    if (!st || !dag) return -EINVAL;
    sqlite3_stmt *s;
    int r = prepare(st,
                    "SELECT " RUN_COLS " FROM dag_runs WHERE dag_id = ?1 AND logical_ms = ?2 "
                    "ORDER BY run_id LIMIT 1",
                    &s);
    if (r < 0) return r;
    sqlite3_bind_text(s, 1, dag, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, logical_ms);
    return first_run(st, s, ret);
}

int dg_store_count_states(dg_store *st, bool tasks, char ***ret_states, int64_t **ret_counts, size_t *ret_n) {
    sqlite3_stmt *s;
    int r = prepare(st,
                    tasks ? "SELECT state, COUNT(*) FROM task_instances GROUP BY state ORDER BY state"
                          : "SELECT state, COUNT(*) FROM dag_runs GROUP BY state ORDER BY state",
                    &s);
    if (r < 0) return r;
    char **states = NULL;
    int64_t *counts = NULL;
    size_t n = 0;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        states = xrealloc(states, (n + 2) * sizeof *states);
        counts = xrealloc(counts, (n + 1) * sizeof *counts);
        states[n] = col_str(s, 0);
        if (!states[n]) states[n] = xstrdup("none");
        counts[n] = sqlite3_column_int64(s, 1);
        states[++n] = NULL;
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
        dg_strv_free(states);
        free(counts);
        return fail(st, rc);
    }
    *ret_states = states;
    *ret_counts = counts;
    *ret_n = n;
    return 0;
}
