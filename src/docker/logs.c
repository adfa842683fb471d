/* docker/logs — following a container's output: GET /containers/{id}/logs with
 * follow=1, since=0 and timestamps=1, demultiplexed, timestamps stripped, split into
 * lines per stream and handed to the owner in arrival order.
 *
 * The engine writes every log message (and every 16 KiB piece of a long line) as its own
 * frame starting with "<RFC3339Nano> ", so a timestamp is removed at the start of each
 * frame only, even when the frame itself arrives in several reads.
 *
 * Catch-up: the engine (20.10, json-file) may end a follow as the container stops before
 * sending the last message it writes, typically an unterminated final line flushed at
 * exit. So when a follow ends cleanly we read the log once more without follow, from a
 * few seconds before the last frame we saw, and skip exactly the frames already
 * delivered: both reads return the log file's frames in file order, so the frames with
 * timestamps >= since that we delivered are the catch-up's first ones.
 *
 * Resume: when the connection itself breaks (an engine restart, a proxy in between), the
 * follow (or the catch-up) starts again the same way — from a few seconds back, skipping
 * what was already delivered — with a backoff, for up to ten minutes. A frame the break
 * cut in two is taken back (its bytes leave the partial line) and read whole again.
 *
 * Gaps: a frame newer than every one delivered, while delivered frames were still due
 * to be skipped, or a catch-up that ends before they all came, means the engine rotated
 * its log past them: whatever it wrote between them and the rotation is gone, and how
 * much is not known. The owner gets DG_LOG_GAP_MARK there (docs/operations.md, Logs). */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "internal.h"

#define TS_MAX 48
#define SECOND_SLOTS 8   /* per-second frame counts kept for the catch-up */
#define CATCHUP_BACK_S 3 /* catch-up starts this many seconds before the last frame */
#define RESUME_MAX 20    /* reads restarted after an engine's error frame or a cut frame */
#define RESUME_DELAY_MS 500
#define RESUME_DELAY_MAX_MS 5000
#define RESUME_GIVE_UP_MS (10 * 60 * 1000) /* an engine away longer ends the stream */
#define DAEMON_ERR_MAX 4096

typedef struct logs_stream {
    dg_docker_stream s; /* first: the client sees only this */
    char *id;
    const char *kind;   /* "containers" or "services": whose log endpoint */
    dg_docker_line_cb line_cb;
    dg_docker_done_cb done;
    void *ud;
    dg_demux dm;
    dg_lines lines;
    bool catchup;       /* second phase: the non-follow read */
    bool in_ts;         /* inside a frame's timestamp prefix */
    bool skipping;      /* current frame was delivered by the follow already */
    char ts[TS_MAX + 1];
    size_t ts_len;
    char sec_prefix[20]; /* "YYYY-MM-DDTHH:MM:SS" of the last parsed timestamp */
    int64_t sec;         /* ... and its Unix second */
    int64_t max_sec;     /* -1 before any frame */
    int64_t last_ns;     /* newest timestamp delivered, -1 before any (stdout and stderr
                          * frames can be a little out of order in the log) */
    struct {
        int64_t sec;
        uint64_t n;
    } slots[SECOND_SLOTS];
    uint64_t skip_left;
    /* the frame being delivered, to take it back when a break cuts it */
    bool frame_open;
    int frame_stream;
    size_t frame_fed;
    int64_t frame_sec, prev_last_ns, prev_max_sec;
    int resumes;         /* reads restarted after an error frame or a cut frame */
    int64_t down_since;  /* when the connection broke (ms), 0 while it works */
    uint64_t resume_delay;
    dg_buf daemon_err;   /* payload of type-3 frames */
} logs_stream;

static void logs_free(dg_docker_stream *s) {
    logs_stream *l = (logs_stream *)s;
    free(l->id);
    dg_lines_free(&l->lines);
    dg_buf_free(&l->daemon_err);
    free(l);
}

