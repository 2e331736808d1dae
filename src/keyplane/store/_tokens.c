/* keyplane.store._tokens: the tokens of one replay-ledger bucket, and the owner's record in one call.
 *
 * Why C (store/replay_ledger.py has the protocol; this is only its inner step): a replay-protected
 * Bitget POST must cost no more than a quarter of a GET more (issue 8), and in Python the record's
 * parts - a set of ~1M int objects (a cache miss each, ~70 bytes a token), a threading.Lock, a struct
 * pack into the mapping - cost twice that budget. Here a bucket's tokens are 8 bytes each in an
 * open-addressing table, and `record` checks, inserts and stores the 16-byte record into the owner's
 * mapping in one call that never releases the GIL: atomic with respect to every other Python thread, so
 * the caller needs no lock. Nothing here is shared between processes: the file protocol (who owns the
 * ledger, the hand-over) stays in Python, with system calls for every cross-process step.
 *
 * A free-threaded Python has no GIL to make a call atomic: replay_ledger.py does not use this module
 * there (it falls back to its pure-Python table, which locks).
 *
 * The table is keyed by a 64-bit mix of the token with a per-process random seed: tokens are signature
 * bytes a key holder can grind, and an unkeyed hash would let one choose tokens that share a probe run.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define ABI 3
#define MIN_CAPACITY 1024

typedef struct {
    PyObject_HEAD
    uint64_t *slots; /* 0: empty (token 0 is held by has_zero) */
    Py_ssize_t mask; /* capacity - 1, capacity a power of two */
    Py_ssize_t count;
    int has_zero;
    int attached;
    long long low, high; /* the expiries of this bucket: [low, high) */
    Py_buffer view; /* the owner's writable mapping while attached */
    Py_ssize_t at;  /* where the next record goes in it */
} Tokens;

static uint64_t seed;

