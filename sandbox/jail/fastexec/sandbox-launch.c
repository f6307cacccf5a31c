/* sandbox-launch: the jail's first process from the supervisor's spawn to firejail's exec,
 * compiled (see launch.py: `Launch` is the same steps as a Python preexec_fn, used where
 * no C compiler is at hand, and for an image's root).
 *
 * Why: a preexec_fn makes Python fork the supervisor, whose page tables grow with every
 * live sandbox (with 256 alive a fork and exec cost ~6 ms of CPU, a vfork ~0.6 ms), and
 * run Python in the child. With this program as the child's one exec, subprocess spawns
 * with vfork and nothing but these system calls run before firejail.
 *
 * It runs as root with a clean environment (the supervisor's Popen gives it none): the
 * agent's environment, which may name an LD_PRELOAD or a GLIBC_TUNABLES, reaches only
 * firejail's execve, after the drop to the agent user (red-team H1). Static: no loader.
 *
 *   sandbox-launch ERRFD ENVFD [options] -- PROGRAM [ARG...]
 *     ERRFD    a pipe: why the launch failed, if it did (close-on-exec: EOF = launched)
 *     ENVFD    a memfd: PROGRAM's environment, NUL-terminated "key=value" strings
 *     -c FILE  write "0" to FILE: the calling thread (this whole process) joins a cgroup
 *     -y FD    TIOCSCTTY on FD: the session's own pty as the controlling terminal
 *     -n PATH  setns(PATH, CLONE_NEWNET), then a mount namespace as `ip netns exec` makes
 *     -b S D   bind S over D (after -n: each /etc/netns/<ns>/F over /etc/F)
 *     -o T O   an image's root: overlay (nodev, nosuid) on T with options O, in a mount
 *              namespace of its own (the -n one, if any)
 *     -B S D R bind S on T+D in the image, remounted nodev, nosuid (and read-only if R is 1)
 *     -f HEX   a classic BPF seccomp filter (launch._filter_program), installed as root
 *     -r R V   setrlimit(R, V, V)
 *     -u U G   setgroups(0), setresgid(G), setresuid(U)
 * The steps run in that order whatever the order of the options.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#define MAX 256

static int errfd = -1;

static void fail(const char *what, const char *arg) {
    int e = errno;
    dprintf(errfd, "%s%s%s: %s", what, arg ? " " : "", arg ? arg : "", strerror(e));
    _exit(127);
}

static void usage(const char *why) {
    dprintf(errfd, "sandbox-launch: %s", why);
    _exit(127);
}

static long number(const char *s) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0')
        usage("bad number");
    return v;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static char **read_env(int fd) {
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    if (!buf) fail("malloc", NULL);
    for (;;) {
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            if (!buf) fail("realloc", NULL);
        }
        ssize_t n = pread(fd, buf + len, cap - len, (off_t)len);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("reading the environment", NULL);
        }
        if (n == 0) break;
        len += (size_t)n;
    }
    if (len && buf[len - 1] != '\0') usage("environment not NUL-terminated");
    size_t count = 0;
    for (size_t i = 0; i < len; i++) count += buf[i] == '\0';
    char **env = calloc(count + 1, sizeof(char *));
    if (!env) fail("calloc", NULL);
    size_t k = 0;
    for (size_t i = 0; i < len; i += strlen(buf + i) + 1) env[k++] = buf + i;
    close(fd);
    return env;
}

int main(int argc, char **argv) {
    if (argc < 4) return 127;
    errfd = (int)strtol(argv[1], NULL, 10);
    if (fcntl(errfd, F_SETFD, FD_CLOEXEC) != 0) return 127;
    int envfd = (int)number(argv[2]);

    const char *cgroups[MAX]; int ncg = 0;
    const char *binds[MAX][2]; int nbinds = 0;
    const char *ibinds[MAX][2]; int ibro[MAX]; int nibinds = 0;
    const char *overlay = NULL, *overlay_opts = NULL;
    long limits[MAX][2]; int nlim = 0;
    const char *netns = NULL, *filter = NULL;
    int ctty = -1, drop = 0;
    long uid = 0, gid = 0;
    int i = 3;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        const char *o = argv[i];
        int left = argc - i - 1;
        if (!strcmp(o, "-c") && left >= 1 && ncg < MAX) cgroups[ncg++] = argv[++i];
        else if (!strcmp(o, "-y") && left >= 1) ctty = (int)number(argv[++i]);
        else if (!strcmp(o, "-n") && left >= 1) netns = argv[++i];
        else if (!strcmp(o, "-b") && left >= 2 && nbinds < MAX) {
            binds[nbinds][0] = argv[i + 1]; binds[nbinds][1] = argv[i + 2]; nbinds++; i += 2;
        } else if (!strcmp(o, "-o") && left >= 2) {
            overlay = argv[i + 1]; overlay_opts = argv[i + 2]; i += 2;
        } else if (!strcmp(o, "-B") && left >= 3 && nibinds < MAX) {
            ibinds[nibinds][0] = argv[i + 1]; ibinds[nibinds][1] = argv[i + 2];
            ibro[nibinds] = (int)number(argv[i + 3]); nibinds++; i += 3;
        } else if (!strcmp(o, "-f") && left >= 1) filter = argv[++i];
        else if (!strcmp(o, "-r") && left >= 2 && nlim < MAX) {
            limits[nlim][0] = number(argv[i + 1]); limits[nlim][1] = number(argv[i + 2]);
            nlim++; i += 2;
        } else if (!strcmp(o, "-u") && left >= 2) {
            uid = number(argv[i + 1]); gid = number(argv[i + 2]); drop = 1; i += 2;
        } else usage(o);
    }
    if (i + 1 >= argc) usage("no program");
    char **program = argv + i + 1;
    char **env = read_env(envfd);

    signal(SIGPIPE, SIG_DFL);
    signal(SIGXFSZ, SIG_DFL);
    for (int k = 0; k < ncg; k++) {  /* the cgroup first: needs root */
        int fd = open(cgroups[k], O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1) fail("joining the cgroup", cgroups[k]);
        close(fd);
    }
    if (ctty >= 0 && ioctl(ctty, TIOCSCTTY, 0) != 0) fail("TIOCSCTTY", NULL);
    if (netns) {
        int fd = open(netns, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) fail("setns", netns);
        close(fd);
        if (unshare(CLONE_NEWNS) != 0) fail("unshare(CLONE_NEWNS)", NULL);
        if (mount(NULL, "/", NULL, MS_SLAVE | MS_REC, NULL) != 0) fail("mount --make-rslave /", NULL);
        if (umount2("/sys", MNT_DETACH) == 0) mount("sysfs", "/sys", "sysfs", 0, NULL);
        for (int k = 0; k < nbinds; k++)
            if (mount(binds[k][0], binds[k][1], NULL, MS_BIND, NULL) != 0) fail("bind", binds[k][0]);
    } else if (nbinds) {
        usage("-b without -n");
    }
    if (overlay) {
        if (!netns) {
            if (unshare(CLONE_NEWNS) != 0) fail("unshare(CLONE_NEWNS)", NULL);
            if (mount(NULL, "/", NULL, MS_SLAVE | MS_REC, NULL) != 0)
                fail("mount --make-rslave /", NULL);
        }
        if (mount("overlay", overlay, "overlay", MS_NODEV | MS_NOSUID, overlay_opts) != 0)
            fail("mount overlay on", overlay);
        for (int k = 0; k < nibinds; k++) {
            char where[4096];
            int n = snprintf(where, sizeof where, "%s%s", overlay, ibinds[k][1]);
            if (n < 0 || (size_t)n >= sizeof where) usage("image path too long");
            if (mount(ibinds[k][0], where, NULL, MS_BIND, NULL) != 0)
                fail("bind in the image:", ibinds[k][0]);
            /* nodev,nosuid on every bind too: a fresh workspace is seeded (as root) from
             * the image's own working directory, which may hold a layer's device node. */
            unsigned long flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV;
            if (ibro[k]) flags |= MS_RDONLY;
            if (mount(NULL, where, NULL, flags, NULL) != 0)
                fail("remount nodev,nosuid in the image:", ibinds[k][1]);
        }
    } else if (nibinds) {
        usage("-B without -o");
    }
    if (filter) {
        size_t n = strlen(filter);
        if (n == 0 || n % 16) usage("bad filter");
        struct sock_filter *code = calloc(n / 16, sizeof *code);
        unsigned char *raw = (unsigned char *)code;
        if (!code) fail("calloc", NULL);
        for (size_t k = 0; k < n / 2; k++) {
            int hi = hexval(filter[2 * k]), lo = hexval(filter[2 * k + 1]);
            if (hi < 0 || lo < 0) usage("bad filter");
            raw[k] = (unsigned char)(hi << 4 | lo);
        }
        struct sock_fprog prog = { .len = (unsigned short)(n / 16), .filter = code };
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0)
            fail("seccomp filter (TIOCSTI)", NULL);
    }
    for (int k = 0; k < nlim; k++) {
        struct rlimit rl = { (rlim_t)limits[k][1], (rlim_t)limits[k][1] };
        if (setrlimit((int)limits[k][0], &rl) != 0) fail("setrlimit", NULL);
    }
    if (drop) {
        if (setgroups(0, NULL) != 0) fail("setgroups", NULL);
        if (setresgid((gid_t)gid, (gid_t)gid, (gid_t)gid) != 0) fail("setresgid", NULL);
        if (setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) != 0) fail("setresuid", NULL);
    }
    execve(program[0], program, env);
    fail("exec", program[0]);
    return 127;
}
