/* The `asyncplug` executable: hand the command to this install's warm server, else
 * exec the Python client, which runs it in its own process.
 *
 * Why C: gpbackup starts one plugin process per table and segment, and the start of a
 * Python interpreter alone costs more CPU than the Go plugin's whole restore_data of a
 * small table (bench/README.md, "Per table"). So this small program does what
 * asyncplug/client.py's main() does when a server serves, and nothing else: it finds
 * the server's socket, sends the request (the same wire format) with fds 0-2
 * (SCM_RIGHTS), forwards SIGTERM, SIGINT and SIGHUP to the worker the server forked,
 * and exits with the worker's exit code. Whenever the server is absent or cannot
 * serve, it execs the Python client (`python3 -I -c` in this executable's directory
 * when that is a virtualenv's or conda environment's bin/, else the interpreter it
 * was built for), which tries the server again and, finding none, runs the command
 * in-process, exactly as without a server. The Python client gets this executable's
 * install prefix in ASYNCPLUG_INSTALL: a server it starts then serves this executable
 * too, wherever pip put it (/usr/local/bin for a system Python's /usr, ~/.local/bin,
 * a copy elsewhere).
 *
 * setup.py compiles it with ASYNCPLUG_VERSION (asyncplug.__version__) and
 * ASYNCPLUG_PYTHON (the interpreter of the install) defined. Plain C99 and POSIX. */

#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef ASYNCPLUG_VERSION
#error "ASYNCPLUG_VERSION must be defined (setup.py does)"
#endif
#ifndef ASYNCPLUG_PYTHON
#error "ASYNCPLUG_PYTHON must be defined (setup.py does)"
#endif

#define PROTOCOL "asyncplug-warm-1" /* client.PROTOCOL */
#define INTERRUPTED 9               /* errors.Interrupted.exit_code */
#define READER_GONE (128 + SIGPIPE) /* cli.READER_GONE */

/* cli.COMMANDS[name].on_interrupt, for a signal that comes before the worker is known
 * (tests/integration/test_thin_client.py compares them with cli.COMMANDS). */
static const char *const CONSEQUENCES[][2] = {
    {"backup_file", "nothing was stored"},
    {"restore_file", "no file was written"},
    {"backup_data", "nothing was stored"},
    {"restore_data", "the output is incomplete"},
    {"restore_data_subset", "the output is incomplete"},
    {"delete_backup", "some objects may remain"},
    {"list_directory", "the listing is incomplete"},
    {"delete_directory", "some objects may remain"},
    {"verify", "the check is incomplete"},
};

/* Run with -I, as the warm server runs: the command imports the same modules either way,
 * whatever PYTHONHOME or PYTHONPATH (Greenplum 6's greenplum_path.sh exports both) or
 * the working directory hold. */
static const char PYTHON_CLIENT[] = "import sys\n"
                                    "from asyncplug.client import main\n"
                                    "sys.exit(main())\n";

static const int FORWARDED[] = {SIGTERM, SIGINT, SIGHUP};

static volatile sig_atomic_t worker; /* the pid running the command, once it is known */
static volatile sig_atomic_t caught; /* a signal that reached no worker */

static sigset_t unblocked; /* the mask while waiting: the forwarded signals come then */
static char prefix[PATH_MAX]; /* the install: the parent of this executable's bin/ */
static char bindir[PATH_MAX];

static void forward(int signum)
{
    if (worker)
        kill((pid_t)worker, signum);
    else
        caught = signum;
}

static void say(const char *a, const char *b, const char *c)
{
    char line[512];
    int n = snprintf(line, sizeof line, "asyncplug: %s%s%s\n", a, b, c);
    if (n > 0 && write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1) < 0)
        return; /* stderr gone: the exit status still tells */
}

/* Whether this executable's prefix is an environment of its own, whose bin/python3 is
 * the install's: a virtualenv (PEP 405: pyvenv.cfg at its root) or a conda environment
 * (conda-meta/). */
