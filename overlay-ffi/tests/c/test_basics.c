/* The functions every caller meets first: version, status names, last error, frees, and the
 * failures of ovl_store_open (NULL, bad UTF-8, malformed URLs, unreachable servers). */
#include "harness.h" /* first: it sets _GNU_SOURCE */

#include <pthread.h>

static void *other_thread_sees_its_own_last_error(void *arg) {
  (void)arg;
  /* Fresh thread: no failure yet, whatever the main thread did. */
  CHECK(strcmp(ovl_last_error(), "") == 0);
  ovl_store *store = NULL;
  CHECK_STATUS(ovl_store_open("no-scheme-here", &store), OVL_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("no-scheme-here");
  return NULL;
}

int main(int argc, char **argv) {
  (void)argc;

  /* Before any failure the last error is empty, never NULL. */
  CHECK(ovl_last_error() != NULL);
  CHECK(strcmp(ovl_last_error(), "") == 0);

  /* Version: static, "MAJOR.MINOR.PATCH". */
  const char *version = ovl_version();
  unsigned major, minor, patch;
  CHECK(version != NULL && sscanf(version, "%u.%u.%u", &major, &minor, &patch) == 3);
  CHECK(ovl_version() == version);

  /* Status numbers are ABI: fixed values and names. */
  CHECK(OVL_OK == 0 && OVL_ERR_NOT_FOUND == 1 && OVL_ERR_INTERNAL == 10);
  CHECK(OVL_ERR_NULL_ARGUMENT == 11 && OVL_ERR_UTF8 == 12 && OVL_ERR_PANIC == 13 &&
        OVL_ERR_JSON == 14);
  CHECK(strcmp(ovl_status_name(OVL_OK), "OVL_OK") == 0);
  CHECK(strcmp(ovl_status_name(OVL_ERR_CONFLICT), "OVL_ERR_CONFLICT") == 0);
  CHECK(strcmp(ovl_status_name(OVL_ERR_JSON), "OVL_ERR_JSON") == 0);
  CHECK(strcmp(ovl_status_name(-1), "OVL_UNKNOWN") == 0);
  CHECK(strcmp(ovl_status_name(1000), "OVL_UNKNOWN") == 0);

  /* Every free function accepts NULL. */
  ovl_string_free(NULL);
  ovl_bytes_free(NULL, 0);
  ovl_store_free(NULL);

  /* NULL arguments, with the out-pointer left untouched. */
  ovl_store *const sentinel = (ovl_store *)&major;
  ovl_store *store = sentinel;
  CHECK_STATUS(ovl_store_open(NULL, &store), OVL_ERR_NULL_ARGUMENT);
  CHECK_ERROR_MENTIONS("url");
  CHECK(store == sentinel);
  CHECK_STATUS(ovl_store_open("file:///tmp/x.db", NULL), OVL_ERR_NULL_ARGUMENT);
  CHECK_ERROR_MENTIONS("out");

  /* Bad UTF-8. */
  CHECK_STATUS(ovl_store_open("file:///tmp/\xff\xfe.db", &store), OVL_ERR_UTF8);
  CHECK_ERROR_MENTIONS("UTF-8");
  CHECK(store == sentinel);

  /* Malformed URLs are invalid arguments, named in the message with a hint. */
  const char *bad_urls[] = {"", "no-scheme-here", "gopher://h:1/p", "etcd://h:notaport/p",
                            "etcd://h:2379/p?timeout=forever", "etcd://h:2379/p?nonsense=1"};
  for (size_t i = 0; i < sizeof bad_urls / sizeof bad_urls[0]; i++) {
    CHECK_STATUS(ovl_store_open(bad_urls[i], &store), OVL_ERR_INVALID_ARGUMENT);
    CHECK(store == sentinel);
    CHECK(strchr(ovl_last_error(), '(') != NULL); /* every message carries a hint */
  }

  /* Stores that cannot be reached: a refused connection is unavailable; a server that never
   * answers within the URL's timeout is a timeout (port 1 on loopback has no listener). The
   * refusal answers at once: its budget is one that valgrind cannot use up. */
  CHECK_STATUS(ovl_store_open("etcd://127.0.0.1:1/x?timeout=60s", &store), OVL_ERR_UNAVAILABLE);
  CHECK_ERROR_MENTIONS("127.0.0.1:1");
  CHECK_STATUS(ovl_store_open("zk://127.0.0.1:1/x?timeout=500ms", &store), OVL_ERR_TIMEOUT);
  CHECK_ERROR_MENTIONS("timeout");
  CHECK(store == sentinel);

  /* The message names the function, and stays put across successful calls. */
  CHECK_STATUS(ovl_store_open("gopher://h:1/p", &store), OVL_ERR_INVALID_ARGUMENT);
  const char *message = ovl_last_error();
  CHECK(strncmp(message, "ovl_store_open: ", 16) == 0);
  CHECK(strstr(message, "gopher") != NULL);
  (void)ovl_version();
  CHECK(ovl_last_error() == message);

  /* Last errors are per thread. */
  pthread_t thread;
  CHECK(pthread_create(&thread, NULL, other_thread_sees_its_own_last_error, NULL) == 0);
  CHECK(pthread_join(thread, NULL) == 0);
  CHECK(strstr(ovl_last_error(), "gopher") != NULL);

  return harness_finish(argv[0]);
}
