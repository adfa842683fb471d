/* log — the daemon's own log and the sd_notify protocol (docs/daemon.md).
 *
 * One process-wide target, chosen by dg_log_setup(): the journal (native protocol, one
 * entry per call with DAGD_* context fields) or stderr (one timestamped line per call,
 * written with a single write() so lines from different threads never interleave).
 * The notify helpers talk to the service manager through libsystemd, which already does
 * nothing when NOTIFY_SOCKET is unset. No state here is owned by callers: every string
 * passed in is only read during the call. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>

#include "dagd/log.h"

#define JOURNAL_SOCKET "/run/systemd/journal/socket"

static dg_log_target current_target = DG_LOG_STDERR;
static dg_log_level max_level = DG_LOG_INFO;

/* systemd sets JOURNAL_STREAM to "<dev>:<inode>" of the stream it connected to stdout and
 * stderr; it only means stderr is the journal if our fd 2 is still that very stream (a
 * child whose stderr was redirected inherits the variable but not the stream). */
static bool stderr_is_journal(void) {
    const char *e = getenv("JOURNAL_STREAM");
    if (!e || !*e) return false;
    unsigned long long dev, ino;
    int used = 0;
    if (sscanf(e, "%llu:%llu%n", &dev, &ino, &used) != 2 || e[used] != '\0') return false;
    struct stat st;
    if (fstat(STDERR_FILENO, &st) < 0) return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

int dg_log_setup(const char *mode) {
    if (!mode || strcmp(mode, "auto") == 0)
        current_target = stderr_is_journal() ? DG_LOG_JOURNALD : DG_LOG_STDERR;
    else if (strcmp(mode, "journald") == 0)
        current_target = DG_LOG_JOURNALD;
    else if (strcmp(mode, "stderr") == 0)
        current_target = DG_LOG_STDERR;
    else
        return -EINVAL;
    return 0;
}

dg_log_target dg_log_current(void) { return current_target; }

void dg_log_set_level(dg_log_level max) { max_level = max; }

static const char *level_name(dg_log_level level) {
    switch (level) {
    case DG_LOG_ERR: return "ERROR";
    case DG_LOG_WARNING: return "WARNING";
    case DG_LOG_NOTICE: return "NOTICE";
    case DG_LOG_INFO: return "INFO";
    case DG_LOG_DEBUG: return "DEBUG";
    }
    return "LOG";
}

static char *vformat(const char *fmt, va_list ap) {
    va_list aq;
    va_copy(aq, ap);
    int n = vsnprintf(NULL, 0, fmt, aq);
    va_end(aq);
    if (n < 0) return xstrdup(fmt);
    char *s = xmalloc((size_t)n + 1);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

static void write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

static void log_to_stderr(dg_log_level level, const dg_log_ctx *ctx, const char *msg) {
    int64_t now = dg_now_ms();
    /* dg_format_time drops ".000"; log lines keep a fixed width so they line up. */
    _cleanup_free_ char *ts = dg_format_time(now - now % 1000, false);
    size_t tlen = strlen(ts);
    if (tlen > 0 && ts[tlen - 1] == 'Z') ts[tlen - 1] = '\0';

    dg_buf b = {0};
    dg_buf_printf(&b, "%s.%03dZ %s ", ts, (int)(now % 1000), level_name(level));
    if (ctx && (ctx->dag || ctx->run || ctx->task || ctx->try_number > 0)) {
        dg_buf_puts(&b, "[");
        size_t first = b.len;
        if (ctx->dag) dg_buf_printf(&b, "dag=%s", ctx->dag);
        if (ctx->run) dg_buf_printf(&b, "%srun=%s", b.len > first ? " " : "", ctx->run);
        if (ctx->task) dg_buf_printf(&b, "%stask=%s", b.len > first ? " " : "", ctx->task);
        if (ctx->try_number > 0) dg_buf_printf(&b, "%stry=%d", b.len > first ? " " : "", ctx->try_number);
        dg_buf_puts(&b, "] ");
    }
    dg_buf_puts(&b, msg);
    if (b.len == 0 || b.data[b.len - 1] != '\n') dg_buf_puts(&b, "\n");
    write_all(STDERR_FILENO, b.data, b.len);
    dg_buf_free(&b);
}

static void add_field(struct iovec *iov, size_t *n, char **owned, const char *fmt, ...) _printf_(4, 5);
static void add_field(struct iovec *iov, size_t *n, char **owned, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = vformat(fmt, ap);
    va_end(ap);
    owned[*n] = s;
    iov[*n] = (struct iovec){.iov_base = s, .iov_len = strlen(s)};
    (*n)++;
}

/* sd_journal_sendv takes each field verbatim ("NAME=value", newlines allowed), so user
 * text never passes through a format string on libsystemd's side. It reports success
 * when the journal socket does not exist at all, hence the explicit check: the caller
 * falls back to stderr instead of dropping the line. */
static int log_to_journal(dg_log_level level, const dg_log_ctx *ctx, const char *msg) {
    if (access(JOURNAL_SOCKET, F_OK) < 0) return -errno;
    struct iovec iov[7];
    char *owned[7];
    size_t n = 0;
    add_field(iov, &n, owned, "MESSAGE=%s", msg);
    add_field(iov, &n, owned, "PRIORITY=%d", (int)level);
    add_field(iov, &n, owned, "SYSLOG_IDENTIFIER=%s", "dagd");
    if (ctx && ctx->dag) add_field(iov, &n, owned, "DAGD_DAG=%s", ctx->dag);
    if (ctx && ctx->run) add_field(iov, &n, owned, "DAGD_RUN=%s", ctx->run);
    if (ctx && ctx->task) add_field(iov, &n, owned, "DAGD_TASK=%s", ctx->task);
    if (ctx && ctx->try_number > 0) add_field(iov, &n, owned, "DAGD_TRY=%d", ctx->try_number);
    int r = sd_journal_sendv(iov, (int)n);
    for (size_t i = 0; i < n; i++) free(owned[i]);
    return r;
}

void dg_logv(dg_log_level level, const dg_log_ctx *ctx, const char *fmt, va_list ap) {
    if (level > max_level) return;
    _cleanup_free_ char *msg = vformat(fmt, ap);
    /* If journald went away, the line still goes somewhere a human can find it. */
    if (current_target == DG_LOG_JOURNALD && log_to_journal(level, ctx, msg) >= 0) return;
    log_to_stderr(level, ctx, msg);
}

void dg_log(dg_log_level level, const dg_log_ctx *ctx, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    dg_logv(level, ctx, fmt, ap);
    va_end(ap);
}

void dg_notify_ready(void) { sd_notify(0, "READY=1"); }

void dg_notify_status(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    _cleanup_free_ char *msg = vformat(fmt, ap);
    va_end(ap);
    /* The notify protocol is one assignment per line: a newline would end STATUS early
     * and turn the rest of the text into (bogus) assignments. */
    for (char *p = msg; *p; p++)
        if (*p == '\n') *p = ' ';
    _cleanup_free_ char *state = xasprintf("STATUS=%s", msg);
    sd_notify(0, state);
}

void dg_notify_stopping(void) { sd_notify(0, "STOPPING=1"); }

/* systemd >= 253 (Type=notify-reload) wants MONOTONIC_USEC next to RELOADING=1 to tell
 * this reload from an earlier one; older managers ignore the extra field. */
void dg_notify_reloading(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t usec = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    _cleanup_free_ char *state = xasprintf("RELOADING=1\nMONOTONIC_USEC=%" PRIu64, usec);
    sd_notify(0, state);
}

int64_t dg_notify_watchdog_interval_ms(void) {
    uint64_t usec = 0;
    /* Also checks WATCHDOG_PID, so a child that inherited the environment stays quiet. */
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return 0;
    int64_t ms = (int64_t)(usec / 2 / 1000);
    return ms > 0 ? ms : 1;
}

void dg_notify_watchdog(void) { sd_notify(0, "WATCHDOG=1"); }
