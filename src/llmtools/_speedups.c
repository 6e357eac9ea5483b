/* llmtools._speedups: one-pass text checks and rewrites for `llmtools normalize`.
 *
 * Optional: setup.py builds it when a C compiler is there, and llmtools runs the same steps in
 * pure Python when it is not (ops/normalize_text.py holds the reference implementation; tests
 * check that the two give the same output on generated text).
 *
 * scan(text) -> int
 *     One pass over a str. Returns a bit set (the B_* constants, exported as module ints) of
 *     what the default steps might do to it. Every bit is a necessary condition, computed
 *     exactly as the Python pre-checks compute it (normalize_text.mojibake_possible,
 *     controls_possible, nfc's inert set, quotes_possible, dashes_possible,
 *     whitespace_possible for newlines="keep"), so a text with no relevant bit set is one that
 *     no chosen step changes. Most text is ASCII; for 1-byte strings eight bytes at a time are
 *     cleared with word-wide bit tricks.
 *
 * rewrite(text, found, enabled) -> (str, changed bits)
 *     The steps controls (the plain kind: no ANSI escapes, tag characters or surrogates),
 *     quotes, dashes and whitespace (only spaces and "\n" in the text; newlines="keep"), in
 *     their pipeline order, in one pass plus one in-place whitespace pass. The caller passes
 *     what scan() found and which steps are on, and must only call it when nothing beyond
 *     those four can apply (no B_MOJI, B_CTRL_X, B_WS_X; NFC settled). Returns the text
 *     itself when nothing changed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum {
    B_MOJI = 1,     /* mojibake_possible: C1 control, surrogate, œ/Œ, "Ã "/"Â ", two non-ASCII side by side */
    B_CTRL = 2,     /* a control/invisible character the plain removal handles */
    B_CTRL_X = 4,   /* ESC (ANSI escapes), tag characters, lone surrogates: Python handles these */
    B_NFC = 8,      /* a non-ASCII character outside the NFC-inert set: NFC must be checked */
    B_QUOTE = 16,   /* a quote the quotes step maps */
    B_DASH = 32,    /* a dash the dashes step maps */
    B_WS = 64,      /* spaces and line breaks need collapsing or stripping */
    B_WS_X = 128,   /* whitespace other than " " and "\n" (tabs, CR, Unicode spaces ...) */
};

#if defined(_MSC_VER)
#define ALWAYS_INLINE static __forceinline
#define MAYBE_UNUSED
#else
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define MAYBE_UNUSED __attribute__((unused))
#endif

/* Bits of one non-ASCII character (c >= 0x80), without the neighbour rules. */
static int
classify_na(Py_UCS4 c)
{
    if (c < 0x100) {
        if (c < 0xA0) /* C1 controls: mojibake's business; NEL is a line break */
            return B_MOJI | (c == 0x85 ? B_WS_X : B_CTRL);
        if (c == 0xA0)
            return B_WS_X;
        if (c == 0xAD)
            return B_CTRL;
        return 0; /* Latin-1: NFC-inert */
    }
    int b = 0;
    /* _NFC_INERT: U+0080-U+00FF, U+2002-U+206F, U+20A0-U+20C0, U+2212 */
    if (!((c >= 0x2002 && c < 0x2070) || (c >= 0x20A0 && c < 0x20C1) || c == 0x2212))
        b = B_NFC;
    if (c < 0x2000) {
        if (c == 0x152 || c == 0x153)
            return b | B_MOJI;
        if (c == 0x61C || c == 0x180E)
            return b | B_CTRL;
        if (c == 0x1680)
            return b | B_WS_X;
        return b;
    }
    if (c < 0x2070) {
        if (c <= 0x200A)
            return b | B_WS_X;
        if (c == 0x200B || c == 0x200E || c == 0x200F)
            return b | B_CTRL;
        if ((c >= 0x2010 && c <= 0x2013) || c == 0x2015)
            return b | B_DASH;
        if (c >= 0x2018 && c <= 0x201F)
            return b | B_QUOTE;
        if (c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F)
            return b | B_WS_X;
        if ((c >= 0x202A && c <= 0x202E) || (c >= 0x2060 && c <= 0x2064) || (c >= 0x2066 && c <= 0x2069))
            return b | B_CTRL;
        return b;
    }
    if (c == 0x2212 || c == 0x2E3A || c == 0x2E3B || c == 0xFE58 || c == 0xFE63 || c == 0xFF0D)
        return b | B_DASH;
    if (c == 0x3000)
        return b | B_WS_X;
    if (c >= 0xD800 && c <= 0xDFFF)
        return b | B_CTRL_X | B_MOJI;
    if (c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFB))
        return b | B_CTRL;
    if (c == 0xFF02 || c == 0xFF07)
        return b | B_QUOTE;
    if (c >= 0xE0000 && c <= 0xE007F)
        return b | B_CTRL_X;
    return b;
}

