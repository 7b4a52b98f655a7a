/*
 * The log format's hot loops in C: checking lines and decoding bodies.
 *
 * gossip.store.format holds the definition of each function here, in Python, and
 * uses these instead when this module is built.  They must agree exactly
 * (tests/test_speedups.py checks that they do, on hostile input): a line
 * is
 *
 *     HASH SP LENGTH "<" BODY ">" LENGTH
 *
 * where HASH is 11 bytes other than LF, each LENGTH one or more ASCII
 * digits, the two LENGTHs the same bytes, BODY exactly that many bytes
 * with no ">" or LF, and each "&"-separated item of BODY either empty or
 * holding "=".  HASH must be the first 11 characters of the base64 of
 * SHA-256(BODY), which this computes with the CPU's SHA instructions where
 * it has them, else with the hash function it is given (hashlib's, so
 * OpenSSL's).  The value of BODY's first "at" pair, if it has one, must be
 * a serial number written in its one way (isSerial).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* Set by configure(): gossip.store.format.CorruptLine and hashlib.sha256. */
static PyObject *corruptLine = NULL;
static PyObject *sha256 = NULL;
static PyObject *digestName = NULL;
/* The integer 1, made once. */
static PyObject *one = NULL;

static const char base64Alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";


/* Where a record's parts are, as offsets into it. */
typedef struct {
    Py_ssize_t bodyStart;   /* just after "<" */
    Py_ssize_t bodyEnd;     /* at ">" */
    Py_ssize_t lengthStart; /* the header's LENGTH */
    Py_ssize_t lengthEnd;
} Parts;


static int
isDigit(unsigned char c)
{
    return c >= '0' && c <= '9';
}


/*
 * Find the parts of a record of size bytes, checking its shape but not its
 * lengths or hash.  Return 1 if it has the shape of an add, else 0.
 */
static int
splitRecord(const unsigned char *data, Py_ssize_t size, Parts *parts)
{
    Py_ssize_t i;
    const unsigned char *gt;
    const unsigned char *item;

    if (size < 11 + 1 + 1 + 1 + 1 + 1) {
        return 0;
    }
    for (i = 0; i < 11; i++) {
        if (data[i] == '\n') {
            return 0;
        }
    }
    if (data[11] != ' ') {
        return 0;
    }
    i = 12;
    parts->lengthStart = i;
    while (i < size && isDigit(data[i])) {
        i++;
    }
    if (i == parts->lengthStart || i == size || data[i] != '<') {
        return 0;
    }
    parts->lengthEnd = i;
    i++;
    parts->bodyStart = i;
    /*
     * The body: up to the first ">", with no LF, every non-empty item
     * holding "=".  memchr crosses long values many times faster than a
     * loop over each byte.
     */
    gt = memchr(data + i, '>', size - i);
    if (gt == NULL || memchr(data + i, '\n', gt - (data + i)) != NULL) {
        return 0;
    }
    item = data + i;
    while (item < gt) {
        const unsigned char *amp = memchr(item, '&', gt - item);
        if (amp == NULL) {
            amp = gt;
        }
        if (amp > item && memchr(item, '=', amp - item) == NULL) {
            return 0;
        }
        item = amp + 1;
    }
    i = gt - data;
    parts->bodyEnd = i;
    /* The trailer: ">" and digits, to the end. */
    i++;
    if (i == size) {
        return 0;
    }
    for (; i < size; i++) {
        if (!isDigit(data[i])) {
            return 0;
        }
    }
    return 1;
}


/*
 * Whether the record's two lengths are the same bytes and give its body's
 * length (as Python's int() reads them: leading zeros allowed).
 */
static int
lengthsMatch(const unsigned char *data, Py_ssize_t size, const Parts *parts)
{
    Py_ssize_t digits = parts->lengthEnd - parts->lengthStart;
    Py_ssize_t trailer = parts->bodyEnd + 1;
    Py_ssize_t i;
    Py_ssize_t value = 0;

    if (size - trailer != digits
        || memcmp(data + parts->lengthStart, data + trailer, digits) != 0) {
        return 0;
    }
    i = parts->lengthStart;
    while (i < parts->lengthEnd - 1 && data[i] == '0') {
        i++;
    }
    if (parts->lengthEnd - i > 18) {
        /* More than any body's length can be. */
        return 0;
    }
    for (; i < parts->lengthEnd; i++) {
        value = value * 10 + (data[i] - '0');
    }
    return value == parts->bodyEnd - parts->bodyStart;
}


/*
 * SHA-256 in the CPU's SHA extensions, where it has them: most of what
 * checking a line costs is hashing its body, and a call into hashlib for
 * each body costs several times what the hashing does.  Elsewhere the
 * hash function configure() was given is called.
 */
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define HARDWARE_HASH 1
#include <immintrin.h>
#include <stdint.h>

