/*
 * A tiny check harness shared by the C tests: CHECK counts and reports a failed condition with
 * the library's last error; CHECK_STATUS compares a status with the expected one by name.
 * Counters are atomic so checks may run on several threads. Each test ends with
 * `return harness_finish(argv[0]);`.
 */
#ifndef OVERLAY_TEST_HARNESS_H
#define OVERLAY_TEST_HARNESS_H

#define _GNU_SOURCE
#include <ftw.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "overlay.h"

static atomic_int harness_checks;
static atomic_int harness_failures;

#define CHECK(cond)                                                                        \
  do {                                                                                     \
    atomic_fetch_add(&harness_checks, 1);                                                  \
    if (!(cond)) {                                                                         \
      atomic_fetch_add(&harness_failures, 1);                                              \
      fprintf(stderr, "%s:%d: check failed: %s\n  last error: %s\n", __FILE__, __LINE__,   \
              #cond, ovl_last_error());                                                    \
    }                                                                                      \
  } while (0)

#define CHECK_STATUS(call, expected)                                                       \
  do {                                                                                     \
    ovl_status check_status_got_ = (call);                                                 \
    atomic_fetch_add(&harness_checks, 1);                                                  \
    if (check_status_got_ != (expected)) {                                                 \
      atomic_fetch_add(&harness_failures, 1);                                              \
      fprintf(stderr, "%s:%d: %s\n  returned %s, expected %s\n  last error: %s\n", __FILE__, \
              __LINE__, #call, ovl_status_name((int)check_status_got_),                    \
              ovl_status_name((int)(expected)), ovl_last_error());                         \
    }                                                                                      \
  } while (0)

/* The last error mentions `needle` (messages must say what was wrong). */
#define CHECK_ERROR_MENTIONS(needle) CHECK(strstr(ovl_last_error(), (needle)) != NULL)

static inline int harness_remove_entry(const char *path, const struct stat *sb, int flag,
                                struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* A fresh temporary directory, removed with everything in it at exit (even after failures). */
static char harness_dir[64];

static inline void harness_cleanup(void) {
  if (harness_dir[0] != '\0') {
    nftw(harness_dir, harness_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    harness_dir[0] = '\0';
  }
}

static inline const char *harness_tempdir(void) {
  if (harness_dir[0] == '\0') {
    strcpy(harness_dir, "/tmp/overlay-ctest-XXXXXX");
    if (mkdtemp(harness_dir) == NULL) {
      perror("mkdtemp");
      exit(2);
    }
    atexit(harness_cleanup);
  }
  return harness_dir;
}

/* A file:// store URL in the temporary directory; `name` picks the database file. */
static inline void harness_store_url(char *buf, size_t len, const char *name) {
  snprintf(buf, len, "file://%s/%s.db", harness_tempdir(), name);
}

static inline int harness_finish(const char *program) {
  int checks = atomic_load(&harness_checks);
  int failures = atomic_load(&harness_failures);
  printf("%s: %d checks, %d failed\n", program, checks, failures);
  return failures == 0 ? 0 : 1;
}

#endif