static void line_out(void *ud, int stream, const char *line, size_t len) {
    logs_stream *l = ud;
    if (l->s.cancelled || l->s.finished) return;
    l->line_cb(l->ud, stream, line, len);
}

/* Lines were lost here: what came before goes out as it is, then the mark. */
static void gap(logs_stream *l) {
    dg_lines_flush(&l->lines, line_out, l);
    line_out(l, DG_DOCKER_GAP, DG_LOG_GAP_MARK, sizeof DG_LOG_GAP_MARK - 1);
}

/* The frame's timestamp in ns since the epoch, -1 when it cannot be read. */
static int64_t frame_ns(logs_stream *l) {
    if (l->ts_len < 20) return -1;
    if (memcmp(l->ts, l->sec_prefix, 19) != 0) {
        char buf[21];
        memcpy(buf, l->ts, 19);
        memcpy(buf + 19, "Z", 2);
        int64_t ms;
        if (dg_parse_time(buf, &ms) < 0) return -1;
        memcpy(l->sec_prefix, l->ts, 19);
        l->sec = ms / 1000;
    }
    int64_t frac = 0;
    size_t i = 19, digits = 0;
    if (l->ts[i] == '.')
        for (i++; i < l->ts_len && l->ts[i] >= '0' && l->ts[i] <= '9'; i++)
            if (digits < 9) frac = frac * 10 + (l->ts[i] - '0'), digits++;
    for (; digits < 9; digits++) frac *= 10;
    return l->sec * 1000000000 + frac;
}

/* Called once a frame's timestamp is complete: skip it (delivered before), or count it
 * per second so that a catch-up or a resume (even one broken off again) knows what was
 * delivered. */
static void frame_start(logs_stream *l) {
    int64_t ns = frame_ns(l);
    if (l->skip_left > 0) {
        if (ns < 0 || l->last_ns < 0 || ns <= l->last_ns) {
            l->skip_left--;
            l->skipping = true;
            return;
        }
        l->skip_left = 0;
        gap(l);
    }
    if (ns < 0) return;
    int64_t s = ns / 1000000000;
    l->frame_open = true;
    l->frame_fed = 0;
    l->frame_sec = s;
    l->prev_last_ns = l->last_ns;
    l->prev_max_sec = l->max_sec;
    if (ns > l->last_ns) l->last_ns = ns;
    if (s > l->max_sec) l->max_sec = s;
    size_t i = (size_t)(s % SECOND_SLOTS);
    if (l->slots[i].sec != s) {
        l->slots[i].sec = s;
        l->slots[i].n = 0;
    }
    l->slots[i].n++;
}

/* A break cut the frame being delivered: forget it, so the resumed read delivers it whole.
 * Its bytes so far are at the end of its stream's partial line (a frame holds one line at
 * most, a piece of one when longer than 16 KiB). */
static void frame_take_back(logs_stream *l) {
    if (!l->frame_open) return;
    l->frame_open = false;
    size_t i = (size_t)(l->frame_sec % SECOND_SLOTS);
    if (l->slots[i].sec == l->frame_sec && l->slots[i].n > 0) l->slots[i].n--;
    l->last_ns = l->prev_last_ns;
    l->max_sec = l->prev_max_sec;
    dg_buf *p = &l->lines.partial[l->frame_stream];
    if (p->len >= l->frame_fed) {
        p->len -= l->frame_fed;
        if (p->data) p->data[p->len] = 0;
    }
}

