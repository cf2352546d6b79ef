/* C threads that enter Python over and over - FOR TESTS ONLY (tests/loader_stress.py).
 *
 * Each PyGILState_Ensure() of a thread without a Python thread state creates one, taking the
 * runtime's HEAD_LOCK without holding the GIL, as a C++ library's thread does when it calls back
 * into Python. A fork() at that instant leaves HEAD_LOCK locked in the child, which then hangs
 * inside os.fork() itself on Python < 3.12 (CPython gh-112275). */
#include <Python.h>
#include <pthread.h>

static void *enter_python(void *unused) {
    (void)unused;
    for (;;) {
        PyGILState_STATE state = PyGILState_Ensure();
        PyGILState_Release(state);
    }
    return NULL;
}

int start_threads(int count) {
    for (int i = 0; i < count; i++) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, enter_python, NULL) != 0)
            return -1;
        pthread_detach(thread);
    }
    return 0;
}
