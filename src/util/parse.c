/* util/parse — durations, sizes, RFC 3339 times, shell-like words, suggestions. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "dagd/util.h"

int dg_parse_duration(const char *s, int64_t *ret_ms) {
    if (!s || !*s) return -EINVAL;
    int64_t total = 0;
    const char *p = s;
    int last_rank = 100; /* units must go from large to small: "1h30m", not "30m1h" */
    while (*p) {
        if (!isdigit((unsigned char)*p)) return -EINVAL;
        int64_t v = 0;
        while (isdigit((unsigned char)*p)) {
            if (v > INT64_MAX / 10 - 10) return -ERANGE;
            v = v * 10 + (*p++ - '0');
        }
        int64_t mult;
        int rank;
        if (strncmp(p, "ms", 2) == 0) mult = 1, rank = 0, p += 2;
        else if (*p == 's') mult = 1000, rank = 1, p++;
        else if (*p == 'm') mult = 60000, rank = 2, p++;
        else if (*p == 'h') mult = 3600000, rank = 3, p++;
        else if (*p == 'd') mult = 86400000, rank = 4, p++;
        else if (*p == 'w') mult = 7 * 86400000LL, rank = 5, p++;
        else return -EINVAL;
        if (rank >= last_rank) return -EINVAL;
        last_rank = rank;
        if (v > (INT64_MAX - total) / mult) return -ERANGE;
        total += v * mult;
    }
    *ret_ms = total;
    return 0;
}

int dg_parse_size(const char *s, int64_t *ret_bytes) {
    if (!s || !*s || !isdigit((unsigned char)*s)) return -EINVAL;
    const char *p = s;
    int64_t v = 0;
    while (isdigit((unsigned char)*p)) {
        if (v > INT64_MAX / 10 - 10) return -ERANGE;
        v = v * 10 + (*p++ - '0');
    }
    int64_t mult = 1;
    switch (tolower((unsigned char)*p)) {
    case 0: break;
    case 'b': mult = 1; p++; break;
    case 'k': mult = 1024; p++; break;
    case 'm': mult = 1024 * 1024; p++; break;
    case 'g': mult = 1024LL * 1024 * 1024; p++; break;
    case 't': mult = 1024LL * 1024 * 1024 * 1024; p++; break;
    default: return -EINVAL;
    }
    if (mult > 1 && (*p == 'b' || *p == 'B')) p++; /* "512mb" as compose allows */
    if (*p) return -EINVAL;
    if (v > INT64_MAX / mult) return -ERANGE;
    *ret_bytes = v * mult;
    return 0;
}

char *dg_format_duration(int64_t ms) {
    if (ms <= 0) return xstrdup("0s");
    static const struct { const char *u; int64_t m; } units[] = {
        {"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
    dg_buf b = {0};
    for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
        if (ms >= units[i].m) {
            dg_buf_printf(&b, "%lld%s", (long long)(ms / units[i].m), units[i].u);
            ms %= units[i].m;
        }
    }
    return dg_buf_steal(&b);
}

int64_t dg_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *dg_format_time(int64_t ms, bool frac) {
    time_t t = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    int rem = (int)(ms - (int64_t)t * 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char b[64];
    /* not strftime's %Y: RFC 3339 wants four digits even for year 377 */
    int n = snprintf(b, sizeof b, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec);
    if (frac && rem) snprintf(b + n, sizeof b - (size_t)n, ".%03dZ", rem);
    else snprintf(b + n, sizeof b - (size_t)n, "Z");
    return xstrdup(b);
}

char *dg_format_time_ms(int64_t ms) {
    _cleanup_free_ char *s = dg_format_time(ms, false); /* the second ms falls in, then "Z" */
    return xasprintf("%.*s.%03dZ", (int)strlen(s) - 1, s, (int)((ms % 1000 + 1000) % 1000));
}

static int digits(const char **p, int n, int *ret) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)**p)) return -EINVAL;
        v = v * 10 + (*(*p)++ - '0');
    }
    *ret = v;
    return 0;
}

