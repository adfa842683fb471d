/* docker/logs — following a container's output: GET /containers/{id}/logs with
 * follow=1, since=0 and timestamps=1, demultiplexed, timestamps stripped, split into
 * lines per stream and handed to the owner in arrival order.
 *
 * The engine writes every log message (and every 16 KiB piece of a long line) as its own
 * frame starting with "<RFC3339Nano> ", so a timestamp is removed at the start of each
 * frame only, even when the frame itself arrives in several reads. */
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
    dg_buf daemon_err;  /* payload of type-3 frames */
    int proto_err;
} logs_stream;

static void logs_free(dg_docker_stream *s) {
    logs_stream *l = (logs_stream *)s;
    dg_lines_free(&l->lines);
    dg_buf_free(&l->daemon_err);
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
        if (l->in_ts) {
            const char *sp = memchr(data, ' ', len);
            if (sp) {
                l->in_ts = false;
                len -= (size_t)(sp + 1 - data);
                data = sp + 1;
            } else {
                len = 0;
            }
        }
        dg_lines_feed(&l->lines, stream == 0 ? 1 : stream, data, len, line_out, l);
    }
    if (l->dm.remaining == 0) l->in_ts = true;
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

static void logs_done(dg__req *r, const dg_error *err) {
    logs_stream *l = r->ctx;
    if (l->s.finished) return;
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
    l->s.on_free = logs_free;
    dg__stream_link(d, &l->s);
    _cleanup_free_ char *eid = dg__escape(id ? id : "");
    _cleanup_free_ char *path = xasprintf(
        "/containers/%s/logs?follow=1&stdout=1&stderr=1&timestamps=1&since=0", eid);
    dg__req *r = dg__req_new(d, "GET", path, NULL, logs_done, l);
    r->stream = true;
    r->on_data = logs_data;
    l->s.req = r;
    dg__req_ref(r);
    dg__req_submit(r);
    return &l->s;
}