/* Bits of one ASCII control character (c < 0x20 or c == 0x7F), "\n" excluded. */
static int
classify_c0(Py_UCS4 c)
{
    if (c == '\t' || c == '\r' || c == 0x0B || c == 0x0C)
        return B_WS_X;
    if (c >= 0x1C && c <= 0x1F) /* removed by controls, line breaks/whitespace to Python */
        return B_CTRL | B_WS_X;
    if (c == 0x1B)
        return B_CTRL_X;
    return B_CTRL;
}

typedef struct {
    int bits;
    Py_UCS4 prev; /* the character before the current one (0 at the start) */
    int nl_run;   /* consecutive "\n" just read */
} scan_state;

ALWAYS_INLINE void
scan_char(scan_state *st, Py_UCS4 c)
{
    if (c >= 0x21 && c < 0x7F) {
        st->nl_run = 0;
    }
    else if (c == ' ') {
        if (st->prev == ' ')
            st->bits |= B_WS;
        else if (st->prev == 0xC3 || st->prev == 0xC2) /* "Ã " / "Â " */
            st->bits |= B_MOJI;
        st->nl_run = 0;
    }
    else if (c == '\n') {
        if (st->prev == ' ' || ++st->nl_run >= 3)
            st->bits |= B_WS;
    }
    else if (c >= 0x80) {
        if (st->prev >= 0x80)
            st->bits |= B_MOJI;
        st->bits |= classify_na(c);
        st->nl_run = 0;
    }
    else {
        st->bits |= classify_c0(c);
        st->nl_run = 0;
    }
    st->prev = c;
}

ALWAYS_INLINE Py_UCS4
rd(const void *d, int kind, Py_ssize_t i)
{
    return kind == 1 ? ((const Py_UCS1 *)d)[i] : kind == 2 ? ((const Py_UCS2 *)d)[i] : ((const Py_UCS4 *)d)[i];
}

ALWAYS_INLINE void
wr(void *d, int kind, Py_ssize_t i, Py_UCS4 c)
{
    if (kind == 1)
        ((Py_UCS1 *)d)[i] = (Py_UCS1)c;
    else if (kind == 2)
        ((Py_UCS2 *)d)[i] = (Py_UCS2)c;
    else
        ((Py_UCS4 *)d)[i] = c;
}

/* After a block of printable ASCII (spaces included): `pair` when two of its spaces stand
 * side by side, `first` when it starts with a space, `last` its last character. */
ALWAYS_INLINE void
plain_block(scan_state *st, int pair, int first, Py_UCS4 last)
{
    if (pair || (first && st->prev == ' '))
        st->bits |= B_WS;
    if (first && (st->prev == 0xC3 || st->prev == 0xC2)) /* "Ã " / "Â " across the edge */
        st->bits |= B_MOJI;
    st->nl_run = 0;
    st->prev = last;
}

/* 64-bit words of 8-bit (1-byte strings) or 16-bit (2-byte strings) lanes. */
static const uint64_t ONES = 0x0101010101010101ULL, LOWS = 0x7F7F7F7F7F7F7F7FULL;
static const uint64_t ONES16 MAYBE_UNUSED = 0x0001000100010001ULL, LOWS16 MAYBE_UNUSED = 0x7FFF7FFF7FFF7FFFULL;

/* The top bit of each lane of v that is zero, exactly (no false positives). */
ALWAYS_INLINE uint64_t
zero_lanes(uint64_t v, uint64_t lows)
{
    return ~(((v & lows) + lows) | v | lows);
}

