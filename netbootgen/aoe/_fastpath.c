/*
 * netbootgen.aoe._fastpath: the AoE target's hot path in C.
 *
 * An Engine owns no protocol state of its own: Python (netbootgen.aoe.target.Target) stays the single
 * authority. The engine answers only the common case, an ATA READ/WRITE SECTORS (EXT) request addressed to
 * this target's MAC and to one export (exact shelf.slot), from an allowed initiator, while the export has no
 * reservation. Every other frame (config, mask, reserve, IDENTIFY, broadcasts, errors of the AoE layer, runt
 * frames, other ethertypes) is handed back to Python unchanged and Python's Target.feed answers it. Python
 * pushes the per-export access rules (allowed MACs, reservation) back into the engine whenever they change.
 *
 * Arrival order is kept: run() stops at the first frame of a batch it hands back, and the next run() call goes
 * on with the rest of that batch, so a control frame (mask list edit, reservation) always takes effect for the
 * requests behind it, exactly as when Python answers everything.
 *
 * Frames that are not ours are dropped before anything else: from a group (multicast) source MAC (a reply
 * would go to every station), and on AF_PACKET those the kernel marks PACKET_OTHERHOST or PACKET_OUTGOING
 * (a frame that arrived 802.1Q/802.1ad-tagged for a VLAN without a device here is delivered with the tag
 * stripped and marked PACKET_OTHERHOST), that carry a VLAN tag (PACKET_AUXDATA), or that came in on another
 * interface than the one the engine serves.
 *
 * While run() is active (the GIL released), the exports and mask lists must not change: set_exports,
 * set_access, take_counters and a second run() raise RuntimeError then.
 *
 * Requests are read in batches: recvmmsg() takes everything queued (waiting up to the socket's SO_RCVTIMEO for
 * the first frame). Each reply goes out as soon as it is built, like vblade's: sending a batch's replies together
 * with one sendmmsg() made the guest take 60% more interrupts on writes and was slower (docs/benchmarks.md).
 * The reply bytes are exactly those Target.feed produces for the same request (tests/test_aoe_fastpath.py
 * checks that frame by frame).
 *
 * On a unix stream connection (QEMU -netdev stream: every frame behind a 4-byte big-endian length) the engine
 * owns no socket: stream() answers the frames of a connection's receive buffer that Python read, in order, up
 * to the first one it hands back (or the first incomplete one), and appends the length-prefixed replies to the
 * connection's output buffer, which Python sends with one call (netbootgen/aoe/stream.py keeps back-pressure).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <linux/if_packet.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define BATCH 32
#define MAX_FRAME (1 << 17)         /* larger than any legal AoE frame (36 + 255 * 512) */
#define MAX_REPLY (36 + 255 * 512)
#define MIN_FRAME 60
#define CTRL_SPACE CMSG_SPACE(sizeof(struct tpacket_auxdata))

typedef struct {
    unsigned shelf, slot;
    int fd;
    uint64_t base;    /* bytes */
    uint64_t sectors; /* window length */
    int readonly;
    int fast;     /* 0: Python answers everything for this export (e.g. O_DIRECT) */
    int reserved; /* a reservation is set: Python answers */
    unsigned char *masks; /* allowed initiator MACs, 6 bytes each; none: everybody */
    Py_ssize_t nmasks;
    unsigned long long frames, bytes_read, bytes_written, errors;
} export_t;

typedef struct {
    PyObject_HEAD
    int fd;
    unsigned char mac[6];
    unsigned max_scnt;
    struct sockaddr_un peer;
    socklen_t peerlen; /* 0: connected/bound socket, send() without an address */
    export_t *exports;
    Py_ssize_t nexports;
    int ifindex; /* AF_PACKET: the interface served (0: any) */
    unsigned char *rx, *tx;
    struct mmsghdr rmsg[BATCH];
    struct iovec riov[BATCH], siov;
    struct sockaddr_storage rname[BATCH];
    unsigned char rctrl[BATCH][CTRL_SPACE];
    struct msghdr smsg;
    int got, pos; /* frames of the current batch, the next one to look at */
    int running;  /* run() or stream() is active with the GIL released */
    unsigned char *sbuf; /* stream(): replies of one call, length-prefixed */
    size_t scap;
    unsigned long long replies, dropped, peer_lost, handed_over, group_sources, foreign;
} Engine;