static const uint32_t roundConstants[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

/* The state as the SHA instructions hold it: ABEF and CDGH. */
__attribute__((target("sha,sse4.1,ssse3")))
static void
hashBlocks(__m128i *abef, __m128i *cdgh, const unsigned char *data, Py_ssize_t blocks)
{
    const __m128i byteSwap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i state0 = *abef;
    __m128i state1 = *cdgh;

    for (; blocks > 0; blocks--, data += 64) {
        __m128i words[4];
        __m128i savedAbef = state0;
        __m128i savedCdgh = state1;
        int i;

        /* Four rounds at a time; words[i % 4] holds the message words of
         * rounds 4i to 4i + 3, the schedule's next four made from the four
         * sets before them. */
        for (i = 0; i < 16; i++) {
            __m128i message;
            if (i < 4) {
                words[i] = _mm_shuffle_epi8(
                    _mm_loadu_si128((const __m128i *)(data + 16 * i)), byteSwap);
            }
            else {
                __m128i next = _mm_sha256msg1_epu32(words[i & 3], words[(i + 1) & 3]);
                next = _mm_add_epi32(next, _mm_alignr_epi8(words[(i + 3) & 3], words[(i + 2) & 3], 4));
                words[i & 3] = _mm_sha256msg2_epu32(next, words[(i + 3) & 3]);
            }
            message = _mm_add_epi32(
                words[i & 3], _mm_loadu_si128((const __m128i *)(roundConstants + 4 * i)));
            state1 = _mm_sha256rnds2_epu32(state1, state0, message);
            state0 = _mm_sha256rnds2_epu32(state0, state1, _mm_shuffle_epi32(message, 0x0E));
        }
        state0 = _mm_add_epi32(state0, savedAbef);
        state1 = _mm_add_epi32(state1, savedCdgh);
    }
    *abef = state0;
    *cdgh = state1;
}

/* The first 9 bytes of SHA-256(data), all that a line's hash keeps. */
__attribute__((target("sha,sse4.1,ssse3")))
static void
hardwareDigest(const unsigned char *data, Py_ssize_t size, unsigned char digest[9])
{
    static const uint32_t initial[8] = {
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    };
    unsigned char last[128];
    Py_ssize_t whole = size / 64;
    Py_ssize_t left = size - whole * 64;
    Py_ssize_t padded = left + 9 <= 64 ? 64 : 128;
    unsigned long long bits = (unsigned long long)size * 8;
    uint32_t state[8];
    __m128i low, high, abef, cdgh;
    int i;

    low = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)initial), 0xB1);
    high = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(initial + 4)), 0x1B);
    abef = _mm_alignr_epi8(low, high, 8);
    cdgh = _mm_blend_epi16(high, low, 0xF0);

    hashBlocks(&abef, &cdgh, data, whole);
    memcpy(last, data + whole * 64, left);
    last[left] = 0x80;
    memset(last + left + 1, 0, padded - left - 1);
    for (i = 0; i < 8; i++) {
        last[padded - 1 - i] = (unsigned char)(bits >> (8 * i));
    }
    hashBlocks(&abef, &cdgh, last, padded / 64);

    low = _mm_shuffle_epi32(abef, 0x1B);
    high = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)state, _mm_blend_epi16(low, high, 0xF0));
    _mm_storeu_si128((__m128i *)(state + 4), _mm_alignr_epi8(high, low, 8));
    for (i = 0; i < 9; i++) {
        digest[i] = (unsigned char)(state[i / 4] >> (24 - 8 * (i % 4)));
    }
}

static int
hasHardwareHash(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("sha") && __builtin_cpu_supports("sse4.1")
        && __builtin_cpu_supports("ssse3");
}
#else
static int
hasHardwareHash(void)
{
    return 0;
}
#endif

/* Whether the SHA extensions hash here: found once, and turned off by
 * configure() (to test the other way). */
static int hardwareHash = 0;


/*
 * Whether hash (11 bytes) is the first 11 characters of the base64 of the
 * SHA-256 of the size bytes at body.  bodyObject, if not NULL, is the same
 * bytes as a bytes object.  Return 1 or 0, or -1 with an exception set.
 */
static int
hashMatches(const unsigned char *hash, const unsigned char *body, Py_ssize_t size,
            PyObject *bodyObject)
{
    unsigned char d[9];
    char text[12];
    int i;

#ifdef HARDWARE_HASH
    if (hardwareHash) {
        hardwareDigest(body, size, d);
    }
    else
#endif
    {
        PyObject *hasher;
        PyObject *digest;

        if (bodyObject != NULL) {
            hasher = PyObject_CallOneArg(sha256, bodyObject);
        }
        else {
            PyObject *made = PyBytes_FromStringAndSize((const char *)body, size);
            if (made == NULL) {
                return -1;
            }
            hasher = PyObject_CallOneArg(sha256, made);
            Py_DECREF(made);
        }
        if (hasher == NULL) {
            return -1;
        }
        digest = PyObject_CallMethodNoArgs(hasher, digestName);
        Py_DECREF(hasher);
        if (digest == NULL) {
            return -1;
        }
        if (!PyBytes_Check(digest) || PyBytes_GET_SIZE(digest) < 9) {
            Py_DECREF(digest);
            PyErr_SetString(PyExc_TypeError, "the hash gave no 9-byte digest");
            return -1;
        }
        memcpy(d, PyBytes_AS_STRING(digest), 9);
        Py_DECREF(digest);
    }
    /* 9 bytes are exactly 12 base64 characters; 11 are kept. */
    for (i = 0; i < 3; i++) {
        unsigned long triple = ((unsigned long)d[3 * i] << 16)
            | ((unsigned long)d[3 * i + 1] << 8) | d[3 * i + 2];
        text[4 * i] = base64Alphabet[(triple >> 18) & 63];
        text[4 * i + 1] = base64Alphabet[(triple >> 12) & 63];
        text[4 * i + 2] = base64Alphabet[(triple >> 6) & 63];
        text[4 * i + 3] = base64Alphabet[triple & 63];
    }
    return memcmp(text, hash, 11) == 0;
}