static void frame_piece(void *ud, int stream, const char *data, size_t len) {
    logs_stream *l = ud;
    if (stream == 3) {
        if (l->daemon_err.len < DAEMON_ERR_MAX)
            dg_buf_append(&l->daemon_err, data, len < DAEMON_ERR_MAX ? len : DAEMON_ERR_MAX);
    } else {
        if (l->in_ts) {
            const char *sp = memchr(data, ' ', len);
            size_t n = sp ? (size_t)(sp - data) : len;
            size_t keep = n < TS_MAX - l->ts_len ? n : TS_MAX - l->ts_len;
            memcpy(l->ts + l->ts_len, data, keep);
            l->ts_len += keep;
            l->ts[l->ts_len] = 0;
            if (sp) {
                l->in_ts = false;
                len -= n + 1;
                data = sp + 1;
                frame_start(l);
            } else {
                len = 0;
            }
        }
        if (!l->skipping && len > 0) {
            int out = stream == 0 ? 1 : stream;
            l->frame_stream = out;
            l->frame_fed += len;
            dg_lines_feed(&l->lines, out, data, len, line_out, l);
        }
    }
    if (l->dm.remaining == 0) {
        l->in_ts = true;
        l->skipping = false;
        l->frame_open = false;
        l->ts_len = 0;
    }
}

static void logs_end(logs_stream *l, const dg_error *err) {
    dg_lines_flush(&l->lines, line_out, l);
    if (!l->s.cancelled && !l->s.finished && l->done) l->done(l->ud, err);
    dg__stream_finish(&l->s);
}

static void logs_data(dg__req *r, const char *data, size_t len) {
    logs_stream *l = r->ctx;
    if (l->s.finished) return;
    int e = dg_demux_feed(&l->dm, data, len, frame_piece, l);
    if (e < 0) {
        dg_error err = {0};
        dg_error_set(&err, e, "the Docker engine sent logs that are not multiplexed frames "
                              "(was the container created with Tty: true?)");
        logs_end(l, &err);
        dg_error_clear(&err);
    }
}

/* The engine answers again: a later break gets the whole time to resume again. */
static void logs_headers(dg__req *r) {
    logs_stream *l = r->ctx;
    if (r->status >= 400) return;
    l->down_since = 0;
    l->resume_delay = 0;
}

static void start_read(logs_stream *l);

static void resume_cb(uv_timer_t *t) {
    logs_stream *l = t->data;
    if (l->s.finished || l->s.cancelled) return;
    start_read(l);
}

static void logs_done(dg__req *r, const dg_error *err) {
    logs_stream *l = r->ctx;
    if (l->s.finished) return;
    if (l->s.req == r) {
        l->s.req = NULL;
        dg__req_unref(r);
    }
    dg_error e = {0};
    if (!err && l->daemon_err.len > 0) {
        size_t n = l->daemon_err.len;
        while (n > 0 && l->daemon_err.data[n - 1] == '\n') n--;
        dg_error_set(&e, -EIO, "reading logs failed: %.*s", (int)n, l->daemon_err.data);
        err = &e;
    } else if (!err && (l->dm.hdr_len > 0 || l->dm.remaining > 0)) {
        dg_error_set(&e, -EPROTO, "the log stream ended inside a frame");
        err = &e;
    }
    if (!err && l->catchup && l->skip_left > 0) {
        /* frames delivered before are no longer in the engine's log */
        l->skip_left = 0;
        gap(l);
    }
    if (!err && !l->catchup && !r->d->closing) {
        l->catchup = true;
        start_read(l);
        return;
    }
    if (err && r->status < 400 && err->code != -ECANCELED && !r->d->closing) {
        /* the connection broke (transport error): resume for as long as the engine may
         * take to come back; an error frame or a cut frame: a few times */
        bool broken = err != &e;
        int64_t now = dg_now_ms();
        if (broken && !l->down_since) l->down_since = now;
        if (broken ? now - l->down_since <= RESUME_GIVE_UP_MS : l->resumes < RESUME_MAX) {
            if (!broken) l->resumes++;
            l->resume_delay = l->resume_delay ? l->resume_delay * 2 : RESUME_DELAY_MS;
            if (l->resume_delay > RESUME_DELAY_MAX_MS) l->resume_delay = RESUME_DELAY_MAX_MS;
            dg_error_clear(&e);
            uv_timer_start(&l->s.timer, resume_cb, l->resume_delay, 0);
            return;
        }
    }
    logs_end(l, err);
    dg_error_clear(&e);
}

