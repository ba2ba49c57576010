/* att_jm._start: start a script as another user with vfork, from the service's own process.

   Python's subprocess switches the user only after a fork (it rules vfork out whenever it
   changes the user: glibc's setuid and setgroups signal every thread of the process, which a
   vfork child shares with its parent), and a fork copies the caller's page tables. Here the
   child makes the kernel's calls itself (setgroups, setresgid, setresuid: each changes only
   the calling process), so the service's process starts a script as the script user with a
   vfork, as it would start one as itself, and stays the script's parent (it sees the exit
   status itself). What the child does, in order, is what Python 3.11's `_posixsubprocess`
   does for Popen(argv, stdin=DEVNULL, stdout=..., stderr=..., cwd=..., env=...,
   start_new_session=True, close_fds=True, umask=..., user=..., group=..., extra_groups=[]):
   every signal handler reset to the default and the caller's signal mask restored; the
   standard streams; the working directory; the umask; SIGPIPE and SIGXFSZ to the default;
   a new session; no supplementary group, the group, the user; every other descriptor closed
   at the exec; the exec. A failure before the exec is reported to the parent over a pipe
   (the errno and the step), and raised there as Popen raises it.

   start(path, argv, env, cwd, stdin, stdout, stderr, uid, gid, umask) -> pid
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

enum step { STEP_EXEC = 0, STEP_CHDIR = 1, STEP_OTHER = 2 };

struct report {
    int error;
    int step;
};

/* Only async-signal-safe calls and raw system calls: the child shares the parent's memory
   until its exec. */
static void __attribute__((noreturn))
child(const char *path, char *const argv[], char *const envp[], const char *cwd, int in,
      int out, int err, uid_t uid, gid_t gid, mode_t mask, const sigset_t *old_mask,
      int report_fd)
{
    struct report report = {0, STEP_OTHER};
    struct sigaction dfl;
    int fds[3];
    int i;

    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (i = 1; i < NSIG; i++) {
        struct sigaction current;
        if (i == SIGKILL || i == SIGSTOP)
            continue;
        if (sigaction(i, NULL, &current) == 0 && current.sa_handler != SIG_IGN
                && current.sa_handler != SIG_DFL)
            sigaction(i, &dfl, NULL);
    }
    sigprocmask(SIG_SETMASK, old_mask, NULL);

    /* The standard streams: a source already below 3 is moved up first, so that no dup2
       overwrites another's source. */
    fds[0] = in;
    fds[1] = out;
    fds[2] = err;
    for (i = 0; i < 3; i++) {
        if (fds[i] < 3 && fds[i] != i) {
            int moved = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
            if (moved < 0)
                goto failed;
            fds[i] = moved;
        }
    }
    for (i = 0; i < 3; i++) {
        if (fds[i] == i) {
            int flags = fcntl(i, F_GETFD);
            if (flags < 0 || fcntl(i, F_SETFD, flags & ~FD_CLOEXEC) < 0)
                goto failed;
        } else if (dup2(fds[i], i) < 0) {
            goto failed;
        }
    }

    if (cwd != NULL && chdir(cwd) < 0) {
        report.step = STEP_CHDIR;
        goto failed;
    }
    umask(mask);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGXFSZ, SIG_DFL);
    if (setsid() < 0)
        goto failed;
    if (syscall(SYS_setgroups, 0, NULL) < 0)
        goto failed;
    if (syscall(SYS_setresgid, gid, gid, gid) < 0)
        goto failed;
    if (syscall(SYS_setresuid, uid, uid, uid) < 0)
        goto failed;
    /* Everything from 3 up closes at the exec (the report pipe too: its end tells the
       parent the exec happened). */
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
        struct rlimit limit;  /* before Linux 5.11: one descriptor at a time */
        int fd, top = 1024;
        if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY)
            top = (int)limit.rlim_cur;
        for (fd = 3; fd < top; fd++)
            fcntl(fd, F_SETFD, FD_CLOEXEC);  /* EBADF for those not open */
    }
    report.step = STEP_EXEC;
    execve(path, argv, envp);