static int atIsCanonical(const unsigned char *data, Py_ssize_t start, Py_ssize_t end);


/*
 * Check one record: return a new reference to its body if it is an intact
 * add, Py_None (a new reference) if not, or NULL with an exception set.
 */
static PyObject *
checkOne(PyObject *record)
{
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(record);
    Py_ssize_t size = PyBytes_GET_SIZE(record);
    Parts parts;
    PyObject *body;
    int matches;

    if (!splitRecord(data, size, &parts) || !lengthsMatch(data, size, &parts)) {
        Py_RETURN_NONE;
    }
    body = PyBytes_FromStringAndSize(
        (const char *)data + parts.bodyStart, parts.bodyEnd - parts.bodyStart);
    if (body == NULL) {
        return NULL;
    }
    matches = hashMatches(data, data + parts.bodyStart, parts.bodyEnd - parts.bodyStart, body);
    if (matches < 0) {
        Py_DECREF(body);
        return NULL;
    }
    if (!matches) {
        Py_DECREF(body);
        Py_RETURN_NONE;
    }
    matches = atIsCanonical(data, parts.bodyStart, parts.bodyEnd);
    if (matches <= 0) {
        Py_DECREF(body);
        if (matches < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    return body;
}


static int
checkConfigured(void)
{
    if (sha256 == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "gossip.store._speedups is not configured");
        return 0;
    }
    return 1;
}


PyDoc_STRVAR(checkRecordsDoc,
"checkRecords(records) -> list\n\n"
"Each record's body if it is an intact add, else None.");

static PyObject *
checkRecords(PyObject *module, PyObject *records)
{
    PyObject *sequence;
    PyObject *bodies;
    Py_ssize_t count;
    Py_ssize_t i;

    if (!checkConfigured()) {
        return NULL;
    }
    sequence = PySequence_Fast(records, "records must be a sequence");
    if (sequence == NULL) {
        return NULL;
    }
    count = PySequence_Fast_GET_SIZE(sequence);
    bodies = PyList_New(count);
    if (bodies == NULL) {
        Py_DECREF(sequence);
        return NULL;
    }
    for (i = 0; i < count; i++) {
        PyObject *record = PySequence_Fast_GET_ITEM(sequence, i);
        PyObject *body;
        if (!PyBytes_Check(record)) {
            PyErr_SetString(PyExc_TypeError, "records must be bytes");
            goto error;
        }
        body = checkOne(record);
        if (body == NULL) {
            goto error;
        }
        PyList_SET_ITEM(bodies, i, body);
    }
    Py_DECREF(sequence);
    return bodies;

error:
    Py_DECREF(sequence);
    Py_DECREF(bodies);
    return NULL;
}


/*
 * Whether a body has the usual keyed shape, "by=BY&at=AT" then nothing or
 * "&" and more, BY holding none of "&%+=" and AT one or more digits.  If
 * so, set the offsets (into data) of BY and AT.
 */
static int
splitKeyed(const unsigned char *data, Py_ssize_t start, Py_ssize_t end,
           Py_ssize_t *byStart, Py_ssize_t *byEnd,
           Py_ssize_t *atStart, Py_ssize_t *atEnd)
{
    Py_ssize_t i = start;

    if (end - i < 3 || memcmp(data + i, "by=", 3) != 0) {
        return 0;
    }
    i += 3;
    *byStart = i;
    while (i < end && data[i] != '&') {
        unsigned char c = data[i];
        if (c == '%' || c == '+' || c == '=') {
            return 0;
        }
        i++;
    }
    *byEnd = i;
    if (end - i < 4 || memcmp(data + i, "&at=", 4) != 0) {
        return 0;
    }
    i += 4;
    *atStart = i;
    while (i < end && isDigit(data[i])) {
        i++;
    }
    if (i == *atStart || (i < end && data[i] != '&')) {
        return 0;
    }
    *atEnd = i;
    return 1;
}


/*
 * Whether the size bytes at at are a serial number in its one spelling
 * (gossip.store.format.isSerial): ASCII digits, no leading zero but "0" itself,
 * less than 2**63.
 */
static int
isSerial(const unsigned char *at, Py_ssize_t size)
{
    static const char largest[] = "9223372036854775807";
    Py_ssize_t i;

    if (size == 0 || size > 19 || (at[0] == '0' && size > 1)) {
        return 0;
    }
    for (i = 0; i < size; i++) {
        if (!isDigit(at[i])) {
            return 0;
        }
    }
    return size < 19 || memcmp(at, largest, 19) <= 0;
}


/* The integer AT, a serial number (see isSerial). */
static PyObject *
readSerial(const unsigned char *digits, Py_ssize_t size)
{
    long long n = 0;
    Py_ssize_t i;

    for (i = 0; i < size; i++) {
        n = n * 10 + (digits[i] - '0');
    }
    return PyLong_FromLongLong(n);
}


PyDoc_STRVAR(checkKeyedDoc,
"checkKeyed(lines, terminated, check) -> (checked, rejected)\n\n"
"For each of lines (each ending in LF if terminated), if it has the usual\n"
"keyed shape, check it here; otherwise call check(line), which returns\n"
"(body, key) or raises CorruptLine.  checked is a list of\n"
"(line, body, (by, at)) for the intact adds with a key; rejected counts\n"
"the rest.");

static PyObject *
checkKeyed(PyObject *module, PyObject *args)
{
    PyObject *lines;
    int terminated;
    PyObject *check;
    PyObject *sequence;
    PyObject *checked;
    Py_ssize_t rejected = 0;
    Py_ssize_t count;
    Py_ssize_t i;

    if (!PyArg_ParseTuple(args, "OpO:checkKeyed", &lines, &terminated, &check)) {
        return NULL;
    }
    if (!checkConfigured()) {
        return NULL;
    }
    sequence = PySequence_Fast(lines, "lines must be a sequence");
    if (sequence == NULL) {
        return NULL;
    }
    checked = PyList_New(0);
    if (checked == NULL) {
        Py_DECREF(sequence);
        return NULL;
    }
    count = PySequence_Fast_GET_SIZE(sequence);
    for (i = 0; i < count; i++) {
        PyObject *line = PySequence_Fast_GET_ITEM(sequence, i);
        const unsigned char *data;
        Py_ssize_t size;
        Parts parts;
        Py_ssize_t byStart, byEnd, atStart, atEnd;
        PyObject *entry;
        int appended;

        if (!PyBytes_Check(line)) {
            PyErr_SetString(PyExc_TypeError, "lines must be bytes");
            goto error;
        }
        data = (const unsigned char *)PyBytes_AS_STRING(line);
        size = PyBytes_GET_SIZE(line);
        if (terminated && size > 0 && data[size - 1] == '\n'
            && splitRecord(data, size - 1, &parts)
            && splitKeyed(data, parts.bodyStart, parts.bodyEnd,
                          &byStart, &byEnd, &atStart, &atEnd)) {
            size -= 1;
        }
        else if (!terminated && splitRecord(data, size, &parts)
                 && splitKeyed(data, parts.bodyStart, parts.bodyEnd,
                               &byStart, &byEnd, &atStart, &atEnd)) {
            /* A record: checked as it is. */
        }
        else {
            /* Not the usual add: Python decides. */
            PyObject *result = PyObject_CallOneArg(check, line);
            PyObject *key;
            if (result == NULL) {
                if (!PyErr_ExceptionMatches(corruptLine)) {
                    goto error;
                }
                PyErr_Clear();
                rejected++;
                continue;
            }
            if (!PyTuple_Check(result) || PyTuple_GET_SIZE(result) != 2) {
                Py_DECREF(result);
                PyErr_SetString(PyExc_TypeError, "check must return (body, key)");
                goto error;
            }
            key = PyTuple_GET_ITEM(result, 1);
            if (key == Py_None) {
                Py_DECREF(result);
                rejected++;
                continue;
            }
            entry = PyTuple_Pack(3, line, PyTuple_GET_ITEM(result, 0), key);
            Py_DECREF(result);
            if (entry == NULL) {
                goto error;
            }
            appended = PyList_Append(checked, entry);
            Py_DECREF(entry);
            if (appended < 0) {
                goto error;
            }
            continue;
        }

        if (!lengthsMatch(data, size, &parts) || !isSerial(data + atStart, atEnd - atStart)) {
            rejected++;
            continue;
        }
        {
            PyObject *body = PyBytes_FromStringAndSize(
                (const char *)data + parts.bodyStart,
                parts.bodyEnd - parts.bodyStart);
            PyObject *by;
            PyObject *at;
            int matches;
            if (body == NULL) {
                goto error;
            }
            matches = hashMatches(
                data, data + parts.bodyStart, parts.bodyEnd - parts.bodyStart, body);
            if (matches <= 0) {
                Py_DECREF(body);
                if (matches < 0) {
                    goto error;
                }
                rejected++;
                continue;
            }
            by = PyBytes_FromStringAndSize((const char *)data + byStart, byEnd - byStart);
            at = readSerial(data + atStart, atEnd - atStart);
            if (by == NULL || at == NULL) {
                Py_XDECREF(by);
                Py_XDECREF(at);
                Py_DECREF(body);
                goto error;
            }
            entry = Py_BuildValue("(ON(NN))", line, body, by, at);
            if (entry == NULL) {
                goto error;
            }
            appended = PyList_Append(checked, entry);
            Py_DECREF(entry);
            if (appended < 0) {
                goto error;
            }
        }
    }
    Py_DECREF(sequence);
    return Py_BuildValue("(Nn)", checked, rejected);

error:
    Py_DECREF(sequence);
    Py_DECREF(checked);
    return NULL;
}


static int
hexValue(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}


/*
 * A name or value unescaped: "+" is a space, "%XY" (either case of hex
 * digit) the byte XY, and any other "%" itself.
 */
static PyObject *
unescape(const unsigned char *data, Py_ssize_t size)
{
    PyObject *result;
    unsigned char *out;
    Py_ssize_t i;
    Py_ssize_t n = 0;

    if (memchr(data, '%', size) == NULL && memchr(data, '+', size) == NULL) {
        return PyBytes_FromStringAndSize((const char *)data, size);
    }
    result = PyBytes_FromStringAndSize(NULL, size);
    if (result == NULL) {
        return NULL;
    }
    out = (unsigned char *)PyBytes_AS_STRING(result);
    for (i = 0; i < size; i++) {
        unsigned char c = data[i];
        if (c == '+') {
            out[n++] = ' ';
        }
        else if (c == '%' && i + 2 < size
                 && hexValue(data[i + 1]) >= 0 && hexValue(data[i + 2]) >= 0) {
            out[n++] = (unsigned char)(hexValue(data[i + 1]) * 16 + hexValue(data[i + 2]));
            i += 2;
        }
        else {
            out[n++] = c;
        }
    }
    if (n != size && _PyBytes_Resize(&result, n) < 0) {
        return NULL;
    }
    return result;
}


/*
 * Whether the body from start to end in data has no "at" pair or its
 * first "at" (its name unescaped, its value as written) is a serial
 * number: gossip.store.format._atIsCanonical.  Return 1 or 0, or -1 with an
 * exception set.
 */
static int
atIsCanonical(const unsigned char *data, Py_ssize_t start, Py_ssize_t end)
{
    Py_ssize_t byStart, byEnd, atStart, atEnd;
    const unsigned char *item = data + start;
    const unsigned char *stop = data + end;

    if (splitKeyed(data, start, end, &byStart, &byEnd, &atStart, &atEnd)) {
        return isSerial(data + atStart, atEnd - atStart);
    }
    while (item < stop) {
        const unsigned char *amp = memchr(item, '&', stop - item);
        const unsigned char *equals;
        Py_ssize_t nameSize;
        if (amp == NULL) {
            amp = stop;
        }
        equals = memchr(item, '=', amp - item);
        nameSize = equals == NULL ? 0 : equals - item;
        if (equals != NULL && nameSize == 2 && memcmp(item, "at", 2) == 0) {
            return isSerial(equals + 1, amp - equals - 1);
        }
        /* "at" is at most 6 bytes escaped, and "+" makes neither letter. */
        if (equals != NULL && nameSize <= 6 && memchr(item, '%', nameSize) != NULL) {
            PyObject *name = unescape(item, nameSize);
            int isAt;
            if (name == NULL) {
                return -1;
            }
            isAt = PyBytes_GET_SIZE(name) == 2 && memcmp(PyBytes_AS_STRING(name), "at", 2) == 0;
            Py_DECREF(name);
            if (isAt) {
                return isSerial(equals + 1, amp - equals - 1);
            }
        }
        item = amp + 1;
    }
    return 1;
}


PyDoc_STRVAR(decodeBodyDoc,
"decodeBody(body) -> list of (name, value)\n\n"
"Decode a body to its pairs; raise CorruptLine if a non-empty item has\n"
"no \"=\".");

static PyObject *
decodeBody(PyObject *module, PyObject *bodyObject)
{
    const unsigned char *data;
    Py_ssize_t size;
    Py_ssize_t start = 0;
    PyObject *pairs;

    if (!checkConfigured()) {
        return NULL;
    }
    if (!PyBytes_Check(bodyObject)) {
        PyErr_SetString(PyExc_TypeError, "body must be bytes");
        return NULL;
    }
    data = (const unsigned char *)PyBytes_AS_STRING(bodyObject);
    size = PyBytes_GET_SIZE(bodyObject);
    pairs = PyList_New(0);
    if (pairs == NULL) {
        return NULL;
    }
    while (start < size) {
        const unsigned char *item = data + start;
        const unsigned char *amp = memchr(item, '&', size - start);
        Py_ssize_t itemSize = amp == NULL ? size - start : amp - item;
        const unsigned char *equals;
        PyObject *name;
        PyObject *value;
        PyObject *pair;
        int appended;

        start += itemSize + 1;
        if (itemSize == 0) {
            continue;
        }
        equals = memchr(item, '=', itemSize);
        if (equals == NULL) {
            PyErr_SetString(corruptLine, "pair without '='");
            goto error;
        }
        name = unescape(item, equals - item);
        if (name == NULL) {
            goto error;
        }
        value = unescape(equals + 1, itemSize - (equals - item) - 1);
        if (value == NULL) {
            Py_DECREF(name);
            goto error;
        }
        pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(name);
            Py_DECREF(value);
            goto error;
        }
        PyTuple_SET_ITEM(pair, 0, name);
        PyTuple_SET_ITEM(pair, 1, value);
        appended = PyList_Append(pairs, pair);
        Py_DECREF(pair);
        if (appended < 0) {
            goto error;
        }
    }
    return pairs;

error:
    Py_DECREF(pairs);
    return NULL;
}