static int refuse_while_running(Engine *self)
{
    if (self->running) {
        PyErr_SetString(PyExc_RuntimeError, "the engine is running (reconfigure it between run() calls)");
        return -1;
    }
    return 0;
}

static void engine_free_exports(Engine *self)
{
    for (Py_ssize_t i = 0; i < self->nexports; i++)
        PyMem_Free(self->exports[i].masks);
    PyMem_Free(self->exports);
    self->exports = NULL;
    self->nexports = 0;
}

static void Engine_dealloc(Engine *self)
{
    engine_free_exports(self);
    PyMem_Free(self->rx);
    PyMem_Free(self->tx);
    PyMem_RawFree(self->sbuf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Engine_init(Engine *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "mac", "max_scnt", "peer", "ifindex", NULL};
    int fd, ifindex = 0;
    Py_buffer mac;
    unsigned max_scnt;
    PyObject *peer = Py_None;
    if (refuse_while_running(self) < 0)
        return -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iy*I|Oi", kwlist, &fd, &mac, &max_scnt, &peer, &ifindex))
        return -1;
    if (mac.len != 6 || max_scnt > 255) {
        PyBuffer_Release(&mac);
        PyErr_SetString(PyExc_ValueError, "mac must be 6 bytes and max_scnt at most 255");
        return -1;
    }
    memcpy(self->mac, mac.buf, 6);
    PyBuffer_Release(&mac);
    self->fd = fd;
    self->ifindex = ifindex;
    self->got = self->pos = 0;
    self->max_scnt = max_scnt;
    self->peerlen = 0;
    if (peer != Py_None) {
        PyObject *enc;
        if (!PyUnicode_FSConverter(peer, &enc))
            return -1;
        Py_ssize_t n = PyBytes_GET_SIZE(enc);
        if (n <= 0 || (size_t)n >= sizeof(self->peer.sun_path)) {
            Py_DECREF(enc);
            PyErr_SetString(PyExc_ValueError, "peer socket path empty or too long");
            return -1;
        }
        memset(&self->peer, 0, sizeof(self->peer));
        self->peer.sun_family = AF_UNIX;
        memcpy(self->peer.sun_path, PyBytes_AS_STRING(enc), (size_t)n);
        self->peerlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
        Py_DECREF(enc);
    }
    if (self->rx == NULL && fd >= 0) /* no socket (stream() only): no receive batch */
        self->rx = PyMem_Malloc((size_t)BATCH * MAX_FRAME);
    if (self->tx == NULL)
        self->tx = PyMem_Malloc(MAX_REPLY);
    if ((self->rx == NULL && fd >= 0) || self->tx == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; self->rx != NULL && i < BATCH; i++) {
        self->riov[i].iov_base = self->rx + (size_t)i * MAX_FRAME;
        self->riov[i].iov_len = MAX_FRAME;
        memset(&self->rmsg[i], 0, sizeof(self->rmsg[i]));
        self->rmsg[i].msg_hdr.msg_iov = &self->riov[i];
        self->rmsg[i].msg_hdr.msg_iovlen = 1;
    }
    memset(&self->smsg, 0, sizeof(self->smsg));
    self->siov.iov_base = self->tx;
    self->smsg.msg_iov = &self->siov;
    self->smsg.msg_iovlen = 1;
    if (self->peerlen) {
        self->smsg.msg_name = &self->peer;
        self->smsg.msg_namelen = self->peerlen;
    }
    return 0;
}

/* set_exports([(shelf, slot, fd, base_bytes, sectors, readonly, fast), ...]) */
static PyObject *Engine_set_exports(Engine *self, PyObject *arg)
{
    if (refuse_while_running(self) < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(arg, "set_exports expects a sequence of tuples");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    export_t *exps = PyMem_Calloc(n ? (size_t)n : 1, sizeof(export_t));
    if (exps == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        export_t *e = &exps[i];
        unsigned long long base, sectors;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "IIiKKpp", &e->shelf, &e->slot, &e->fd, &base,
                              &sectors, &e->readonly, &e->fast)) {
            PyMem_Free(exps);
            Py_DECREF(seq);
            return NULL;
        }
        e->base = base;
        e->sectors = sectors;
    }
    Py_DECREF(seq);
    engine_free_exports(self);
    self->exports = exps;
    self->nexports = n;
    Py_RETURN_NONE;
}

