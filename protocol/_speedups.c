/*
 * Optional accelerator for the item decoder (SPEC.md section 2).
 *
 * Theory of operation: scan_items() walks packed items from `off` and builds Item tuples
 * for every item on the plain happy path: version 2, known tier/op/priority, flags and
 * reserved zero, payload within limits and inside the buffer, CRC-32 correct, tier as
 * wanted, and an op whose payload needs no further check (INSERT, UPDATE, REPLICATE, and
 * DELETE with an empty payload). At the first item that is anything else it stops and
 * returns, and the pure-Python decoder in item.py takes that one item: it either decodes
 * it (MERGE, per-item zstd) or raises the precise ProtocolError. So this file never
 * decides that input is invalid; it only accepts input the Python rules accept, and the
 * two paths give the same objects (tests run both).
 *
 * NAMED items (flags exactly NAMED, SPEC.md section 2.1) are accepted too when their name
 * block is well formed (depth, label and key lengths inside the payload, labels without
 * '/', UTF-8 throughout) and a DELETE carries nothing after it. What C cannot check
 * without SHA-256, that the id is the name's, is left to the caller: each such item is
 * reported in `named` as (position in `out`, offset, name block length), and item.py
 * checks them before it looks at anything after them, so errors keep their order.
 *
 * BASED items (flags BASED or NAMED | BASED, SPEC.md section 2.2) are accepted when the 16
 * base bytes fit after the name block (a DELETE then ends right after them); any 16 bytes
 * are a base. RESOLVES, like PAYLOAD_ZSTD and MERGE, is left to Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <zlib.h>

static inline uint32_t be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint64_t be64(const unsigned char *p)
{
    return ((uint64_t)be32(p) << 32) | be32(p + 4);
}

/* Well-formed UTF-8 (RFC 3629: no overlongs, no surrogates, at most U+10FFFF), as
 * Python's strict decoder accepts it; `slash` != 0 also refuses the byte '/'. */
static int valid_text(const unsigned char *p, Py_ssize_t n, int slash)
{
    Py_ssize_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        if (c < 0x80) {
            if (slash && c == '/')
                return 0;
            i += 1;
            continue;
        }
        Py_ssize_t len;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0)
                lo = 0xA0;
            else if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0)
                lo = 0x90;
            else if (c == 0xF4)
                hi = 0x8F;
        } else
            return 0;
        if (n - i < len)
            return 0;
        if (p[i + 1] < lo || p[i + 1] > hi)
            return 0;
        for (Py_ssize_t k = 2; k < len; k++)
            if (p[i + k] < 0x80 || p[i + k] > 0xBF)
                return 0;
        i += len;
    }
    return 1;
}

/* Length of a well-formed name block at the start of a payload of `n` bytes, or -1. */
static Py_ssize_t name_length(const unsigned char *p, Py_ssize_t n)
{
    if (n < 1 || p[0] > 16)
        return -1;
    Py_ssize_t pos = 1;
    for (unsigned i = 0; i < p[0]; i++) {
        if (pos >= n || p[pos] == 0 || n - pos - 1 < p[pos])
            return -1;
        if (!valid_text(p + pos + 1, p[pos], 1))
            return -1;
        pos += 1 + p[pos];
    }
    if (n - pos < 2)
        return -1;
    Py_ssize_t klen = ((Py_ssize_t)p[pos] << 8) | p[pos + 1];
    if (klen == 0 || klen > 1024 || n - pos - 2 < klen || !valid_text(p + pos + 2, klen, 0))
        return -1;
    return pos + 2 + klen;
}

/* scan_items(data, off, index, count, item_type, tiers, ops, prios, out, want_tier, named)
 *   -> (off, index) after the last item appended to `out`. */
