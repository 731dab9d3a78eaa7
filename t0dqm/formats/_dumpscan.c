/* One pass over a block of EOS dump lines (t0dqm.formats.eosdump's fast path).
 *
 * scan(buffer, area, cut_s, cut_ns) -> (runs, odd, other, malformed)
 *
 * buffer: any contiguous bytes-like object holding lines separated by '\n' (a last line without one
 * is read up to the end; empty lines are skipped). A line is *strict* when it is exactly
 *
 *     path=/<printable ASCII, no space> size=<1-18 digits> checksum=<1-128 hex digits>
 *         ctime=<1-18 digits>.<1-18 digits> mtime=<1-18 digits>.<1-9 digits>
 *
 * (single spaces, nothing else on the line, no '\r', no NUL, no byte >= 0x7f). For such a line the
 * line parser of eosdump gives the same record, and the folder is the path up to its last '/'.
 *
 *   - strict, folder contains ``area``: added to the current run of consecutive such lines with the
 *     same folder; runs come back as tuples (folder bytes, files, bytes, newest_s, newest_ns,
 *     old_files, old_bytes, old_newest_s, old_newest_ns), ``old_*`` counting files whose mtime is
 *     strictly before (cut_s, cut_ns) (none when cut_s is None; old_newest_s is -1 when no old file).
 *     A run is split when its byte sum would overflow 64 bits.
 *   - strict, folder without ``area``: counted in ``other`` (the line parser would count it there).
 *   - not strict, ``area`` nowhere in the line: ``other`` when it starts with "path=/", else
 *     ``malformed`` (exactly what the line-by-line reader does with such a line).
 *   - not strict, ``area`` somewhere in the line: the line (bytes, without '\n') goes to ``odd`` for
 *     the Python line parser, which defines the result.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

typedef struct {
    const char *dir;
    Py_ssize_t dir_len;
    Py_ssize_t files;
    uint64_t bytes;
    int64_t newest_s, newest_ns;
    Py_ssize_t old_files;
    uint64_t old_bytes;
    int64_t old_s, old_ns;
} Run;

static const char *
find(const char *hay, Py_ssize_t n, const char *needle, Py_ssize_t m)
{
    if (m == 0)
        return hay;
    if (n < m)
        return NULL;
    return memmem(hay, (size_t)n, needle, (size_t)m);
}

/* Digits at p (stops at end): count in *nd, value in *v (only meaningful for up to 18 digits). */
static inline const char *
digits(const char *p, const char *end, int max, int64_t *v, int *ok)
{
    int64_t x = 0;
    int n = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        if (++n > max) {
            *ok = 0;
            return p;
        }
        x = x * 10 + (*p - '0');
        p++;
    }
    *ok = n > 0;
    *v = x;
    return p;
}

static inline int
lit(const char **pp, const char *end, const char *s, Py_ssize_t n)
{
    if (end - *pp < n || memcmp(*pp, s, (size_t)n) != 0)
        return 0;
    *pp += n;
    return 1;
}

/* Strict shape, from p up to the first '\n' or ``end``; on success returns where the line ends (its
 * '\n' or ``end``), the path being [p + 5, *path_end) with its last '/' at *slash; NULL otherwise.
 * ``known`` (length ``known_len``, may be NULL) is a folder: when the path starts with it and a '/',
 * only the rest of the path is checked byte by byte (the folder was already checked). */
static const char *
strict_line(const char *p, const char *end, const char *known, Py_ssize_t known_len,
            const char **path_end, const char **slash, int64_t *size, int64_t *ms, int64_t *mns)
{
    const char *q = p;
    int64_t v;
    int ok;
    if (!lit(&q, end, "path=/", 6))
        return NULL;
    const char *last = q - 1;
    if (known != NULL && end - last > known_len && last[known_len] == '/'
        && memcmp(last, known, (size_t)known_len) == 0) {
        last += known_len;
        q = last + 1;
    }
    while (q < end) {
        /* 8 bytes at a time while none is below 0x21 (space, controls), above 0x7e or a '/' */
        while (end - q >= 8) {
            uint64_t w;
            memcpy(&w, q, 8);
            uint64_t slash_x = w ^ (ONES * '/');
            if (((w - ONES * 0x21) & ~w & HIGHS) | (((w + ONES * (127 - 0x7e)) | w) & HIGHS)
                | ((slash_x - ONES) & ~slash_x & HIGHS))
                break;
            q += 8;
        }
        if (q >= end)
            break;
        unsigned char c = (unsigned char)*q;
        if (c == ' ')
            break;
        if (c < 0x21 || c > 0x7e)
            return NULL;
        if (c == '/')
            last = q;
        q++;
    }
    *path_end = q;
    *slash = last;
    if (!lit(&q, end, " size=", 6))
        return NULL;
    q = digits(q, end, 18, size, &ok);
    if (!ok || !lit(&q, end, " checksum=", 10))
        return NULL;
    const char *h = q;
    while (q < end && q - h <= 128) {
        unsigned char c = (unsigned char)*q;
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            break;
        q++;
    }
    if (q == h || q - h > 128 || !lit(&q, end, " ctime=", 7))
        return NULL;
    q = digits(q, end, 18, &v, &ok);
    if (!ok || !lit(&q, end, ".", 1))
        return NULL;
    q = digits(q, end, 18, &v, &ok);
    if (!ok || !lit(&q, end, " mtime=", 7))
        return NULL;
    q = digits(q, end, 18, ms, &ok);
    if (!ok || !lit(&q, end, ".", 1))
        return NULL;
    q = digits(q, end, 9, mns, &ok);
    if (!ok || (q < end && *q != '\n'))
        return NULL;
    return q;
}

