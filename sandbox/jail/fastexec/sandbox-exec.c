/* sandbox-exec: the exec helper, compiled (see build.py; injail.py is the same helper in
 * Python, used where no C compiler is at hand).
 *
 * Runs inside a session's jail, started by the one `firejail --join` of the session's
 * start, which runs it from a sealed memfd (no path in the jail holds it) or, in an
 * image, from where it is bound in read-only: so it has everything the agent's shell
 * has, and nothing is re-applied per command. It forks the commands the supervisor asks
 * for. It is not trusted: it shares the agent's uid, so the supervisor takes each
 * command's identity and exit status from the kernel (the pidfd the command hands over,
 * SCM_PIDFD) and compares this helper's claim.
 *
 * Why C: a fork of this process costs a few page tables instead of a Python heap's, and
 * nothing runs between the fork and the exec but a dozen system calls (issue 20: the
 * Python helper's fork and child were a third of an exec's time). Static, so it runs in
 * any image, with or without a libc of its own.
 *
 * Protocol on the stream socket (fd 0, or fd 1 when argv[1] is "1"; frames: 4-byte big-endian length, then body):
 *   boot:    supervisor -> helper: the environment the supervisor gave the join, as
 *            NUL-terminated "key=value" strings (firejail's changes to it are then known
 *            and made to every command's environment the same way)
 *   hello:   helper -> supervisor: "H" (the kernel attaches the helper's pidfd)
 *   request: supervisor -> helper: a frame with four fds attached (SCM_RIGHTS): the
 *            command's socket, stdin, stdout, stderr; body: argc and envc (4 bytes each,
 *            little endian), then cwd, argv and env ("key=value"), each NUL-terminated
 *   on the command's socket: the command (after fork, before exec) sends "S" (its pidfd
 *   attached by the kernel) and execs on the supervisor's "G"; the helper sends "X" and
 *   the wait status (4 bytes, little endian) once it has reaped it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define CTL 0

static char **added;   /* what firejail set in the join's environment: every command gets it */
static char **dropped; /* what firejail removed from it ("key=" prefixes) */
static sigset_t ignored; /* signals ignored here at start: a command gets them default */
static sigset_t chld;

struct child { pid_t pid; int sock; };
static struct child *kids;
static size_t nkids, capkids;

static void die(const char *why) {
    /* stderr is the supervisor's pipe until the hello: it reports why this did not start */
    dprintf(2, "sandbox-exec: %s: %s\n", why, strerror(errno));
    _exit(1);
}

static int read_exact(int fd, void *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

static char *frame(uint32_t *len) {
    unsigned char head[4];
    if (read_exact(CTL, head, 4)) return NULL;
    *len = (uint32_t)head[0] << 24 | (uint32_t)head[1] << 16 | (uint32_t)head[2] << 8 | head[3];
    char *body = malloc((size_t)*len + 1);
    if (!body || read_exact(CTL, body, *len)) { free(body); return NULL; }
    body[*len] = 0;
    return body;
}

/* Pointers to the NUL-terminated strings in buf[0:len], NULL-terminated. */
static char **strings(char *buf, size_t len, size_t *count) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++) n += buf[i] == 0;
    char **out = calloc(n + 1, sizeof *out);
    if (!out) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < len && k < n; k++) {
        out[k] = buf + i;
        i += strlen(buf + i) + 1;
    }
    if (count) *count = n;
    return out;
}

static size_t keylen(const char *kv) {
    const char *eq = strchr(kv, '=');
    return eq ? (size_t)(eq - kv) : strlen(kv);
}

static int has_key(char **list, const char *kv) {
    size_t n = keylen(kv);
    for (; list && *list; list++)
        if (keylen(*list) == n && !strncmp(*list, kv, n)) return 1;
    return 0;
}

/* Boot: what firejail did to the environment it was given. */
static void learn_env(void) {
    extern char **environ;
    uint32_t len;
    char *body = frame(&len);
    if (!body) die("no environment frame");
    char **given = strings(body, len, NULL);
    size_t nhere = 0;
    while (environ[nhere]) nhere++;
    added = calloc(nhere + 1, sizeof *added);
    size_t ngiven = 0;
    while (given[ngiven]) ngiven++;
    dropped = calloc(ngiven + 1, sizeof *dropped);
    if (!added || !dropped) die("out of memory");
    size_t a = 0, d = 0;
    for (size_t i = 0; i < nhere; i++) {
        int same = 0;
        for (size_t j = 0; j < ngiven && !same; j++) same = !strcmp(environ[i], given[j]);
        if (!same) added[a++] = strdup(environ[i]);
    }
    for (size_t j = 0; j < ngiven; j++)
        if (!has_key(environ, given[j])) dropped[d++] = given[j];
}