#if defined(__SSE2__)
#include <emmintrin.h>

/* Nonzero when some 16-bit lane of v is outside printable ASCII (0x20-0x7E). */
ALWAYS_INLINE int
odd_lanes16(__m128i v)
{
    return _mm_movemask_epi8(_mm_or_si128(_mm_cmplt_epi16(v, _mm_set1_epi16(0x20)),
                                          _mm_cmpgt_epi16(v, _mm_set1_epi16(0x7E))));
}
#elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define SCAN_WORDS 1
/* Without SSE2: a 64-bit word at a time (8 bytes or 4 UCS-2 characters). Returns how far it
 * got; the caller scans the tail. */
ALWAYS_INLINE Py_ssize_t
scan_words(const void *s, int kind, Py_ssize_t n, scan_state *st)
{
    const int w = 8 * kind, per = 8 / kind;
    const uint64_t ones = kind == 1 ? ONES : ONES16, lows = kind == 1 ? LOWS : LOWS16;
    Py_ssize_t i = 0;
    for (; i + per <= n; i += per) {
        uint64_t v;
        memcpy(&v, (const char *)s + i * kind, 8);
        /* Any lane >= 0x80, < 0x20 or == 0x7F (controls, "\n", DEL, non-ASCII): one at a time. */
        if ((v & (ones * ((1u << w) - 0x80))) | ((v - ones * 0x20) & ~v & ~lows) | zero_lanes(v ^ (ones * 0x7F), lows)) {
            for (int k = 0; k < per; k++)
                scan_char(st, rd(s, kind, i + k));
            continue;
        }
        uint64_t sp = zero_lanes(v ^ (ones * 0x20), lows);
        plain_block(st, (sp & (sp << w)) != 0, (int)((sp >> (w - 1)) & 1), rd(s, kind, i + per - 1));
    }
    return i;
}
#endif

static int
scan_ucs1(const Py_UCS1 *s, Py_ssize_t n, scan_state *st)
{
    Py_ssize_t i = 0;
#if defined(__SSE2__)
    /* Sixteen bytes at a time: a block of printable ASCII and spaces only needs its space
     * pairs looked at. Signed compare: bytes >= 0x80 read as negative, so "< 0x20" also
     * catches non-ASCII. */
    const __m128i lo = _mm_set1_epi8(0x20), del = _mm_set1_epi8(0x7F);
    for (; i + 16 <= n; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(s + i));
        if (_mm_movemask_epi8(_mm_or_si128(_mm_cmplt_epi8(v, lo), _mm_cmpeq_epi8(v, del)))) {
            for (int k = 0; k < 16; k++)
                scan_char(st, s[i + k]);
            continue;
        }
        unsigned sp = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, lo));
        plain_block(st, (sp & (sp >> 1)) != 0, (int)(sp & 1), s[i + 15]);
    }
#elif defined(SCAN_WORDS)
    i = scan_words(s, 1, n, st);
#endif
    for (; i < n; i++)
        scan_char(st, s[i]);
    return st->bits;
}

/* The same for 2-byte strings: eight characters at a time (two mask bits per lane). */
static int
scan_ucs2(const Py_UCS2 *s, Py_ssize_t n, scan_state *st)
{
    Py_ssize_t i = 0;
#if defined(__SSE2__)
    for (; i + 8 <= n; i += 8) {
        __m128i v = _mm_loadu_si128((const __m128i *)(s + i));
        if (odd_lanes16(v)) {
            for (int k = 0; k < 8; k++)
                scan_char(st, s[i + k]);
            continue;
        }
        unsigned sp = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi16(v, _mm_set1_epi16(0x20)));
        plain_block(st, (sp & (sp >> 2)) != 0, (int)(sp & 1), s[i + 7]);
    }
#elif defined(SCAN_WORDS)
    i = scan_words(s, 2, n, st);
#endif
    for (; i < n; i++)
        scan_char(st, s[i]);
    return st->bits;
}

/* 4-byte strings (emoji, rare scripts): a character at a time. */
static int
scan_ucs4(const Py_UCS4 *s, Py_ssize_t n, scan_state *st)
{
    for (Py_ssize_t i = 0; i < n; i++)
        scan_char(st, s[i]);
    return st->bits;
}

