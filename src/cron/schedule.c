/* cron/schedule — schedules in time (docs/daemon.md): when a parsed dg_cron fires, evaluated in the
 * DAG's IANA timezone, and the Airflow 2 data intervals built on those fire times.
 *
 * Timezones come from the system tz database: the TZif file is read and parsed here (never
 * through TZ/tzset, which is process-global) into an immutable zone object. Zones are cached
 * by name in a small list guarded by a mutex and kept until the process exits; a dg_schedule
 * only holds the name.
 *
 * DST rules, in one place (docs/daemon.md, "Schedules across daylight-saving changes"):
 * - An expression whose hour field covers every hour (`30 * * * *`, `@hourly`, `0 * * * 1-5`)
 *   follows real time: it fires at every instant whose local time it names. Across spring
 *   forward the missing local times never happen; across fall back the repeated hour fires
 *   in both passes.
 * - Any other expression is read on the local wall clock, and each local time it names
 *   becomes one instant: a time in the spring-forward gap moves forward by the length of the
 *   gap (02:30 becomes 03:30), and a time that happens twice fires once, at its second
 *   occurrence (after the clocks went back). A gap time that lands on a time the expression
 *   also names fires once. This is how Airflow 2 makes wall times real (pendulum's rule),
 *   without its shortcut of adding a naive time difference to the current instant, which
 *   misfires when that difference spans a DST change. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>

#include "dagd/cron.h"

#define ZONEINFO_DIR "/usr/share/zoneinfo"
#define DAY_S 86400
/* Any valid cron expression fires within 8 years (Feb 29 skips 2100); search no further. */
#define SEARCH_DAYS (366 * 8 + 2)

/* ---- civil calendar: proleptic Gregorian, days counted from 1970-01-01 ---- */

