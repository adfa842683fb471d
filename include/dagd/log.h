/* log — the daemon's own log (docs/daemon.md): structured journald entries with DAGD_DAG,
 * DAGD_RUN, DAGD_TASK, DAGD_TRY fields when running under systemd (JOURNAL_STREAM set)
 * or when asked (`--log journald`), plain timestamped stderr lines otherwise; plus the
 * sd_notify protocol (READY=1, STATUS=, WATCHDOG=1, STOPPING=1). Process-global. */
#pragma once
#include <stdarg.h>

#include "dagd/util.h"

typedef enum { DG_LOG_ERR = 3, DG_LOG_WARNING = 4, DG_LOG_NOTICE = 5, DG_LOG_INFO = 6, DG_LOG_DEBUG = 7 } dg_log_level;
typedef enum { DG_LOG_AUTO = 0, DG_LOG_STDERR, DG_LOG_JOURNALD } dg_log_target;

/* mode "auto" | "journald" | "stderr" (NULL = auto). -EINVAL for anything else. */
int dg_log_setup(const char *mode);
dg_log_target dg_log_current(void);
void dg_log_set_level(dg_log_level max); /* default INFO */

/* Context fields, any may be NULL / try 0 to omit. */
typedef struct dg_log_ctx {
    const char *dag, *run, *task;
    int try_number;
} dg_log_ctx;

void dg_log(dg_log_level level, const dg_log_ctx *ctx, const char *fmt, ...) _printf_(3, 4);
void dg_logv(dg_log_level level, const dg_log_ctx *ctx, const char *fmt, va_list ap);

/* sd_notify; all are no-ops outside systemd (no NOTIFY_SOCKET). */
void dg_notify_ready(void);
void dg_notify_status(const char *fmt, ...) _printf_(1, 2);
void dg_notify_stopping(void);
void dg_notify_reloading(void);
/* The watchdog interval in ms from WATCHDOG_USEC (half of it, as systemd advises), 0 = off. */
int64_t dg_notify_watchdog_interval_ms(void);
void dg_notify_watchdog(void);