PyDoc_STRVAR(spansDoc,
"spans(keys) -> dict or None\n\n"
"gossip.store.intervals.spans: for (by, at) pairs, {by: [start, end]} where\n"
"each origin's serials go up by one, else None.");

static PyObject *
spans(PyObject *module, PyObject *keys)
{
    PyObject *sequence;
    PyObject *result;
    Py_ssize_t count;
    Py_ssize_t i;

    sequence = PySequence_Fast(keys, "keys must be a sequence");
    if (sequence == NULL) {
        return NULL;
    }
    result = PyDict_New();
    if (result == NULL) {
        Py_DECREF(sequence);
        return NULL;
    }
    count = PySequence_Fast_GET_SIZE(sequence);
    for (i = 0; i < count; i++) {
        PyObject *key = PySequence_Fast_GET_ITEM(sequence, i);
        PyObject *by;
        PyObject *at;
        PyObject *span;
        PyObject *next;
        int follows;

        if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) != 2) {
            PyErr_SetString(PyExc_TypeError, "keys must be (by, at) pairs");
            goto error;
        }
        by = PyTuple_GET_ITEM(key, 0);
        at = PyTuple_GET_ITEM(key, 1);
        if (!PyLong_Check(at)) {
            PyErr_SetString(PyExc_TypeError, "serials must be integers");
            goto error;
        }
        next = PyNumber_Add(at, one);
        if (next == NULL) {
            goto error;
        }
        span = PyDict_GetItemWithError(result, by);
        if (span == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(next);
                goto error;
            }
            span = PyList_New(2);
            if (span == NULL) {
                Py_DECREF(next);
                goto error;
            }
            Py_INCREF(at);
            PyList_SET_ITEM(span, 0, at);
            PyList_SET_ITEM(span, 1, next);
            follows = PyDict_SetItem(result, by, span);
            Py_DECREF(span);
            if (follows < 0) {
                goto error;
            }
            continue;
        }
        follows = PyObject_RichCompareBool(PyList_GET_ITEM(span, 1), at, Py_EQ);
        if (follows <= 0) {
            Py_DECREF(next);
            if (follows < 0) {
                goto error;
            }
            Py_DECREF(sequence);
            Py_DECREF(result);
            Py_RETURN_NONE;
        }
        /* PyList_SetItem takes next's reference and drops the old end. */
        if (PyList_SetItem(span, 1, next) < 0) {
            goto error;
        }
    }
    Py_DECREF(sequence);
    return result;

