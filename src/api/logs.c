/* api/logs — a try's log over HTTP. A finished try's log (or any without ?follow=1) is the
 * file as it is now, sent from the fd. With ?follow=1 while the try is live, the reply is
 * a stream of unknown length: the reader hands out what the file holds; at its end the
 * connection is suspended and a uv_timer polls the file every DG_API_LOG_POLL_MS for
 * growth, for the try to end, or for the client to hang up, and resumes it then. When
 * the try is no longer live, the rest of the file is sent and the stream ends.
 *
 * A stream is owned by its MHD response and freed from the response's free callback
 * (its timer closed, the struct released in the close callback); dg_api keeps a list of
 * live streams so that stopping can end them before MHD is stopped. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dagd/server.h"
#include "internal.h"

#define STREAM_BLOCK (16 * 1024)

struct dg__api_stream {
    dg_api *api;
    dg__api_stream *next, **pprev;
    struct MHD_Connection *conn;
    char *dag, *run, *task;
    int try_number;
    char *path;
    int fd;
    uint64_t offset;
    bool live, suspended, aborted;
    bool header; /* the log's header lines too (dg_tasklog_header_len) */
    uv_timer_t timer;
};

static void unlink_stream(dg__api_stream *st) {
    if (!st->pprev) return;
    *st->pprev = st->next;
    if (st->next) st->next->pprev = st->pprev;
    st->next = NULL;
    st->pprev = NULL;
}

static void on_stream_closed(uv_handle_t *h) {
    dg__api_stream *st = h->data;
    free(st->dag);
    free(st->run);
    free(st->task);
    free(st->path);
    free(st);
}

static void stream_free(void *cls) {
    dg__api_stream *st = cls;
    unlink_stream(st);
    if (st->fd >= 0) close(st->fd);
    st->fd = -1;
    uv_close((uv_handle_t *)&st->timer, on_stream_closed);
}

static void on_tick(uv_timer_t *t);

static ssize_t read_some(dg__api_stream *st, char *buf, size_t max) {
    if (st->fd < 0) {
        st->fd = open(st->path, O_RDONLY | O_CLOEXEC);
        if (st->fd < 0) return errno == ENOENT ? 0 : -1;
        /* written whole before the command's first line, in this loop */
        if (!st->header) st->offset = (uint64_t)dg_server_log_header_len(st->path);
    }
    ssize_t n;
    do
        n = pread(st->fd, buf, max, (off_t)st->offset);
    while (n < 0 && errno == EINTR);
    if (n > 0) st->offset += (uint64_t)n;
    return n;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    dg__api_stream *st = cls;
    if (st->aborted) return MHD_CONTENT_READER_END_WITH_ERROR;
    ssize_t n = read_some(st, buf, max);
    if (n != 0) return n > 0 ? n : MHD_CONTENT_READER_END_WITH_ERROR;
    if (st->live && !dg_server_log_live(st->api->server, st->dag, st->run, st->task, st->try_number)) {
        /* The try ended: whatever it wrote before ending is in the file now. */
        st->live = false;
        n = read_some(st, buf, max);
        if (n != 0) return n > 0 ? n : MHD_CONTENT_READER_END_WITH_ERROR;
    }
    if (!st->live) return MHD_CONTENT_READER_END_OF_STREAM;
    /* Nothing yet: park the connection (0 without suspending would spin MHD). */
    st->suspended = true;
    MHD_suspend_connection(st->conn);
    uv_timer_start(&st->timer, on_tick, DG_API_LOG_POLL_MS, DG_API_LOG_POLL_MS);
    return 0;
}

/* A suspended connection is not watched by MHD, so a client that went away is noticed
 * here, by the socket's read side having been shut. */
static bool peer_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return false;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

static void resume(dg__api_stream *st) {
    uv_timer_stop(&st->timer);
    st->suspended = false;
    MHD_resume_connection(st->conn);
}

static void on_tick(uv_timer_t *t) {
    dg__api_stream *st = t->data;
    if (!st->suspended) return;
    bool wake = false;
    struct stat sb;
    if (peer_gone(st->conn)) {
        st->aborted = true;
        wake = true;
    } else if (st->fd < 0) {
        wake = stat(st->path, &sb) == 0;
    } else {
        wake = fstat(st->fd, &sb) < 0 || (uint64_t)sb.st_size > st->offset;
    }
    if (!wake && !dg_server_log_live(st->api->server, st->dag, st->run, st->task, st->try_number)) wake = true;
    if (!wake) return;
    dg_api *a = st->api;
    resume(st);
    /* May end the stream and free st. */
    dg__api_kick(a);
}

void dg__api_streams_abort(dg_api *a) {
    for (dg__api_stream *st = a->streams; st; st = st->next) {
        st->aborted = true;
        if (st->suspended) resume(st);
    }
}

static enum MHD_Result serve_file(struct MHD_Connection *c, const char *path, bool live, int try_number,
                                  const char *task, bool header) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd >= 0 && (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode))) {
        close(fd);
        fd = -1;
        errno = ENOENT;
    }
    if (fd < 0) {
        if (errno == ENOENT && live) /* started, nothing written yet */
            return dg__api_reply(c, 200, "text/plain; charset=utf-8", xstrdup(""), 0);
        if (errno == ENOENT)
            return dg__api_reply_error(c, 404, "try %d of task '%s' has no log", try_number, task);
        return dg__api_reply_error(c, 500, "the log could not be opened: %s", strerror(errno));
    }
    uint64_t skip = header ? 0 : (uint64_t)dg_server_log_header_len(path);
    if (skip > (uint64_t)sb.st_size) skip = (uint64_t)sb.st_size;
    struct MHD_Response *resp = MHD_create_response_from_fd_at_offset64((uint64_t)sb.st_size - skip, fd, skip);
    if (!resp) {
        close(fd);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

enum MHD_Result dg__api_serve_log(dg_api *a, struct MHD_Connection *c, const char *dag, const char *run,
                                  const char *task, int try_number, bool follow, bool header) {
    dg_error err = {0};
    _cleanup_free_ char *path = NULL;
    bool live = false;
    int rc = dg_server_log(a->server, dag, run, task, try_number, &path, &live, &err);
    if (rc < 0) {
        enum MHD_Result ret = dg__api_reply_errno(c, rc, &err);
        dg_error_clear(&err);
        return ret;
    }
    if (!path) return dg__api_reply_error(c, 404, "try %d of task '%s' has no log", try_number, task);
    if (!follow || !live) return serve_file(c, path, live, try_number, task, header);

    dg__api_stream *st = xcalloc(1, sizeof(*st));
    st->api = a;
    st->conn = c;
    st->dag = xstrdup(dag);
    st->run = xstrdup(run);
    st->task = xstrdup(task);
    st->try_number = try_number;
    st->path = TAKE_PTR(path);
    st->fd = -1;
    st->live = true;
    st->header = header;
    uv_timer_init(a->loop, &st->timer);
    st->timer.data = st;
    st->next = a->streams;
    if (a->streams) a->streams->pprev = &st->next;
    a->streams = st;
    st->pprev = &a->streams;

    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK, stream_read, st, stream_free);
    if (!resp) {
        stream_free(st);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    enum MHD_Result ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}
