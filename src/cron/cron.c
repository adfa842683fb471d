/* cron/cron — parses schedule expressions (docs/dags.md) into a dg_cron: classic 5-field cron
 * (lists, ranges, steps, month and day names), the @ presets, and "every <duration>".
 * Parsing only; computing the next fire time is done elsewhere on top of dg_cron.
 * Nothing here allocates except the error message handed back through dg_error. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "dagd/cron.h"

typedef struct field_def {
    const char *name;
    int lo, hi;
    const char *const *names; /* names[i] stands for lo + i */
    size_t n_names;
} field_def;

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                          "jul", "aug", "sep", "oct", "nov", "dec"};
static const char *const wday_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

/* Day of week accepts 0-7 (both 0 and 7 are Sunday) and folds 7 onto 0 afterwards. */
static const field_def fields[5] = {
    {"minute", 0, 59, NULL, 0},
    {"hour", 0, 23, NULL, 0},
    {"day-of-month", 1, 31, NULL, 0},
    {"month", 1, 12, month_names, ARRAY_SIZE(month_names)},
    {"day-of-week", 0, 7, wday_names, ARRAY_SIZE(wday_names)},
};

/* One number or name at *p; advances *p past it. */
static int parse_value(const field_def *f, const char **p, int *ret, dg_error *err) {
    const char *s = *p;
    if (isdigit((unsigned char)*s)) {
        long v = 0;
        while (isdigit((unsigned char)*s)) {
            if (v < 100000) v = v * 10 + (*s - '0');
            s++;
        }
        if (v < f->lo || v > f->hi)
            return dg_error_set(err, -EINVAL, "%s field: %ld is out of range %d-%d", f->name, v,
                                f->lo, f->hi);
        *ret = (int)v;
        *p = s;
        return 0;
    }
    if (isalpha((unsigned char)*s)) {
        size_t n = 0;
        while (isalpha((unsigned char)s[n])) n++;
        for (size_t i = 0; i < f->n_names; i++) {
            if (n == 3 && strncasecmp(s, f->names[i], 3) == 0) {
                *ret = f->lo + (int)i;
                *p = s + n;
                return 0;
            }
        }
        return dg_error_set(err, -EINVAL, "%s field: unknown name '%.*s'", f->name,
                            (int)(n > 20 ? 20 : n), s);
    }
    if (!*s || *s == ',')
        return dg_error_set(err, -EINVAL, "%s field: missing a value", f->name);
    return dg_error_set(err, -EINVAL, "%s field: unexpected character '%c'", f->name, *s);
}

/* One comma-separated item: "*", "N", "N-M", each with an optional "/STEP". */
static int parse_item(const field_def *f, const char *item, uint64_t *bits, dg_error *err) {
    const char *p = item;
    int lo, hi, step = 1, r;
    bool range = false;
    if (*p == '*') {
        lo = f->lo, hi = f->hi, range = true;
        p++;
    } else {
        r = parse_value(f, &p, &lo, err);
        if (r < 0) return r;
        hi = lo;
        if (*p == '-') {
            p++;
            bool was_name = isalpha((unsigned char)*p);
            r = parse_value(f, &p, &hi, err);
            if (r < 0) return r;
            /* "fri-sun": a Sunday named at the end of a range means day 7 */
            if (f->names == wday_names && was_name && hi == 0 && lo > 0) hi = 7;
            if (hi < lo)
                return dg_error_set(err, -EINVAL, "%s field: range %d-%d goes backwards",
                                    f->name, lo, hi);
            range = true;
        }
    }
    if (*p == '/') {
        p++;
        if (!isdigit((unsigned char)*p))
            return dg_error_set(err, -EINVAL, "%s field: step must be a positive number",
                                f->name);
        long v = 0;
        while (isdigit((unsigned char)*p)) {
            if (v < 100000) v = v * 10 + (*p - '0');
            p++;
        }
        if (v < 1 || v > f->hi - f->lo + 1)
            return dg_error_set(err, -EINVAL, "%s field: step %ld is out of range 1-%d",
                                f->name, v, f->hi - f->lo + 1);
        step = (int)v;
        if (!range) hi = f->hi; /* "5/15" = from 5 to the end, every 15 */
    }
    if (*p)
        return dg_error_set(err, -EINVAL, "%s field: unexpected '%s' in '%s'", f->name, p,
                            item);
    for (int v = lo; v <= hi; v += step) *bits |= (uint64_t)1 << v;
    return 0;
}

static int parse_field(const field_def *f, const char *text, uint64_t *ret, dg_error *err) {
    uint64_t bits = 0;
    const char *p = text;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n == 0) return dg_error_set(err, -EINVAL, "%s field: empty list item", f->name);
        char item[64];
        if (n >= sizeof item)
            return dg_error_set(err, -EINVAL, "%s field: item is too long", f->name);
        memcpy(item, p, n);
        item[n] = 0;
        int r = parse_item(f, item, &bits, err);
        if (r < 0) return r;
        if (!comma) break;
        p = comma + 1;
    }
    *ret = bits;
    return 0;
}