/* set_access(index, masks: bytes (6 bytes per MAC), reserved: bool) */
static PyObject *Engine_set_access(Engine *self, PyObject *args)
{
    Py_ssize_t index;
    Py_buffer masks;
    int reserved;
    if (refuse_while_running(self) < 0)
        return NULL;
    if (!PyArg_ParseTuple(args, "ny*p", &index, &masks, &reserved))
        return NULL;
    if (index < 0 || index >= self->nexports || masks.len % 6) {
        PyBuffer_Release(&masks);
        PyErr_SetString(PyExc_ValueError, "bad export index or mask list");
        return NULL;
    }
    unsigned char *copy = NULL;
    if (masks.len) {
        copy = PyMem_Malloc((size_t)masks.len);
        if (copy == NULL) {
            PyBuffer_Release(&masks);
            return PyErr_NoMemory();
        }
        memcpy(copy, masks.buf, (size_t)masks.len);
    }
    export_t *e = &self->exports[index];
    PyMem_Free(e->masks);
    e->masks = copy;
    e->nmasks = masks.len / 6;
    e->reserved = reserved;
    PyBuffer_Release(&masks);
    Py_RETURN_NONE;
}

/* take_counters() -> [(frames, bytes_read, bytes_written, errors), ...] since the last call */
static PyObject *Engine_take_counters(Engine *self, PyObject *unused)
{
    if (refuse_while_running(self) < 0)
        return NULL;
    PyObject *list = PyList_New(self->nexports);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < self->nexports; i++) {
        export_t *e = &self->exports[i];
        PyObject *t = Py_BuildValue("(KKKK)", e->frames, e->bytes_read, e->bytes_written, e->errors);
        if (t == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, t);
        e->frames = e->bytes_read = e->bytes_written = e->errors = 0;
    }
    return list;
}

/* stats() -> dict: replies sent, replies dropped, sends that found no peer, frames handed to Python, frames
 * dropped for a group source MAC, frames dropped as not ours (other host, outgoing, tagged, other interface) */
static PyObject *Engine_stats(Engine *self, PyObject *unused)
{
    return Py_BuildValue("{sKsKsKsKsKsK}", "replies", self->replies, "dropped", self->dropped, "peer_lost",
                         self->peer_lost, "handed_over", self->handed_over, "group_sources", self->group_sources,
                         "foreign", self->foreign);
}

/* pending() -> frames of the last batch not looked at yet (the next run() starts with them) */
static PyObject *Engine_pending(Engine *self, PyObject *unused)
{
    return PyLong_FromLong(self->got - self->pos);
}

static inline int mac_listed(const export_t *e, const unsigned char *mac)
{
    for (Py_ssize_t i = 0; i < e->nmasks; i++)
        if (memcmp(e->masks + 6 * i, mac, 6) == 0)
            return 1;
    return 0;
}

/*
 * Answer one frame. Returns the reply length (written to out), 0 for a frame dropped without reply, or -1
 * when Python has to answer it.
 */