static inline uint64_t mix(uint64_t x) {
    /* splitmix64's finalizer over the seeded token */
    x ^= seed;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static Py_ssize_t find(const Tokens *self, uint64_t token) {
    /* the slot holding token, or the empty slot where it would go */
    Py_ssize_t i = (Py_ssize_t)(mix(token) & (uint64_t)self->mask);
    while (self->slots[i] != 0 && self->slots[i] != token) {
        i = (i + 1) & self->mask;
    }
    return i;
}

static int grow(Tokens *self) {
    Py_ssize_t capacity = (self->mask + 1) * 2;
    uint64_t *old = self->slots;
    Py_ssize_t old_capacity = self->mask + 1;
    uint64_t *slots = PyMem_Calloc((size_t)capacity, sizeof(uint64_t));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->slots = slots;
    self->mask = capacity - 1;
    for (Py_ssize_t i = 0; i < old_capacity; i++) {
        if (old[i] != 0) {
            self->slots[find(self, old[i])] = old[i];
        }
    }
    PyMem_Free(old);
    return 0;
}

/* 1: added, 0: already there, -1: error (memory) */
static int add(Tokens *self, uint64_t token) {
    if (token == 0) {
        if (self->has_zero) {
            return 0;
        }
        self->has_zero = 1;
        self->count++;
        return 1;
    }
    Py_ssize_t i = find(self, token);
    if (self->slots[i] == token) {
        return 0;
    }
    if ((self->count + 1) * 2 > self->mask + 1) { /* at most half full: short probe runs */
        if (grow(self) < 0) {
            return -1;
        }
        i = find(self, token);
    }
    self->slots[i] = token;
    self->count++;
    return 1;
}

static int contains(const Tokens *self, uint64_t token) {
    if (token == 0) {
        return self->has_zero;
    }
    return self->slots[find(self, token)] == token;
}

static int as_token(PyObject *value, uint64_t *token) {
    /* a signed 64-bit token (as the store's BIGINT and the file's i64 hold it) */
    long long signed_token = PyLong_AsLongLong(value);
    if (signed_token == -1 && PyErr_Occurred()) {
        return -1;
    }
    *token = (uint64_t)signed_token;
    return 0;
}

static PyObject *Tokens_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    long long low, high;
    if (!PyArg_ParseTuple(args, "LL:Tokens", &low, &high)) {
        return NULL;
    }
    Tokens *self = (Tokens *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->low = low;
    self->high = high;
    self->slots = PyMem_Calloc(MIN_CAPACITY, sizeof(uint64_t));
    if (self->slots == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->mask = MIN_CAPACITY - 1;
    return (PyObject *)self;
}

static void Tokens_dealloc(Tokens *self) {
    if (self->attached) {
        PyBuffer_Release(&self->view);
        self->attached = 0;
    }
    PyMem_Free(self->slots);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Tokens_add(Tokens *self, PyObject *value) {
    uint64_t token;
    if (as_token(value, &token) < 0) {
        return NULL;
    }
    int added = add(self, token);
    if (added < 0) {
        return NULL;
    }
    return PyBool_FromLong(added);
}

static int Tokens_contains(Tokens *self, PyObject *value) {
    uint64_t token;
    if (as_token(value, &token) < 0) {
        return -1;
    }
    return contains(self, token);
}

static Py_ssize_t Tokens_len(Tokens *self) {
    return self->count;
}

/* The owner's record: 1 accepted (inserted and stored into the mapping), 0 a repeat (nothing changed),
 * 2 not decided here (another bucket's expiry, not attached, or the mapping is full: nothing changed
 * either), -1 an error (memory) */
static int record(Tokens *self, uint64_t token, long long expires_at) {
    if (expires_at < self->low || expires_at >= self->high) {
        return 2;
    }
    if (contains(self, token)) {
        return 0;
    }
    if (!self->attached || self->at + 16 > self->view.len) {
        return 2;
    }
    if (add(self, token) < 0) {
        return -1;
    }
    /* little-endian i64 token, i64 expires_at: the file's record (replay_ledger.RECORD) */
    unsigned char bytes[16];
    for (int b = 0; b < 8; b++) {
        bytes[b] = (unsigned char)(token >> (8 * b));
        bytes[8 + b] = (unsigned char)((uint64_t)expires_at >> (8 * b));
    }
    memcpy((char *)self->view.buf + self->at, bytes, 16);
    self->at += 16;
    return 1;
}

static PyObject *answer(int decided) {
    switch (decided) {
    case 1:
        Py_RETURN_TRUE;
    case 0:
        Py_RETURN_FALSE;
    case 2:
        Py_RETURN_NONE;
    default:
        return NULL;
    }
}

/* record(token, expires_at) -> True: accepted; False: a repeat; None: not decided here */
static PyObject *Tokens_record(Tokens *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "record(token, expires_at)");
        return NULL;
    }
    uint64_t token;
    long long expires_at = PyLong_AsLongLong(args[1]);
    if ((expires_at == -1 && PyErr_Occurred()) || as_token(args[0], &token) < 0) {
        return NULL;
    }
    return answer(record(self, token, expires_at));
}

static PyObject *Tokens_attach(Tokens *self, PyObject *args) {
    PyObject *buffer;
    Py_ssize_t at;
    if (!PyArg_ParseTuple(args, "On:attach", &buffer, &at)) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE | PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (at < 0 || at > view.len || at % 16 != 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "attach: the offset is not a record boundary inside the buffer");
        return NULL;
    }
    if (self->attached) {
        PyBuffer_Release(&self->view);
    }
    self->view = view;
    self->attached = 1;
    self->at = at;
    Py_RETURN_NONE;
}

static PyObject *Tokens_detach(Tokens *self, PyObject *Py_UNUSED(ignored)) {
    /* releases the mapping (so it can be closed); returns where the next record would have gone */
    Py_ssize_t at = self->at;
    if (self->attached) {
        PyBuffer_Release(&self->view);
        self->attached = 0;
    }
    self->at = 0;
    return PyLong_FromSsize_t(at);
}

static PyMethodDef Tokens_methods[] = {
    {"add", (PyCFunction)Tokens_add, METH_O, "add(token) -> True if it was not there"},
    {"record", (PyCFunction)(void (*)(void))Tokens_record, METH_FASTCALL,
     "record(token, expires_at) -> True accepted and stored, False a repeat, None not decided here"},
    {"attach", (PyCFunction)Tokens_attach, METH_VARARGS, "attach(writable buffer, offset): the owner's mapping"},
    {"detach", (PyCFunction)Tokens_detach, METH_NOARGS, "detach() -> the offset of the next record"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Tokens_as_sequence = {
    .sq_length = (lenfunc)Tokens_len,
    .sq_contains = (objobjproc)Tokens_contains,
};

static PyTypeObject TokensType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "keyplane.store._tokens.Tokens",
    .tp_doc = "Tokens(low, high): the tokens of the replay-ledger bucket of expiries [low, high).",
    .tp_basicsize = sizeof(Tokens),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Tokens_new,
    .tp_dealloc = (destructor)Tokens_dealloc,
    .tp_methods = Tokens_methods,
    .tp_as_sequence = &Tokens_as_sequence,
};

/* Front(fallback): the ledger's ``record(key_id, token, expires_at, now_ms)`` as one C call. It decides
 * in its ``hot`` table (the bucket of the last record) when it can, and otherwise calls ``fallback`` with
 * the same arguments (the ledger's locked path, in Python). Reading ``hot`` and recording there happen in
 * one call under the GIL, so a table swapped or detached by another thread is never half used. */
typedef struct {
    PyObject_HEAD
    PyObject *hot; /* a Tokens, or NULL */
    PyObject *fallback;
} Front;

static PyTypeObject FrontType;

static PyObject *Front_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *fallback;
    if (!PyArg_ParseTuple(args, "O:Front", &fallback)) {
        return NULL;
    }
    if (!PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "Front(fallback): fallback must be callable");
        return NULL;
    }
    Front *self = (Front *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    Py_INCREF(fallback);
    self->fallback = fallback;
    return (PyObject *)self;
}