static void start_read(logs_stream *l) {
    _cleanup_free_ char *eid = dg__escape(l->id);
    _cleanup_free_ char *path = NULL;
    if (!l->catchup && l->max_sec < 0 && l->resumes == 0 && !l->down_since) {
        path = xasprintf("/%s/%s/logs?follow=1&stdout=1&stderr=1&timestamps=1&since=0", l->kind, eid);
    } else {
        /* catch-up or resume: from a little before the newest frame, skipping what was
         * delivered */
        frame_take_back(l);
        int64_t since = l->max_sec < 0 ? 0 : l->max_sec - CATCHUP_BACK_S;
        if (since < 0) since = 0;
        l->skip_left = 0;
        for (size_t i = 0; i < SECOND_SLOTS; i++)
            if (l->slots[i].n && l->slots[i].sec >= since) l->skip_left += l->slots[i].n;
        path = xasprintf("/%s/%s/logs?follow=%d&stdout=1&stderr=1&timestamps=1&since=%" PRId64, l->kind,
                         eid, l->catchup ? 0 : 1, since);
        l->dm = (dg_demux){0};
        l->in_ts = true;
        l->skipping = false;
        l->ts_len = 0;
    }
    dg__req *r = dg__req_new(l->s.d, "GET", path, NULL, logs_done, l);
    r->stream = true;
    r->on_data = logs_data;
    r->on_headers = logs_headers;
    l->s.req = r;
    dg__req_ref(r);
    dg__req_submit(r);
}

static dg_docker_stream *follow(dg_docker *d, const char *kind, const char *id, dg_docker_line_cb line_cb,
                                dg_docker_done_cb done, void *ud) {
    logs_stream *l = xcalloc(1, sizeof *l);
    l->kind = kind;
    l->id = xstrdup(id ? id : "");
    l->line_cb = line_cb;
    l->done = done;
    l->ud = ud;
    l->in_ts = true;
    l->max_sec = -1;
    l->last_ns = -1;
    for (size_t i = 0; i < SECOND_SLOTS; i++) l->slots[i].sec = -1;
    l->s.on_free = logs_free;
    dg__stream_link(d, &l->s);
    start_read(l);
    return &l->s;
}

dg_docker_stream *dg_docker_logs_follow(dg_docker *d, const char *id, dg_docker_line_cb line_cb,
                                        dg_docker_done_cb done, void *ud) {
    return follow(d, "containers", id, line_cb, done, ud);
}

dg_docker_stream *dg_docker_service_logs_follow(dg_docker *d, const char *id, dg_docker_line_cb line_cb,
                                                dg_docker_done_cb done, void *ud) {
    return follow(d, "services", id, line_cb, done, ud);
}

/* The engine emits `die` only after the container's output has been copied into its log
 * and the log driver closed, so from then on one plain read gives the rest: no need to
 * wait for the follow to notice the end (tens of milliseconds on 20.10). A follow caught
 * inside a frame is left to end by itself. */
void dg_docker_logs_exited(dg_docker_stream *s) {
    logs_stream *l = (logs_stream *)s;
    if (!s || s->finished || s->cancelled || l->catchup) return;
    if (!s->req) {
        /* waiting to resume a broken follow: read what is left now instead */
        if (!uv_is_active((uv_handle_t *)&s->timer)) return;
        uv_timer_stop(&s->timer);
        l->catchup = true;
        start_read(l);
        return;
    }
    if (l->dm.hdr_len > 0 || l->dm.remaining > 0 || !l->in_ts) return;
    dg__req *r = s->req;
    dg__req_cancel(r);
    s->req = NULL;
    dg__req_unref(r);
    uv_timer_stop(&s->timer);
    l->catchup = true;
    start_read(l);
}