static Py_ssize_t answer(Engine *self, const unsigned char *f, size_t n, unsigned char *out)
{
    if (n < 36 || f[12] != 0x88 || f[13] != 0xA2 || (f[14] & 0xF8) != 0x10 || f[19] != 0)
        return -1;
    if (memcmp(f, self->mac, 6) != 0)
        return -1;
    if (f[6] & 1) { /* group source: Target.feed drops it too */
        self->group_sources++;
        return 0;
    }
    unsigned acmd = f[27];
    if (acmd != 0x20 && acmd != 0x24 && acmd != 0x30 && acmd != 0x34)
        return -1;
    unsigned shelf = ((unsigned)f[16] << 8) | f[17], slot = f[18];
    export_t *e = NULL;
    for (Py_ssize_t i = 0; i < self->nexports; i++)
        if (self->exports[i].shelf == shelf && self->exports[i].slot == slot) {
            e = &self->exports[i];
            break;
        }
    if (e == NULL || !e->fast || e->reserved || (e->nmasks && !mac_listed(e, f + 6)))
        return -1;
    unsigned scnt = f[26];
    if (scnt > self->max_scnt)
        return -1; /* Python answers with the AoE "bad argument" error */
    uint64_t lo = (uint64_t)f[28] | ((uint64_t)f[29] << 8) | ((uint64_t)f[30] << 16) | ((uint64_t)f[31] << 24);
    uint64_t hi = (uint64_t)f[32] | ((uint64_t)f[33] << 8);
    uint64_t lba = (acmd & 0x04) ? (lo | (hi << 32)) : (lo & 0x0FFFFFFF);
    size_t nbytes = (size_t)scnt << 9;
    size_t length = 36;
    unsigned status = 0x40, err = 0, rscnt = 0;
    e->frames++;
    if (acmd & 0x10) { /* write */
        if (n - 36 < nbytes)
            return 0; /* runt write: dropped, the initiator retransmits */
        if (lba + scnt > e->sectors) {
            status = 0x41, err = 0x10, rscnt = scnt;
        } else if (e->readonly) {
            status = 0x41, err = 0x04, rscnt = scnt;
        } else {
            ssize_t done = pwrite(e->fd, f + 36, nbytes, (off_t)(e->base + (lba << 9)));
            if (done >= 0 && (size_t)done == nbytes)
                e->bytes_written += nbytes;
            else
                status = 0x41, err = 0x04, rscnt = scnt;
        }
    } else if (lba + scnt > e->sectors) {
        status = 0x41, err = 0x10, rscnt = scnt;
    } else {
        ssize_t done = nbytes ? pread(e->fd, out + 36, nbytes, (off_t)(e->base + (lba << 9))) : 0;
        if (done >= 0 && (size_t)done == nbytes) {
            e->bytes_read += nbytes;
            length = 36 + nbytes;
        } else {
            status = 0x41, err = 0x04, rscnt = scnt;
        }
    }
    if (status != 0x40)
        e->errors++;
    memcpy(out, f + 6, 6);
    memcpy(out + 6, self->mac, 6);
    out[12] = 0x88;
    out[13] = 0xA2;
    out[14] = 0x18; /* version 1, response */
    out[15] = 0;
    out[16] = (unsigned char)(e->shelf >> 8);
    out[17] = (unsigned char)e->shelf;
    out[18] = (unsigned char)e->slot;
    out[19] = 0;
    memcpy(out + 20, f + 20, 16);
    out[25] = (unsigned char)err;
    out[26] = (unsigned char)rscnt;
    out[27] = (unsigned char)status;
    if (length < MIN_FRAME) {
        memset(out + length, 0, MIN_FRAME - length);
        length = MIN_FRAME;
    }
    return (Py_ssize_t)length;
}

static void send_reply(Engine *self, size_t length)
{
    self->siov.iov_len = length;
    for (;;) {
        if (sendmsg(self->fd, &self->smsg, 0) >= 0) {
            self->replies++;
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == ENOENT || errno == ECONNREFUSED)
            self->peer_lost++;
        self->dropped++; /* includes EAGAIN after SO_SNDTIMEO: the peer does not read */
        return;
    }
}

/* An AF_PACKET frame that is not ours: see the comment at the top. Other sockets: never. */
static int is_foreign(const Engine *self, const struct msghdr *h)
{
    const struct sockaddr_ll *sll = (const struct sockaddr_ll *)h->msg_name;
    if (h->msg_namelen < offsetof(struct sockaddr_ll, sll_addr) || sll->sll_family != AF_PACKET)
        return 0;
    if (sll->sll_pkttype == PACKET_OTHERHOST || sll->sll_pkttype == PACKET_OUTGOING)
        return 1;
    if (self->ifindex && sll->sll_ifindex != self->ifindex)
        return 1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR((struct msghdr *)h); c != NULL; c = CMSG_NXTHDR((struct msghdr *)h, c)) {
        if (c->cmsg_level == SOL_PACKET && c->cmsg_type == PACKET_AUXDATA &&
            c->cmsg_len >= CMSG_LEN(sizeof(struct tpacket_auxdata))) {
            struct tpacket_auxdata aux;
            memcpy(&aux, CMSG_DATA(c), sizeof(aux));
            if ((aux.tp_status & TP_STATUS_VLAN_VALID) && (aux.tp_vlan_tci & 0x0FFF))
                return 1;
        }
    }
    return 0;
}