static int Front_traverse(Front *self, visitproc visit, void *arg) {
    Py_VISIT(self->hot);
    Py_VISIT(self->fallback);
    return 0;
}

static int Front_clear(Front *self) {
    Py_CLEAR(self->hot);
    Py_CLEAR(self->fallback);
    return 0;
}

static void Front_dealloc(Front *self) {
    PyObject_GC_UnTrack(self);
    Front_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Front_record(Front *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "record(key_id, token, expires_at, now_ms)");
        return NULL;
    }
    long long expires_at = PyLong_AsLongLong(args[2]);
    if (expires_at == -1 && PyErr_Occurred()) {
        return NULL;
    }
    long long now_ms = PyLong_AsLongLong(args[3]);
    if (now_ms == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (expires_at < now_ms) { /* past its window: refused (the verifier's timestamp check comes first) */
        Py_RETURN_FALSE;
    }
    if (self->hot != NULL) {
        uint64_t token;
        if (as_token(args[1], &token) < 0) {
            return NULL;
        }
        int decided = record((Tokens *)self->hot, token, expires_at);
        if (decided != 2) {
            return answer(decided);
        }
    }
    if (self->fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Front: no fallback");
        return NULL;
    }
    return PyObject_Vectorcall(self->fallback, args, (size_t)nargs, NULL);
}

static PyObject *Front_get_hot(Front *self, void *closure) {
    if (self->hot == NULL) {
        Py_RETURN_NONE;
    }
    Py_INCREF(self->hot);
    return self->hot;
}

static int Front_set_hot(Front *self, PyObject *value, void *closure) {
    if (value != NULL && value != Py_None && !PyObject_TypeCheck(value, &TokensType)) {
        PyErr_SetString(PyExc_TypeError, "Front.hot: a Tokens or None");
        return -1;
    }
    PyObject *old = self->hot;
    if (value == NULL || value == Py_None) {
        self->hot = NULL;
    } else {
        Py_INCREF(value);
        self->hot = value;
    }
    Py_XDECREF(old);
    return 0;
}

static PyMethodDef Front_methods[] = {
    {"record", (PyCFunction)(void (*)(void))Front_record, METH_FASTCALL,
     "record(key_id, token, expires_at, now_ms) -> bool: in the hot table, or through the fallback"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Front_getset[] = {
    {"hot", (getter)Front_get_hot, (setter)Front_set_hot, "the table records go to first (or None)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject FrontType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "keyplane.store._tokens.Front",
    .tp_doc = "Front(fallback): a replay ledger's record as one C call (see store/replay_ledger.py).",
    .tp_basicsize = sizeof(Front),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Front_new,
    .tp_dealloc = (destructor)Front_dealloc,
    .tp_traverse = (traverseproc)Front_traverse,
    .tp_clear = (inquiry)Front_clear,
    .tp_methods = Front_methods,
    .tp_getset = Front_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "keyplane.store._tokens", "A replay-ledger bucket's tokens (C).", -1, NULL,
};

PyMODINIT_FUNC PyInit__tokens(void) {
    PyObject *os = PyImport_ImportModule("os");
    if (os == NULL) {
        return NULL;
    }
    PyObject *random = PyObject_CallMethod(os, "urandom", "i", 8);
    Py_DECREF(os);
    if (random == NULL) {
        return NULL;
    }
    memcpy(&seed, PyBytes_AS_STRING(random), 8);
    Py_DECREF(random);
    if (PyType_Ready(&TokensType) < 0 || PyType_Ready(&FrontType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&TokensType);
    if (PyModule_AddObject(m, "Tokens", (PyObject *)&TokensType) < 0) {
        Py_DECREF(&TokensType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&FrontType);
    if (PyModule_AddObject(m, "Front", (PyObject *)&FrontType) < 0 || PyModule_AddIntConstant(m, "ABI", ABI) < 0) {
        Py_DECREF(&FrontType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