static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static bool is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int days_in_month(int64_t y, int m) {
    static const int dim[13] = {0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : dim[m];
}

/* Counting years from March keeps the leap day at the end of the counted year. */
static int64_t days_from_civil(int64_t y, int m, int d) {
    if (m <= 2) y--;
    int64_t cycle = floor_div(y, 400);      /* 400-year cycles of 146097 days */
    int64_t yc = y - cycle * 400;           /* year in cycle, 0..399 */
    int mm = m > 2 ? m - 3 : m + 9;         /* March = 0 */
    int64_t doy = (153 * mm + 2) / 5 + d - 1;
    int64_t doc = yc * 365 + yc / 4 - yc / 100 + doy;
    return cycle * 146097 + doc - 719468; /* 719468 = days from 0000-03-01 to 1970-01-01 */
}

static void civil_from_days(int64_t z, int64_t *ret_y, int *ret_m, int *ret_d) {
    z += 719468;
    int64_t cycle = floor_div(z, 146097);
    int64_t doc = z - cycle * 146097;
    int64_t yc = (doc - doc / 1460 + doc / 36524 - doc / 146096) / 365;
    int64_t doy = doc - (365 * yc + yc / 4 - yc / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int d = (int)(doy - (153 * mp + 2) / 5 + 1);
    int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *ret_y = yc + cycle * 400 + (m <= 2);
    *ret_m = m;
    *ret_d = d;
}

static int weekday(int64_t days) { return (int)(((days % 7) + 11) % 7); } /* 1970-01-01: Thu */

/* ---- zones ---- */

typedef struct ttype {
    int32_t off; /* seconds east of UTC */
    bool dst;
} ttype;

/* One POSIX TZ transition rule: Jn (1-365, no Feb 29), n (0-365) or Mm.w.d, at `secs`
 * local time (may be negative or past 24h). */
typedef struct posix_rule {
    char kind; /* 'J', 'N', 'M' */
    int n, m, w, d;
    int32_t secs;
} posix_rule;

typedef struct zone {
    struct zone *next;
    char *name;
    size_t n_trans;
    int64_t *trans; /* UTC seconds, ascending */
    uint8_t *idx;   /* type of each transition */
    size_t n_types;
    ttype *types;
    /* the footer rule, for times after the last transition */
    bool has_rule, rule_dst;
    int32_t std_off, dst_off;
    posix_rule start, end;
} zone;

static void zone_free(zone *z) {
    if (!z) return;
    free(z->name);
    free(z->trans);
    free(z->idx);
    free(z->types);
    free(z);
}

static int64_t rule_local_secs(const posix_rule *r, int64_t y) {
    int64_t day;
    if (r->kind == 'J')
        day = days_from_civil(y, 1, 1) + r->n - 1 + (is_leap(y) && r->n >= 60);
    else if (r->kind == 'N')
        day = days_from_civil(y, 1, 1) + r->n;
    else {
        int64_t first = days_from_civil(y, r->m, 1);
        day = first + (r->d - weekday(first) + 7) % 7 + (int64_t)(r->w - 1) * 7;
        while (day >= first + days_in_month(y, r->m)) day -= 7; /* w = 5: the last one */
    }
    return day * DAY_S + r->secs;
}

static int32_t rule_offset(const zone *z, int64_t t) {
    if (!z->rule_dst) return z->std_off;
    int64_t y;
    int m, d;
    civil_from_days(floor_div(t + z->std_off, DAY_S), &y, &m, &d);
    /* a rule's time is in the local time in force just before it */
    int64_t s = rule_local_secs(&z->start, y) - z->std_off;
    int64_t e = rule_local_secs(&z->end, y) - z->dst_off;
    bool dst = s < e ? (t >= s && t < e) : !(t >= e && t < s);
    return dst ? z->dst_off : z->std_off;
}

static int32_t offset_at(const zone *z, int64_t t) {
    if (z->n_trans == 0) return z->has_rule ? rule_offset(z, t) : z->types[0].off;
    if (t < z->trans[0]) return z->types[0].off;
    if (t >= z->trans[z->n_trans - 1] && z->has_rule) return rule_offset(z, t);
    size_t lo = 0, hi = z->n_trans; /* trans[lo] <= t < trans[hi] */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (z->trans[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    return z->types[z->idx[lo]].off;
}

/* The first instant after `t` at which the offset may change (INT64_MAX: never), so that
 * offset_at is constant on [t, the result). Year boundaries of the footer rule count too:
 * rule_offset picks its year there. */
static int64_t next_change(const zone *z, int64_t t) {
    if (z->n_trans && t < z->trans[z->n_trans - 1]) {
        size_t lo = 0, hi = z->n_trans - 1; /* the first transition > t is in [lo, hi] */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (z->trans[mid] > t)
                hi = mid;
            else
                lo = mid + 1;
        }
        return z->trans[lo];
    }
    if (!z->has_rule || !z->rule_dst) return INT64_MAX;
    int64_t y;
    int m, d;
    civil_from_days(floor_div(t + z->std_off, DAY_S), &y, &m, &d);
    int64_t best = INT64_MAX;
    for (int64_t yy = y - 1; yy <= y + 1; yy++) {
        int64_t c[3] = {rule_local_secs(&z->start, yy) - z->std_off,
                        rule_local_secs(&z->end, yy) - z->dst_off,
                        days_from_civil(yy + 1, 1, 1) * DAY_S - z->std_off};
        for (int i = 0; i < 3; i++)
            if (c[i] > t && c[i] < best) best = c[i];
    }
    return best;
}

/* The UTC instant of local wall time `l` (seconds, as if UTC), as pendulum makes a wall time
 * real: a time that happens twice is its second occurrence, and a time in a gap is read
 * with the offset in force before the gap, which moves it forward by the gap's length. In
 * both cases that is the later of the two readings. Assumes no two transitions within
 * about a day of each other, which holds for every real zone. */
static int64_t local_to_utc(const zone *z, int64_t l) {
    int32_t cand[3] = {offset_at(z, l - 93600), offset_at(z, l), offset_at(z, l + 93600)};
    int64_t best = INT64_MIN;
    int32_t hi_off = cand[0];
    for (int i = 0; i < 3; i++) {
        int64_t t = l - cand[i];
        if (offset_at(z, t) == cand[i] && t > best) best = t;
        if (cand[i] > hi_off) hi_off = cand[i];
    }
    if (best != INT64_MIN) return best;
    /* In a gap, which began after l - hi_off: read l with the offset before it. */
    return l - offset_at(z, l - hi_off);
}

/* ---- the POSIX TZ footer ---- */

static bool parse_tz_name(const char **p) {
    const char *s = *p;
    if (*s == '<') {
        const char *e = strchr(s, '>');
        if (!e || e - s < 4) return false;
        *p = e + 1;
        return true;
    }
    size_t n = 0;
    while ((s[n] >= 'A' && s[n] <= 'Z') || (s[n] >= 'a' && s[n] <= 'z')) n++;
    if (n < 3) return false;
    *p = s + n;
    return true;
}

static bool parse_num(const char **p, int lo, int hi, int *ret) {
    const char *s = *p;
    if (*s < '0' || *s > '9') return false;
    int v = 0;
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (*s++ - '0');
        if (v > hi) return false;
    }
    if (v < lo) return false;
    *p = s;
    *ret = v;
    return true;
}

/* [+-]hh[:mm[:ss]] */
static bool parse_hms(const char **p, int max_h, int32_t *ret) {
    const char *s = *p;
    int sign = 1, h, m = 0, sec = 0;
    if (*s == '+' || *s == '-') sign = *s++ == '-' ? -1 : 1;
    if (!parse_num(&s, 0, max_h, &h)) return false;
    if (*s == ':') {
        s++;
        if (!parse_num(&s, 0, 59, &m)) return false;
        if (*s == ':') {
            s++;
            if (!parse_num(&s, 0, 59, &sec)) return false;
        }
    }
    *p = s;
    *ret = sign * (h * 3600 + m * 60 + sec);
    return true;
}

static bool parse_rule(const char **p, posix_rule *r) {
    const char *s = *p;
    *r = (posix_rule){.secs = 7200};
    if (*s == 'J') {
        s++;
        r->kind = 'J';
        if (!parse_num(&s, 1, 365, &r->n)) return false;
    } else if (*s == 'M') {
        s++;
        r->kind = 'M';
        if (!parse_num(&s, 1, 12, &r->m) || *s++ != '.' || !parse_num(&s, 1, 5, &r->w) ||
            *s++ != '.' || !parse_num(&s, 0, 6, &r->d))
            return false;
    } else {
        r->kind = 'N';
        if (!parse_num(&s, 0, 365, &r->n)) return false;
    }
    if (*s == '/') {
        s++;
        if (!parse_hms(&s, 167, &r->secs)) return false;
    }
    *p = s;
    return true;
}

/* "CET-1CEST,M3.5.0,M10.5.0/3", "KST-9", "<+0330>-3:30"; offsets in it are west-positive. */
static bool parse_posix_tz(const char *s, zone *z) {
    int32_t v;
    if (!parse_tz_name(&s) || !parse_hms(&s, 24, &v)) return false;
    z->std_off = -v;
    z->dst_off = z->std_off;
    z->rule_dst = false;
    if (*s) {
        if (!parse_tz_name(&s)) return false;
        z->dst_off = z->std_off + 3600;
        if (*s && *s != ',') {
            if (!parse_hms(&s, 24, &v)) return false;
            z->dst_off = -v;
        }
        if (*s == ',') {
            s++;
            if (!parse_rule(&s, &z->start) || *s++ != ',' || !parse_rule(&s, &z->end))
                return false;
        } else { /* POSIX leaves the default open; the US rule is the usual choice */
            z->start = (posix_rule){.kind = 'M', .m = 3, .w = 2, .d = 0, .secs = 7200};
            z->end = (posix_rule){.kind = 'M', .m = 11, .w = 1, .d = 0, .secs = 7200};
        }
        z->rule_dst = true;
    }
    if (*s) return false;
    z->has_rule = true;
    return true;
}

/* ---- TZif (RFC 8536) ---- */

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const uint8_t *p) { return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4)); }

