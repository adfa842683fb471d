/* util — allocation that aborts on failure, cleanup helpers, the error carrier,
 * growable strings, and the small parsers every module shares (durations, sizes,
 * times, shell-like word splitting, "did you mean" suggestions). */
#pragma once
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(dg_freep)
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Hand ownership out of a _cleanup_ variable. */
#define TAKE_PTR(p)                                                                     \
    ({                                                                                  \
        __typeof__(p) _ptr_ = (p);                                                      \
        (p) = NULL;                                                                     \
        _ptr_;                                                                          \
    })

static inline void dg_freep(void *p) { free(*(void **)p); }

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);      /* NULL in, NULL out */
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) _printf_(1, 2);

/* An error for a human: a negative errno-style code plus a message. Functions that
 * take one fill it only on failure. */
typedef struct dg_error {
    int code;
    char *msg;
} dg_error;
/* Sets code and message (replacing any earlier one); returns code so callers can
 * `return dg_error_set(err, -EINVAL, "...")`. err may be NULL. */
int dg_error_set(dg_error *err, int code, const char *fmt, ...) _printf_(3, 4);
void dg_error_clear(dg_error *err); /* frees msg, resets */

/* Typed cleanup for what a function holds: `_cleanup_error_ dg_error err = {0};`,
 * `_cleanup_close_ int fd = -1;`, `_cleanup_closedir_ DIR *d = NULL;`,
 * `_cleanup_diags_ dg_diags d = {0};` (declared below). */
#define _cleanup_error_ _cleanup_(dg_error_clear)
void dg_closep(int *fd);       /* closes fd >= 0 */
#define _cleanup_close_ _cleanup_(dg_closep)
void dg_closedirp(void *dirp); /* DIR ** */
#define _cleanup_closedir_ _cleanup_(dg_closedirp)

/* Growable byte buffer, always NUL-terminated. */
typedef struct dg_buf {
    char *data;
    size_t len, cap;
} dg_buf;
void dg_buf_append(dg_buf *b, const void *p, size_t n);
void dg_buf_puts(dg_buf *b, const char *s);
void dg_buf_printf(dg_buf *b, const char *fmt, ...) _printf_(2, 3);
void dg_buf_consume(dg_buf *b, size_t n); /* drop the first n bytes */
char *dg_buf_steal(dg_buf *b);            /* returns data (never NULL), resets b */
void dg_buf_free(dg_buf *b);

/* "500ms", "30s", "5m", "2h", "1d", and combinations "1h30m". Plain integers are
 * refused (units are required). */
int dg_parse_duration(const char *s, int64_t *ret_ms);
/* "512m", "2g", "1024k", "100b" or a bare byte count; binary units (1k = 1024). */
int dg_parse_size(const char *s, int64_t *ret_bytes);
/* Render a duration the way users write it back ("1h30m", "500ms"). Caller frees. */
char *dg_format_duration(int64_t ms);

/* Time: milliseconds since the epoch, UTC. */
int64_t dg_now_ms(void);
/* RFC 3339 UTC with seconds ("2025-01-01T00:00:00Z"); fractional digits added when ms != 0
 * only if frac is true. Caller frees. */
char *dg_format_time(int64_t ms, bool frac);
/* RFC 3339 UTC always with milliseconds ("2025-01-01T00:00:00.000Z"): how the API and the
 * command line show times. Caller frees. */
char *dg_format_time_ms(int64_t ms);
/* Accepts "2025-01-01", "2025-01-01T02:00:00Z", "...+09:00", "...T02:00:00" (UTC),
 * and fractional seconds. */
int dg_parse_time(const char *s, int64_t *ret_ms);

/* Split like a POSIX shell splits words (quotes, backslashes), without expansion
 * or operators. Returns a NULL-terminated vector; *ret_n gets its length. */
int dg_split_words(const char *s, char ***ret_argv, size_t *ret_n);
void dg_strv_free(char **v); /* NULL-terminated vector */
static inline void dg_strv_freep(char ***v) { dg_strv_free(*v); }
size_t dg_strv_len(char *const *v);
char **dg_strv_copy(char *const *v);

/* Levenshtein distance, and the closest candidate within a sensible distance or NULL. */
size_t dg_edit_distance(const char *a, const char *b);
const char *dg_suggest(const char *word, const char *const *candidates, size_t n);

/* nbytes from the kernel's random source, as 2*nbytes lowercase hex digits. */
int dg_random_hex(size_t nbytes, char **ret);

bool dg_str_has_prefix(const char *s, const char *prefix);
int dg_mkdir_p(const char *path, unsigned mode);
/* text with every occurrence of each secret replaced by "***" (a new string). What literal
 * replacement cannot catch is in docs/dags.md ("Connections and secrets"). */
char *dg_redact(char *const *secrets, const char *text, size_t len);
/* A value kept in a file of the state directory: read back when there (first line, at
 * least 8 characters), else made of nbytes random bytes in hex and written with `mode`.
 * Returns 0 when read, 1 when made. */
int dg_state_value(const char *path, size_t nbytes, unsigned mode, char **ret, dg_error *err);
/* Reads a whole file (NUL-terminated; *ret_len excludes the NUL). */
int dg_read_file(const char *path, char **ret, size_t *ret_len);

/* One diagnostic: "file:line:col: error: message". */
typedef struct dg_diag {
    char *file;
    int line, col;
    char *msg;
} dg_diag;

typedef struct dg_diags {
    dg_diag *v;
    size_t n;
} dg_diags;
void dg_diags_add(dg_diags *d, const char *file, int line, int col, const char *fmt, ...)
    _printf_(5, 6);
void dg_diags_print(const dg_diags *d, FILE *f); /* one "file:line:col: error: msg" per line */
void dg_diags_free(dg_diags *d);
#define _cleanup_diags_ _cleanup_(dg_diags_free)