static int in_environment(void)
{
    char marker[PATH_MAX + 16];
    struct stat st;
    if (!bindir[0] || !prefix[0])
        return 0;
    if (snprintf(marker, sizeof marker, "%s/pyvenv.cfg", prefix) < (int)sizeof marker &&
        stat(marker, &st) == 0 && S_ISREG(st.st_mode))
        return 1;
    return snprintf(marker, sizeof marker, "%s/conda-meta", prefix) < (int)sizeof marker &&
           stat(marker, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The Python client, with the same arguments: runs the command here. */
static void run_python(int argc, char **argv)
{
    char python[PATH_MAX + 16];
    char **args = calloc((size_t)argc + 4, sizeof *args);
    if (args == NULL) {
        say("internal error: ", "out of memory", "");
        exit(1);
    }
    args[1] = "-I";
    args[2] = "-c";
    args[3] = (char *)PYTHON_CLIENT;
    for (int i = 1; i < argc; i++)
        args[i + 3] = argv[i];
    if (prefix[0] && setenv("ASYNCPLUG_INSTALL", prefix, 1) != 0) {
        say("internal error: ", strerror(errno), "");
        exit(1);
    }
    /* A python3 beside this executable is the install's own only in an environment (a
     * system's /usr/local/bin/python3 may be another Python without asyncplug). */
    if (in_environment() &&
        snprintf(python, sizeof python, "%s/python3", bindir) < (int)sizeof python) {
        args[0] = python;
        execv(python, args);
    }
    args[0] = ASYNCPLUG_PYTHON;
    execv(ASYNCPLUG_PYTHON, args);
    say("internal error: cannot run the Python interpreter " ASYNCPLUG_PYTHON ": ",
        strerror(errno), "");
    exit(1);
}

/* Where this executable lives: its bin/ and the install's prefix. */
static int find_install(void)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return -1;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash == NULL || slash == self)
        return -1;
    *slash = '\0';
    strcpy(bindir, self);
    slash = strrchr(self, '/');
    if (slash == NULL)
        return -1;
    if (slash == self)
        slash[1] = '\0'; /* bin/ at the root: the prefix is "/" */
    else
        *slash = '\0';
    strcpy(prefix, self);
    return 0;
}

/* client.socket_path(): RUNTIME_DIR/VERSION-KEY.sock, KEY the FNV-1a (64 bits) of
 * "VERSION\0PREFIX", as client.install_key() computes it. */
static int socket_path(struct sockaddr_un *addr, char *dir, size_t size)
{
    const char *env = getenv("ASYNCPLUG_RUNTIME_DIR");
    if (env && *env)
        snprintf(dir, size, "%s", env);
    else
        snprintf(dir, size, "/tmp/asyncplug-%lu", (unsigned long)getuid());
    uint64_t key = 0xcbf29ce484222325ULL;
    const char version[] = ASYNCPLUG_VERSION;
    for (size_t i = 0; i < sizeof version; i++) /* the version and its NUL */
        key = (key ^ (unsigned char)version[i]) * 0x100000001b3ULL;
    for (const char *p = prefix; *p; p++)
        key = (key ^ (unsigned char)*p) * 0x100000001b3ULL;
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    int n = snprintf(addr->sun_path, sizeof addr->sun_path, "%s/%s-%016llx.sock", dir,
                     ASYNCPLUG_VERSION, (unsigned long long)key);
    return n > 0 && (size_t)n < sizeof addr->sun_path ? 0 : -1;
}

/* client.private_dir(): a real directory of this user that nobody else may enter. */
static int private_dir(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == getuid() &&
           !(st.st_mode & 077);
}

/* The request, as client.encode() builds it: a 4-byte big-endian length, then
 * protocol, version, prefix, cwd, umask (octal), argc, argv, environment, NUL-separated. */
static char *encode(int argc, char **argv, size_t *size)
{
    extern char **environ;
    char cwd[PATH_MAX], mask[16], count[16];
    if (getcwd(cwd, sizeof cwd) == NULL)
        return NULL;
    mode_t old = umask(077);
    umask(old);
    snprintf(mask, sizeof mask, "%o", (unsigned)old);
    snprintf(count, sizeof count, "%d", argc - 1);
    const char *head[] = {PROTOCOL, ASYNCPLUG_VERSION, prefix, cwd, mask, count};
    size_t total = 0, nhead = sizeof head / sizeof *head;
    for (size_t i = 0; i < nhead; i++)
        total += strlen(head[i]) + 1;
    for (int i = 1; i < argc; i++)
        total += strlen(argv[i]) + 1;
    for (char **e = environ; *e; e++)
        total += strlen(*e) + 1;
    char *data = malloc(total + 4), *p = data + 4;
    if (data == NULL)
        return NULL;
    for (size_t i = 0; i < nhead; i++)
        p = stpcpy(p, head[i]) + 1;
    for (int i = 1; i < argc; i++)
        p = stpcpy(p, argv[i]) + 1;
    for (char **e = environ; *e; e++)
        if (strchr(*e, '=')) /* as os.environ: an entry without one is no variable */
            p = stpcpy(p, *e) + 1;
    size_t body = (size_t)(p - data - 4) - 1; /* no NUL after the last part */
    for (int i = 0; i < 4; i++)
        data[i] = (char)(body >> (24 - 8 * i));
    *size = body + 4;
    return data;
}

static int send_request(int sock, const char *data, size_t size)
{
    int fds[3] = {0, 1, 2};
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(sizeof fds)];
    } control;
    struct iovec iov = {(void *)data, size};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.space;
    msg.msg_controllen = sizeof control.space;
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(cmsg), fds, sizeof fds);
    ssize_t sent = sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (sent < 0)
        return -1;
    for (size_t done = (size_t)sent; done < size; done += (size_t)sent)
        if ((sent = send(sock, data + done, size - done, MSG_NOSIGNAL)) < 0)
            return -1;
    return 0;
}