typedef struct tzif_counts {
    size_t isut, isstd, leap, time, type, chars;
} tzif_counts;

static bool read_header(const uint8_t *b, size_t len, size_t off, tzif_counts *c) {
    if (len < off || len - off < 44 || memcmp(b + off, "TZif", 4) != 0) return false;
    const uint8_t *p = b + off + 20;
    *c = (tzif_counts){be32(p), be32(p + 4), be32(p + 8), be32(p + 12), be32(p + 16), be32(p + 20)};
    return c->type >= 1 && c->type <= 256 && c->chars >= 1 &&
           (c->isut == 0 || c->isut == c->type) && (c->isstd == 0 || c->isstd == c->type);
}

static size_t block_size(const tzif_counts *c, size_t tsize) {
    return c->time * tsize + c->time + c->type * 6 + c->chars + c->leap * (tsize + 4) + c->isstd +
           c->isut;
}

static bool parse_tzif(const uint8_t *b, size_t len, zone *z) {
    tzif_counts c;
    if (!read_header(b, len, 0, &c)) return false;
    size_t off = 44, tsize = 4;
    if (b[4] >= '2') { /* skip the 32-bit block: the 64-bit one follows */
        off += block_size(&c, 4);
        if (!read_header(b, len, off, &c)) return false;
        off += 44;
        tsize = 8;
    }
    size_t size = block_size(&c, tsize);
    if (len - off < size) return false;
    const uint8_t *p = b + off;
    z->n_trans = c.time;
    z->trans = xcalloc(c.time ? c.time : 1, sizeof(int64_t));
    z->idx = xcalloc(c.time ? c.time : 1, 1);
    for (size_t i = 0; i < c.time; i++, p += tsize) {
        z->trans[i] = tsize == 8 ? be64(p) : (int32_t)be32(p);
        if (i && z->trans[i] <= z->trans[i - 1]) return false;
    }
    for (size_t i = 0; i < c.time; i++) {
        z->idx[i] = *p++;
        if (z->idx[i] >= c.type) return false;
    }
    z->n_types = c.type;
    z->types = xcalloc(c.type, sizeof(ttype));
    for (size_t i = 0; i < c.type; i++, p += 6) {
        int32_t o = (int32_t)be32(p);
        if (o <= -89999 || o >= 93600) return false;
        z->types[i] = (ttype){o, p[4] != 0};
    }
    off += size;
    /* footer: "\n<POSIX TZ>\n" (version 2+) */
    if (tsize == 8 && off < len && b[off] == '\n') {
        const uint8_t *nl = memchr(b + off + 1, '\n', len - off - 1);
        if (!nl) return false;
        size_t n = (size_t)(nl - (b + off + 1));
        if (n > 0) {
            _cleanup_free_ char *tz = xstrndup((const char *)b + off + 1, n);
            if (!parse_posix_tz(tz, z)) return false;
        }
    }
    return true;
}

