/* The resampler's polyphase FIR in C: what `gateway.audio.Resampler` runs for every 20 ms frame of every call.
 *
 * It computes exactly what the numpy formulation in `gateway/audio.py` computes (`_numpy_blocks`), and gives
 * the same bytes: the taps are integers scaled by 2**-24 and the samples int16, so every product and every
 * partial sum is an exact float64 and the order of the sums cannot change the result. numpy spends most of a
 * 20 ms frame's resampling on the overhead of its calls and on copying the overlapping windows for BLAS; here
 * the windows are read in place, a phase of the filter at a time, so that the compiler can vectorise the loop
 * over the output samples (each one's sum in the same order, no reassociation needed).
 *
 * polyphase(samples, taps, up, down) -> bytes
 *   samples: PCM16LE, the history (width - down samples) then whole blocks of `down` new samples;
 *   taps:    float64, C-contiguous (up, width): phase r's taps, oldest input first, already scaled;
 *   returns: PCM16LE, `up` samples per block, interleaved, rounded half to even and clipped to int16.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define STACK_DOUBLES 4096 /* a 40 ms chunk at 24 kHz with its history fits: no allocation per frame */

#define TILE 32 /* outputs whose sums stay in registers while a phase's taps go by */

/* The output sample of an exact sum: rounded half to even (np.rint's rule), whatever the FP rounding mode a
 * library may have left set, then clipped to int16. */
static inline void store(uint8_t *o, double sum) {
    /* Clipping first gives what rounding first would: the ends are integers. */
    double v = sum > 32767.0 ? 32767.0 : sum < -32768.0 ? -32768.0 : sum;
    double low = floor(v);
    double fraction = v - low; /* exact: v is a multiple of 2**-24 well below 2**53 */
    int32_t s = v == v ? (int32_t)low : 0;
    if (fraction > 0.5 || (fraction == 0.5 && (s & 1))) s++;
    o[0] = (uint8_t)(s & 0xff);
    o[1] = (uint8_t)((s >> 8) & 0xff);
}

/* One phase of the filter over every block: out[q * step] = sum_k x(q * down + k) * phase[k]. Built for the
 * machine's wider vectors where it has them (glibc picks the clone at load; musl has no ifunc), plain
 * otherwise. */
#if defined(__GLIBC__) && defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target_clones)
__attribute__((target_clones("avx2", "default")))
#endif
#endif
static void fir_phase(const double *x, Py_ssize_t stride, const double *phase, Py_ssize_t width, long down,
                      Py_ssize_t blocks, uint8_t *out, Py_ssize_t step) {
    Py_ssize_t q = 0;
    for (; q + TILE <= blocks; q += TILE) {
        double acc[TILE] = {0};
        /* tap k = s * down + r meets sample (q + s) * down + r: row r of x, s further on */
        for (Py_ssize_t k = 0, s = 0; k < width; s++) {
            for (long r = 0; r < down && k < width; r++, k++) {
                const double tap = phase[k];
                const double *xs = x + r * stride + s + q;
                for (int j = 0; j < TILE; j++) acc[j] += xs[j] * tap;
            }
        }
        for (int j = 0; j < TILE; j++) store(out + (q + j) * step, acc[j]);
    }
    for (; q < blocks; q++) {
        double sum = 0.0;
        for (Py_ssize_t k = 0, s = 0; k < width; s++) {
            for (long r = 0; r < down && k < width; r++, k++) sum += x[r * stride + s + q] * phase[k];
        }
        store(out + q * step, sum);
    }
}

static PyObject *polyphase(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "polyphase(samples, taps, up, down) takes 4 arguments");
        return NULL;
    }
    long up = PyLong_AsLong(args[2]);
    if (up == -1 && PyErr_Occurred()) return NULL;
    long down = PyLong_AsLong(args[3]);
    if (down == -1 && PyErr_Occurred()) return NULL;
    if (up < 1 || down < 1 || up > 64 || down > 64) {
        PyErr_SetString(PyExc_ValueError, "up and down must be between 1 and 64");
        return NULL;
    }
    Py_buffer in, taps;
    if (PyObject_GetBuffer(args[0], &in, PyBUF_SIMPLE) < 0) return NULL;
    if (PyObject_GetBuffer(args[1], &taps, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&in);
        return NULL;
    }
    const char *format = taps.format != NULL ? taps.format : "";
    if (*format == '@' || *format == '=' || (*format == '<' && PY_LITTLE_ENDIAN)) format++;
    if (taps.itemsize != (Py_ssize_t)sizeof(double) || strcmp(format, "d") != 0 || taps.ndim != 2 ||
        taps.shape == NULL || taps.shape[0] != up) {
        PyErr_SetString(PyExc_TypeError, "polyphase: taps must be float64, shaped (up, width)");
        PyBuffer_Release(&in);
        PyBuffer_Release(&taps);
        return NULL;
    }
    PyObject *result = NULL;
    double stack_x[STACK_DOUBLES];
    double *x = stack_x;
    Py_ssize_t n = in.len / 2;
    Py_ssize_t width = taps.len / (Py_ssize_t)sizeof(double) / up;
    if (in.len % 2 || taps.len != (Py_ssize_t)sizeof(double) * up * width || width < down || n < width ||
        (n - width) % down) {
        PyErr_SetString(PyExc_ValueError, "polyphase: samples must be the history and whole blocks, taps (up, width)");
        goto done;
    }
    Py_ssize_t blocks = (n - width) / down + 1;
    /* x holds the samples split by their position in a block: x[r * stride + q] = sample q * down + r, so
     * that the samples a tap meets in consecutive blocks are contiguous. */
    Py_ssize_t stride = (n + down - 1) / down;
    if (stride * down > STACK_DOUBLES) {
        x = PyMem_New(double, (size_t)stride * (size_t)down);
        if (x == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    const uint8_t *bytes = in.buf;
    for (long r = 0; r < down; r++) {
        double *row = x + r * stride;
        for (Py_ssize_t i = r, q = 0; i < n; i += down, q++) {
            row[q] = (double)(int16_t)(uint16_t)(bytes[2 * i] | (bytes[2 * i + 1] << 8));
        }
    }
    result = PyBytes_FromStringAndSize(NULL, 2 * blocks * up);
    if (result == NULL) goto done;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
    const double *h = taps.buf;
    for (long r = 0; r < up; r++) fir_phase(x, stride, h + r * width, width, down, blocks, out + 2 * r, 2 * up);
done:
    if (x != stack_x) PyMem_Free(x);
    PyBuffer_Release(&in);
    PyBuffer_Release(&taps);
    return result;
}

static PyMethodDef methods[] = {
    {"polyphase", (PyCFunction)(void (*)(void))polyphase, METH_FASTCALL,
     "polyphase(samples, taps, up, down) -> bytes: the resampler's blocks (see gateway/_fir.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "gateway._fir", NULL, 0, methods};

PyMODINIT_FUNC PyInit__fir(void) { return PyModule_Create(&module); }