static const struct {
    const char *name;
    const char *expr; /* NULL = @once */
} presets[] = {
    {"@once", NULL},           {"@hourly", "0 * * * *"},  {"@daily", "0 0 * * *"},
    {"@midnight", "0 0 * * *"}, {"@weekly", "0 0 * * 0"},  {"@monthly", "0 0 1 * *"},
    {"@yearly", "0 0 1 1 *"},  {"@annually", "0 0 1 1 *"},
};

static int parse_fields(const char *expr, dg_cron *ret, dg_error *err) {
    char buf[256];
    if (strlen(expr) >= sizeof buf)
        return dg_error_set(err, -EINVAL, "schedule is too long");
    strcpy(buf, expr);
    char *f[6];
    size_t n = 0;
    for (char *save = NULL, *t = strtok_r(buf, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
        if (n == ARRAY_SIZE(f)) break;
        f[n++] = t;
    }
    if (n != 5)
        return dg_error_set(err, -EINVAL,
                            "expected 5 fields (minute hour day-of-month month day-of-week), "
                            "got %s%zu",
                            n == ARRAY_SIZE(f) ? "more than " : "", n == 6 ? (size_t)5 : n);
    uint64_t bits[5];
    for (size_t i = 0; i < 5; i++) {
        int r = parse_field(&fields[i], f[i], &bits[i], err);
        if (r < 0) return r;
    }
    dg_cron c = {.type = DG_SCHED_CRON};
    c.minutes = bits[0];
    c.hours = (uint32_t)bits[1];
    c.mdays = (uint32_t)bits[2];
    c.months = (uint16_t)bits[3];
    c.wdays = (uint8_t)((bits[4] | (bits[4] >> 7)) & 0x7f);
    /* A day field covering its whole range is unrestricted, however it is written
     * ("*", "1-31", "sun-sat"); a "*" with a step of 2 or more restricts it. */
    c.mday_star = c.mdays == (uint32_t)0xfffffffe;
    c.wday_star = c.wdays == 0x7f;
    *ret = c;
    return 0;
}

int dg_cron_parse(const char *expr, dg_cron *ret, dg_error *err) {
    if (!expr) return dg_error_set(err, -EINVAL, "empty schedule");
    while (*expr == ' ' || *expr == '\t') expr++;
    size_t len = strlen(expr);
    while (len && (expr[len - 1] == ' ' || expr[len - 1] == '\t')) len--;
    if (!len) return dg_error_set(err, -EINVAL, "empty schedule");
    if (expr[len]) { /* trailing blanks: "@daily " is still @daily */
        _cleanup_free_ char *trimmed = xstrndup(expr, len);
        return dg_cron_parse(trimmed, ret, err);
    }

    if (*expr == '@') {
        for (size_t i = 0; i < ARRAY_SIZE(presets); i++) {
            if (strcmp(expr, presets[i].name) != 0) continue;
            if (!presets[i].expr) {
                *ret = (dg_cron){.type = DG_SCHED_ONCE};
                return 0;
            }
            return parse_fields(presets[i].expr, ret, err);
        }
        const char *names[ARRAY_SIZE(presets)];
        for (size_t i = 0; i < ARRAY_SIZE(presets); i++) names[i] = presets[i].name;
        const char *s = strlen(expr) < 64 ? dg_suggest(expr, names, ARRAY_SIZE(names)) : NULL;
        if (s)
            return dg_error_set(err, -EINVAL, "unknown preset '%.64s' (did you mean '%s'?)",
                                expr, s);
        return dg_error_set(err, -EINVAL,
                            "unknown preset '%.64s' (use @once @hourly @daily @weekly "
                            "@monthly or @yearly)",
                            expr);
    }

    if (strncmp(expr, "every", 5) == 0 && (expr[5] == ' ' || expr[5] == '\t' || !expr[5])) {
        const char *d = expr + 5;
        while (*d == ' ' || *d == '\t') d++;
        int64_t ms;
        if (!*d) return dg_error_set(err, -EINVAL, "'every' needs a duration, e.g. 'every 30m'");
        if (dg_parse_duration(d, &ms) < 0)
            return dg_error_set(err, -EINVAL, "every: bad duration '%.64s' (e.g. 30s, 5m, 1h30m)",
                                d);
        if (ms < 1000)
            return dg_error_set(err, -EINVAL, "every: interval must be at least 1s");
        *ret = (dg_cron){.type = DG_SCHED_EVERY, .every_ms = ms};
        return 0;
    }
    return parse_fields(expr, ret, err);
}
