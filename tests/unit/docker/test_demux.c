/* Pure docker helpers: frame demultiplexing, line splitting, host parsing, image refs. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dagd/docker.h"

typedef struct collect {
    dg_buf out[4];
    int pieces;
} collect;

static void on_piece(void *ud, int stream, const char *data, size_t len) {
    collect *c = ud;
    cr_assert(stream >= 0 && stream <= 3);
    dg_buf_append(&c->out[stream], data, len);
    c->pieces++;
}

static void collect_free(collect *c) {
    for (int i = 0; i < 4; i++) dg_buf_free(&c->out[i]);
}

static void put_frame(dg_buf *b, int type, const char *p, size_t n) {
    unsigned char h[8] = {(unsigned char)type, 0, 0, 0, (unsigned char)(n >> 24),
                          (unsigned char)(n >> 16), (unsigned char)(n >> 8), (unsigned char)n};
    dg_buf_append(b, h, 8);
    dg_buf_append(b, p, n);
}

Test(demux, random_splits_many_seeds) {
    for (unsigned seed = 1; seed <= 300; seed++) {
        srand(seed);
        dg_buf wire = {0}, want[3] = {{0}};
        int frames = 1 + rand() % 60;
        for (int f = 0; f < frames; f++) {
            int type = 1 + rand() % 2;
            size_t n = (size_t)(rand() % 5 == 0 ? rand() % 70000 : rand() % 40);
            char *p = xmalloc(n + 1);
            for (size_t i = 0; i < n; i++) p[i] = (char)(rand() & 0xff);
            put_frame(&wire, type, p, n);
            dg_buf_append(&want[type], p, n);
            free(p);
        }
        collect c = {0};
        dg_demux dm = {0};
        size_t off = 0;
        while (off < wire.len) {
            size_t step = (size_t)(rand() % 4 == 0 ? rand() % 9 : rand() % 20000) + 1;
            if (step > wire.len - off) step = wire.len - off;
            cr_assert_eq(dg_demux_feed(&dm, wire.data + off, step, on_piece, &c), 0);
            off += step;
        }
        cr_assert_eq(dm.hdr_len, 0);
        cr_assert_eq(dm.remaining, 0);
        for (int s = 1; s <= 2; s++) {
            cr_assert_eq(c.out[s].len, want[s].len, "seed %u stream %d", seed, s);
            cr_assert(want[s].len == 0 || memcmp(c.out[s].data, want[s].data, want[s].len) == 0,
                      "seed %u stream %d differs", seed, s);
        }
        collect_free(&c);
        dg_buf_free(&wire);
        for (int s = 0; s < 3; s++) dg_buf_free(&want[s]);
    }
}

Test(demux, byte_at_a_time_and_type3) {
    dg_buf wire = {0};
    put_frame(&wire, 1, "out\n", 4);
    put_frame(&wire, 0, "in\n", 3);
    put_frame(&wire, 3, "boom", 4);
    collect c = {0};
    dg_demux dm = {0};
    for (size_t i = 0; i < wire.len; i++)
        cr_assert_eq(dg_demux_feed(&dm, wire.data + i, 1, on_piece, &c), 0);
    cr_assert_str_eq(c.out[1].data, "out\n");
    cr_assert_str_eq(c.out[0].data, "in\n");
    cr_assert_str_eq(c.out[3].data, "boom");
    collect_free(&c);
    dg_buf_free(&wire);
}

Test(demux, bad_headers) {
    const char *bad[] = {"\x05\0\0\0\0\0\0\x01x", "\x01\0\x01\0\0\0\0\x01x", "2024-01-01T00:00"};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        dg_demux dm = {0};
        collect c = {0};
        cr_assert_eq(dg_demux_feed(&dm, bad[i], 9, on_piece, &c), -EPROTO, "case %zu", i);
        cr_assert_eq(c.pieces, 0);
    }
    /* A bad header after good frames is noticed too, even when split. */
    dg_buf wire = {0};
    put_frame(&wire, 2, "ok", 2);
    dg_buf_append(&wire, "HTTP/1.1", 8);
    dg_demux dm = {0};
    collect c = {0};
    cr_assert_eq(dg_demux_feed(&dm, wire.data, 13, on_piece, &c), 0);
    cr_assert_eq(dg_demux_feed(&dm, wire.data + 13, wire.len - 13, on_piece, &c), -EPROTO);
    cr_assert_str_eq(c.out[2].data, "ok");
    collect_free(&c);
    dg_buf_free(&wire);
}

