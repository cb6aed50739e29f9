/*
 * Scaffolding for the tests and the example that need namespaces: hosts and containers are
 * network namespaces made with `ip netns` (test setup only; the library itself talks netlink).
 * Everything created is recorded and deleted at exit, also after a failed check.
 * Needs root: `netns_require_root` exits with 77 ("skipped") when not root, or fails when CI=true.
 */
#ifndef OVERLAY_TEST_NETNS_H
#define OVERLAY_TEST_NETNS_H

#include <sched.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { NETNS_MAX = 32 };
static char netns_names[NETNS_MAX][32];
static int netns_count;

static inline void netns_require_root(const char *program) {
  if (geteuid() == 0) {
    return;
  }
  const char *ci = getenv("CI");
  if (ci != NULL && strcmp(ci, "true") == 0) {
    fprintf(stderr, "%s: needs root to create network namespaces (CI=true, so this fails)\n",
            program);
    exit(1);
  }
  fprintf(stderr, "%s: SKIPPED: needs root to create network namespaces (run with sudo)\n",
          program);
  exit(77);
}

/* Runs a shell command built like printf; exits the program if it fails. */
static inline void netns_sh(const char *fmt, ...) {
  char cmd[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  if (system(cmd) != 0) {
    fprintf(stderr, "setup command failed: %s\n", cmd);
    exit(2);
  }
}

static inline void netns_cleanup(void) {
  for (int i = netns_count - 1; i >= 0; i--) {
    char cmd[96];
    snprintf(cmd, sizeof cmd, "ip netns del %s 2>/dev/null", netns_names[i]);
    if (system(cmd) != 0) {
      fprintf(stderr, "cleanup: could not delete namespace %s\n", netns_names[i]);
    }
  }
  netns_count = 0;
}

/* Creates namespace "ovl<pid><suffix>" with lo up; its name is written to `name`. */
static inline void netns_add(char *name, size_t len, const char *suffix) {
  if (netns_count == 0) {
    atexit(netns_cleanup);
  }
  if (netns_count >= NETNS_MAX) {
    fprintf(stderr, "too many namespaces\n");
    exit(2);
  }
  snprintf(name, len, "ovl%d%s", (int)getpid(), suffix);
  netns_sh("ip netns add %s", name);
  snprintf(netns_names[netns_count++], sizeof netns_names[0], "%s", name);
  netns_sh("ip -n %s link set lo up", name);
}

/* Moves the calling thread into namespace `name` (only this thread: setns is per thread). */
static inline int netns_enter(const char *name) {
  char path[128];
  snprintf(path, sizeof path, "/run/netns/%s", name);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return -1;
  }
  int rc = setns(fd, CLONE_NEWNET);
  close(fd);
  return rc;
}

#endif