static int
text_bits(PyObject *text)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    if (n == 0)
        return 0;
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    scan_state st = {0, 0, 0};
    int bits;
    if (kind == PyUnicode_1BYTE_KIND)
        bits = scan_ucs1((const Py_UCS1 *)data, n, &st);
    else if (kind == PyUnicode_2BYTE_KIND)
        bits = scan_ucs2((const Py_UCS2 *)data, n, &st);
    else
        bits = scan_ucs4((const Py_UCS4 *)data, n, &st);
    /* Leading or trailing whitespace: " " and "\n" here; any other kind is B_WS_X already. */
    Py_UCS4 first = PyUnicode_READ(kind, data, 0), last = PyUnicode_READ(kind, data, n - 1);
    if (first == ' ' || first == '\n' || last == ' ' || last == '\n')
        bits |= B_WS;
    return bits;
}

static PyObject *
scan(PyObject *self, PyObject *text)
{
    (void)self;
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "scan() wants a str");
        return NULL;
    }
    return PyLong_FromLong(text_bits(text));
}

/* --------------------------------------------------------------------------- rewrite */

static Py_UCS4
quote_of(Py_UCS4 c)
{
    switch (c) {
    case 0x2018: case 0x2019: case 0x201A: case 0x201B: case 0xFF07:
        return '\'';
    case 0x201C: case 0x201D: case 0x201E: case 0x201F: case 0xFF02:
        return '"';
    }
    return 0;
}

static Py_UCS4
dash_of(Py_UCS4 c)
{
    switch (c) {
    case 0x2010: case 0x2011: case 0x2012: case 0x2013: case 0x2212: case 0xFE63: case 0xFF0D:
        return '-';
    case 0x2015: case 0x2E3A: case 0x2E3B: case 0xFE58:
        return 0x2014;
    }
    return 0;
}

/* Pass 1: controls, quotes, dashes from src into dst (dst may be src). Returns the new length. */
ALWAYS_INLINE Py_ssize_t
map_chars(const void *src, void *dst, int kind, Py_ssize_t n, int enabled, int *changed)
{
    Py_ssize_t o = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
#if defined(__SSE2__)
        /* Blocks of printable ASCII are copied as they are (dst is never src here). */
        if (kind == 1) {
            while (i + 16 <= n) {
                __m128i v = _mm_loadu_si128((const __m128i *)((const Py_UCS1 *)src + i));
                if (_mm_movemask_epi8(_mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
                                                   _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7F)))))
                    break;
                _mm_storeu_si128((__m128i *)((Py_UCS1 *)dst + o), v);
                i += 16;
                o += 16;
            }
        }
        else if (kind == 2) {
            while (i + 8 <= n) {
                __m128i v = _mm_loadu_si128((const __m128i *)((const Py_UCS2 *)src + i));
                if (odd_lanes16(v))
                    break;
                _mm_storeu_si128((__m128i *)((Py_UCS2 *)dst + o), v);
                i += 8;
                o += 8;
            }
        }
        if (i >= n)
            break;
#endif
        Py_UCS4 c = rd(src, kind, i);
        if (c >= 0x20 && c < 0x7F) {
            wr(dst, kind, o++, c);
            continue;
        }
        if (c == '\n') {
            wr(dst, kind, o++, c);
            continue;
        }
        if (c < 0x80) {
            if ((enabled & B_CTRL) && (classify_c0(c) & B_CTRL)) {
                *changed |= B_CTRL;
                continue;
            }
            wr(dst, kind, o++, c);
            continue;
        }
        int b = classify_na(c);
        if ((enabled & B_CTRL) && (b & B_CTRL)) {
            *changed |= B_CTRL;
            continue;
        }
        if ((enabled & B_QUOTE) && (b & B_QUOTE)) {
            c = quote_of(c);
            *changed |= B_QUOTE;
        }
        else if ((enabled & B_DASH) && (b & B_DASH)) {
            c = dash_of(c);
            *changed |= B_DASH;
        }
        wr(dst, kind, o++, c);
    }
    return o;
}