static int
flush(PyObject *runs, Run *r)
{
    if (r->dir == NULL || r->files == 0)
        return 0;
    PyObject *t = Py_BuildValue("(y#nKLLnKLL)", r->dir, r->dir_len, r->files,
                                (unsigned long long)r->bytes, (long long)r->newest_s,
                                (long long)r->newest_ns, r->old_files, (unsigned long long)r->old_bytes,
                                (long long)r->old_s, (long long)r->old_ns);
    if (t == NULL)
        return -1;
    int rc = PyList_Append(runs, t);
    Py_DECREF(t);
    r->files = 0;
    return rc;
}

static void
start(Run *r, const char *dir, Py_ssize_t len)
{
    r->dir = dir;
    r->dir_len = len;
    r->files = 0;
    r->bytes = 0;
    r->newest_s = -1;
    r->newest_ns = 0;
    r->old_files = 0;
    r->old_bytes = 0;
    r->old_s = -1;
    r->old_ns = 0;
}

static PyObject *
scan(PyObject *self, PyObject *args)
{
    Py_buffer buf, area;
    PyObject *cut_obj;
    long long cut_ns = 0;
    if (!PyArg_ParseTuple(args, "y*y*OL", &buf, &area, &cut_obj, &cut_ns))
        return NULL;
    int has_cut = cut_obj != Py_None;
    long long cut_s = 0;
    if (has_cut) {
        cut_s = PyLong_AsLongLong(cut_obj);
        if (cut_s == -1 && PyErr_Occurred()) {
            PyBuffer_Release(&buf);
            PyBuffer_Release(&area);
            return NULL;
        }
    }
    PyObject *runs = PyList_New(0);
    PyObject *odd = PyList_New(0);
    if (runs == NULL || odd == NULL)
        goto fail;
    const char *a = area.buf;
    Py_ssize_t alen = area.len;
    const char *p = buf.buf;
    const char *bend = p + buf.len;
    Py_ssize_t other = 0, malformed = 0;
    Run run;
    start(&run, NULL, 0);
    /* the last folder tested for the area that was not in it (a run's folder is in it) */
    const char *no_dir = NULL;
    Py_ssize_t no_len = -1;

    while (p < bend) {
        if (*p == '\n') {
            p++;
            continue;
        }
        const char *path_end, *slash;
        int64_t size, ms, mns;
        const char *e = strict_line(p, bend, run.dir, run.dir != NULL ? run.dir_len : 0, &path_end, &slash,
                                    &size, &ms, &mns);
        if (e != NULL) {
            const char *dir = p + 5;
            Py_ssize_t dlen = slash - dir;
            if (!(run.dir != NULL && dlen == run.dir_len && memcmp(dir, run.dir, (size_t)dlen) == 0)) {
                if (dlen == no_len && memcmp(dir, no_dir, (size_t)dlen) == 0) {
                    other++;
                    p = e + 1;
                    continue;
                }
                if (find(dir, dlen, a, alen) == NULL) {
                    no_dir = dir;
                    no_len = dlen;
                    other++;
                    p = e + 1;
                    continue;
                }
                if (flush(runs, &run) < 0)
                    goto fail;
                start(&run, dir, dlen);
            }
            uint64_t usize = (uint64_t)size;
            if (run.bytes + usize < run.bytes) { /* 64-bit overflow: a new run, same folder */
                if (flush(runs, &run) < 0)
                    goto fail;
                start(&run, dir, dlen);
            }
            run.files++;
            run.bytes += usize;
            if (ms > run.newest_s || (ms == run.newest_s && mns > run.newest_ns)) {
                run.newest_s = ms;
                run.newest_ns = mns;
            }
            if (has_cut && (ms < cut_s || (ms == cut_s && mns < cut_ns))) {
                run.old_files++;
                run.old_bytes += usize;
                if (ms > run.old_s || (ms == run.old_s && mns > run.old_ns)) {
                    run.old_s = ms;
                    run.old_ns = mns;
                }
            }
            p = e + 1;
            continue;
        }
        e = memchr(p, '\n', (size_t)(bend - p));
        if (e == NULL)
            e = bend;
        if (find(p, e - p, a, alen) == NULL) {
            if (e - p >= 6 && memcmp(p, "path=/", 6) == 0)
                other++;
            else
                malformed++;
        }
        else {
            PyObject *line = PyBytes_FromStringAndSize(p, e - p);
            if (line == NULL)
                goto fail;
            int rc = PyList_Append(odd, line);
            Py_DECREF(line);
            if (rc < 0)
                goto fail;
        }
        p = e + 1;
    }
    if (flush(runs, &run) < 0)
        goto fail;
    PyBuffer_Release(&buf);
    PyBuffer_Release(&area);
    return Py_BuildValue("(NNnn)", runs, odd, other, malformed);

fail:
    Py_XDECREF(runs);
    Py_XDECREF(odd);
    PyBuffer_Release(&buf);
    PyBuffer_Release(&area);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(buffer, area, cut_s, cut_ns) -> (runs, odd_lines, other, malformed); see the module source."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "t0dqm.formats._dumpscan", "Fast scanner of EOS dump lines.", -1, methods,
};

PyMODINIT_FUNC
PyInit__dumpscan(void)
{
    return PyModule_Create(&module);
}