int dg_parse_time(const char *s, int64_t *ret_ms) {
    if (!s) return -EINVAL;
    const char *p = s;
    int Y, M, D, h = 0, m = 0, sec = 0, ms = 0;
    if (digits(&p, 4, &Y) < 0 || *p++ != '-' || digits(&p, 2, &M) < 0 || *p++ != '-' ||
        digits(&p, 2, &D) < 0)
        return -EINVAL;
    int64_t off_s = 0;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (digits(&p, 2, &h) < 0 || *p++ != ':' || digits(&p, 2, &m) < 0) return -EINVAL;
        if (*p == ':') {
            p++;
            if (digits(&p, 2, &sec) < 0) return -EINVAL;
            if (*p == '.') {
                p++;
                int nd = 0;
                while (isdigit((unsigned char)*p)) {
                    if (nd < 3) ms = ms * 10 + (*p - '0');
                    nd++, p++;
                }
                if (nd == 0) return -EINVAL;
                for (; nd < 3; nd++) ms *= 10;
            }
        }
        if (*p == 'Z' || *p == 'z') p++;
        else if (*p == '+' || *p == '-') {
            int sign = *p++ == '-' ? -1 : 1, oh, om;
            if (digits(&p, 2, &oh) < 0) return -EINVAL;
            if (*p == ':') p++;
            if (digits(&p, 2, &om) < 0) return -EINVAL;
            if (oh > 23 || om > 59) return -EINVAL;
            off_s = sign * (oh * 3600 + om * 60);
        }
    }
    if (*p) return -EINVAL;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (M < 1 || M > 12 || D < 1 || D > mdays[M - 1] || h > 23 || m > 59 || sec > 60)
        return -EINVAL;
    bool leap = (Y % 4 == 0 && Y % 100 != 0) || Y % 400 == 0;
    if (M == 2 && D == 29 && !leap) return -EINVAL;
    /* days from civil (proleptic Gregorian), no timezone database involved */
    int y = Y - (M <= 2);
    int era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (M + (M > 2 ? -3 : 9)) + 2) / 5 + D - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = (int64_t)era * 146097 + (int64_t)doe - 719468;
    *ret_ms = ((days * 86400 + h * 3600 + m * 60 + sec) - off_s) * 1000 + ms;
    return 0;
}

int dg_split_words(const char *s, char ***ret_argv, size_t *ret_n) {
    size_t n = 0, cap = 8;
    char **v = xcalloc(cap, sizeof(char *));
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
        if (!*p) break;
        dg_buf w = {0};
        dg_buf_append(&w, "", 0);
        while (*p && !(*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) {
            if (*p == '\'') {
                const char *e = strchr(p + 1, '\'');
                if (!e) goto unterminated;
                dg_buf_append(&w, p + 1, (size_t)(e - p - 1));
                p = e + 1;
            } else if (*p == '"') {
                p++;
                while (*p && *p != '"') {
                    if (*p == '\\' && p[1] && strchr("\"\\$`\n", p[1])) p++;
                    dg_buf_append(&w, p++, 1);
                }
                if (*p != '"') goto unterminated;
                p++;
            } else if (*p == '\\') {
                p++;
                if (!*p) break;
                if (*p != '\n') dg_buf_append(&w, p, 1);
                p++;
            } else {
                dg_buf_append(&w, p++, 1);
            }
        }
        if (n + 2 > cap) {
            cap *= 2;
            v = xrealloc(v, cap * sizeof(char *));
        }
        v[n++] = dg_buf_steal(&w);
        v[n] = NULL;
        continue;
    unterminated:
        dg_buf_free(&w);
        v[n] = NULL;
        dg_strv_free(v);
        return -EINVAL;
    }
    v[n] = NULL;
    *ret_argv = v;
    if (ret_n) *ret_n = n;
    return 0;
}

size_t dg_edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    _cleanup_free_ size_t *row = xcalloc(lb + 1, sizeof(size_t));
    for (size_t j = 0; j <= lb; j++) row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cur = row[j];
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = prev + cost;
            if (row[j] + 1 < best) best = row[j] + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            prev = cur;
        }
    }
    return row[lb];
}

const char *dg_suggest(const char *word, const char *const *candidates, size_t n) {
    const char *best = NULL;
    size_t best_d = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        size_t d = dg_edit_distance(word, candidates[i]);
        if (d < best_d) best_d = d, best = candidates[i];
    }
    size_t len = strlen(word);
    size_t limit = len <= 3 ? 1 : len <= 6 ? 2 : 3;
    return best_d <= limit ? best : NULL;
}