typedef struct lines_seen {
    int n;
    char *line[16];
    int stream[16];
    size_t len[16];
} lines_seen;

static void on_line(void *ud, int stream, const char *line, size_t len) {
    lines_seen *s = ud;
    cr_assert_lt(s->n, 16);
    s->line[s->n] = xstrndup(line, len);
    s->len[s->n] = len;
    s->stream[s->n++] = stream;
}

static void seen_free(lines_seen *s) {
    for (int i = 0; i < s->n; i++) free(s->line[i]);
}

typedef struct fwd_t {
    dg_lines *l;
    lines_seen *s;
} fwd_t;

static void fwd_cb(void *ud, int stream, const char *d, size_t n) {
    fwd_t *f = ud;
    dg_lines_feed(f->l, stream, d, n, on_line, f->s);
}

/* A 40000-byte line of 3-byte UTF-8 characters, framed in 16 KiB pieces the way the
 * engine splits long lines, so frame edges cut characters; stderr interleaved. */
Test(lines, long_utf8_line_across_frames) {
    dg_buf line = {0};
    while (line.len < 40000) dg_buf_puts(&line, "\xe2\x82\xac");
    dg_buf_puts(&line, "\n");
    dg_buf wire = {0};
    for (size_t off = 0; off < line.len; off += 16384) {
        size_t n = line.len - off < 16384 ? line.len - off : 16384;
        put_frame(&wire, 1, line.data + off, n);
        if (off == 0) put_frame(&wire, 2, "err\n", 4);
    }
    put_frame(&wire, 1, "tail", 4);

    dg_lines l = {0};
    lines_seen seen = {0};
    dg_demux dm = {0};
    fwd_t fwd = {&l, &seen};
    srand(7);
    for (size_t off = 0; off < wire.len;) {
        size_t step = (size_t)(rand() % 3000) + 1;
        if (step > wire.len - off) step = wire.len - off;
        cr_assert_eq(dg_demux_feed(&dm, wire.data + off, step, fwd_cb, &fwd), 0);
        off += step;
    }
    dg_lines_flush(&l, on_line, &seen);
    cr_assert_eq(seen.n, 3);
    cr_assert_eq(seen.stream[0], 2);
    cr_assert_str_eq(seen.line[0], "err");
    cr_assert_eq(seen.stream[1], 1);
    cr_assert_eq(seen.len[1], line.len - 1);
    cr_assert(memcmp(seen.line[1], line.data, line.len - 1) == 0);
    cr_assert_eq(seen.stream[2], 1);
    cr_assert_str_eq(seen.line[2], "tail");
    seen_free(&seen);
    dg_lines_free(&l);
    dg_buf_free(&line);
    dg_buf_free(&wire);
}

/* A line of 2.5 MiB of 3-byte characters, fed in 16 KiB chunks: it comes out in pieces
 * of at most DG_LINE_MAX bytes, cut between characters, each but the last followed by the
 * split marker, and the pieces put together are the line. */
Test(lines, long_line_is_split_with_a_marker) {
    dg_buf line = {0};
    while (line.len < 5 * DG_LINE_MAX / 2) dg_buf_puts(&line, "\xe2\x82\xac");
    dg_lines l = {0};
    lines_seen seen = {0};
    for (size_t off = 0; off < line.len; off += 16384)
        dg_lines_feed(&l, 1, line.data + off, line.len - off < 16384 ? line.len - off : 16384, on_line, &seen);
    dg_lines_feed(&l, 1, "\n", 1, on_line, &seen);
    cr_assert_eq(seen.n, 5);
    dg_buf joined = {0};
    for (int i = 0; i < seen.n; i++) {
        cr_assert_eq(seen.stream[i], 1);
        if (i % 2) {
            cr_assert_str_eq(seen.line[i], DG_LINE_SPLIT_MARK);
            continue;
        }
        cr_assert_leq(seen.len[i], DG_LINE_MAX);
        cr_assert_eq(seen.len[i] % 3, 0, "piece %d cuts a character (%zu bytes)", i, seen.len[i]);
        dg_buf_append(&joined, seen.line[i], seen.len[i]);
    }
    cr_assert_eq(joined.len, line.len);
    cr_assert(memcmp(joined.data, line.data, line.len) == 0);
    for (int i = 0; i < 4; i++) cr_assert_eq(l.partial[i].len, 0);
    seen_free(&seen);
    dg_lines_free(&l);
    dg_buf_free(&joined);
    dg_buf_free(&line);
}

