/* log: stderr line format and level filter, target selection (JOURNAL_STREAM), the
 * sd_notify datagrams read back from a socket of our own, and real journald entries read
 * back with journalctl. Criterion runs each test in its own process, so the process-wide
 * log state, environment and fd 2 can be changed freely inside a test. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <regex.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dagd/log.h"

/* ---- stderr capture ---- */

typedef struct capture {
    int saved;
    int fd;
} capture;

static capture capture_begin(void) {
    char path[] = "/tmp/dagd-test-log-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    unlink(path);
    capture c = {.saved = dup(STDERR_FILENO), .fd = fd};
    cr_assert_geq(c.saved, 0);
    cr_assert_eq(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    return c;
}

/* Restores fd 2 and returns everything written to it meanwhile. Caller frees. */
static char *capture_end(capture *c) {
    cr_assert_eq(dup2(c->saved, STDERR_FILENO), STDERR_FILENO);
    close(c->saved);
    off_t n = lseek(c->fd, 0, SEEK_END);
    cr_assert_geq(n, 0);
    char *s = xmalloc((size_t)n + 1);
    cr_assert_eq(pread(c->fd, s, (size_t)n, 0), n);
    s[n] = '\0';
    close(c->fd);
    return s;
}

static size_t count_lines(const char *s) {
    size_t n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* Checks one line "<RFC 3339 ms>Z <LEVEL> <rest>\n" and that its time lies in [lo, hi]. */
static void check_line(const char *line, size_t len, const char *level, const char *rest, int64_t lo, int64_t hi) {
    regex_t re;
    cr_assert_eq(regcomp(&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z ", REG_EXTENDED), 0);
    _cleanup_free_ char *copy = xstrndup(line, len);
    int m = regexec(&re, copy, 0, NULL, 0);
    regfree(&re);
    cr_assert_eq(m, 0, "timestamp format: %s", copy);
    _cleanup_free_ char *ts = xstrndup(copy, 24);
    int64_t t;
    cr_assert_eq(dg_parse_time(ts, &t), 0, "%s", ts);
    cr_assert(t >= lo - lo % 1000 && t <= hi, "time %s outside the call", ts);
    _cleanup_free_ char *want = xasprintf("%s %s\n", level, rest);
    cr_assert_str_eq(copy + 25, want);
}

static const char *next_line(const char **p, size_t *len) {
    const char *start = *p;
    const char *nl = strchr(start, '\n');
    cr_assert_not_null(nl, "missing line in output");
    *len = (size_t)(nl - start) + 1;
    *p = nl + 1;
    return start;
}

Test(log, stderr_format) {
    cr_assert_eq(dg_log_setup("stderr"), 0);
    cr_assert_eq(dg_log_current(), DG_LOG_STDERR);
    capture c = capture_begin();
    int64_t lo = dg_now_ms();
    dg_log_ctx full = {.dag = "etl", .run = "scheduled__2025-01-01T00:00:00Z", .task = "extract", .try_number = 2};
    dg_log(DG_LOG_INFO, &full, "task %s exited with %d", "extract", 3);
    dg_log(DG_LOG_WARNING, NULL, "engine unreachable");
    dg_log_ctx partial = {.task = "load", .try_number = 1};
    dg_log(DG_LOG_ERR, &partial, "%s", "100%s literal %d\n");
    dg_log_ctx empty = {0};
    dg_log(DG_LOG_NOTICE, &empty, "reloaded");
    dg_log_ctx run_only = {.run = "manual__x"};
    dg_log(DG_LOG_INFO, &run_only, "queued");
    int64_t hi = dg_now_ms();
    _cleanup_free_ char *out = capture_end(&c);

    cr_assert_eq(count_lines(out), 5, "%s", out);
    const char *p = out;
    size_t len;
    const char *l = next_line(&p, &len);
    check_line(l, len, "INFO", "[dag=etl run=scheduled__2025-01-01T00:00:00Z task=extract try=2] task extract exited with 3", lo, hi);
    l = next_line(&p, &len);
    check_line(l, len, "WARNING", "engine unreachable", lo, hi);
    l = next_line(&p, &len);
    check_line(l, len, "ERROR", "[task=load try=1] 100%s literal %d", lo, hi);
    l = next_line(&p, &len);
    check_line(l, len, "NOTICE", "reloaded", lo, hi);
    l = next_line(&p, &len);
    check_line(l, len, "INFO", "[run=manual__x] queued", lo, hi);
}

Test(log, level_filter) {
    cr_assert_eq(dg_log_setup("stderr"), 0);
    capture c = capture_begin();
    dg_log(DG_LOG_DEBUG, NULL, "d1");
    dg_log(DG_LOG_INFO, NULL, "i1");
    dg_log_set_level(DG_LOG_WARNING);
    dg_log(DG_LOG_INFO, NULL, "i2");
    dg_log(DG_LOG_NOTICE, NULL, "n2");
    dg_log(DG_LOG_WARNING, NULL, "w2");
    dg_log(DG_LOG_ERR, NULL, "e2");
    dg_log_set_level(DG_LOG_DEBUG);
    dg_log(DG_LOG_DEBUG, NULL, "d3");
    dg_log_set_level(DG_LOG_ERR);
    dg_log(DG_LOG_WARNING, NULL, "w4");
    dg_log(DG_LOG_ERR, NULL, "e4");
    _cleanup_free_ char *out = capture_end(&c);

    const char *want[] = {"INFO i1", "WARNING w2", "ERROR e2", "DEBUG d3", "ERROR e4"};
    cr_assert_eq(count_lines(out), ARRAY_SIZE(want), "%s", out);
    const char *p = out;
    for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
        size_t len;
        const char *l = next_line(&p, &len);
        _cleanup_free_ char *line = xstrndup(l + 25, len - 26);
        cr_assert_str_eq(line, want[i]);
    }
}

/* ---- target selection ---- */

Test(log, setup_modes) {
    unsetenv("JOURNAL_STREAM");
    cr_assert_eq(dg_log_setup("journald"), 0);
    cr_assert_eq(dg_log_current(), DG_LOG_JOURNALD);
    cr_assert_eq(dg_log_setup("syslog"), -EINVAL);
    cr_assert_eq(dg_log_setup(""), -EINVAL);
    cr_assert_eq(dg_log_current(), DG_LOG_JOURNALD, "a refused mode leaves the target alone");
    cr_assert_eq(dg_log_setup("stderr"), 0);
    cr_assert_eq(dg_log_current(), DG_LOG_STDERR);
    cr_assert_eq(dg_log_setup("journald"), 0);
    cr_assert_eq(dg_log_setup(NULL), 0);
    cr_assert_eq(dg_log_current(), DG_LOG_STDERR, "auto without JOURNAL_STREAM is stderr");
}

Test(log, auto_follows_journal_stream) {
    capture c = capture_begin();
    struct stat st;
    cr_assert_eq(fstat(STDERR_FILENO, &st), 0);

    char v[64];
    snprintf(v, sizeof v, "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", v, 1);
    cr_assert_eq(dg_log_setup("auto"), 0);
    dg_log_target matched = dg_log_current();

    snprintf(v, sizeof v, "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino + 1);
    setenv("JOURNAL_STREAM", v, 1);
    cr_assert_eq(dg_log_setup("journald"), 0);
    cr_assert_eq(dg_log_setup("auto"), 0);
    dg_log_target other_inode = dg_log_current();

    snprintf(v, sizeof v, "%llu:%llux", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", v, 1);
    cr_assert_eq(dg_log_setup(NULL), 0);
    dg_log_target garbage = dg_log_current();

    snprintf(v, sizeof v, "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", v, 1);
    _cleanup_free_ char *out = capture_end(&c);
    cr_assert_eq(dg_log_setup("auto"), 0);
    dg_log_target restored = dg_log_current();

    cr_assert_eq(matched, DG_LOG_JOURNALD, "stderr is the stream systemd named");
    cr_assert_eq(other_inode, DG_LOG_STDERR, "stderr was redirected elsewhere");
    cr_assert_eq(garbage, DG_LOG_STDERR);
    cr_assert_eq(restored, DG_LOG_STDERR, "fd 2 is no longer that stream");
}

/* ---- sd_notify ---- */

typedef struct notify_sock {
    char dir[64];
    char path[96];
    int fd;
} notify_sock;

static void notify_open(notify_sock *n) {
    snprintf(n->dir, sizeof n->dir, "/tmp/dagd-test-notify-XXXXXX");
    cr_assert_not_null(mkdtemp(n->dir));
    snprintf(n->path, sizeof n->path, "%s/notify", n->dir);
    n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(n->fd, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", n->path);
    cr_assert_eq(bind(n->fd, (struct sockaddr *)&sa, sizeof sa), 0, "bind: %s", strerror(errno));
    struct timeval tv = {.tv_sec = 5};
    cr_assert_eq(setsockopt(n->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    setenv("NOTIFY_SOCKET", n->path, 1);
}

static void notify_close(notify_sock *n) {
    close(n->fd);
    unlink(n->path);
    rmdir(n->dir);
}

/* Returns the next datagram, NULL when none arrives (flags MSG_DONTWAIT: none pending). */
static char *notify_recv(notify_sock *n, int flags) {
    char buf[4096];
    ssize_t r = recv(n->fd, buf, sizeof buf - 1, flags);
    if (r < 0) return NULL;
    return xstrndup(buf, (size_t)r);
}

static void expect_datagram(notify_sock *n, const char *want) {
    _cleanup_free_ char *got = notify_recv(n, 0);
    cr_assert_not_null(got, "no datagram, expected %s", want);
    cr_assert_str_eq(got, want);
}

Test(log, notify_datagrams) {
    notify_sock n;
    notify_open(&n);
    dg_notify_ready();
    expect_datagram(&n, "READY=1");
    dg_notify_status("running %d tasks of %s", 3, "etl");
    expect_datagram(&n, "STATUS=running 3 tasks of etl");
    dg_notify_status("%s", "two\nlines 100%s");
    expect_datagram(&n, "STATUS=two lines 100%s");
    dg_notify_watchdog();
    expect_datagram(&n, "WATCHDOG=1");
    dg_notify_stopping();
    expect_datagram(&n, "STOPPING=1");

    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned long long before = (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000;
    dg_notify_reloading();
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned long long after = (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000;
    _cleanup_free_ char *rel = notify_recv(&n, 0);
    cr_assert_not_null(rel);
    unsigned long long usec = 0;
    int used = 0;
    cr_assert_eq(sscanf(rel, "RELOADING=1\nMONOTONIC_USEC=%llu%n", &usec, &used), 1, "%s", rel);
    cr_assert_eq(rel[used], '\0', "%s", rel);
    cr_assert(usec >= before && usec <= after, "MONOTONIC_USEC %llu not in [%llu, %llu]", usec, before, after);

    /* Outside systemd every helper is silent. */
    unsetenv("NOTIFY_SOCKET");
    dg_notify_ready();
    dg_notify_status("x");
    dg_notify_watchdog();
    dg_notify_reloading();
    dg_notify_stopping();
    char *none = notify_recv(&n, MSG_DONTWAIT);
    cr_assert_null(none, "unexpected datagram %s", none);
    notify_close(&n);
}

Test(log, watchdog_interval) {
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    cr_assert_eq(dg_notify_watchdog_interval_ms(), 0);

    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    setenv("WATCHDOG_USEC", "30000000", 1);
    setenv("WATCHDOG_PID", pid, 1);
    cr_assert_eq(dg_notify_watchdog_interval_ms(), 15000);
    cr_assert_eq(dg_notify_watchdog_interval_ms(), 15000, "the environment is kept for later calls");

    setenv("WATCHDOG_USEC", "5000000", 1);
    cr_assert_eq(dg_notify_watchdog_interval_ms(), 2500);

    snprintf(pid, sizeof pid, "%d", (int)getppid());
    setenv("WATCHDOG_PID", pid, 1);
    cr_assert_eq(dg_notify_watchdog_interval_ms(), 0, "the watchdog belongs to another process");

    unsetenv("WATCHDOG_PID");
    cr_assert_eq(dg_notify_watchdog_interval_ms(), 2500, "no WATCHDOG_PID means this process");

    setenv("WATCHDOG_USEC", "1000", 1);
    cr_assert_eq(dg_notify_watchdog_interval_ms(), 1, "sub-millisecond halves round up to 1ms");

    setenv("WATCHDOG_USEC", "soon", 1);
    cr_assert_eq(dg_notify_watchdog_interval_ms(), 0);
    setenv("WATCHDOG_USEC", "0", 1);
    cr_assert_eq(dg_notify_watchdog_interval_ms(), 0);
}

/* ---- journald, for real ---- */

#define JOURNAL_SOCKET "/run/systemd/journal/socket"

static bool journal_listening(void) {
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", JOURNAL_SOCKET);
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

static const char *journald_binary(void) {
    const char *cands[] = {"/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald"};
    for (size_t i = 0; i < ARRAY_SIZE(cands); i++)
        if (access(cands[i], X_OK) == 0) return cands[i];
    return NULL;
}

/* Starts a journald of our own in a private mount namespace, with fresh tmpfs over /run
 * and /var/log/journal: the host's /run and journal files are never touched, nothing is
 * left behind when this test process exits, and parallel tests elsewhere on the machine
 * cannot pick up (or lose) our journald. Returns its pid, or 0 with *why set. */
static pid_t start_private_journald(char *why, size_t whylen) {
    const char *bin = journald_binary();
    if (!bin) return snprintf(why, whylen, "systemd-journald is not installed"), 0;
    if (unshare(CLONE_NEWNS) < 0)
        return snprintf(why, whylen, "unshare(CLONE_NEWNS): %s (needs root)", strerror(errno)), 0;
    if (mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0) /* type is ignored here */
        return snprintf(why, whylen, "making mounts private: %s", strerror(errno)), 0;
    if (mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0)
        return snprintf(why, whylen, "tmpfs on /run: %s", strerror(errno)), 0;
    struct stat st;
    if (stat("/var/log/journal", &st) == 0 && S_ISDIR(st.st_mode) &&
        mount("tmpfs", "/var/log/journal", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0)
        return snprintf(why, whylen, "tmpfs on /var/log/journal: %s", strerror(errno)), 0;
    int r = dg_mkdir_p("/run/log/journal", 0755);
    if (r < 0) return snprintf(why, whylen, "/run/log/journal: %s", strerror(-r)), 0;

    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0), dup2(null, 1), dup2(null, 2);
        /* Through sh so that a valgrind run skipping sh leaves journald itself alone. */
        execl("/bin/sh", "sh", "-c", "exec \"$0\"", bin, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) {
        if (journal_listening()) return pid;
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid)
            return snprintf(why, whylen, "%s exited early (status %d)", bin, status), 0;
        usleep(50 * 1000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return snprintf(why, whylen, "%s did not create %s within 10s", bin, JOURNAL_SOCKET), 0;
}

/* Every journal entry (as JSON) carrying DAGD_RUN=run. */
static json_t *journal_entries(const char *run) {
    _cleanup_free_ char *cmd = xasprintf("journalctl -o json --no-pager 'DAGD_RUN=%s' 2>/dev/null", run);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    json_t *all = json_array();
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *e = json_loads(line, 0, NULL);
        if (e) json_array_append_new(all, e);
    }
    free(line);
    pclose(f);
    return all;
}

static const char *field(json_t *e, const char *name) {
    const char *v = json_string_value(json_object_get(e, name));
    cr_assert_not_null(v, "entry lacks %s", name);
    return v;
}

Test(log, journald_entries, .timeout = 60) {
    char why[256] = "";
    pid_t journald = 0;
    if (!journal_listening()) {
        journald = start_private_journald(why, sizeof why);
        if (!journald) {
            const char *ci = getenv("CI");
            if (ci && strcmp(ci, "true") == 0) cr_assert_fail("journald unavailable in CI: %s", why);
            cr_skip_test("no journald to test against: %s", why);
        }
    }

    _cleanup_free_ char *run = xasprintf("manual__test-%d-%lld", (int)getpid(), (long long)dg_now_ms());
    cr_assert_eq(dg_log_setup("journald"), 0);
    cr_assert_eq(dg_log_current(), DG_LOG_JOURNALD);
    dg_log_ctx ctx = {.dag = "etl", .run = run, .task = "extract", .try_number = 3};
    dg_log(DG_LOG_WARNING, &ctx, "task %s failed: exit %d", "extract", 2);
    dg_log(DG_LOG_DEBUG, &ctx, "dropped by the default level");
    dg_log_ctx no_task = {.dag = "etl", .run = run};
    dg_log(DG_LOG_INFO, &no_task, "%s", "literal %s %n\nsecond line");

    json_t *entries = NULL;
    for (int i = 0; i < 100; i++) {
        json_decref(entries);
        entries = journal_entries(run);
        if (json_array_size(entries) >= 2) break;
        usleep(100 * 1000);
    }
    /* Collect first, stop journald, then assert: a failed assertion ends the test at once. */
    if (journald) {
        kill(journald, SIGTERM);
        waitpid(journald, NULL, 0);
    }

    cr_assert_eq(json_array_size(entries), 2, "entries for %s: %zu", run, json_array_size(entries));
    json_t *a = json_array_get(entries, 0), *b = json_array_get(entries, 1);
    cr_assert_str_eq(field(a, "MESSAGE"), "task extract failed: exit 2");
    cr_assert_str_eq(field(a, "PRIORITY"), "4");
    cr_assert_str_eq(field(a, "SYSLOG_IDENTIFIER"), "dagd");
    cr_assert_str_eq(field(a, "DAGD_DAG"), "etl");
    cr_assert_str_eq(field(a, "DAGD_RUN"), run);
    cr_assert_str_eq(field(a, "DAGD_TASK"), "extract");
    cr_assert_str_eq(field(a, "DAGD_TRY"), "3");

    cr_assert_str_eq(field(b, "MESSAGE"), "literal %s %n\nsecond line");
    cr_assert_str_eq(field(b, "PRIORITY"), "6");
    cr_assert_str_eq(field(b, "SYSLOG_IDENTIFIER"), "dagd");
    cr_assert_str_eq(field(b, "DAGD_DAG"), "etl");
    cr_assert_null(json_object_get(b, "DAGD_TASK"), "absent fields are left out");
    cr_assert_null(json_object_get(b, "DAGD_TRY"));
    json_decref(entries);
}

Test(log, journald_unreachable_falls_back_to_stderr) {
    /* Hide a running journald behind an empty /run, in a mount namespace of our own. */
    if (journal_listening()) {
        if (unshare(CLONE_NEWNS) < 0 || mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0 ||
            mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0)
            cr_skip_test("journald runs and cannot be hidden: %s", strerror(errno));
    }
    cr_assert(!journal_listening());
    cr_assert_eq(dg_log_setup("journald"), 0);
    capture c = capture_begin();
    dg_log_ctx ctx = {.dag = "etl", .try_number = 1};
    dg_log(DG_LOG_ERR, &ctx, "engine lost");
    _cleanup_free_ char *out = capture_end(&c);
    cr_assert_eq(count_lines(out), 1, "%s", out);
    cr_assert_str_eq(out + 25, "ERROR [dag=etl try=1] engine lost\n");
}
