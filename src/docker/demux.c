/* docker/demux — the pure stream helpers: the 8-byte-header framing the engine uses for
 * non-TTY logs, and per-stream partial-line buffers. Neither does I/O; the caller owns
 * both structs and feeds them bytes in whatever chunks the transport hands over. */
#include <errno.h>
#include <string.h>

#include "dagd/docker.h"

int dg_demux_feed(dg_demux *dm, const char *data, size_t len, dg_demux_cb cb, void *ud) {
    while (len > 0) {
        if (dm->remaining == 0) {
            size_t take = sizeof dm->hdr - dm->hdr_len;
            if (take > len) take = len;
            memcpy(dm->hdr + dm->hdr_len, data, take);
            dm->hdr_len += take;
            data += take;
            len -= take;
            if (dm->hdr_len < sizeof dm->hdr) return 0;
            /* Only types 0..3 exist and the three padding bytes are always zero; anything
             * else means we are not looking at a multiplexed stream (e.g. a TTY one). */
            if (dm->hdr[0] > 3 || dm->hdr[1] || dm->hdr[2] || dm->hdr[3]) return -EPROTO;
            dm->stream = dm->hdr[0];
            dm->remaining = (uint32_t)dm->hdr[4] << 24 | (uint32_t)dm->hdr[5] << 16 |
                            (uint32_t)dm->hdr[6] << 8 | (uint32_t)dm->hdr[7];
            dm->hdr_len = 0;
            continue;
        }
        size_t take = dm->remaining < len ? dm->remaining : len;
        /* remaining is updated before the callback so it can tell a frame's last piece
         * (remaining == 0) from a middle one. */
        dm->remaining -= (uint32_t)take;
        cb(ud, dm->stream, data, take);
        data += take;
        len -= take;
    }
    return 0;
}

/* Where to cut a full buffer so that no UTF-8 sequence is split: before the last lead
 * byte when its sequence is incomplete (at most 3 bytes go back). */
static size_t utf8_cut(const char *s, size_t len) {
    for (size_t back = 1; back <= 3 && back <= len; back++) {
        unsigned char c = (unsigned char)s[len - back];
        if ((c & 0xC0) == 0x80) continue; /* a continuation byte: look further back */
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back && back < len ? len - back : len;
    }
    return len;
}

void dg_lines_feed(dg_lines *l, int stream, const char *data, size_t len, dg_docker_line_cb cb,
                   void *ud) {
    if (stream < 0 || stream >= (int)ARRAY_SIZE(l->partial)) return;
    dg_buf *p = &l->partial[stream];
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        size_t n = nl ? (size_t)(nl - data) : len;
        /* a line that does not fit goes out in pieces (see DG_LINE_MAX) */
        while (p->len + n > DG_LINE_MAX) {
            size_t take = DG_LINE_MAX - p->len;
            dg_buf_append(p, data, take);
            data += take;
            len -= take;
            n -= take;
            size_t cut = utf8_cut(p->data, p->len);
            cb(ud, stream, p->data, cut);
            cb(ud, stream, DG_LINE_SPLIT_MARK, sizeof DG_LINE_SPLIT_MARK - 1);
            dg_buf_consume(p, cut);
        }
        if (!nl) {
            dg_buf_append(p, data, n);
            return;
        }
        if (p->len > 0) {
            dg_buf_append(p, data, n);
            cb(ud, stream, p->data, p->len);
            dg_buf_consume(p, p->len);
        } else {
            cb(ud, stream, data, n);
        }
        data += n + 1;
        len -= n + 1;
    }
}

void dg_lines_flush(dg_lines *l, dg_docker_line_cb cb, void *ud) {
    for (int s = 0; s < (int)ARRAY_SIZE(l->partial); s++) {
        dg_buf *p = &l->partial[s];
        if (p->len == 0) continue;
        /* Detach first: the callback may feed this struct again. */
        dg_buf tail = *p;
        *p = (dg_buf){0};
        cb(ud, s, tail.data, tail.len);
        dg_buf_free(&tail);
    }
}

void dg_lines_free(dg_lines *l) {
    if (!l) return;
    for (size_t s = 0; s < ARRAY_SIZE(l->partial); s++) dg_buf_free(&l->partial[s]);
}