static PyObject *scan_items(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t off, index, count;
    PyObject *item_type, *tiers, *ops, *prios, *out, *named;
    int want_tier;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nnnO!O!O!O!O!iO!", &buf, &off, &index, &count, &PyType_Type,
                          &item_type, &PyTuple_Type, &tiers, &PyTuple_Type, &ops, &PyTuple_Type,
                          &prios, &PyList_Type, &out, &want_tier, &PyList_Type, &named))
        return NULL;
    if (PyTuple_GET_SIZE(tiers) != 3 || PyTuple_GET_SIZE(ops) != 6 ||
        PyTuple_GET_SIZE(prios) != 5 || off < 0) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "scan_items: bad lookup tables or offset");
        return NULL;
    }
    PyTypeObject *tp = (PyTypeObject *)item_type;
    const unsigned char *data = (const unsigned char *)buf.buf;
    Py_ssize_t size = buf.len;
    /* flag objects for 0, NAMED (2), BASED (8), NAMED | BASED (10) */
    PyObject *fl[11] = {NULL};
    fl[0] = PyLong_FromLong(0);
    fl[2] = PyLong_FromLong(2);
    fl[8] = PyLong_FromLong(8);
    fl[10] = PyLong_FromLong(10);
    if (fl[0] == NULL || fl[2] == NULL || fl[8] == NULL || fl[10] == NULL)
        goto error;
    while (index < count) {
        if (size - off < 48)
            break;
        const unsigned char *h = data + off;
        unsigned tier = h[33], op = h[34], prio = h[35];
        uint32_t plen = be32(h + 40);
        if (h[32] != 2 || tier > 2 || op < 1 || op > 5 || op == 4 || prio > 4)
            break;
        uint32_t fr = be32(h + 36); /* flags << 16 | reserved */
        if ((fr & ~0x000A0000u) != 0 || plen > 1048576 || (Py_ssize_t)plen > size - off - 48)
            break;
        unsigned flags = fr >> 16;
        Py_ssize_t nlen = 0;
        if (flags & 2) { /* NAMED: a well-formed block */
            nlen = name_length(h + 48, (Py_ssize_t)plen);
            if (nlen < 0)
                break;
        }
        Py_ssize_t vstart = nlen + ((flags & 8) ? 16 : 0); /* BASED: 16 bytes after it */
        if (vstart > (Py_ssize_t)plen || (op == 3 && vstart != (Py_ssize_t)plen))
            break; /* a DELETE has nothing after name and base */
        if (want_tier >= 0 && (int)tier != want_tier)
            break;
        uLong crc = crc32(0L, h, 44);
        crc = crc32(crc, h + 48, (uInt)plen);
        if ((uint32_t)crc != be32(h + 44))
            break;
        PyObject *item = tp->tp_alloc(tp, 8);
        if (item == NULL)
            goto error;
        PyObject *iid = PyBytes_FromStringAndSize((const char *)h, 16);
        PyObject *ts = PyLong_FromUnsignedLongLong(be64(h + 16));
        PyObject *origin = PyLong_FromUnsignedLongLong(be64(h + 24));
        PyObject *payload = PyBytes_FromStringAndSize((const char *)h + 48, (Py_ssize_t)plen);
        PyTuple_SET_ITEM(item, 0, iid);
        PyTuple_SET_ITEM(item, 1, ts);
        PyTuple_SET_ITEM(item, 2, origin);
        PyTuple_SET_ITEM(item, 7, payload);
        PyObject *t = PyTuple_GET_ITEM(tiers, tier), *o = PyTuple_GET_ITEM(ops, op),
                 *p = PyTuple_GET_ITEM(prios, prio);
        Py_INCREF(t);
        Py_INCREF(o);
        Py_INCREF(p);
        PyObject *f = fl[flags];
        Py_INCREF(f);
        PyTuple_SET_ITEM(item, 3, t);
        PyTuple_SET_ITEM(item, 4, o);
        PyTuple_SET_ITEM(item, 5, p);
        PyTuple_SET_ITEM(item, 6, f);
        if (iid == NULL || ts == NULL || origin == NULL || payload == NULL) {
            Py_DECREF(item); /* tuple dealloc skips the NULL slots */
            goto error;
        }
        if (flags & 2) {
            PyObject *note = Py_BuildValue("nnn", PyList_GET_SIZE(out), off, nlen);
            int bad = note == NULL || PyList_Append(named, note) < 0;
            Py_XDECREF(note);
            if (bad) {
                Py_DECREF(item);
                goto error;
            }
        }
        int rc = PyList_Append(out, item);
        Py_DECREF(item);
        if (rc < 0)
            goto error;
        off += 48 + (Py_ssize_t)plen;
        index += 1;
    }
    for (int k = 0; k < 11; k++)
        Py_XDECREF(fl[k]);
    PyBuffer_Release(&buf);
    return Py_BuildValue("nn", off, index);
error:
    for (int k = 0; k < 11; k++)
        Py_XDECREF(fl[k]);
    PyBuffer_Release(&buf);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan_items", scan_items, METH_VARARGS,
     "Decode plain happy-path items into a list; stop at the first item needing Python."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "protocol._speedups", "C fast path of the item decoder.", -1, methods,
};

PyMODINIT_FUNC PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
