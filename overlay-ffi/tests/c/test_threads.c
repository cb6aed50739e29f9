/* One ovl_store handle shared by several pthreads at once: racing compare-and-swap
 * increments never lose an update, each thread's own keys round-trip, and each thread's
 * last error stays its own while the others fail differently. */
#include "harness.h" /* first: it sets _GNU_SOURCE */

#include <pthread.h>
#include <inttypes.h>

enum { THREADS = 8, INCREMENTS = 25 };

static ovl_store *shared;

/* Reads the counter, adds one and writes it back with CAS, retrying on conflict. */
static void increment(void) {
  for (int attempt = 0; attempt < 10000; attempt++) {
    uint8_t *value = NULL;
    size_t len = 0;
    uint64_t version = 0;
    if (ovl_store_get(shared, "counter", &value, &len, &version) != OVL_OK) {
      CHECK(!"counter readable");
      return;
    }
    char text[32] = {0};
    memcpy(text, value, len < sizeof text - 1 ? len : sizeof text - 1);
    ovl_bytes_free(value, len);
    char next[32];
    int n = snprintf(next, sizeof next, "%ld", strtol(text, NULL, 10) + 1);
    ovl_status status =
        ovl_store_cas(shared, "counter", (const uint8_t *)next, (size_t)n, version, NULL);
    if (status == OVL_OK) {
      return;
    }
    CHECK_STATUS(status, OVL_ERR_CONFLICT);
    if (status != OVL_ERR_CONFLICT) {
      return;
    }
  }
  CHECK(!"increment gave up after 10000 conflicts");
}

static void *worker(void *arg) {
  int id = (int)(intptr_t)arg;
  char key[64], missing[64], value_text[32];
  snprintf(key, sizeof key, "threads/%d", id);
  snprintf(missing, sizeof missing, "missing/thread-%d", id);
  for (int i = 0; i < INCREMENTS; i++) {
    increment();
    int n = snprintf(value_text, sizeof value_text, "%d-%d", id, i);
    CHECK_STATUS(ovl_store_put(shared, key, (const uint8_t *)value_text, (size_t)n, NULL), OVL_OK);
    uint8_t *value = NULL;
    size_t len = 0;
    CHECK_STATUS(ovl_store_get(shared, key, &value, &len, NULL), OVL_OK);
    CHECK(len == (size_t)n && value != NULL && memcmp(value, value_text, len) == 0);
    ovl_bytes_free(value, len);
    /* Fail in a way only this thread does: the message must name this thread's key. */
    if (id % 2 == 0) {
      CHECK_STATUS(ovl_store_get(shared, missing, &value, &len, NULL), OVL_ERR_NOT_FOUND);
    } else {
      CHECK_STATUS(ovl_store_create(shared, key, (const uint8_t *)"x", 1, NULL),
                   OVL_ERR_ALREADY_EXISTS);
    }
    CHECK_ERROR_MENTIONS(id % 2 == 0 ? missing : key);
    char *json = NULL;
    CHECK_STATUS(ovl_store_list(shared, "threads", &json), OVL_OK);
    CHECK(json != NULL && strstr(json, key) != NULL);
    ovl_string_free(json);
  }
  return NULL;
}

int main(int argc, char **argv) {
  (void)argc;
  char url[256];
  harness_store_url(url, sizeof url, "threads");
  CHECK_STATUS(ovl_store_open(url, &shared), OVL_OK);
  if (shared == NULL) {
    return harness_finish(argv[0]);
  }
  CHECK_STATUS(ovl_store_put(shared, "counter", (const uint8_t *)"0", 1, NULL), OVL_OK);
  pthread_t threads[THREADS];
  for (int i = 0; i < THREADS; i++) {
    CHECK(pthread_create(&threads[i], NULL, worker, (void *)(intptr_t)i) == 0);
  }
  for (int i = 0; i < THREADS; i++) {
    CHECK(pthread_join(threads[i], NULL) == 0);
  }
  uint8_t *value = NULL;
  size_t len = 0;
  CHECK_STATUS(ovl_store_get(shared, "counter", &value, &len, NULL), OVL_OK);
  char text[32] = {0};
  if (value != NULL) {
    memcpy(text, value, len < sizeof text - 1 ? len : sizeof text - 1);
  }
  ovl_bytes_free(value, len);
  CHECK(strtol(text, NULL, 10) == THREADS * INCREMENTS);
  if (strtol(text, NULL, 10) != THREADS * INCREMENTS) {
    fprintf(stderr, "counter is %s, expected %d\n", text, THREADS * INCREMENTS);
  }
  ovl_store_free(shared);
  return harness_finish(argv[0]);
}