error:
    Py_DECREF(sequence);
    Py_DECREF(result);
    return NULL;
}


/* The origins keyedSpans() follows at once, beyond which it gives up. */
#define RUN_ORIGINS 32

typedef struct {
    PyObject *by;
    unsigned long long start;
    unsigned long long next;
} RunOrigin;


/*
 * Note that origin by (size bytes at data, or byObject) has serial at in
 * the run: return 1 if it follows the origin's last serial (or is its
 * first), 0 if not, 2 if the run has too many origins to follow, or -1
 * with an exception set.
 */
static int
follow(RunOrigin *origins, Py_ssize_t *count, const unsigned char *by, Py_ssize_t size,
       PyObject *byObject, unsigned long long at)
{
    Py_ssize_t i;

    for (i = *count - 1; i >= 0; i--) {
        PyObject *known = origins[i].by;
        if (PyBytes_GET_SIZE(known) == size && memcmp(PyBytes_AS_STRING(known), by, size) == 0) {
            if (origins[i].next != at) {
                return 0;
            }
            origins[i].next = at + 1;
            return 1;
        }
    }
    if (*count == RUN_ORIGINS) {
        return 2;
    }
    if (byObject != NULL) {
        Py_INCREF(byObject);
    }
    else {
        byObject = PyBytes_FromStringAndSize((const char *)by, size);
        if (byObject == NULL) {
            return -1;
        }
    }
    origins[*count].by = byObject;
    origins[*count].start = at;
    origins[*count].next = at + 1;
    (*count)++;
    return 1;
}