static const char *shell; /* the agent's login shell in the jail (argv[2]), or NULL */

static void fail_exec(const char *name, int err) {
    if (err == ENOENT) dprintf(2, "%s: command not found\n", name);
    else dprintf(2, "%s: %s\n", name, strerror(err));
    _exit(err == ENOENT ? 127 : 126);
}

/* A name no file answers to (a builtin: `true` in a busybox image) or a script with no
 * #! line: the joined path runs every command through the login shell, which runs
 * those; so does this, as `SHELL -c '"$@"' sh ARGV...`. */
static void fail_or_shell(char **argv, char **envp, int err) {
    int builtin = err == ENOENT && !strchr(argv[0], '/');
    if (shell && (builtin || err == ENOEXEC)) {
        size_t n = 0;
        while (argv[n]) n++;
        char **sh = calloc(n + 5, sizeof *sh);
        if (sh) {
            sh[0] = sh[3] = (char *)shell; /* sh[3] is the script's $0 */
            sh[1] = "-c";
            sh[2] = "\"$@\"";
            memcpy(sh + 4, argv, (n + 1) * sizeof *sh);
            execve(shell, sh, envp);
        }
    }
    fail_exec(argv[0], err);
}

/* execvp(3)'s search of PATH (the command's own PATH), as the Python helper does. */
static void exec_path(char **argv, char **envp) {
    const char *name = argv[0];
    if (strchr(name, '/')) { execve(name, argv, envp); fail_or_shell(argv, envp, errno); }
    const char *path = "/usr/local/bin:/usr/bin:/bin";
    for (char **e = envp; *e; e++)
        if (!strncmp(*e, "PATH=", 5)) { path = *e + 5; break; }
    int denied = 0;
    size_t nlen = strlen(name);
    char buf[4096];
    for (const char *p = path;; p++) {
        const char *end = strchrnul(p, ':');
        size_t dlen = (size_t)(end - p);
        const char *dir = dlen ? p : ".";
        if (!dlen) dlen = 1;
        if (dlen + nlen + 2 <= sizeof buf) {
            memcpy(buf, dir, dlen);
            buf[dlen] = '/';
            memcpy(buf + dlen + 1, name, nlen + 1);
            execve(buf, argv, envp);
            if (errno == EACCES) denied = 1;
            else if (errno != ENOENT && errno != ENOTDIR) fail_or_shell(argv, envp, errno);
        }
        p = end;
        if (!*p) break;
    }
    if (denied) fail_exec(name, EACCES);
    fail_or_shell(argv, envp, ENOENT);
}

/* In the forked child: become the command (never returns). */
static void child(int fds[4], char *cwd, char **argv, char **envp) {
    for (int s = 1; s < NSIG; s++)
        if (sigismember(&ignored, s) == 1) signal(s, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setsid(); /* its own session: the supervisor kills the tree by it (detached jobs) */
    for (int i = 1; i < 4; i++)
        if (dup2(fds[i], i - 1) < 0) _exit(127);
    if (chdir(cwd)) { /* as the Python helper: where it cannot go, it stays */ }
    char go = 0;
    /* The kernel attaches this process's pidfd: what the supervisor trusts. Then wait
     * for its go: until then it lives, so the kernel can still say whose child it is. */
    if (send(fds[0], "S", 1, MSG_NOSIGNAL) != 1 || read(fds[0], &go, 1) != 1 || go != 'G')
        _exit(127);
    exec_path(argv, envp);
}

static void request(void) {
    unsigned char head[4];
    union { char buf[CMSG_SPACE(4 * sizeof(int))]; struct cmsghdr align; } anc;
    struct iovec iov = { head, 4 };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                          .msg_control = anc.buf, .msg_controllen = sizeof anc.buf };
    ssize_t r = recvmsg(CTL, &msg, MSG_CMSG_CLOEXEC | MSG_WAITALL);
    if (r <= 0) _exit(0); /* the supervisor is gone: the session is ending */
    int fds[4], nfds = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int *got = (int *)CMSG_DATA(c);
        for (size_t i = 0; i < n; i++) {
            if (nfds < 4) fds[nfds++] = got[i];
            else close(got[i]);
        }
    }
    if (r < 4 && read_exact(CTL, head + r, 4 - (size_t)r)) _exit(0);
    uint32_t len = (uint32_t)head[0] << 24 | (uint32_t)head[1] << 16 | (uint32_t)head[2] << 8 | head[3];
    char *body = malloc((size_t)len + 1);
    if (!body || read_exact(CTL, body, len)) _exit(0);
    body[len] = 0;
    uint32_t argc = 0, envc = 0;
    char **all = NULL;
    size_t n = 0;
    if (nfds == 4 && len >= 8) {
        memcpy(&argc, body, 4);
        memcpy(&envc, body + 4, 4);
        all = strings(body + 8, len - 8, &n);
    }
    if (!all || n != 1 + (size_t)argc + envc || argc == 0) {
        for (int i = 0; i < nfds; i++) close(fds[i]);
        free(all);
        free(body);
        return;
    }
    char **argv = calloc(argc + 1, sizeof *argv);
    size_t nadd = 0;
    while (added[nadd]) nadd++;
    char **envp = calloc(envc + nadd + 1, sizeof *envp);
    if (!argv || !envp) _exit(1);
    memcpy(argv, all + 1, argc * sizeof *argv);
    size_t e = 0;
    for (size_t i = 0; i < envc; i++) {
        char *kv = all[1 + argc + i];
        if (!has_key(dropped, kv) && !has_key(added, kv)) envp[e++] = kv;
    }
    for (size_t i = 0; i < nadd; i++) envp[e++] = added[i];
