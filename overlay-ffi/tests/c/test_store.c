/* Every ovl_store function on the embedded file:// store: round trips, versions, each
 * conditional write's failure code, bad keys, NULL and bad UTF-8 arguments with out-pointers
 * left untouched, listing JSON, ephemeral keys, persistence, and OVL_ERR_UNAVAILABLE after
 * close. */
#include "harness.h"

static const uint8_t HELLO[] = "hello";

static void round_trips_and_versions(ovl_store *store) {
  uint64_t v1 = 0, v2 = 0, version = 0;
  CHECK_STATUS(ovl_store_put(store, "greeting", HELLO, 5, &v1), OVL_OK);
  CHECK(v1 > 0);
  uint8_t *value = NULL;
  size_t len = 0;
  CHECK_STATUS(ovl_store_get(store, "greeting", &value, &len, &version), OVL_OK);
  CHECK(len == 5 && value != NULL && memcmp(value, "hello", 5) == 0);
  CHECK(version == v1);
  ovl_bytes_free(value, len);

  /* Versions increase with each write; the version out-pointer is optional. */
  CHECK_STATUS(ovl_store_put(store, "greeting", (const uint8_t *)"hi", 2, &v2), OVL_OK);
  CHECK(v2 > v1);
  CHECK_STATUS(ovl_store_put(store, "greeting", (const uint8_t *)"hey", 3, NULL), OVL_OK);
  CHECK_STATUS(ovl_store_get(store, "greeting", &value, &len, NULL), OVL_OK);
  CHECK(len == 3 && memcmp(value, "hey", 3) == 0);
  ovl_bytes_free(value, len);

  /* An empty value comes back as NULL with length 0; a NULL value with length 0 is fine. */
  CHECK_STATUS(ovl_store_put(store, "empty", NULL, 0, NULL), OVL_OK);
  value = (uint8_t *)HELLO;
  len = 99;
  CHECK_STATUS(ovl_store_get(store, "empty", &value, &len, &version), OVL_OK);
  CHECK(value == NULL && len == 0);
  ovl_bytes_free(value, len);

  /* Binary values survive, embedded NULs included. */
  const uint8_t blob[] = {0x00, 0xff, 0x10, 0x00};
  CHECK_STATUS(ovl_store_put(store, "bin/blob", blob, sizeof blob, NULL), OVL_OK);
  CHECK_STATUS(ovl_store_get(store, "bin/blob", &value, &len, NULL), OVL_OK);
  CHECK(len == sizeof blob && memcmp(value, blob, sizeof blob) == 0);
  ovl_bytes_free(value, len);
}

static void conditional_writes(ovl_store *store) {
  uint64_t version = 0, newer = 0, untouched = 12345;
  CHECK_STATUS(ovl_store_create(store, "names/my-net", (const uint8_t *)"id1", 3, &version),
               OVL_OK);
  CHECK_STATUS(ovl_store_create(store, "names/my-net", (const uint8_t *)"id2", 3, &untouched),
               OVL_ERR_ALREADY_EXISTS);
  CHECK_ERROR_MENTIONS("names/my-net");
  CHECK(untouched == 12345);

  /* CAS: a stale version conflicts and changes nothing; the current one wins. */
  CHECK_STATUS(ovl_store_cas(store, "names/my-net", (const uint8_t *)"id3", 3, version + 100,
                             &untouched),
               OVL_ERR_CONFLICT);
  CHECK(untouched == 12345);
  CHECK_STATUS(ovl_store_cas(store, "names/my-net", (const uint8_t *)"id4", 3, version, &newer),
               OVL_OK);
  CHECK(newer > version);
  CHECK_STATUS(ovl_store_cas(store, "names/my-net", (const uint8_t *)"id5", 3, version, NULL),
               OVL_ERR_CONFLICT);
  CHECK_STATUS(ovl_store_cas(store, "absent", (const uint8_t *)"x", 1, 1, NULL),
               OVL_ERR_CONFLICT);
  uint8_t *value = NULL;
  size_t len = 0;
  CHECK_STATUS(ovl_store_get(store, "names/my-net", &value, &len, NULL), OVL_OK);
  CHECK(len == 3 && memcmp(value, "id4", 3) == 0);
  ovl_bytes_free(value, len);

  /* Compare-and-delete. */
  CHECK_STATUS(ovl_store_cas_delete(store, "names/my-net", version), OVL_ERR_CONFLICT);
  CHECK_STATUS(ovl_store_cas_delete(store, "absent", 1), OVL_ERR_CONFLICT);
  CHECK_STATUS(ovl_store_cas_delete(store, "names/my-net", newer), OVL_OK);
  CHECK_STATUS(ovl_store_get(store, "names/my-net", &value, &len, NULL), OVL_ERR_NOT_FOUND);

  /* Delete reports whether the key existed; the flag is optional. */
  bool existed = false;
  CHECK_STATUS(ovl_store_put(store, "doomed", HELLO, 5, NULL), OVL_OK);
  CHECK_STATUS(ovl_store_delete(store, "doomed", &existed), OVL_OK);
  CHECK(existed);
  CHECK_STATUS(ovl_store_delete(store, "doomed", &existed), OVL_OK);
  CHECK(!existed);
  CHECK_STATUS(ovl_store_delete(store, "doomed", NULL), OVL_OK);
}