Test(lines, empty_lines_and_flush) {
    dg_lines l = {0};
    lines_seen seen = {0};
    dg_lines_feed(&l, 1, "a\n\nb", 4, on_line, &seen);
    dg_lines_feed(&l, 2, "x", 1, on_line, &seen);
    dg_lines_feed(&l, 1, "c\n", 2, on_line, &seen);
    cr_assert_eq(seen.n, 3);
    cr_assert_str_eq(seen.line[0], "a");
    cr_assert_str_eq(seen.line[1], "");
    cr_assert_str_eq(seen.line[2], "bc");
    dg_lines_flush(&l, on_line, &seen);
    cr_assert_eq(seen.n, 4);
    cr_assert_str_eq(seen.line[3], "x");
    cr_assert_eq(seen.stream[3], 2);
    dg_lines_flush(&l, on_line, &seen);
    cr_assert_eq(seen.n, 4);
    seen_free(&seen);
    dg_lines_free(&l);
}

Test(host, parse) {
    dg_docker_endpoint e;
    dg_error err = {0};
    cr_assert_eq(dg_docker_parse_host("unix:///var/run/docker.sock", &e, &err), 0);
    cr_assert_str_eq(e.unix_path, "/var/run/docker.sock");
    cr_assert_str_eq(e.base_url, "http://localhost");
    cr_assert_not(e.tls);
    dg_docker_endpoint_free(&e);

    unsetenv("DOCKER_TLS_VERIFY");
    cr_assert_eq(dg_docker_parse_host("tcp://10.0.0.1:2375", &e, &err), 0);
    cr_assert_null(e.unix_path);
    cr_assert_str_eq(e.base_url, "http://10.0.0.1:2375");
    dg_docker_endpoint_free(&e);
    cr_assert_eq(dg_docker_parse_host("tcp://engine", &e, &err), 0);
    cr_assert_str_eq(e.base_url, "http://engine:2375");
    dg_docker_endpoint_free(&e);

    setenv("DOCKER_TLS_VERIFY", "1", 1);
    setenv("DOCKER_CERT_PATH", "/certs", 1);
    cr_assert_eq(dg_docker_parse_host("tcp://[::1]:2376/", &e, &err), 0);
    cr_assert_str_eq(e.base_url, "https://[::1]:2376");
    cr_assert(e.tls);
    cr_assert_str_eq(e.ca, "/certs/ca.pem");
    cr_assert_str_eq(e.cert, "/certs/cert.pem");
    cr_assert_str_eq(e.key, "/certs/key.pem");
    dg_docker_endpoint_free(&e);
    unsetenv("DOCKER_CERT_PATH");
    setenv("HOME", "/home/u", 1);
    cr_assert_eq(dg_docker_parse_host("tcp://h:1", &e, &err), 0);
    cr_assert_str_eq(e.ca, "/home/u/.docker/ca.pem");
    dg_docker_endpoint_free(&e);
    unsetenv("DOCKER_TLS_VERIFY");

    const char *bad[] = {"", "ssh://me@host", "unix://relative", "tcp://", "tcp://h:", "tcp://h:x",
                         "tcp://h:1/path", "npipe:////./pipe/docker_engine"};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        cr_assert_lt(dg_docker_parse_host(bad[i], &e, &err), 0, "%s", bad[i]);
        cr_assert_not_null(err.msg);
        dg_error_clear(&err);
    }
}

Test(image, split) {
    struct {
        const char *in, *repo, *tag;
    } cases[] = {
        {"busybox", "busybox", "latest"},
        {"busybox:1.36", "busybox", "1.36"},
        {"library/busybox", "library/busybox", "latest"},
        {"reg.example:5000/team/app", "reg.example:5000/team/app", "latest"},
        {"reg.example:5000/team/app:v2", "reg.example:5000/team/app", "v2"},
        {"app@sha256:abcd", "app", "sha256:abcd"},
        {"reg:5000/app:v1@sha256:abcd", "reg:5000/app", "sha256:abcd"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        char *repo, *tag;
        dg_docker_image_split(cases[i].in, &repo, &tag);
        cr_assert_str_eq(repo, cases[i].repo, "%s", cases[i].in);
        cr_assert_str_eq(tag, cases[i].tag, "%s", cases[i].in);
        free(repo);
        free(tag);
    }
}