/* The next '\n'-terminated reply into `line`, or 0 at EOF or on an error. A signal
 * before the worker is known ends the wait (returns -1). The forwarded signals are
 * blocked but during pselect, so that none can come between a check and the wait. */
static int read_line(int sock, char *line, size_t size, char *pending, size_t *held)
{
    for (;;) {
        char *end = memchr(pending, '\n', *held);
        if (end) {
            size_t n = (size_t)(end - pending);
            if (n >= size)
                return 0;
            memcpy(line, pending, n);
            line[n] = '\0';
            memmove(pending, end + 1, *held - n - 1);
            *held -= n + 1;
            return 1;
        }
        if (*held >= 64)
            return 0; /* no reply is that long */
        if (caught && !worker)
            return -1;
        fd_set readable;
        FD_ZERO(&readable);
        FD_SET(sock, &readable);
        if (pselect(sock + 1, &readable, NULL, NULL, NULL, &unblocked) < 0) {
            if (errno == EINTR)
                continue;
            return 0;
        }
        ssize_t got = recv(sock, pending + *held, 64, MSG_DONTWAIT);
        if (got > 0)
            *held += (size_t)got;
        else if (got == 0 || (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK))
            return 0;
    }
}

/* forward() from now on (the signals blocked but in read_line), or back to SIG_DFL and
 * the mask this process started with: a signal that reached no worker then ends it, as
 * it would have without the handler. */
static void handle_signals(void (*handler)(int))
{
    struct sigaction action;
    sigset_t forwarded;
    memset(&action, 0, sizeof action);
    action.sa_handler = handler;
    sigfillset(&action.sa_mask);
    sigemptyset(&forwarded);
    for (size_t i = 0; i < sizeof FORWARDED / sizeof *FORWARDED; i++) {
        sigaddset(&forwarded, FORWARDED[i]);
        sigaction(FORWARDED[i], &action, NULL);
    }
    if (handler == SIG_DFL) {
        sigprocmask(SIG_SETMASK, &unblocked, NULL);
        if (caught)
            raise(caught);
    } else {
        sigprocmask(SIG_BLOCK, &forwarded, &unblocked);
    }
}

static void interrupted_early(const char *name, int signum)
{
    const char *signame = signum == SIGTERM ? "SIGTERM" : signum == SIGINT ? "SIGINT" : "SIGHUP";
    const char *consequence = "";
    for (size_t i = 0; i < sizeof CONSEQUENCES / sizeof *CONSEQUENCES; i++)
        if (strcmp(name, CONSEQUENCES[i][0]) == 0)
            consequence = CONSEQUENCES[i][1];
    char what[256];
    snprintf(what, sizeof what, "%s interrupted by %s", name, signame);
    say(what, *consequence ? "; " : "", consequence);
    exit(INTERRUPTED);
}

int main(int argc, char **argv)
{
    char dir[PATH_MAX];
    struct sockaddr_un addr;
    if (find_install() != 0 || argc < 2 || socket_path(&addr, dir, sizeof dir) != 0 ||
        !private_dir(dir))
        run_python(argc, argv);
    for (int fd = 0; fd < 3; fd++)
        if (fcntl(fd, F_GETFD) < 0)
            run_python(argc, argv); /* the server needs all three */
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0 || connect(sock, (struct sockaddr *)&addr, sizeof addr) != 0)
        run_python(argc, argv); /* no server, or a stale socket file */
    handle_signals(forward);
    size_t size = 0;
    char *data = encode(argc, argv, &size);
    char line[64], pending[128];
    size_t held = 0;
    int got = data && send_request(sock, data, size) == 0
                  ? read_line(sock, line, sizeof line, pending, &held)
                  : 0;
    free(data);
    if (got < 0 || (caught && !worker)) {
        close(sock); /* tells a worker that has started to stop */
        interrupted_early(argv[1], caught);
    }
    if (got == 0 || line[0] != 'P') {
        close(sock);
        handle_signals(SIG_DFL);
        run_python(argc, argv); /* the server cannot serve it: run it here */
    }
    worker = (sig_atomic_t)strtol(line + 1, NULL, 10); /* a signal now goes to it */
    got = read_line(sock, line, sizeof line, pending, &held);
    worker = 0; /* it may serve another client now: signal it no more */
    close(sock);
    handle_signals(SIG_DFL);
    if (got == 0 || line[0] != 'X') {
        say(argv[1], " interrupted: its warm server process was killed", "");
        return INTERRUPTED;
    }
    int code = (int)strtol(line + 1, NULL, 10);
    if (code == READER_GONE) { /* end as the in-process command does: killed by SIGPIPE */
        signal(SIGPIPE, SIG_DFL);
        raise(SIGPIPE);
    }
    return code;
}
