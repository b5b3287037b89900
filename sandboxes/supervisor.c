/* The persistent worker's native supervisor: the same job protocol and isolation as _supervisor.py (read
 * its docstring first), compiled, so that a job costs a fork of a small C process instead of a fork of a
 * Python interpreter (copy-on-write faults for every page Python touches) plus an init `sh`.
 *
 * Started by sandboxes/worker.py inside a long-lived bwrap box as `/proc/self/fd/N <socket fd> <tree fd> N`
 * (the host passes this binary as fd N: nothing of it is visible in the box). Built and cached by
 * sandboxes/native.py; where it cannot be built or started, the Python supervisor runs instead.
 *
 * Per job: clone3 P straight into fresh PID, mount, IPC and UTS namespaces (P is pid 1 there); P mounts a
 * private /tmp and /dev/shm, attaches the job's work dir (a detached mount) at /box and a fresh /proc,
 * drops into a user namespace of its own (uid 65534, no capabilities above it), and forks the job (pid 2),
 * which execs the rlimit wrapper (its program is pid 3): the tree of a per-call bwrap run. P, the init,
 * only reaps; it installs no signal handler, so the kernel drops every signal sent to it from inside its
 * namespace, and it is not dumpable, so no job can ptrace it. The wall clock is the supervisor's: on
 * expiry it SIGKILLs P, and the kernel kills all of P's namespace before P's exit is reported.
 *
 * A job given as steps (sandboxes/steps.py) runs with no shell: the job (pid 2) is this process itself,
 * which sets the rlimits, umask and OOM score as the wrapper would, runs each step as its child (pid 3...),
 * and writes the wrapper's CPU report: the same tree, limits and output, one exec less.
 *
 * Request (one SOCK_SEQPACKET message, fields ending in NUL; worker.encode_request writes it):
 *   "earl-job-1" wall_s tmp_bytes n_under under_tmp... argc argv... envc env(KEY=VALUE)...
 *   "earl-job-2" wall_s tmp_bytes n_under under_tmp... nlim (resource soft hard)...
 *                nsteps (argc argv... log status_file stop_exit)... envc env(KEY=VALUE)...
 * with SCM_RIGHTS fds: stdout, stderr, work-dir tree[, stdin]. Reply: {"rc": N, "timed_out": B, "cpu_s": F}
 * or {"error": "..."}. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* the same numbers on every architecture (5.2, 5.3, 5.9) */
#define NR_OPEN_TREE 428
#define NR_MOVE_MOUNT 429
#define NR_CLONE3 435
#define NR_CLOSE_RANGE 436
#define OPEN_TREE_CLONE_ 1
#define AT_RECURSIVE_ 0x8000
#define MOVE_MOUNT_F_EMPTY_PATH_ 0x4
#define CLONE_PIDFD_ 0x1000
#define SETUP_FAILED 125
#define SANDBOX_UID 65534
#define MAX_MSG (1 << 20)
#define MAX_FDS 4
#define MAX_LIMITS 16
#define MAX_STEPS 8 /* sandboxes/steps.py MAX_STEPS */
#define RLIMITS_FAILED "earl-sandbox: cannot set rlimits" /* backends.RLIMITS_FAILED, exit 125 */
#define CPU_MARKER "\n<earl-sandbox-cpu>"                /* backends.CPU_MARKER */
enum { FD_STDOUT, FD_STDERR, FD_TREE, FD_STDIN };

struct clone_args_ {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
};

struct limit {
    int resource;
    rlim_t soft, hard;
};

struct step {
    char **argv, *log, *status_file;
    int stop_exit; /* -1: none */
};

struct job {
    double wall_s;
    unsigned long long tmp_bytes;
    int n_under;
    char **under, **argv, **envp;
    int nlim, nsteps; /* an earl-job-2 request: rlimits and steps instead of argv */
    struct limit lim[MAX_LIMITS];
    struct step steps[MAX_STEPS];
};

static char msg[MAX_MSG];

/* ------------------------------------------------------------------ in P (the job's init) */

static void fail(const char *what) {
    dprintf(2, "earl-sandbox: cannot set up the job: %s: %s\n", what, strerror(errno));
    _exit(SETUP_FAILED);
}