static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * run(slice_seconds) -> (state, [frames for Python])
 * state 0: the socket is drained (the linger of SO_RCVTIMEO passed without a frame); 1: one frame for Python
 * (answer it, then call again: the rest of its batch comes next, see pending()); 2: the time slice is over.
 */
static PyObject *Engine_run(Engine *self, PyObject *args)
{
    double slice;
    if (!PyArg_ParseTuple(args, "d", &slice))
        return NULL;
    if (self->rx == NULL || self->tx == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Engine not initialised, or has no socket (fd -1: stream() only)");
        return NULL;
    }
    if (refuse_while_running(self) < 0)
        return NULL;
    int handed = -1, state = 0;
    self->running = 1;
    Py_BEGIN_ALLOW_THREADS
    double deadline = monotonic() + slice;
    int flags = MSG_DONTWAIT;
    for (;;) {
        if (self->pos >= self->got) {
            for (int i = 0; i < BATCH; i++) {
                struct msghdr *h = &self->rmsg[i].msg_hdr;
                h->msg_flags = 0;
                h->msg_name = &self->rname[i];
                h->msg_namelen = sizeof(self->rname[i]);
                h->msg_control = self->rctrl[i];
                h->msg_controllen = CTRL_SPACE;
            }
            int got = recvmmsg(self->fd, self->rmsg, BATCH, flags, NULL);
            self->got = got > 0 ? got : 0;
            self->pos = 0;
            if (got <= 0) {
                state = 0; /* EAGAIN (drained or linger over), EINTR (let Python run its signal handlers) */
                break;
            }
        }
        while (self->pos < self->got) {
            int i = self->pos++;
            struct msghdr *h = &self->rmsg[i].msg_hdr;
            if (is_foreign(self, h)) {
                self->foreign++;
                continue;
            }
            size_t len = self->rmsg[i].msg_len;
            if (h->msg_flags & MSG_TRUNC)
                len = MAX_FRAME;
            Py_ssize_t r = answer(self, self->rx + (size_t)i * MAX_FRAME, len, self->tx);
            if (r > 0)
                send_reply(self, (size_t)r);
            else if (r < 0) {
                handed = i;
                break;
            }
        }
        if (handed >= 0) {
            state = 1;
            break;
        }
        if (monotonic() > deadline) {
            state = 2;
            break;
        }
        flags = MSG_WAITFORONE; /* block (up to SO_RCVTIMEO) for the first frame, then take what is queued */
    }
    Py_END_ALLOW_THREADS
    self->running = 0;
    PyObject *list = PyList_New(handed >= 0 ? 1 : 0);
    if (list == NULL)
        return NULL;
    if (handed >= 0) {
        size_t len = self->rmsg[handed].msg_len;
        if (len > MAX_FRAME)
            len = MAX_FRAME;
        PyObject *b = PyBytes_FromStringAndSize((const char *)self->rx + (size_t)handed * MAX_FRAME, (Py_ssize_t)len);
        if (b == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, 0, b);
        self->handed_over++;
    }
    return Py_BuildValue("(iN)", state, list);
}

/*
 * stream(buf, start, end, out: bytearray, limit) -> (start, answered)
 * Answers the length-prefixed frames in buf[start:end] up to the first one Python has to answer (or one with a
 * length above MAX_FRAME, or an incomplete one), appending each reply, length-prefixed, to out; returns where
 * it stopped and how many frames it answered. Like stream.py's _collect, a reply is dropped (and counted)
 * while out holds more than limit bytes.
 */