/*
 * Note the line from start to end (its LF included, if it has one) as not
 * taken.  Return 0, or -1 with an exception set.
 */
static int
reject(PyObject *rejected, Py_ssize_t start, Py_ssize_t end)
{
    PyObject *range = Py_BuildValue("(nn)", start, end);
    int appended;

    if (range == NULL) {
        return -1;
    }
    appended = PyList_Append(rejected, range);
    Py_DECREF(range);
    return appended;
}


/*
 * Check one line (size bytes at line, its LF included) as checkKeyedLine
 * does, the usual keyed shape here and any other by check(line).  Return
 * 1 and set *by, *bySize (into line, or into *byObject, a new reference)
 * and *at for an intact add with a by and at; 0 for any other line; -1
 * with an exception set.
 */
static int
checkKeyedOne(const unsigned char *line, Py_ssize_t size, PyObject *check,
              const unsigned char **by, Py_ssize_t *bySize, PyObject **byObject,
              unsigned long long *at)
{
    Py_ssize_t record = size - 1;
    Parts parts;
    Py_ssize_t byStart, byEnd, atStart, atEnd;
    PyObject *given;
    PyObject *checked;
    PyObject *key;
    int matches;
    Py_ssize_t i;

    *byObject = NULL;
    if (splitRecord(line, record, &parts)
        && splitKeyed(line, parts.bodyStart, parts.bodyEnd, &byStart, &byEnd, &atStart, &atEnd)) {
        if (!lengthsMatch(line, record, &parts) || !isSerial(line + atStart, atEnd - atStart)) {
            return 0;
        }
        matches = hashMatches(line, line + parts.bodyStart, parts.bodyEnd - parts.bodyStart, NULL);
        if (matches <= 0) {
            return matches;
        }
        *by = line + byStart;
        *bySize = byEnd - byStart;
        *at = 0;
        for (i = atStart; i < atEnd; i++) {
            *at = *at * 10 + (line[i] - '0');
        }
        return 1;
    }
    /* Not the usual add: Python decides. */
    given = PyBytes_FromStringAndSize((const char *)line, size);
    if (given == NULL) {
        return -1;
    }
    checked = PyObject_CallOneArg(check, given);
    Py_DECREF(given);
    if (checked == NULL) {
        if (!PyErr_ExceptionMatches(corruptLine)) {
            return -1;
        }
        PyErr_Clear();
        return 0;
    }
    if (!PyTuple_Check(checked) || PyTuple_GET_SIZE(checked) != 2) {
        Py_DECREF(checked);
        PyErr_SetString(PyExc_TypeError, "check must return (body, key)");
        return -1;
    }
    key = PyTuple_GET_ITEM(checked, 1);
    if (key == Py_None) {
        Py_DECREF(checked);
        return 0;
    }
    if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) != 2
        || !PyBytes_Check(PyTuple_GET_ITEM(key, 0)) || !PyLong_Check(PyTuple_GET_ITEM(key, 1))) {
        Py_DECREF(checked);
        PyErr_SetString(PyExc_TypeError, "check must give a (bytes, int) key");
        return -1;
    }
    *at = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(key, 1));
    if (*at == (unsigned long long)-1 && PyErr_Occurred()) {
        Py_DECREF(checked);
        return -1;
    }
    *byObject = PyTuple_GET_ITEM(key, 0);
    Py_INCREF(*byObject);
    Py_DECREF(checked);
    *by = (const unsigned char *)PyBytes_AS_STRING(*byObject);
    *bySize = PyBytes_GET_SIZE(*byObject);
    return 1;
}