static void close_from(int lowest) {
    if (syscall(NR_CLOSE_RANGE, lowest, ~0U, 0) == 0)
        return;
    for (int fd = lowest; fd < 65536; fd++)
        close(fd);
}

static void make_dirs(const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        fail(path);
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            fail(buf);
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        fail(buf);
}

static void attach(int fd, const char *path) {
    if (syscall(NR_MOVE_MOUNT, fd, "", AT_FDCWD, path, MOVE_MOUNT_F_EMPTY_PATH_) != 0)
        fail(path);
    close(fd);
}

/* A private mount tree with a fresh /tmp, /dev/shm and /proc, the job's work dir at /box. */
static void job_mounts(const struct job *j, int tree) {
    char size[64];
    int *keep = calloc(j->n_under + 1, sizeof *keep);
    if (!keep)
        fail("calloc");
    snprintf(size, sizeof size, "size=%llu,mode=1777", j->tmp_bytes);
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        fail("mount /");
    for (int i = 0; i < j->n_under; i++) /* ro_binds the new /tmp would hide */
        if ((keep[i] = syscall(NR_OPEN_TREE, AT_FDCWD, j->under[i],
                               OPEN_TREE_CLONE_ | O_CLOEXEC | AT_RECURSIVE_)) < 0)
            fail(j->under[i]);
    if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, size) != 0)
        fail("mount /tmp");
    if (mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, size) != 0)
        fail("mount /dev/shm");
    for (int i = 0; i < j->n_under; i++) {
        make_dirs(j->under[i]);
        attach(keep[i], j->under[i]);
    }
    attach(tree, "/box");
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
        fail("mount /proc");
}

static void write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        fail(path);
    close(fd);
}

/* The OOM killer's first choice, inherited by everything the job forks (backends.PROCESS_STATE); where /proc
 * refuses it, the run goes on. */
static void oom_first(void) {
    int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (write(fd, "1000", 4) < 0) { /* refused: nothing to do */
        }
        close(fd);
    }
}

/* Into a user namespace of P's own: uid 65534 there, no capabilities over the box's namespaces. The job
 * is not root there, so its exec clears the capabilities P holds in it. */
static void drop_user(void) {
    char map[64];
    uid_t uid = getuid();
    gid_t gid = getgid();
    if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0) /* to write our own maps */
        fail("dumpable");
    if (unshare(CLONE_NEWUSER) != 0)
        fail("unshare user");
    write_file("/proc/self/setgroups", "deny");
    snprintf(map, sizeof map, "%d %d 1", SANDBOX_UID, (int)uid);
    write_file("/proc/self/uid_map", map);
    snprintf(map, sizeof map, "%d %d 1", SANDBOX_UID, (int)gid);
    write_file("/proc/self/gid_map", map);
    oom_first(); /* while /proc/self is ours to write: a steps job's pid 2, non-dumpable, could not */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) /* no job may ptrace its init */
        fail("dumpable");
}