static PyObject *Engine_stream(Engine *self, PyObject *args)
{
    Py_buffer in;
    Py_ssize_t start, end, limit;
    PyObject *out;
    if (!PyArg_ParseTuple(args, "y*nnO!n", &in, &start, &end, &PyByteArray_Type, &out, &limit))
        return NULL;
    if (self->tx == NULL || refuse_while_running(self) < 0 || start < 0 || start > end || end > in.len) {
        if (!PyErr_Occurred())
            PyErr_SetString(self->tx == NULL ? PyExc_RuntimeError : PyExc_ValueError,
                            self->tx == NULL ? "Engine not initialised" : "bad start or end");
        PyBuffer_Release(&in);
        return NULL;
    }
    const unsigned char *buf = in.buf;
    size_t have = (size_t)PyByteArray_GET_SIZE(out), slen = 0;
    long answered = 0;
    int nomem = 0;
    self->running = 1;
    Py_BEGIN_ALLOW_THREADS
    while (end - start >= 4) {
        const unsigned char *h = buf + start;
        size_t flen = ((size_t)h[0] << 24) | ((size_t)h[1] << 16) | ((size_t)h[2] << 8) | h[3];
        if (flen > MAX_FRAME || (size_t)(end - start - 4) < flen)
            break; /* Python closes the connection, or waits for the rest */
        if (self->scap - slen < 4 + MAX_REPLY) {
            size_t cap = self->scap ? 2 * self->scap : 8 * (4 + MAX_REPLY);
            unsigned char *grown = PyMem_RawRealloc(self->sbuf, cap);
            if (grown == NULL) {
                nomem = 1;
                break;
            }
            self->sbuf = grown, self->scap = cap;
        }
        Py_ssize_t r = answer(self, h + 4, flen, self->sbuf + slen + 4);
        if (r < 0) {
            self->handed_over++;
            break;
        }
        start += 4 + (Py_ssize_t)flen;
        if (r == 0)
            continue;
        answered++;
        if (have + slen > (size_t)limit) {
            self->dropped++;
            continue;
        }
        unsigned char *p = self->sbuf + slen;
        p[0] = (unsigned char)(r >> 24), p[1] = (unsigned char)(r >> 16), p[2] = (unsigned char)(r >> 8);
        p[3] = (unsigned char)r;
        slen += 4 + (size_t)r;
        self->replies++;
    }
    Py_END_ALLOW_THREADS
    self->running = 0;
    PyBuffer_Release(&in);
    if (slen) {
        Py_ssize_t at = PyByteArray_GET_SIZE(out);
        if (PyByteArray_Resize(out, at + (Py_ssize_t)slen) < 0)
            return NULL;
        memcpy(PyByteArray_AS_STRING(out) + at, self->sbuf, slen);
    }
    if (nomem)
        return PyErr_NoMemory();
    return Py_BuildValue("(nl)", start, answered);
}

/* answer_frame(frame) -> bytes | None (no reply) | NotImplemented (Python answers): the hot path without
 * sockets, for tests that compare it with Target.feed byte by byte. */
static PyObject *Engine_answer_frame(Engine *self, PyObject *arg)
{
    Py_buffer f;
    if (self->tx == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Engine not initialised");
        return NULL;
    }
    if (refuse_while_running(self) < 0)
        return NULL;
    if (PyObject_GetBuffer(arg, &f, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t r = answer(self, f.buf, (size_t)f.len, self->tx);
    PyBuffer_Release(&f);
    if (r < 0)
        Py_RETURN_NOTIMPLEMENTED;
    if (r == 0)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)self->tx, r);
}

static PyMethodDef Engine_methods[] = {
    {"set_exports", (PyCFunction)Engine_set_exports, METH_O, "Set the exports (shelf, slot, fd, base, sectors, "
     "readonly, fast)."},
    {"set_access", (PyCFunction)Engine_set_access, METH_VARARGS, "Set an export's allowed MACs and reservation."},
    {"take_counters", (PyCFunction)Engine_take_counters, METH_NOARGS, "Per-export counters since the last call."},
    {"stats", (PyCFunction)Engine_stats, METH_NOARGS, "Send and drop statistics."},
    {"pending", (PyCFunction)Engine_pending, METH_NOARGS, "Frames of the last batch the next run() starts with."},
    {"run", (PyCFunction)Engine_run, METH_VARARGS, "Serve for up to a time slice; returns (state, frames)."},
    {"stream", (PyCFunction)Engine_stream, METH_VARARGS, "Answer the length-prefixed frames of a stream buffer; "
     "returns (start, answered)."},
    {"answer_frame", (PyCFunction)Engine_answer_frame, METH_O, "Answer one frame without sockets (tests)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "netbootgen.aoe._fastpath.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "AoE READ/WRITE hot path on a datagram socket (AF_PACKET or unix datagram) or a stream buffer.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "netbootgen.aoe._fastpath", "The AoE target's hot path in C.", -1, NULL,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    if (PyType_Ready(&EngineType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(&EngineType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "BATCH", BATCH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