PyDoc_STRVAR(keyedSpansDoc,
"keyedSpans(data, check) -> (count, spans, longest, rejected) or None\n\n"
"gossip.store.logfile.keyedSpans, each line checked in place, in the usual\n"
"keyed shape here and by check(line) otherwise; NotImplemented if the\n"
"lines have more origins than this follows at once.");

static PyObject *
keyedSpans(PyObject *module, PyObject *args)
{
    const unsigned char *data;
    Py_ssize_t size;
    PyObject *check;
    RunOrigin origins[RUN_ORIGINS];
    Py_ssize_t originCount = 0;
    Py_ssize_t lines = 0;
    Py_ssize_t longest = 0;
    Py_ssize_t start = 0;
    PyObject *rejected;
    PyObject *result = NULL;
    PyObject *found;
    Py_ssize_t i;

    if (!PyArg_ParseTuple(args, "y#O:keyedSpans", &data, &size, &check)) {
        return NULL;
    }
    if (!checkConfigured()) {
        return NULL;
    }
    rejected = PyList_New(0);
    if (rejected == NULL) {
        return NULL;
    }
    while (start < size) {
        const unsigned char *lf = memchr(data + start, '\n', size - start);
        Py_ssize_t end = lf == NULL ? size : lf - data + 1;
        const unsigned char *by;
        Py_ssize_t bySize;
        PyObject *byObject;
        unsigned long long at;
        int intact = 0;
        int follows;

        if (lf != NULL) {
            intact = checkKeyedOne(data + start, end - start, check, &by, &bySize, &byObject, &at);
            if (intact < 0) {
                goto error;
            }
        }
        if (!intact) {
            /* Damaged, cut short, or no add with a by and at. */
            if (reject(rejected, start, end) < 0) {
                goto error;
            }
            start = end;
            continue;
        }
        follows = follow(origins, &originCount, by, bySize, byObject, at);
        Py_XDECREF(byObject);
        if (follows < 0) {
            goto error;
        }
        if (follows == 0) {
            Py_INCREF(Py_None);
            result = Py_None;
            goto done;
        }
        if (follows == 2) {
            Py_INCREF(Py_NotImplemented);
            result = Py_NotImplemented;
            goto done;
        }
        lines++;
        if (end - start - 1 > longest) {
            longest = end - start - 1;
        }
        start = end;
    }
    found = PyDict_New();
    if (found == NULL) {
        goto error;
    }
    for (i = 0; i < originCount; i++) {
        PyObject *span = Py_BuildValue("[KK]", origins[i].start, origins[i].next);
        int stored;
        if (span == NULL) {
            Py_DECREF(found);
            goto error;
        }
        stored = PyDict_SetItem(found, origins[i].by, span);
        Py_DECREF(span);
        if (stored < 0) {
            Py_DECREF(found);
            goto error;
        }
    }
    result = Py_BuildValue("(nNnO)", lines, found, longest, rejected);
    goto done;

error:
    result = NULL;

done:
    Py_DECREF(rejected);
    for (i = 0; i < originCount; i++) {
        Py_DECREF(origins[i].by);
    }
    return result;
}