static int status_code(int status) {
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ------------------------------------------------------------------ the steps of an earl-job-2 job (pid 2) */

/* What backends.wrapper_script does, without a shell: rlimits and umask 022 (P set the OOM score). First
 * every capability goes, those P holds in its user namespace: the wrapper's exec would have cleared them. */
static void process_state(const struct job *j) {
    struct { uint32_t version; int pid; } head = {0x20080522, 0}; /* _LINUX_CAPABILITY_VERSION_3 */
    struct { uint32_t effective, permitted, inheritable; } none[2] = {{0, 0, 0}, {0, 0, 0}};
    if (syscall(SYS_capset, &head, none) != 0)
        fail("capset");
    for (int i = 0; i < j->nlim; i++) {
        struct rlimit rl = {j->lim[i].soft, j->lim[i].hard};
        if (setrlimit(j->lim[i].resource, &rl) != 0) {
            dprintf(2, RLIMITS_FAILED "\n");
            _exit(SETUP_FAILED);
        }
    }
    umask(022);
}

/* One step as sh runs a command: its status as sh's $? (127 not found, 126 not runnable, 2 when the
 * log cannot be created, 128 + signal when killed, which the job's stderr is told); -1 when no process
 * could be forked (sh then ends the whole script with 2). A file with no #! line runs as an sh script. */
static int run_step(const struct step *s, char **envp) {
    pid_t pid = fork();
    if (pid < 0) {
        dprintf(2, "earl-sandbox: cannot fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        if (s->log) {
            int fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
            if (fd < 0) {
                dprintf(2, "earl-sandbox: cannot create %s: %s\n", s->log, strerror(errno));
                _exit(2);
            }
            if (dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
                _exit(2);
        }
        execve(s->argv[0], s->argv, envp);
        int err = errno;
        if (err == ENOEXEC) {
            int argc = 0;
            while (s->argv[argc])
                argc++;
            char **shell = calloc(argc + 2, sizeof *shell);
            if (shell) {
                shell[0] = "/bin/sh";
                memcpy(shell + 1, s->argv, (argc + 1) * sizeof *shell);
                execve(shell[0], shell, envp);
            }
            err = errno;
        }
        dprintf(2, "earl-sandbox: %s: %s\n", s->argv[0], strerror(err));
        _exit(err == ENOENT ? 127 : 126);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return 2;
    if (WIFSIGNALED(status) && WTERMSIG(status) != SIGINT && WTERMSIG(status) != SIGPIPE) /* as dash says it */
        dprintf(2, "%s%s\n", strsignal(WTERMSIG(status)), WCOREDUMP(status) ? " (core dumped)" : "");
    return status_code(status);
}

static void print_seconds(char *out, size_t len, struct timeval tv) {
    double s = tv.tv_sec + tv.tv_usec / 1e6;
    long minutes = (long)(s / 60);
    snprintf(out, len, "%ldm%.6fs", minutes, s - 60.0 * minutes);
}

/* The job's pid 2, as the rlimit wrapper `sh` is in an earl-job-1 job: runs the steps as its children,
 * then appends CPU_MARKER and `times`' two lines (its own, its children's) to stderr and exits with the
 * job's status. */
static void run_steps(const struct job *j) {
    process_state(j);
    int rc = 0;
    for (int i = 0; i < j->nsteps; i++) {
        const struct step *s = &j->steps[i];
        rc = run_step(s, j->envp);
        if (rc < 0) {
            rc = 2;
            break;
        }
        if (i == j->nsteps - 1)
            break;
        if (s->status_file) {
            int fd = open(s->status_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
            if (fd >= 0) {
                dprintf(fd, "%d\n", rc);
                close(fd);
            } else
                dprintf(2, "earl-sandbox: cannot create %s: %s\n", s->status_file, strerror(errno));
        }
        if (rc != 0 && s->stop_exit >= 0) {
            rc = s->stop_exit;
            break;
        }
    }
    struct rusage self, kids;
    char su[32], ss[32], cu[32], cs[32];
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &kids);
    print_seconds(su, sizeof su, self.ru_utime);
    print_seconds(ss, sizeof ss, self.ru_stime);
    print_seconds(cu, sizeof cu, kids.ru_utime);
    print_seconds(cs, sizeof cs, kids.ru_stime);
    dprintf(2, CPU_MARKER "%s %s\n%s %s\n", su, ss, cu, cs);
    _exit(rc);
}

/* ------------------------------------------------------------------ the job's init, continued */

static void job_process(const struct job *j, const int *fds, int nfds) {
    if (dup2(fds[FD_STDERR], 2) < 0) /* setup errors reach the job's stderr */
        _exit(SETUP_FAILED);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0)
        fail("pdeathsig");
    prctl(PR_SET_NAME, "earl-init", 0, 0, 0); /* pid 1's comm in the job (its cmdline is the supervisor's) */
    job_mounts(j, fds[FD_TREE]);
    drop_user();
    if (setsid() < 0)
        fail("setsid");
    if (chdir("/box") != 0)
        fail("chdir /box");
    int in = nfds > FD_STDIN ? fds[FD_STDIN] : open("/dev/null", O_RDONLY);
    if (in < 0)
        fail("/dev/null");
    pid_t job = fork();
    if (job < 0)
        fail("fork");
    if (job == 0) {
        if (dup2(in, 0) < 0 || dup2(fds[FD_STDOUT], 1) < 0 || dup2(fds[FD_STDERR], 2) < 0)
            fail("dup2");
        close_from(3);
        if (j->nsteps)
            run_steps(j);
        execve(j->argv[0], j->argv, j->envp);
        fail(j->argv[0]);
    }
    close_from(0);
    for (;;) { /* reap orphans too; the job's exit is the init's */
        int status;
        pid_t pid = waitpid(-1, &status, 0);
        if (pid > 0 && WIFSTOPPED(status))  /* a tracee's stop (P never traces): not an exit */
            continue;
        if (pid == job)
            _exit(status_code(status));
        if (pid < 0 && errno != EINTR)
            _exit(SETUP_FAILED);
    }
}

/* ------------------------------------------------------------------ the supervisor */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_s(void) {
    struct rusage self, kids;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &kids);
    return self.ru_utime.tv_sec + self.ru_stime.tv_sec + kids.ru_utime.tv_sec + kids.ru_stime.tv_sec +
           (self.ru_utime.tv_usec + self.ru_stime.tv_usec + kids.ru_utime.tv_usec + kids.ru_stime.tv_usec) / 1e6;
}

/* A count field: 0 <= value <= limit, else -1. */
static int count(const char *field, size_t limit) {
    char *end;
    if (!field || *field < '0' || *field > '9')
        return -1;
    long value = strtol(field, &end, 10);
    return (*end || end == field || value < 0 || (size_t)value > limit) ? -1 : (int)value;
}

/* An unsigned field (an rlimit value); *ok = 0 when it is not one. */
static rlim_t number(const char *field, int *ok) {
    char *end;
    if (!field || *field < '0' || *field > '9') { /* no sign, no blank: strtoull would take both */
        *ok = 0;
        return 0;
    }
    errno = 0;
    unsigned long long value = strtoull(field, &end, 10);
    if (*end || errno)
        *ok = 0;
    return (rlim_t)value;
}

/* earl-job-2's rlimits and steps from fields[*at]; 0 on success. Each step's argv ends where its log
 * field was (read, then overwritten with NULL). */
static int parse_steps(char **fields, size_t n, size_t *at, struct job *j) {
    int ok = 1;
    j->nlim = count(fields[(*at)++], MAX_LIMITS);
    if (j->nlim < 0 || *at + 3 * (size_t)j->nlim >= n)
        return -1;
    for (int i = 0; i < j->nlim; i++) {
        j->lim[i].resource = count(fields[(*at)++], 64);
        j->lim[i].soft = number(fields[(*at)++], &ok);
        j->lim[i].hard = number(fields[(*at)++], &ok);
        if (j->lim[i].resource < 0 || !ok)
            return -1;
    }
    j->nsteps = count(fields[(*at)++], MAX_STEPS);
    if (j->nsteps < 1)
        return -1;
    for (int i = 0; i < j->nsteps; i++) {
        struct step *s = &j->steps[i];
        if (*at >= n) /* the fields after the last one are stale: never read */
            return -1;
        int argc = count(fields[(*at)++], n);
        if (argc < 1 || *at + argc + 3 >= n)
            return -1;
        s->argv = fields + *at;
        *at += argc;
        s->log = *fields[*at] ? fields[*at] : NULL;
        fields[(*at)++] = NULL;
        s->status_file = *fields[*at] ? fields[*at] : NULL;
        (*at)++;
        const char *stop = fields[(*at)++];
        int none = strcmp(stop, "-1") == 0;
        s->stop_exit = none ? -1 : count(stop, 255);
        if (s->stop_exit < 0 && !none)
            return -1;
    }
    const struct step *last = &j->steps[j->nsteps - 1];
    if (last->status_file || last->stop_exit >= 0) /* the job's own status (steps.validate) */
        return -1;
    return 0;
}

/* Split the request's NUL-ended fields into *j; 0 on success. under, argv and envp point into one static
 * array of the fields: argv ends where the envc field was (overwritten with NULL once read), envp at the
 * slot after the last field. */
static int parse(char *buf, size_t len, struct job *j) {
    static char *fields[MAX_MSG / 2 + 1];
    size_t n = 0, at = 4;
    char *end;
    if (len == 0 || buf[len - 1] != 0)
        return -1;
    char *p = buf;
    for (; p < buf + len && n < sizeof fields / sizeof *fields - 1; p += strlen(p) + 1)
        fields[n++] = p;
    if (p < buf + len)
        return -1;
    if (n < 6)
        return -1;
    int steps = strcmp(fields[0], "earl-job-2") == 0;
    if (!steps && strcmp(fields[0], "earl-job-1") != 0)
        return -1;
    j->wall_s = strtod(fields[1], &end);
    if (*end || !(j->wall_s > 0))
        return -1;
    j->tmp_bytes = strtoull(fields[2], &end, 10);
    if (*end || end == fields[2])
        return -1;
    j->n_under = count(fields[3], n);
    if (j->n_under < 0 || at + j->n_under >= n)
        return -1;
    j->under = fields + at;
    at += j->n_under;
    j->nlim = j->nsteps = 0;
    if (steps) {
        if (parse_steps(fields, n, &at, j) != 0)
            return -1;
    } else {
        int argc = count(fields[at++], n);
        if (argc < 1 || at + argc >= n)
            return -1;
        j->argv = fields + at;
        at += argc;
    }
    int envc = count(fields[at], n);
    if (envc < 0 || at + 1 + envc != n)
        return -1;
    fields[at++] = NULL;
    j->envp = fields + at;
    fields[n] = NULL;
    return 0;
}

static pid_t fork_job(const struct job *j, const int *fds, int nfds, int *pidfd) {
    struct clone_args_ args = {0};
    args.flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_PIDFD_;
    args.pidfd = (uint64_t)(uintptr_t)pidfd;
    args.exit_signal = SIGCHLD;
    pid_t pid = syscall(NR_CLONE3, &args, sizeof args);
    if (pid == 0)
        job_process(j, fds, nfds);
    return pid;
}

static void close_fds(const int *fds, int nfds) {
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
}

static void reply(int sock, const char *text) {
    send(sock, text, strlen(text), MSG_NOSIGNAL);
}

static void reply_error(int sock, const char *what, int err) {
    char buf[512];
    snprintf(buf, sizeof buf, "{\"error\": \"%s: %s\"}", what, strerror(err)); /* no quotes in either */
    reply(sock, buf);
}

/* Fork P and wait for it under the wall clock, SIGKILL on expiry; a message mid-job means the host is
 * gone. Replies. */
static void run_job(int sock, const struct job *j, int *fds, int nfds) {
    double deadline = now() + j->wall_s;
    int pidfd = -1;
    pid_t pid = fork_job(j, fds, nfds, &pidfd);
    int err = errno;
    close_fds(fds, nfds);
    if (pid < 0) {
        reply_error(sock, "clone3", err);
        return;
    }
    int timed_out = 0, host_gone = 0, status = 0;
    struct pollfd polls[2] = {{pidfd, POLLIN, 0}, {sock, POLLIN, 0}};
    for (;;) {
        double left = deadline - now();
        if (left <= 0) {
            timed_out = 1;
            break;
        }
        int ms = left > 3600 ? 3600 * 1000 : (int)(left * 1000) + 1;   /* re-armed after an hour */
        int ready = poll(polls, 2, ms);
        if (ready < 0 && errno != EINTR)
            break;
        if (ready > 0 && polls[0].revents)
            break;
        if (ready > 0 && polls[1].revents) {
            host_gone = 1;
            break;
        }
    }
    if (!(polls[0].revents & POLLIN))      /* any way out but P's own exit: P and its namespace die now */
        kill(pid, SIGKILL);
    pid_t reaped;
    while ((reaped = waitpid(pid, &status, 0)) < 0 && errno == EINTR)
        ;
    if (reaped != pid)
        status = SIGKILL;                  /* read as killed (128 + 9), never as a clean exit */
    close(pidfd);
    if (host_gone)
        exit(0);
    char buf[128];
    snprintf(buf, sizeof buf, "{\"rc\": %d, \"timed_out\": %s, \"cpu_s\": %.6f}", status_code(status),
             timed_out ? "true" : "false", cpu_s());
    reply(sock, buf);
}

static void serve(int sock) {
    for (;;) {
        int fds[MAX_FDS], nfds = 0;
        char control[CMSG_SPACE(sizeof fds)];
        struct iovec iov = {msg, sizeof msg};
        struct msghdr hdr = {0};
        hdr.msg_iov = &iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = control;
        hdr.msg_controllen = sizeof control;
        ssize_t len = recvmsg(sock, &hdr, MSG_CMSG_CLOEXEC);
        if (len <= 0) {
            if (len < 0 && errno == EINTR)
                continue;
            return; /* EOF: the host closed or died */
        }
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&hdr); c; c = CMSG_NXTHDR(&hdr, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                int k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (int i = 0; i < k && nfds < MAX_FDS; i++)
                    memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            }
        struct job j;
        if (nfds < 3 || (hdr.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || parse(msg, len, &j) != 0) {
            close_fds(fds, nfds);
            reply(sock, nfds < 3 ? "{\"error\": \"a request needs stdout, stderr and tree fds\"}"
                                 : "{\"error\": \"malformed request\"}");
            continue;
        }
        run_job(sock, &j, fds, nfds);
    }
}

/* Default dispositions for every signal (the raw syscall also reaches the C library's own 32 and 33: an
 * ignore inherited there survives exec) and an empty mask: every job's init and job inherit them. */
static void reset_signals(void) {
    struct { unsigned long handler, flags, restorer, mask; } dfl = {0};
    for (int sig = 1; sig <= 64; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            syscall(SYS_rt_sigaction, sig, &dfl, NULL, 8);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

/* One real job (`true` as the one step of a steps job, over the empty dir `tree`) before saying ready:
 * nested namespaces, attaching a detached mount or dropping capabilities may be refused here. */
static int self_test(int tree, char *err, size_t errlen) {
    int pipefd[2];
    static char *argv[] = {"/bin/true", NULL}, *envp[] = {NULL};
    struct job j = {.wall_s = 30.0, .tmp_bytes = 1 << 20, .envp = envp, .nsteps = 1};
    j.steps[0] = (struct step){argv, NULL, NULL, -1};
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return 0;
    }
    int fds[3] = {pipefd[1], dup(pipefd[1]), tree}, pidfd = -1, status = 0;
    pid_t pid = fork_job(&j, fds, 3, &pidfd);
    if (pid < 0)
        snprintf(err, errlen, "clone3: %s", strerror(errno));
    close_fds(fds, 3);
    if (pid < 0)
        return 0;
    close(pidfd);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    ssize_t n = read(pipefd[0], err, errlen - 1);
    err[n > 0 ? n : 0] = 0;
    close(pipefd[0]);
    if (status_code(status) != 0)
        return 0;
    err[0] = 0; /* what it wrote was its CPU report */
    return 1;
}

static void json_string(char *out, size_t outlen, const char *text) {
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)text; *p && o + 7 < outlen; p++) {
        if (*p == '"' || *p == '\\')
            o += snprintf(out + o, outlen - o, "\\%c", *p);
        else if (*p < 0x20 || *p >= 0x7f)
            o += snprintf(out + o, outlen - o, "\\u%04x", *p);
        else
            out[o++] = *p;
    }
    out[o] = 0;
}

int main(int argc, char **argv) {
    if (argc < 3)
        return 2;
    int sock = atoi(argv[1]), tree = atoi(argv[2]);
    if (argc > 3)
        close(atoi(argv[3])); /* this binary's own fd */
    reset_signals();
    prctl(PR_SET_NAME, "earl-supervisor", 0, 0, 0);
    fcntl(sock, F_SETFD, FD_CLOEXEC); /* no job may hold it */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        return 2;
    char err[2048], escaped[6 * sizeof err + 64], ready[sizeof escaped + 64];
    int ok = self_test(tree, err, sizeof err);
    json_string(escaped, sizeof escaped, err);
    snprintf(ready, sizeof ready, "{\"ready\": %s, \"error\": \"%s\"}", ok ? "true" : "false", escaped);
    reply(sock, ready);
    if (ok)
        serve(sock);
    return 0;
}