failed:
    report.error = errno;
    {
        ssize_t ignored = write(report_fd, &report, sizeof report);
        (void)ignored;
    }
    _exit(255);
}

/* A NULL-terminated array of the bytes objects of `list` (pointers into them), or NULL with
   an exception set. */
static char **
byte_strings(PyObject *list, const char *what)
{
    Py_ssize_t n, i;
    char **out;

    if (!PyList_Check(list)) {
        PyErr_Format(PyExc_TypeError, "%s must be a list of bytes", what);
        return NULL;
    }
    n = PyList_GET_SIZE(list);
    out = PyMem_Calloc((size_t)n + 1, sizeof(char *));
    if (out == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        char *data;
        Py_ssize_t size;
        if (!PyBytes_Check(item)) {
            PyMem_Free(out);
            PyErr_Format(PyExc_TypeError, "%s must be a list of bytes", what);
            return NULL;
        }
        if (PyBytes_AsStringAndSize(item, &data, &size) < 0 || (Py_ssize_t)strlen(data) != size) {
            PyMem_Free(out);
            PyErr_SetString(PyExc_ValueError, "embedded null byte");
            return NULL;
        }
        out[i] = data;
    }
    return out;
}

static PyObject *
start(PyObject *module, PyObject *args)
{
    PyObject *argv_list, *env_list;
    const char *path, *cwd;
    int in, out, err, mask;
    unsigned int uid, gid;
    char **argv = NULL, **envp = NULL;
    int pipe_fds[2];
    sigset_t all, old;
    pid_t pid;
    int saved_errno;
    struct report report;
    ssize_t got;

    (void)module;
    if (!PyArg_ParseTuple(args, "yO!O!yiiiIIi:start", &path, &PyList_Type, &argv_list,
                          &PyList_Type, &env_list, &cwd, &in, &out, &err, &uid, &gid, &mask))
        return NULL;
    argv = byte_strings(argv_list, "argv");
    if (argv == NULL)
        return NULL;
    envp = byte_strings(env_list, "env");
    if (envp == NULL) {
        PyMem_Free(argv);
        return NULL;
    }
    if (pipe2(pipe_fds, O_CLOEXEC) < 0) {
        PyMem_Free(argv);
        PyMem_Free(envp);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    /* No signal handler may run in the child while it shares this process's memory. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pid = vfork();
    if (pid == 0)
        child(path, argv, envp, cwd, in, out, err, (uid_t)uid, (gid_t)gid, (mode_t)mask, &old,
              pipe_fds[1]);
    saved_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(pipe_fds[1]);
    PyMem_Free(argv);
    PyMem_Free(envp);
    if (pid < 0) {
        close(pipe_fds[0]);
        errno = saved_errno;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    do {
        got = read(pipe_fds[0], &report, sizeof report);
    } while (got < 0 && errno == EINTR);
    close(pipe_fds[0]);
    if (got == 0)
        return PyLong_FromLong((long)pid);
    /* It failed before its exec, and exited: reap it. */
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    if (got != (ssize_t)sizeof report) {
        PyErr_SetString(PyExc_OSError, "the child's report of its failure was cut short");
        return NULL;
    }
    {
        PyObject *filename = PyUnicode_DecodeFSDefault(report.step == STEP_CHDIR ? cwd : path);
        PyObject *error;
        if (filename == NULL)
            return NULL;
        error = PyObject_CallFunction(PyExc_OSError, "isO", report.error,
                                      strerror(report.error), filename);
        Py_DECREF(filename);
        if (error == NULL)
            return NULL;
        PyErr_SetObject((PyObject *)Py_TYPE(error), error);
        Py_DECREF(error);
    }
    return NULL;
}

static PyMethodDef methods[] = {
    {"start", start, METH_VARARGS,
     "start(path, argv, env, cwd, stdin, stdout, stderr, uid, gid, umask) -> pid"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef definition = {
    PyModuleDef_HEAD_INIT, "att_jm._start",
    "Start a script as another user with vfork (see the source's opening comment).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__start(void)
{
    return PyModule_Create(&definition);
}