static void not_found_and_bad_arguments(ovl_store *store) {
  uint8_t *const value_sentinel = (uint8_t *)HELLO;
  uint8_t *value = value_sentinel;
  size_t len = 77;
  uint64_t version = 88;
  CHECK_STATUS(ovl_store_get(store, "no/such/key", &value, &len, &version), OVL_ERR_NOT_FOUND);
  CHECK_ERROR_MENTIONS("no/such/key");
  CHECK(value == value_sentinel && len == 77 && version == 88);

  /* Malformed keys are refused before any I/O, by every function. */
  const char *bad_keys[] = {"", "a//b", "../etc", "a/./b", "with space", "tab\there", "/lead"};
  for (size_t i = 0; i < sizeof bad_keys / sizeof bad_keys[0]; i++) {
    CHECK_STATUS(ovl_store_get(store, bad_keys[i], &value, &len, &version),
                 OVL_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(ovl_store_put(store, bad_keys[i], HELLO, 5, &version), OVL_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(ovl_store_create(store, bad_keys[i], HELLO, 5, NULL), OVL_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(ovl_store_cas(store, bad_keys[i], HELLO, 5, 1, NULL), OVL_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(ovl_store_put_ephemeral(store, bad_keys[i], HELLO, 5, NULL),
                 OVL_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(ovl_store_delete(store, bad_keys[i], NULL), OVL_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(ovl_store_cas_delete(store, bad_keys[i], 1), OVL_ERR_INVALID_ARGUMENT);
  }
  CHECK(value == value_sentinel && len == 77 && version == 88);
  char *json = (char *)HELLO;
  CHECK_STATUS(ovl_store_list(store, "a//b", &json), OVL_ERR_INVALID_ARGUMENT);
  CHECK(json == (char *)HELLO);

  /* NULL handle, key, value and out-pointers. */
  CHECK_STATUS(ovl_store_get(NULL, "k", &value, &len, NULL), OVL_ERR_NULL_ARGUMENT);
  CHECK_ERROR_MENTIONS("store");
  CHECK_STATUS(ovl_store_get(store, NULL, &value, &len, NULL), OVL_ERR_NULL_ARGUMENT);
  CHECK_ERROR_MENTIONS("key");
  CHECK_STATUS(ovl_store_get(store, "k", NULL, &len, NULL), OVL_ERR_NULL_ARGUMENT);
  CHECK_ERROR_MENTIONS("out_value");
  CHECK_STATUS(ovl_store_get(store, "k", &value, NULL, NULL), OVL_ERR_NULL_ARGUMENT);
  CHECK_ERROR_MENTIONS("out_len");
  CHECK_STATUS(ovl_store_put(NULL, "k", HELLO, 5, NULL), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_store_put(store, NULL, HELLO, 5, NULL), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_store_put(store, "k", NULL, 5, NULL), OVL_ERR_NULL_ARGUMENT);
  CHECK_ERROR_MENTIONS("value");
  CHECK_STATUS(ovl_store_create(store, "k", NULL, 1, NULL), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_store_cas(store, "k", NULL, 1, 1, NULL), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_store_cas(NULL, "k", HELLO, 1, 1, NULL), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_store_put_ephemeral(store, NULL, HELLO, 1, NULL), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_store_delete(NULL, "k", NULL), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_store_delete(store, NULL, NULL), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_store_cas_delete(NULL, "k", 1), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_store_cas_delete(store, NULL, 1), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_store_list(NULL, "", &json), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_store_list(store, NULL, &json), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_store_list(store, "", NULL), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_store_close(NULL), OVL_ERR_NULL_ARGUMENT);
  /* A refused write wrote nothing. */
  CHECK_STATUS(ovl_store_get(store, "k", &value, &len, NULL), OVL_ERR_NOT_FOUND);

  /* Invalid UTF-8 in keys and prefixes. */
  CHECK_STATUS(ovl_store_get(store, "bad\xc3", &value, &len, NULL), OVL_ERR_UTF8);
  CHECK_STATUS(ovl_store_put(store, "\xff", HELLO, 5, NULL), OVL_ERR_UTF8);
  CHECK_STATUS(ovl_store_delete(store, "\x80x", NULL), OVL_ERR_UTF8);
  CHECK_STATUS(ovl_store_list(store, "pre\xfe", &json), OVL_ERR_UTF8);
  CHECK_ERROR_MENTIONS("offset 3");
  CHECK(value == value_sentinel && json == (char *)HELLO);
}

static void listing(ovl_store *store) {
  CHECK_STATUS(ovl_store_put(store, "list/b", (const uint8_t *)"two \"quoted\"", 12, NULL), OVL_OK);
  CHECK_STATUS(ovl_store_put(store, "list/a", (const uint8_t *)"one", 3, NULL), OVL_OK);
  const uint8_t raw[] = {0xff, 0xfe, 0x00}; /* not UTF-8 */
  CHECK_STATUS(ovl_store_put(store, "list/c/deep", raw, sizeof raw, NULL), OVL_OK);
  CHECK_STATUS(ovl_store_put(store, "listed-not", (const uint8_t *)"x", 1, NULL), OVL_OK);
  char *json = NULL;
  CHECK_STATUS(ovl_store_list(store, "list/", &json), OVL_OK);
  CHECK(json != NULL);
  if (json != NULL) {
    const char *a = strstr(json, "\"key\":\"list/a\"");
    const char *b = strstr(json, "\"key\":\"list/b\"");
    const char *c = strstr(json, "\"key\":\"list/c/deep\"");
    CHECK(a != NULL && b != NULL && c != NULL && a < b && b < c); /* sorted */
    CHECK(strstr(json, "\"value\":\"one\"") != NULL);
    CHECK(strstr(json, "\"value\":\"two \\\"quoted\\\"\"") != NULL);
    CHECK(strstr(json, "\"value_hex\":\"fffe00\"") != NULL);
    CHECK(strstr(json, "listed-not") == NULL);
    CHECK(strstr(json, "\"revision\":") != NULL);
    ovl_string_free(json);
  }
  CHECK_STATUS(ovl_store_list(store, "nothing/here", &json), OVL_OK);
  CHECK(json != NULL && strstr(json, "\"kvs\":[]") != NULL);
  ovl_string_free(json);
}

int main(int argc, char **argv) {
  (void)argc;
  char url[256];
  harness_store_url(url, sizeof url, "store");
  ovl_store *store = NULL;
  CHECK_STATUS(ovl_store_open(url, &store), OVL_OK);
  if (store == NULL) {
    return harness_finish(argv[0]);
  }
  round_trips_and_versions(store);
  conditional_writes(store);
  not_found_and_bad_arguments(store);
  listing(store);

  /* Ephemeral keys live as long as the session. */
  CHECK_STATUS(ovl_store_put_ephemeral(store, "hosts/me", (const uint8_t *)"10.0.0.1", 8, NULL),
               OVL_OK);
  uint8_t *value = NULL;
  size_t len = 0;
  CHECK_STATUS(ovl_store_get(store, "hosts/me", &value, &len, NULL), OVL_OK);
  ovl_bytes_free(value, len);

  /* After close every call is refused as unavailable; closing again is fine. */
  CHECK_STATUS(ovl_store_close(store), OVL_OK);
  CHECK_STATUS(ovl_store_get(store, "greeting", &value, &len, NULL), OVL_ERR_UNAVAILABLE);
  CHECK_STATUS(ovl_store_put(store, "greeting", HELLO, 5, NULL), OVL_ERR_UNAVAILABLE);
  char *json = NULL;
  CHECK_STATUS(ovl_store_list(store, "", &json), OVL_ERR_UNAVAILABLE);
  CHECK_STATUS(ovl_store_close(store), OVL_OK);
  ovl_store_free(store);

  /* Reopened: persistent keys are there, the ephemeral one went with its session. */
  store = NULL;
  CHECK_STATUS(ovl_store_open(url, &store), OVL_OK);
  if (store != NULL) {
    CHECK_STATUS(ovl_store_get(store, "greeting", &value, &len, NULL), OVL_OK);
    CHECK(len == 3 && memcmp(value, "hey", 3) == 0);
    ovl_bytes_free(value, len);
    CHECK_STATUS(ovl_store_get(store, "hosts/me", &value, &len, NULL), OVL_ERR_NOT_FOUND);
    /* Freeing without closing first closes too. */
    ovl_store_free(store);
  }
  return harness_finish(argv[0]);
}