#ifdef SANDBOX_TEST_FORGE_START /* tests only: a helper that reports a start itself */
    (void)!send(fds[0], "S", 1, MSG_NOSIGNAL);
#endif
    pid_t pid = fork();
    if (pid == 0) child(fds, all[0], argv, envp);
    if (pid > 0) {
        if (nkids == capkids) {
            capkids = capkids ? capkids * 2 : 16;
            kids = realloc(kids, capkids * sizeof *kids);
            if (!kids) _exit(1);
        }
        kids[nkids].pid = pid;
        kids[nkids++].sock = fds[0];
    } else {
        close(fds[0]); /* the fork failed (nproc): its socket's EOF says so */
    }
    for (int i = 1; i < 4; i++) close(fds[i]); /* the command holds them now */
    free(argv);
    free(envp);
    free(all);
    free(body);
}

static void reap(void) {
    int status;
    pid_t pid;
    while (nkids && (pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (size_t i = 0; i < nkids; i++) {
            if (kids[i].pid != pid) continue;
            unsigned char out[5] = { 'X', (unsigned char)status, (unsigned char)(status >> 8),
                                     (unsigned char)(status >> 16),
                                     (unsigned char)((unsigned)status >> 24) };
#ifdef SANDBOX_TEST_FORGE_STATUS /* tests only: a helper that says every command passed */
            memset(out + 1, 0, 4);
#endif
            (void)!send(kids[i].sock, out, 5, MSG_NOSIGNAL);
            close(kids[i].sock);
            kids[i] = kids[--nkids];
            break;
        }
    }
}

int main(int argc, char **argv) {
    /* `sandbox-exec 1 SHELL`: started as /proc/self/fd/0 (fd 0 is the memfd holding this
     * binary, fd 1 the socket: no python3 needed to boot it); the socket becomes fd 0
     * here. `sandbox-exec 0 SHELL`: started from a path (an image), the socket on fd 0. */
    if (argc > 2 && argv[2][0] == '/') shell = argv[2];
    if (argc > 1 && !strcmp(argv[1], "1")) {
        if (dup2(1, CTL) < 0) die("dup2");
        int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (null < 0 || dup2(null, 1) < 0) die("/dev/null");
        close(null);
    }
    /* No ptrace, no /proc/PID/fd, no pidfd_getfd by the agent (same uid). Where this
     * fails, the supervisor sees /proc/PID still the agent's and stays on the join. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    prctl(PR_SET_NAME, "sandbox-exec", 0, 0, 0);
    sigemptyset(&ignored);
    for (int s = 1; s < NSIG; s++) {
        struct sigaction sa;
        if (s != SIGKILL && s != SIGSTOP && !sigaction(s, NULL, &sa) && sa.sa_handler == SIG_IGN)
            sigaddset(&ignored, s);
    }
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &chld, NULL)) die("sigprocmask");
    int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) die("signalfd");
    learn_env();
    if (send(CTL, "H", 1, MSG_NOSIGNAL) != 1) die("hello");
    struct pollfd pfd[2] = { { CTL, POLLIN, 0 }, { sfd, POLLIN, 0 } };
    for (;;) {
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        if (pfd[1].revents) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) == sizeof si) {}
            reap();
        }
        if (pfd[0].revents) {
            request();
        }
    }
}