static pthread_mutex_t zones_lock = PTHREAD_MUTEX_INITIALIZER;
static zone *zones;

__attribute__((destructor)) static void zones_free(void) {
    pthread_mutex_lock(&zones_lock);
    while (zones) {
        zone *z = zones;
        zones = z->next;
        zone_free(z);
    }
    pthread_mutex_unlock(&zones_lock);
}

static bool valid_zone_name(const char *tz) {
    size_t n = strlen(tz);
    return n > 0 && n < 200 && tz[0] != '/' && !strstr(tz, "..") &&
           strspn(tz, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/_+-") == n;
}

static zone *zone_load(const char *name, dg_error *err) {
    zone *z = xcalloc(1, sizeof *z);
    z->name = xstrdup(name);
    if (strcmp(name, "UTC") == 0) { /* built in, so UTC works without a tz database */
        z->n_types = 1;
        z->types = xcalloc(1, sizeof(ttype));
        return z;
    }
    if (!valid_zone_name(name)) {
        zone_free(z);
        dg_error_set(err, -EINVAL, "unknown timezone '%.100s'", name);
        return NULL;
    }
    const char *dir = getenv("TZDIR");
    _cleanup_free_ char *path = xasprintf("%s/%s", dir && *dir ? dir : ZONEINFO_DIR, name);
    _cleanup_free_ char *data = NULL;
    size_t len = 0;
    int r = dg_read_file(path, &data, &len);
    if (r < 0) {
        zone_free(z);
        dg_error_set(err, r == -ENOENT ? -EINVAL : r, "unknown timezone '%.100s': %s", name,
                     strerror(-r));
        return NULL;
    }
    if (!parse_tzif((const uint8_t *)data, len, z)) {
        zone_free(z);
        dg_error_set(err, -EINVAL, "timezone '%.100s': not a valid tz database file", name);
        return NULL;
    }
    return z;
}

/* Zones are never freed before exit, so the pointer stays valid without the lock. */
static const zone *zone_get(const char *name, dg_error *err) {
    pthread_mutex_lock(&zones_lock);
    zone *z = zones;
    while (z && strcmp(z->name, name) != 0) z = z->next;
    if (!z) {
        z = zone_load(name, err);
        if (z) {
            z->next = zones;
            zones = z;
        }
    }
    pthread_mutex_unlock(&zones_lock);
    return z;
}

int dg_tz_utc_to_local(const char *tz, int64_t utc_ms, int64_t *ret_local_ms) {
    const zone *z = zone_get(tz ? tz : "UTC", NULL);
    if (!z) return -EINVAL;
    *ret_local_ms = utc_ms + (int64_t)offset_at(z, floor_div(utc_ms, 1000)) * 1000;
    return 0;
}

int dg_tz_local_to_utc(const char *tz, int64_t local_ms, int64_t *ret_utc_ms) {
    const zone *z = zone_get(tz ? tz : "UTC", NULL);
    if (!z) return -EINVAL;
    int64_t s = floor_div(local_ms, 1000);
    *ret_utc_ms = local_to_utc(z, s) * 1000 + (local_ms - s * 1000);
    return 0;
}

/* ---- schedules ---- */

int dg_schedule_init(dg_schedule *s, const char *expr, const char *tz, dg_error *err) {
    dg_cron c;
    int r = dg_cron_parse(expr, &c, err);
    if (r < 0) return r;
    if (!tz || !*tz) tz = "UTC";
    if (!zone_get(tz, err)) return -EINVAL;
    *s = (dg_schedule){.cron = c, .tz = xstrdup(tz)};
    return 0;
}

void dg_schedule_done(dg_schedule *s) {
    if (!s) return;
    free(s->tz);
    s->tz = NULL;
}

static bool day_matches(const dg_cron *c, int64_t day, int m, int d) {
    if (!(c->months & (1u << m))) return false;
    bool md = c->mdays & (1u << d), wd = c->wdays & (1u << weekday(day));
    return !c->mday_star && !c->wday_star ? md || wd : md && wd;
}

/* The first local time >= `from` (seconds, as if UTC) on a whole minute that the cron
 * names, looking no further than SEARCH_DAYS. */
static bool local_next(const dg_cron *c, int64_t from, int64_t *ret) {
    int64_t day0 = floor_div(from, DAY_S);
    for (int64_t day = day0; day <= day0 + SEARCH_DAYS; day++) {
        int64_t y;
        int m, d;
        civil_from_days(day, &y, &m, &d);
        if (!(c->months & (1u << m))) {
            day += days_in_month(y, m) - d; /* on to the 1st of the next month */
            continue;
        }
        if (!day_matches(c, day, m, d)) continue;
        int64_t first = day == day0 ? from - day * DAY_S : 0; /* seconds into the day */
        for (int h = (int)(first / 3600); h < 24; h++) {
            if (!(c->hours & (1u << h))) continue;
            for (int mi = 0; mi < 60; mi++) {
                if (!(c->minutes & ((uint64_t)1 << mi))) continue;
                int64_t l = day * DAY_S + h * 3600 + mi * 60;
                if (l < from) continue;
                *ret = l;
                return true;
            }
        }
    }
    return false;
}

static bool every_hour(const dg_cron *c) { return c->hours == 0xffffff; }

/* Both walks below return INT64_MAX when the cron never fires (Feb 30). */

/* Real time: walk the stretches of constant offset; in each, the first instant whose local
 * time the cron names is the first named local time from the stretch's start, if it comes
 * before the stretch ends. */
static int64_t real_next(const dg_cron *c, const zone *z, int64_t after_s) {
    for (int64_t t = after_s + 1; t <= after_s + (int64_t)SEARCH_DAYS * DAY_S;) {
        int32_t off = offset_at(z, t);
        int64_t end = next_change(z, t), l;
        if (!local_next(c, t + off, &l)) break;
        if (l - off < end) return l - off;
        t = end;
    }
    return INT64_MAX;
}

/* Wall clock: each named local time l fires at local_to_utc(l). That map is monotonic
 * except that gap times jump forward by the gap, so the fire is the earliest instant over
 * the named times, and the walk may stop once l passes the local time of the best instant
 * found (a later l never fires before it). The walk starts where a named time could still
 * fire after `after`: the smallest offset around it covers a repeated hour's second pass
 * and a gap time pushed past `after`. */
static int64_t wall_next(const dg_cron *c, const zone *z, int64_t after_s) {
    int32_t lo_off = offset_at(z, after_s);
    int32_t around[2] = {offset_at(z, after_s - 93600), offset_at(z, after_s + 93600)};
    for (int i = 0; i < 2; i++)
        if (around[i] < lo_off) lo_off = around[i];
    int64_t best = INT64_MAX, best_local = INT64_MAX, l;
    for (int64_t from = after_s + lo_off + 1; local_next(c, from, &l); from = l + 1) {
        if (l > best_local) break;
        int64_t t = local_to_utc(z, l);
        if (t > after_s && t < best) {
            best = t;
            best_local = t + offset_at(z, t);
        }
    }
    return best;
}

static int64_t cron_next(const dg_cron *c, const zone *z, int64_t after_ms) {
    int64_t after_s = floor_div(after_ms, 1000); /* fires are whole seconds */
    int64_t t = every_hour(c) ? real_next(c, z, after_s) : wall_next(c, z, after_s);
    return t == INT64_MAX ? -1 : t * 1000;
}

int64_t dg_schedule_next_fire(const dg_schedule *s, int64_t start_ms, int64_t after_ms) {
    switch (s->cron.type) {
    case DG_SCHED_ONCE:
        return start_ms > after_ms ? start_ms : -1;
    case DG_SCHED_EVERY: {
        int64_t every = s->cron.every_ms;
        if (every <= 0) return -1;
        if (after_ms < start_ms) return start_ms;
        int64_t k = (after_ms - start_ms) / every + 1;
        if (k > (INT64_MAX - start_ms) / every) return -1;
        return start_ms + k * every;
    }
    case DG_SCHED_CRON:
    default: {
        const zone *z = zone_get(s->tz ? s->tz : "UTC", NULL);
        return z ? cron_next(&s->cron, z, after_ms) : -1;
    }
    }
}

static int finish_interval(int64_t start, int64_t end, int64_t end_date_ms, dg_interval *ret) {
    if (start < 0 || end < 0) return -ENOENT;
    if (end_date_ms && start > end_date_ms) return -ENOENT;
    *ret = (dg_interval){start, end};
    return 0;
}

/* Airflow 2: interval i is [fire_i, fire_i+1). @once has exactly one, [start_date,
 * start_date], created at start_date. An interval starting exactly on end_date still runs;
 * none starts after it. */
int dg_schedule_next_interval(const dg_schedule *s, int64_t start_date_ms, int64_t end_date_ms,
                              const dg_interval *prev, dg_interval *ret) {
    if (s->cron.type == DG_SCHED_ONCE) {
        if (prev) return -ENOENT;
        return finish_interval(start_date_ms, start_date_ms, end_date_ms, ret);
    }
    /* A previous end that is not a fire time (the schedule changed) moves on to the next
     * fire, so intervals stay aligned with the current schedule. */
    int64_t from = prev ? prev->end_ms : start_date_ms;
    int64_t start = dg_schedule_next_fire(s, start_date_ms, from - 1);
    if (start < 0) return -ENOENT;
    return finish_interval(start, dg_schedule_next_fire(s, start_date_ms, start), end_date_ms,
                           ret);
}

/* The last cron fire in (floor_ms, t_ms], or -1 when there is none. There is no backwards
 * search in cron time: look back in growing windows, then walk forward. */
static int64_t cron_last_fire(const dg_schedule *s, int64_t floor_ms, int64_t t_ms) {
    for (int64_t w = 3600 * 1000;; w *= 2) {
        int64_t from = t_ms - w < floor_ms ? floor_ms : t_ms - w;
        int64_t last = dg_schedule_next_fire(s, 0, from);
        if (last >= 0 && last <= t_ms) {
            for (;;) {
                int64_t f = dg_schedule_next_fire(s, 0, last);
                if (f < 0 || f > t_ms) return last;
                last = f;
            }
        }
        if (from == floor_ms) return -1;
    }
}

int dg_schedule_interval_after(const dg_schedule *s, int64_t start_date_ms, int64_t end_date_ms,
                               int64_t t_ms, dg_interval *ret) {
    dg_interval first;
    int r = dg_schedule_next_interval(s, start_date_ms, end_date_ms, NULL, &first);
    if (r < 0) return r;
    if (first.end_ms > t_ms) {
        *ret = first;
        return 0;
    }
    if (s->cron.type == DG_SCHED_ONCE) return -ENOENT;
    int64_t last; /* the last fire <= t; first.end_ms is one, so it exists */
    if (s->cron.type == DG_SCHED_EVERY)
        last = start_date_ms + (t_ms - start_date_ms) / s->cron.every_ms * s->cron.every_ms;
    else
        last = cron_last_fire(s, first.end_ms - 1, t_ms);
    return finish_interval(last, dg_schedule_next_fire(s, start_date_ms, last), end_date_ms, ret);
}

/* Airflow 2's infer_manual_data_interval: a cron schedule's run_after is aligned down to a
 * fire time (itself when it is one), and the interval is the one that ends there; a delta
 * schedule ends at run_after itself; anything else is the instant alone. start_date plays
 * no part, as in Airflow. */
void dg_schedule_manual_interval(const dg_schedule *s, int64_t logical_ms, dg_interval *ret) {
    *ret = (dg_interval){logical_ms, logical_ms};
    if (!s) return;
    if (s->cron.type == DG_SCHED_EVERY) {
        if (s->cron.every_ms > 0) ret->start_ms = logical_ms - s->cron.every_ms;
        return;
    }
    if (s->cron.type != DG_SCHED_CRON) return;
    const int64_t reach = (int64_t)SEARCH_DAYS * DAY_S * 1000;
    int64_t end = cron_last_fire(s, logical_ms - reach, logical_ms);
    if (end < 0) return;
    int64_t start = cron_last_fire(s, end - 1 - reach, end - 1);
    if (start < 0) return;
    *ret = (dg_interval){start, end};
}