/* Pass 2: the whitespace step (newlines="keep") on text whose only whitespace is " " and
 * "\n", from src into dst (which may be src: the output never runs ahead of the input). Each
 * line is stripped and its space runs collapsed, its indentation kept (but the first line's),
 * runs of blank lines become one, blank lines at either end go. This is
 * normalize_text._rewrite_whitespace for that text. Returns the new length. */
ALWAYS_INLINE Py_ssize_t
collapse(const void *src, void *dst, int kind, Py_ssize_t n)
{
    Py_ssize_t o = 0, i = 0;
    int emitted = 0, pending_blank = 0;
    while (i <= n) {
        Py_ssize_t j;
        if (kind == 1) {
            const Py_UCS1 *nl = memchr((const Py_UCS1 *)src + i, '\n', (size_t)(n - i));
            j = nl ? nl - (const Py_UCS1 *)src : n;
        }
        else {
            j = i;
            while (j < n && rd(src, kind, j) != '\n')
                j++;
        }
        Py_ssize_t s = i;
        while (s < j && rd(src, kind, s) == ' ')
            s++;
        if (s == j) { /* a blank line */
            if (emitted)
                pending_blank = 1;
        }
        else {
            Py_ssize_t e = j;
            while (rd(src, kind, e - 1) == ' ')
                e--;
            if (emitted) {
                wr(dst, kind, o++, '\n');
                if (pending_blank)
                    wr(dst, kind, o++, '\n');
                for (Py_ssize_t k = i; k < s; k++) /* indentation: spaces */
                    wr(dst, kind, o++, ' ');
            }
            pending_blank = 0;
            Py_UCS4 prev = 0;
            Py_ssize_t k = s;
            while (k < e) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
                if (kind == 1 && k + 8 <= e) {
                    /* Eight bytes without a space pair (nor one across the edge) go as they are.
                     * Loaded before stored, so an overlapping in-place copy is safe. */
                    uint64_t v;
                    memcpy(&v, (const Py_UCS1 *)src + k, 8);
                    uint64_t sp = zero_lanes(v ^ (ONES * 0x20), LOWS);
                    if (!(sp & (sp << 8)) && !((sp & 0x80) && prev == ' ')) {
                        memcpy((Py_UCS1 *)dst + o, &v, 8);
                        o += 8;
                        k += 8;
                        prev = (Py_UCS1)(v >> 56);
                        continue;
                    }
                }
#endif
                Py_UCS4 c = rd(src, kind, k++);
                if (c == ' ' && prev == ' ')
                    continue;
                wr(dst, kind, o++, c);
                prev = c;
            }
            emitted = 1;
        }
        i = j + 1;
    }
    return o;
}

ALWAYS_INLINE Py_ssize_t
rewrite_kind(const void *src, void *buf, int kind, Py_ssize_t n, int found, int enabled, int *changed)
{
    Py_ssize_t m = n;
    const void *from = src;
    if (found & enabled & (B_CTRL | B_QUOTE | B_DASH)) {
        m = map_chars(src, buf, kind, n, enabled, changed);
        from = buf;
    }
    /* Removing a control can expose whitespace work ("a \u200b b"): run it then as well. */
    if ((enabled & B_WS) && (found & (B_WS | ((*changed & B_CTRL) ? B_CTRL : 0)))) {
        Py_ssize_t w = collapse(from, buf, kind, m);
        if (w != m)
            *changed |= B_WS;
        m = w;
    }
    return m;
}

static PyObject *
rewrite(PyObject *self, PyObject *args)
{
    PyObject *text;
    int found, enabled;
    (void)self;
    if (!PyArg_ParseTuple(args, "Uii:rewrite", &text, &found, &enabled))
        return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    void *buf = PyMem_Malloc(n ? (size_t)n * kind : 1);
    if (buf == NULL)
        return PyErr_NoMemory();
    int changed = 0;
    Py_ssize_t m;
    if (kind == PyUnicode_1BYTE_KIND)
        m = rewrite_kind(data, buf, 1, n, found, enabled, &changed);
    else if (kind == PyUnicode_2BYTE_KIND)
        m = rewrite_kind(data, buf, 2, n, found, enabled, &changed);
    else
        m = rewrite_kind(data, buf, 4, n, found, enabled, &changed);
    PyObject *out;
    if (!changed) {
        out = text;
        Py_INCREF(out);
    }
    else
        out = PyUnicode_FromKindAndData(kind, buf, m); /* narrows the kind when it can */
    PyMem_Free(buf);
    if (out == NULL)
        return NULL;
    PyObject *res = Py_BuildValue("(Ni)", out, changed);
    return res;
}

