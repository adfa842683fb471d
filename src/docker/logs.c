/* docker/logs — following a container's output: GET /containers/{id}/logs with
 * follow=1, since=0 and timestamps=1, demultiplexed, timestamps stripped, split into
 * lines per stream and handed to the owner in arrival order.
 *
 * The engine writes every log message (and every 16 KiB piece of a long line) as its own
 * frame starting with "<RFC3339Nano> ", so a timestamp is removed at the start of each
 * frame only, even when the frame itself arrives in several reads.
 *
 * A follow stream can end without the container's last words: on 20.10 a final line
 * without a newline, flushed as the container exits, was seen missing from the follow
 * response while a plain read moments later had it. So when the follow ends cleanly, a
 * second, non-follow read asks for everything since the last timestamp seen and skips
 * what was already delivered at that timestamp. */
#include <errno.h>
#include <string.h>

#include "internal.h"

typedef struct logs_stream {
    dg_docker_stream s; /* first: the client sees only this */
    dg_docker_line_cb line_cb;
    dg_docker_done_cb done;
    void *ud;
    dg_demux dm;
    dg_lines lines;
    bool in_ts;         /* inside a frame's timestamp prefix */
    char ts[64];        /* the current frame's timestamp, as the engine wrote it */
    size_t ts_len;
    char last_ts[64];   /* newest timestamp seen by the follow pass */
    size_t at_last[3];  /* payload bytes per stream delivered for frames stamped last_ts */
    bool catching_up;   /* the second, non-follow pass */
    bool cur_skip;      /* catch-up: the current frame is stamped last_ts */
    dg_docker *d;
    char *id;
    dg_buf daemon_err;  /* payload of type-3 frames */
    int proto_err;
} logs_stream;

static void logs_free(dg_docker_stream *s) {
    logs_stream *l = (logs_stream *)s;
    dg_lines_free(&l->lines);
    dg_buf_free(&l->daemon_err);
    free(l->id);
    free(l);
}

static void line_out(void *ud, int stream, const char *line, size_t len) {
    logs_stream *l = ud;
    if (l->s.cancelled || l->s.finished) return;
    l->line_cb(l->ud, stream, line, len);
}

static void frame_piece(void *ud, int stream, const char *data, size_t len) {
    logs_stream *l = ud;
    if (stream == 3) {
        dg_buf_append(&l->daemon_err, data, len);
    } else {
        int st = stream == 0 ? 1 : stream;
        if (l->in_ts) {
            const char *sp = memchr(data, ' ', len);
            size_t take = sp ? (size_t)(sp - data) : len;
            if (l->ts_len + take < sizeof l->ts) {
                memcpy(l->ts + l->ts_len, data, take);
                l->ts_len += take;
            }
            if (sp) {
                l->in_ts = false;
                l->ts[l->ts_len] = 0;
                len -= take + 1;
                data = sp + 1;
                if (l->catching_up) {
                    l->cur_skip = strcmp(l->ts, l->last_ts) == 0;
                } else if (strcmp(l->ts, l->last_ts) != 0) {
                    memcpy(l->last_ts, l->ts, l->ts_len + 1);
                    memset(l->at_last, 0, sizeof l->at_last);
                }
            } else {
                len = 0;
            }
        }
        if (l->catching_up && l->cur_skip && len) {
            size_t skip = l->at_last[st] < len ? l->at_last[st] : len;
            l->at_last[st] -= skip;
            data += skip;
            len -= skip;
        } else if (!l->catching_up) {
            l->at_last[st] += len;
        }
        if (len) dg_lines_feed(&l->lines, st, data, len, line_out, l);
    }
    if (l->dm.remaining == 0) {
        l->in_ts = true;
        l->ts_len = 0;
    }
}

static void logs_data(dg__req *r, const char *data, size_t len) {
    logs_stream *l = r->ctx;
    if (l->proto_err || l->s.finished) return;
    int e = dg_demux_feed(&l->dm, data, len, frame_piece, l);
    if (e < 0) {
        l->proto_err = e;
        /* Nothing after a bad header can be trusted; end the transfer. */
        dg__req_cancel(r);
        dg_error err = {0};
        dg_error_set(&err, e, "the Docker engine sent logs that are not multiplexed frames "
                              "(was the container created with Tty: true?)");
        dg_lines_flush(&l->lines, line_out, l);
        if (!l->s.finished && l->done) l->done(l->ud, &err);
        dg_error_clear(&err);
        dg__stream_finish(&l->s);
    }
}

static void logs_done(dg__req *r, const dg_error *err);

/* "2026-11-22T00:26:32.715088123Z" → "1795307192.715088123" for the since= parameter. */
static char *since_param(const char *ts) {
    const char *dot = strchr(ts, '.');
    _cleanup_free_ char *whole = dot ? xasprintf("%.*sZ", (int)(dot - ts), ts) : xstrdup(ts);
    int64_t ms;
    if (dg_parse_time(whole, &ms) < 0) return NULL;
    char frac[10] = "000000000";
    if (dot)
        for (size_t i = 0; i < 9 && dot[1 + i] >= '0' && dot[1 + i] <= '9'; i++) frac[i] = dot[1 + i];
    return xasprintf("%lld.%s", (long long)(ms / 1000), frac);
}

static void start_pass(logs_stream *l, bool follow) {
    _cleanup_free_ char *eid = dg__escape(l->id);
    _cleanup_free_ char *since = l->last_ts[0] ? since_param(l->last_ts) : NULL;
    _cleanup_free_ char *path = xasprintf("/containers/%s/logs?follow=%d&stdout=1&stderr=1&timestamps=1&since=%s",
                                          eid, follow ? 1 : 0, since ? since : "0");
    if (!since) memset(l->at_last, 0, sizeof l->at_last);
    dg__req *r = dg__req_new(l->d, "GET", path, NULL, logs_done, l);
    r->stream = true;
    r->on_data = logs_data;
    l->s.req = r;
    dg__req_ref(r);
    dg__req_submit(r);
}

static void logs_done(dg__req *r, const dg_error *err) {
    logs_stream *l = r->ctx;
    if (l->s.finished) return;
    if (!err && !l->catching_up && !l->proto_err && l->daemon_err.len == 0 && l->dm.hdr_len == 0 &&
        l->dm.remaining == 0) {
        if (l->s.req == r) {
            l->s.req = NULL;
            dg__req_unref(r);
        }
        l->catching_up = true;
        l->in_ts = true;
        l->ts_len = 0;
        start_pass(l, false);
        return;
    }
    dg_lines_flush(&l->lines, line_out, l);
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
    if (!l->s.cancelled && l->done) l->done(l->ud, err);
    dg_error_clear(&e);
    dg__stream_finish(&l->s);
}

dg_docker_stream *dg_docker_logs_follow(dg_docker *d, const char *id, dg_docker_line_cb line_cb,
                                        dg_docker_done_cb done, void *ud) {
    logs_stream *l = xcalloc(1, sizeof *l);
    l->line_cb = line_cb;
    l->done = done;
    l->ud = ud;
    l->in_ts = true;
    l->d = d;
    l->id = xstrdup(id ? id : "");
    l->s.on_free = logs_free;
    dg__stream_link(d, &l->s);
    start_pass(l, true);
    return &l->s;
}