PyDoc_STRVAR(keyedPlacesDoc,
"keyedPlaces(data, start, check) -> (keys, offsets, lengths)\n\n"
"gossip.store.logfile.keyedPlaces, each line checked in place as keyedSpans\n"
"checks it.");

static PyObject *
keyedPlaces(PyObject *module, PyObject *args)
{
    const unsigned char *data;
    Py_ssize_t size;
    Py_ssize_t start;
    PyObject *check;
    PyObject *keys = NULL;
    PyObject *offsets = NULL;
    PyObject *lengths = NULL;
    Py_ssize_t position = 0;

    if (!PyArg_ParseTuple(args, "y#nO:keyedPlaces", &data, &size, &start, &check)) {
        return NULL;
    }
    if (!checkConfigured()) {
        return NULL;
    }
    keys = PyList_New(0);
    offsets = PyList_New(0);
    lengths = PyList_New(0);
    if (keys == NULL || offsets == NULL || lengths == NULL) {
        goto error;
    }
    while (position < size) {
        const unsigned char *lf = memchr(data + position, '\n', size - position);
        Py_ssize_t end;
        const unsigned char *by;
        Py_ssize_t bySize;
        PyObject *byObject;
        unsigned long long at;
        PyObject *item;
        int intact;

        if (lf == NULL) {
            /* A last line cut short: no add. */
            break;
        }
        end = lf - data + 1;
        intact = checkKeyedOne(data + position, end - position, check, &by, &bySize, &byObject, &at);
        if (intact < 0) {
            goto error;
        }
        if (intact) {
            if (byObject == NULL) {
                byObject = PyBytes_FromStringAndSize((const char *)by, bySize);
                if (byObject == NULL) {
                    goto error;
                }
            }
            item = Py_BuildValue("(NK)", byObject, at);
            if (item == NULL || PyList_Append(keys, item) < 0) {
                Py_XDECREF(item);
                goto error;
            }
            Py_DECREF(item);
            item = PyLong_FromSsize_t(start + position);
            if (item == NULL || PyList_Append(offsets, item) < 0) {
                Py_XDECREF(item);
                goto error;
            }
            Py_DECREF(item);
            item = PyLong_FromSsize_t(end - position);
            if (item == NULL || PyList_Append(lengths, item) < 0) {
                Py_XDECREF(item);
                goto error;
            }
            Py_DECREF(item);
        }
        position = end;
    }
    return Py_BuildValue("(NNN)", keys, offsets, lengths);

error:
    Py_XDECREF(keys);
    Py_XDECREF(offsets);
    Py_XDECREF(lengths);
    return NULL;
}


PyDoc_STRVAR(configureDoc,
"configure(corruptLine, sha256, hardware=True) -> bool\n\n"
"Give this module the exception it raises and the hash function it checks\n"
"with where the CPU cannot hash; with hardware false, it calls that function\n"
"everywhere.  Return whether the CPU hashes.");

static PyObject *
configure(PyObject *module, PyObject *args)
{
    PyObject *exception;
    PyObject *hash;
    int hardware = 1;

    if (!PyArg_ParseTuple(args, "OO|p:configure", &exception, &hash, &hardware)) {
        return NULL;
    }
    if (!PyExceptionClass_Check(exception) || !PyCallable_Check(hash)) {
        PyErr_SetString(PyExc_TypeError, "configure(exception class, hash function)");
        return NULL;
    }
    Py_INCREF(exception);
    Py_XSETREF(corruptLine, exception);
    Py_INCREF(hash);
    Py_XSETREF(sha256, hash);
    hardwareHash = hardware && hasHardwareHash();
    return PyBool_FromLong(hardwareHash);
}


static PyMethodDef methods[] = {
    {"checkRecords", checkRecords, METH_O, checkRecordsDoc},
    {"checkKeyed", checkKeyed, METH_VARARGS, checkKeyedDoc},
    {"decodeBody", decodeBody, METH_O, decodeBodyDoc},
    {"spans", spans, METH_O, spansDoc},
    {"keyedSpans", keyedSpans, METH_VARARGS, keyedSpansDoc},
    {"keyedPlaces", keyedPlaces, METH_VARARGS, keyedPlacesDoc},
    {"configure", configure, METH_VARARGS, configureDoc},
    {NULL, NULL, 0, NULL},
};


static struct PyModuleDef moduleDef = {
    PyModuleDef_HEAD_INIT,
    "gossip.store._speedups",
    "The log format's hot loops in C; see gossip.store.format.",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};


PyMODINIT_FUNC
PyInit__speedups(void)
{
    digestName = PyUnicode_InternFromString("digest");
    if (digestName == NULL) {
        return NULL;
    }
    one = PyLong_FromLong(1);
    if (one == NULL) {
        return NULL;
    }
    return PyModule_Create(&moduleDef);
}