/* --------------------------------------------------------------------------- JSON values */

#define ROUNDED 9.2e18 /* io._ROUNDED: just under 2**63 */

ALWAYS_INLINE int
rounded_float(PyObject *v)
{
    double d = PyFloat_AS_DOUBLE(v);
    return !(-ROUNDED < d && d < ROUNDED);
}

/* io._may_hold_rounded_int, the same rules: a float of magnitude 2**63 or more among the
 * values at the top or one level down; deeper nesting, or more than 64 values one level down,
 * answers True. */
static PyObject *
may_hold_rounded_int(PyObject *self, PyObject *value)
{
    (void)self;
    if (!PyDict_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "may_hold_rounded_int() wants a dict");
        return NULL;
    }
    Py_ssize_t pos = 0, inner = 0;
    PyObject *key, *v;
    /* First the top level, as the Python version does, then the inner values in order. */
    while (PyDict_Next(value, &pos, &key, &v)) {
        if (PyFloat_CheckExact(v)) {
            if (rounded_float(v))
                Py_RETURN_TRUE;
        }
        else if (PyDict_CheckExact(v) || PyList_CheckExact(v)) {
            inner += PyDict_CheckExact(v) ? PyDict_GET_SIZE(v) : PyList_GET_SIZE(v);
            if (inner > 64)
                Py_RETURN_TRUE;
        }
    }
    if (inner == 0)
        Py_RETURN_FALSE;
    pos = 0;
    while (PyDict_Next(value, &pos, &key, &v)) {
        if (PyDict_CheckExact(v)) {
            Py_ssize_t p2 = 0;
            PyObject *k2, *w;
            while (PyDict_Next(v, &p2, &k2, &w)) {
                if (PyFloat_CheckExact(w)) {
                    if (rounded_float(w))
                        Py_RETURN_TRUE;
                }
                else if (PyDict_CheckExact(w) || PyList_CheckExact(w))
                    Py_RETURN_TRUE;
            }
        }
        else if (PyList_CheckExact(v)) {
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(v); i++) {
                PyObject *w = PyList_GET_ITEM(v, i);
                if (PyFloat_CheckExact(w)) {
                    if (rounded_float(w))
                        Py_RETURN_TRUE;
                }
                else if (PyDict_CheckExact(w) || PyList_CheckExact(w))
                    Py_RETURN_TRUE;
            }
        }
    }
    Py_RETURN_FALSE;
}

static PyMethodDef methods[] = {
    {"may_hold_rounded_int", may_hold_rounded_int, METH_O,
     "may_hold_rounded_int(record) -> bool: io._may_hold_rounded_int, in C."},
    {"scan", scan, METH_O, "scan(text) -> int: bit set of what the default normalize steps may change."},
    {"rewrite", rewrite, METH_VARARGS,
     "rewrite(text, found, enabled) -> (str, changed): the plain controls, quotes, dashes and whitespace steps."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "llmtools._speedups",
    "One-pass text checks and rewrites for llmtools normalize (optional; see ops/normalize_text.py).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "B_MOJI", B_MOJI) < 0 || PyModule_AddIntConstant(m, "B_CTRL", B_CTRL) < 0
        || PyModule_AddIntConstant(m, "B_CTRL_X", B_CTRL_X) < 0 || PyModule_AddIntConstant(m, "B_NFC", B_NFC) < 0
        || PyModule_AddIntConstant(m, "B_QUOTE", B_QUOTE) < 0 || PyModule_AddIntConstant(m, "B_DASH", B_DASH) < 0
        || PyModule_AddIntConstant(m, "B_WS", B_WS) < 0 || PyModule_AddIntConstant(m, "B_WS_X", B_WS_X) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
