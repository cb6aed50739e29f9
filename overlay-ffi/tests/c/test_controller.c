/* Every controller function through the C API, on the embedded store with one host (a
 * namespace with an underlay address) and containers as namespaces: networks created, listed,
 * inspected and removed; containers connected, resolved and disconnected; events delivered to
 * a callback; several threads on one controller; and every error code each function can give
 * (NULL, bad UTF-8, bad JSON, unknown keys, not found, already exists, conflict, invalid
 * argument, unavailable after close), with out-pointers left untouched. JSON arguments follow
 * one rule: not JSON or not of the documented shape (a wrong type, an unknown or missing key)
 * is OVL_ERR_JSON; the right shape with a bad value (a subnet, an address, a number out of
 * range) is OVL_ERR_INVALID_ARGUMENT, and the message names the field. Needs root. */
#include "harness.h" /* first: it sets _GNU_SOURCE */
#include "netns.h"

#include <pthread.h>
#include <time.h>

static char host[32], host2[32], c1[32], c2[32], c3[32];
static char config[512], config2[512];

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void setup(void) {
  netns_add(host, sizeof host, "h1");
  /* An underlay link with an address (a veth pair: the dummy driver may be missing). */
  netns_sh("ip -n %s link add u0 type veth peer name u1", host);
  netns_sh("ip -n %s link set u1 up", host);
  netns_sh("ip -n %s addr add 192.168.240.1/24 dev u0", host);
  netns_sh("ip -n %s link set u0 up", host);
  /* A second host on the same store, to see events of the first one's containers. */
  netns_add(host2, sizeof host2, "h2");
  netns_sh("ip -n %s link add u0 type veth peer name u1", host2);
  netns_sh("ip -n %s link set u1 up", host2);
  netns_sh("ip -n %s addr add 192.168.241.1/24 dev u0", host2);
  netns_sh("ip -n %s link set u0 up", host2);
  netns_add(c1, sizeof c1, "c1");
  netns_add(c2, sizeof c2, "c2");
  netns_add(c3, sizeof c3, "c3");
  char url[256];
  harness_store_url(url, sizeof url, "controller");
  snprintf(config, sizeof config,
           "{\"store\": \"%s\", \"advertise\": \"192.168.240.1\", \"host_id\": \"host1\", "
           "\"host_netns\": \"/run/netns/%s\", \"host_ttl\": 2000}",
           url, host);
  snprintf(config2, sizeof config2,
           "{\"store\": \"%s\", \"advertise\": \"192.168.241.1\", \"host_id\": \"host2\", "
           "\"host_netns\": \"/run/netns/%s\", \"host_ttl\": 2000}",
           url, host2);
}

static void open_errors(void) {
  ovl_controller *const sentinel = (ovl_controller *)&config;
  ovl_controller *ctl = sentinel;
  CHECK_STATUS(ovl_controller_open(NULL, &ctl), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_controller_open(config, NULL), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_controller_open("{\"advertise\": \"\xff\"}", &ctl), OVL_ERR_UTF8);
  CHECK_STATUS(ovl_controller_open("{\"store\": ", &ctl), OVL_ERR_JSON);
  CHECK_STATUS(ovl_controller_open("[1, 2]", &ctl), OVL_ERR_JSON);
  CHECK_STATUS(ovl_controller_open("{\"mtuu\": 1400}", &ctl), OVL_ERR_JSON);
  CHECK_ERROR_MENTIONS("mtuu");
  CHECK_STATUS(ovl_controller_open("{\"mtu\": \"big\"}", &ctl), OVL_ERR_JSON);
  CHECK_STATUS(ovl_controller_open("store=file:///x", &ctl), OVL_ERR_JSON);
  CHECK_STATUS(ovl_controller_open("{\"default_pools\": 5}", &ctl), OVL_ERR_JSON);
  CHECK_STATUS(ovl_controller_open("{\"default_pools\": [{\"base\": \"10.0.0.0/8\"}]}", &ctl),
               OVL_ERR_JSON);
  CHECK_ERROR_MENTIONS("size");
  /* Well-formed documents with bad values: refused before anything is opened. */
  CHECK_STATUS(ovl_controller_open("{\"store\": \"nonsense\", \"advertise\": \"192.168.240.1\"}",
                                   &ctl),
               OVL_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(ovl_controller_open(
                   "{\"default_pools\": [{\"base\": \"10.999.0.0/8\", \"size\": 24}]}", &ctl),
               OVL_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("default_pools[0].base \"10.999.0.0/8\" is not a valid subnet");
  CHECK_STATUS(ovl_controller_open("{\"vxlan_port\": 70000}", &ctl), OVL_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("vxlan_port 70000 is out of range");
  CHECK_STATUS(ovl_controller_open("{\"host_ttl\": -1}", &ctl), OVL_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(ovl_controller_open("{\"mtu\": 1400.5}", &ctl), OVL_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("not a whole number");
  CHECK(ctl == sentinel);
}

static void networks(ovl_controller *ctl) {
  char *json = NULL;
  CHECK_STATUS(ovl_network_create(ctl, "my-net", "{\"subnets\": [{\"subnet\": \"10.0.9.0/24\"}]}",
                                  &json),
               OVL_OK);
  CHECK(json != NULL && strstr(json, "\"Name\":\"my-net\"") != NULL);
  CHECK(json != NULL && strstr(json, "\"Scope\":\"global\"") != NULL);
  CHECK(json != NULL && strstr(json, "\"Subnet\":\"10.0.9.0/24\"") != NULL);
  char id[65] = {0};
  const char *at = json == NULL ? NULL : strstr(json, "\"Id\":\"");
  CHECK(at != NULL);
  if (at != NULL) {
    memcpy(id, at + 6, 64);
  }
  ovl_string_free(json);
  /* Default options (NULL), and no result wanted (NULL). */
  CHECK_STATUS(ovl_network_create(ctl, "other-net", NULL, NULL), OVL_OK);

  char *const sentinel = (char *)"untouched";
  json = sentinel;
  CHECK_STATUS(ovl_network_create(ctl, "my-net", NULL, &json), OVL_ERR_ALREADY_EXISTS);
  CHECK_ERROR_MENTIONS("my-net");
  CHECK_STATUS(ovl_network_create(ctl, "bridge", NULL, &json), OVL_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(ovl_network_create(ctl, "bad name", NULL, &json), OVL_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(ovl_network_create(ctl, "x-net", "{\"subnet\": \"10.0.10.0/24\"}", &json),
               OVL_ERR_JSON);
  CHECK_ERROR_MENTIONS("subnet");
  CHECK_STATUS(ovl_network_create(ctl, "x-net", "{", &json), OVL_ERR_JSON);
  CHECK_STATUS(ovl_network_create(ctl, "x-net", "subnets", &json), OVL_ERR_JSON);
  CHECK_STATUS(ovl_network_create(ctl, "x-net", "{\"subnets\": 5}", &json), OVL_ERR_JSON);
  CHECK_STATUS(ovl_network_create(ctl, "x-net", "{\"subnets\": [{\"subnet\": 10}]}", &json),
               OVL_ERR_JSON);
  CHECK_STATUS(ovl_network_create(ctl, "x-net", "{\"subnets\": [{\"gateway\": \"10.0.10.1\"}]}",
                                  &json),
               OVL_ERR_JSON);
  CHECK_ERROR_MENTIONS("subnet");
  CHECK_STATUS(ovl_network_create(ctl, "x-net", "{\"vni\": \"4097\"}", &json), OVL_ERR_JSON);
  /* Well-formed documents with bad values. */
  CHECK_STATUS(ovl_network_create(ctl, "x-net", "{\"subnets\": [{\"subnet\": \"10.999.0.0/24\"}]}",
                                  &json),
               OVL_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("subnets[0].subnet \"10.999.0.0/24\" is not a valid subnet");
  CHECK_ERROR_MENTIONS("ADDRESS/PREFIX");
  CHECK_STATUS(ovl_network_create(ctl, "x-net", "{\"subnets\": [{\"subnet\": \"10.0.300.0/24\"}]}",
                                  &json),
               OVL_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(ovl_network_create(ctl, "x-net",
                                  "{\"subnets\": [{\"subnet\": \"10.0.10.0/24\", "
                                  "\"gateway\": \"10.0.10.256\"}]}",
                                  &json),
               OVL_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("subnets[0].gateway \"10.0.10.256\" is not a valid IP address");
  CHECK_STATUS(ovl_network_create(ctl, "x-net",
                                  "{\"subnets\": [{\"subnet\": \"10.0.10.0/24\", "
                                  "\"aux_addresses\": {\"router\": \"router\"}}]}",
                                  &json),
               OVL_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("subnets[0].aux_addresses.router");
  CHECK_STATUS(ovl_network_create(ctl, "x-net", "{\"vni\": 16777216}", &json),
               OVL_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("vni 16777216 is out of range");
  CHECK_STATUS(ovl_network_create(ctl, "x-net", "{\"vni\": 4294967296}", &json),
               OVL_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(ovl_network_create(ctl, "x-\xfe", NULL, &json), OVL_ERR_UTF8);
  CHECK_STATUS(ovl_network_create(ctl, NULL, NULL, &json), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_network_create(NULL, "x-net", NULL, &json), OVL_ERR_NULL_ARGUMENT);
  CHECK(json == sentinel);

  CHECK_STATUS(ovl_network_list(ctl, &json), OVL_OK);
  CHECK(json != NULL && strstr(json, "\"Name\":\"my-net\"") != NULL);
  CHECK(json != NULL && strstr(json, "\"Name\":\"other-net\"") != NULL);
  CHECK(json != NULL && strstr(json, id) != NULL);
  CHECK(json != NULL && strstr(json, "x-net") == NULL); /* refused creates made nothing */
  ovl_string_free(json);
  CHECK_STATUS(ovl_network_list(ctl, NULL), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_network_list(NULL, &json), OVL_ERR_NULL_ARGUMENT);

  /* Inspect by name, full id and id prefix. */
  char prefix[13];
  snprintf(prefix, sizeof prefix, "%.12s", id);
  const char *keys[] = {"my-net", id, prefix};
  for (size_t i = 0; i < 3; i++) {
    json = NULL;
    CHECK_STATUS(ovl_network_inspect(ctl, keys[i], &json), OVL_OK);
    CHECK(json != NULL && strstr(json, "\"Name\":\"my-net\"") != NULL);
    CHECK(json != NULL && strstr(json, "com.docker.network.driver.overlay.vxlanid_list") != NULL);
    ovl_string_free(json);
  }
  json = sentinel;
  CHECK_STATUS(ovl_network_inspect(ctl, "no-such-net", &json), OVL_ERR_NOT_FOUND);
  CHECK_ERROR_MENTIONS("no-such-net");
  CHECK_STATUS(ovl_network_inspect(ctl, "\xc3(", &json), OVL_ERR_UTF8);
  CHECK_STATUS(ovl_network_inspect(ctl, NULL, &json), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_network_inspect(ctl, "my-net", NULL), OVL_ERR_NULL_ARGUMENT);
  CHECK(json == sentinel);

  CHECK_STATUS(ovl_network_remove(ctl, "other-net"), OVL_OK);
  CHECK_STATUS(ovl_network_remove(ctl, "other-net"), OVL_ERR_NOT_FOUND);
  CHECK_STATUS(ovl_network_remove(ctl, NULL), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_network_remove(NULL, "my-net"), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_network_remove(ctl, "\xff"), OVL_ERR_UTF8);
}

static void containers(ovl_controller *ctl) {
  char spec1[256], spec2[256];
  snprintf(spec1, sizeof spec1,
           "{\"id\": \"c1\", \"name\": \"zookeeper1\", \"netns\": {\"path\": \"/run/netns/%s\"}, "
           "\"aliases\": [\"zk\"]}",
           c1);
  snprintf(spec2, sizeof spec2,
           "{\"id\": \"c2\", \"name\": \"zookeeper2\", \"netns\": {\"path\": \"/run/netns/%s\"}, "
           "\"ipv4\": \"10.0.9.20\"}",
           c2);
  char *json = NULL;
  CHECK_STATUS(ovl_connect(ctl, "my-net", spec1, &json), OVL_OK);
  CHECK(json != NULL && strstr(json, "\"Name\":\"zookeeper1\"") != NULL);
  CHECK(json != NULL && strstr(json, "\"IPv4Address\":\"10.0.9.") != NULL);
  ovl_string_free(json);
  CHECK_STATUS(ovl_connect(ctl, "my-net", spec2, NULL), OVL_OK);

  /* The container got its interface, with the allocated address, in its own namespace. */
  char cmd[160];
  snprintf(cmd, sizeof cmd, "ip -n %s -4 addr show | grep -q 'inet 10.0.9.20/24'", c2);
  CHECK(system(cmd) == 0);

  char *const sentinel = (char *)"untouched";
  json = sentinel;
  CHECK_STATUS(ovl_connect(ctl, "no-such-net", spec1, &json), OVL_ERR_NOT_FOUND);
  CHECK_STATUS(ovl_connect(ctl, "my-net", spec1, &json), OVL_ERR_ALREADY_EXISTS);
  CHECK_STATUS(ovl_connect(ctl, "my-net", "{\"id\": \"c3\"}", &json), OVL_ERR_JSON);
  CHECK_STATUS(ovl_connect(ctl, "my-net",
                           "{\"id\": \"c3\", \"name\": \"n\", \"netns\": {\"pid\": 1}, "
                           "\"colour\": \"red\"}",
                           &json),
               OVL_ERR_JSON);
  CHECK_ERROR_MENTIONS("colour");
  CHECK_STATUS(ovl_connect(ctl, "my-net",
                           "{\"id\": \"c3\", \"name\": \"n\", \"netns\": {\"pid\": \"1\"}}", &json),
               OVL_ERR_JSON);
  CHECK_STATUS(ovl_connect(ctl, "my-net",
                           "{\"id\": \"c3\", \"name\": \"n\", \"netns\": {\"pid\": 1}, "
                           "\"aliases\": \"zk\"}",
                           &json),
               OVL_ERR_JSON);
  CHECK_STATUS(ovl_connect(ctl, "my-net",
                           "{\"id\": \"c 3\", \"name\": \"n\", \"netns\": {\"pid\": 1}}", &json),
               OVL_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(ovl_connect(ctl, "my-net",
                           "{\"id\": \"c3\", \"name\": \"n\", \"netns\": {\"pid\": 1}, "
                           "\"ipv4\": \"10.0.9.300\"}",
                           &json),
               OVL_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("ipv4 \"10.0.9.300\" is not a valid IPv4 address");
  CHECK_STATUS(ovl_connect(ctl, "my-net",
                           "{\"id\": \"c3\", \"name\": \"n\", \"netns\": {\"pid\": 1}, "
                           "\"ipv6\": \"10.0.9.30\"}",
                           &json),
               OVL_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("ipv6");
  CHECK_STATUS(ovl_connect(ctl, "my-net",
                           "{\"id\": \"c3\", \"name\": \"n\", \"netns\": {\"pid\": 99999999999}}",
                           &json),
               OVL_ERR_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("netns.pid");
  CHECK_STATUS(ovl_connect(ctl, "my-net",
                           "{\"id\": \"c3\", \"name\": \"n\", \"netns\": {\"path\": "
                           "\"/run/netns/ovl-no-such-namespace\"}}",
                           &json),
               OVL_ERR_NOT_FOUND);
  CHECK_STATUS(ovl_connect(ctl, "my-net", NULL, &json), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_connect(ctl, NULL, spec1, &json), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_connect(NULL, "my-net", spec1, &json), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_connect(ctl, "my-net\x80", spec1, &json), OVL_ERR_UTF8);
  CHECK(json == sentinel);

  /* Names: `name`, `name.network` and aliases. */
  char *ip = NULL;
  CHECK_STATUS(ovl_resolve(ctl, "zookeeper2", &ip), OVL_OK);
  CHECK(ip != NULL && strcmp(ip, "10.0.9.20") == 0);
  ovl_string_free(ip);
  CHECK_STATUS(ovl_resolve(ctl, "zookeeper2.my-net", &ip), OVL_OK);
  CHECK(ip != NULL && strcmp(ip, "10.0.9.20") == 0);
  ovl_string_free(ip);
  CHECK_STATUS(ovl_resolve(ctl, "zk", &ip), OVL_OK);
  CHECK(ip != NULL && strncmp(ip, "10.0.9.", 7) == 0);
  ovl_string_free(ip);
  CHECK_STATUS(ovl_resolve_all(ctl, "zookeeper2", &json), OVL_OK);
  CHECK(json != NULL && strcmp(json, "[\"10.0.9.20\"]") == 0);
  ovl_string_free(json);
  ip = sentinel;
  CHECK_STATUS(ovl_resolve(ctl, "nobody", &ip), OVL_ERR_NOT_FOUND);
  CHECK_ERROR_MENTIONS("nobody");
  CHECK_STATUS(ovl_resolve(ctl, NULL, &ip), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_resolve(ctl, "zk", NULL), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_resolve(NULL, "zk", &ip), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_resolve(ctl, "zk\xff", &ip), OVL_ERR_UTF8);
  CHECK(ip == sentinel);
  json = sentinel;
  CHECK_STATUS(ovl_resolve_all(ctl, "nobody", &json), OVL_ERR_NOT_FOUND);
  CHECK_STATUS(ovl_resolve_all(ctl, "zk", NULL), OVL_ERR_NULL_ARGUMENT);
  CHECK(json == sentinel);

  /* Inspect shows both containers; removal is refused while they are connected. */
  CHECK_STATUS(ovl_network_inspect(ctl, "my-net", &json), OVL_OK);
  CHECK(json != NULL && strstr(json, "\"c1\":{") != NULL && strstr(json, "\"c2\":{") != NULL);
  CHECK(json != NULL && strstr(json, "\"Host\":\"host1\"") != NULL);
  ovl_string_free(json);
  CHECK_STATUS(ovl_network_remove(ctl, "my-net"), OVL_ERR_CONFLICT);
  CHECK_ERROR_MENTIONS("zookeeper1");

  CHECK_STATUS(ovl_disconnect(ctl, "my-net", "c2"), OVL_OK);
  CHECK_STATUS(ovl_disconnect(ctl, "my-net", "c2"), OVL_ERR_NOT_FOUND);
  CHECK_STATUS(ovl_disconnect(ctl, "no-such-net", "c1"), OVL_ERR_NOT_FOUND);
  CHECK_STATUS(ovl_disconnect(ctl, NULL, "c1"), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_disconnect(ctl, "my-net", NULL), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_disconnect(NULL, "my-net", "c1"), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_disconnect(ctl, "my-net", "c\xff"), OVL_ERR_UTF8);
  CHECK_STATUS(ovl_resolve(ctl, "zookeeper2", &ip), OVL_ERR_NOT_FOUND);
  snprintf(cmd, sizeof cmd, "ip -n %s -4 addr show | grep -q 'inet 10.0.9.20/24'", c2);
  CHECK(system(cmd) != 0);
  /* The released address can be taken again. */
  CHECK_STATUS(ovl_connect(ctl, "my-net", spec2, NULL), OVL_OK);
  CHECK_STATUS(ovl_disconnect(ctl, "my-net", "c2"), OVL_OK);
}

/* Events: what the callback saw, guarded by a mutex. */
static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;
static char seen[8192];
static int nested_ok;
static ovl_controller *watched;

static void record_event(const char *event_json, void *userdata) {
  CHECK(userdata == (void *)&seen);
  pthread_mutex_lock(&seen_lock);
  if (strlen(seen) + strlen(event_json) + 2 < sizeof seen) {
    strcat(seen, event_json);
    strcat(seen, "\n");
  }
  pthread_mutex_unlock(&seen_lock);
  /* Callbacks may call back into the library. */
  char *json = NULL;
  if (ovl_network_list(watched, &json) == OVL_OK) {
    __atomic_store_n(&nested_ok, 1, __ATOMIC_SEQ_CST);
  }
  ovl_string_free(json);
}

static int seen_contains(const char *a, const char *b) {
  pthread_mutex_lock(&seen_lock);
  int found = 0;
  for (const char *line = seen; line != NULL && *line != '\0';) {
    const char *end = strchr(line, '\n');
    size_t len = end == NULL ? strlen(line) : (size_t)(end - line);
    char copy[1024];
    snprintf(copy, sizeof copy, "%.*s", (int)len, line);
    if (strstr(copy, a) != NULL && strstr(copy, b) != NULL) {
      found = 1;
    }
    line = end == NULL ? NULL : end + 1;
  }
  pthread_mutex_unlock(&seen_lock);
  return found;
}

static int wait_seen(const char *a, const char *b) {
  for (int i = 0; i < 100; i++) {
    if (seen_contains(a, b)) {
      return 1;
    }
    sleep_ms(50);
  }
  pthread_mutex_lock(&seen_lock);
  fprintf(stderr, "no event with %s and %s among:\n%s", a, b, seen);
  pthread_mutex_unlock(&seen_lock);
  return 0;
}

/* A second watcher's record, the witness that events were delivered. */
static char witnessed[4096];

static void witness_event(const char *event_json, void *userdata) {
  (void)userdata;
  pthread_mutex_lock(&seen_lock);
  if (strlen(witnessed) + strlen(event_json) + 2 < sizeof witnessed) {
    strcat(witnessed, event_json);
    strcat(witnessed, "\n");
  }
  pthread_mutex_unlock(&seen_lock);
}

static int wait_witnessed(const char *a, const char *b) {
  for (int i = 0; i < 100; i++) {
    pthread_mutex_lock(&seen_lock);
    const char *at = strstr(witnessed, a);
    int found = at != NULL && strstr(at, b) != NULL;
    pthread_mutex_unlock(&seen_lock);
    if (found) {
      return 1;
    }
    sleep_ms(50);
  }
  fprintf(stderr, "the witness saw no %s with %s\n", a, b);
  return 0;
}

static ovl_watcher *self_freeing;
static atomic_int self_freeing_calls;

static void free_myself(const char *event_json, void *userdata) {
  (void)event_json;
  (void)userdata;
  atomic_fetch_add(&self_freeing_calls, 1);
  ovl_watcher_free(__atomic_exchange_n(&self_freeing, NULL, __ATOMIC_SEQ_CST));
}

static void events(ovl_controller *ctl) {
  /* Host 2 watches; host 1 makes the changes. Endpoint events are reported for networks with
   * containers on the watching host, so host 2 keeps one ("anchor") on the network. */
  ovl_controller *ctl2 = NULL;
  CHECK_STATUS(ovl_controller_open(config2, &ctl2), OVL_OK);
  if (ctl2 == NULL) {
    return;
  }
  watched = ctl2;
  ovl_watcher *watcher = NULL;
  CHECK_STATUS(ovl_watch(ctl2, record_event, &seen, &watcher), OVL_OK);
  ovl_watcher *self = NULL;
  CHECK_STATUS(ovl_watch(ctl2, free_myself, NULL, &self), OVL_OK);
  __atomic_store_n(&self_freeing, self, __ATOMIC_SEQ_CST);

  char spec[256], anchor[256];
  snprintf(spec, sizeof spec,
           "{\"id\": \"ev1\", \"name\": \"watched\", \"netns\": {\"path\": \"/run/netns/%s\"}}",
           c2);
  snprintf(anchor, sizeof anchor,
           "{\"id\": \"anchor\", \"name\": \"anchor\", \"netns\": {\"path\": \"/run/netns/%s\"}}",
           c3);
  /* Each step waits for its event: events are what the agent sees through the store's watch,
   * and a change undone before it looked would not be seen. */
  CHECK_STATUS(ovl_network_create(ctl, "events-net", NULL, NULL), OVL_OK);
  CHECK(wait_seen("network_created", "events-net"));
  CHECK_STATUS(ovl_connect(ctl2, "events-net", anchor, NULL), OVL_OK);
  CHECK_STATUS(ovl_connect(ctl, "events-net", spec, NULL), OVL_OK);
  CHECK(wait_seen("endpoint_up", "\"container_id\":\"ev1\""));
  CHECK(wait_seen("endpoint_up", "\"host\":\"host1\""));
  CHECK_STATUS(ovl_disconnect(ctl, "events-net", "ev1"), OVL_OK);
  CHECK(wait_seen("endpoint_down", "\"container_id\":\"ev1\""));
  CHECK_STATUS(ovl_disconnect(ctl2, "events-net", "anchor"), OVL_OK);
  CHECK_STATUS(ovl_network_remove(ctl, "events-net"), OVL_OK);
  CHECK(wait_seen("network_removed", "events-net"));
  CHECK(__atomic_load_n(&nested_ok, __ATOMIC_SEQ_CST) == 1);
  /* The self-freeing watcher stopped after its first event. */
  CHECK(atomic_load(&self_freeing_calls) == 1);

  ovl_watcher_free(watcher);
  /* After free returns, no callback runs: later events, which a watcher still registered
   * (the witness) is seen to receive, are not recorded. */
  ovl_watcher *witness = NULL;
  CHECK_STATUS(ovl_watch(ctl2, witness_event, NULL, &witness), OVL_OK);
  pthread_mutex_lock(&seen_lock);
  size_t before = strlen(seen);
  pthread_mutex_unlock(&seen_lock);
  CHECK_STATUS(ovl_network_create(ctl, "unwatched-net", NULL, NULL), OVL_OK);
  CHECK_STATUS(ovl_network_remove(ctl, "unwatched-net"), OVL_OK);
  CHECK(wait_witnessed("network_removed", "unwatched-net"));
  pthread_mutex_lock(&seen_lock);
  CHECK(strlen(seen) == before);
  pthread_mutex_unlock(&seen_lock);
  ovl_watcher_free(witness);

  ovl_watcher *const sentinel = (ovl_watcher *)&seen;
  watcher = sentinel;
  CHECK_STATUS(ovl_watch(ctl, NULL, NULL, &watcher), OVL_ERR_NULL_ARGUMENT);
  CHECK_ERROR_MENTIONS("callback");
  CHECK_STATUS(ovl_watch(NULL, record_event, NULL, &watcher), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_watch(ctl, record_event, NULL, NULL), OVL_ERR_NULL_ARGUMENT);
  CHECK(watcher == sentinel);
  ovl_watcher_free(NULL);
  ovl_controller_free(ctl2);
}

/* Several threads on one controller: each creates, inspects and removes its own network,
 * and all race to create one shared name, which exactly one of them gets. */
enum { THREADS = 6 };
static ovl_controller *shared;
static atomic_int race_wins, race_losses;

static void *worker(void *arg) {
  int id = (int)(intptr_t)arg;
  char name[32];
  snprintf(name, sizeof name, "thread-%d-net", id);
  CHECK_STATUS(ovl_network_create(shared, name, NULL, NULL), OVL_OK);
  char *json = NULL;
  CHECK_STATUS(ovl_network_inspect(shared, name, &json), OVL_OK);
  CHECK(json != NULL && strstr(json, name) != NULL);
  ovl_string_free(json);
  ovl_status status = ovl_network_create(shared, "race-net", NULL, NULL);
  if (status == OVL_OK) {
    atomic_fetch_add(&race_wins, 1);
  } else {
    CHECK_STATUS(status, OVL_ERR_ALREADY_EXISTS);
    CHECK_ERROR_MENTIONS("race-net"); /* this thread's own last error */
    atomic_fetch_add(&race_losses, 1);
  }
  CHECK_STATUS(ovl_network_list(shared, &json), OVL_OK);
  ovl_string_free(json);
  CHECK_STATUS(ovl_network_remove(shared, name), OVL_OK);
  return NULL;
}

static void threads(ovl_controller *ctl) {
  shared = ctl;
  pthread_t t[THREADS];
  for (int i = 0; i < THREADS; i++) {
    CHECK(pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i) == 0);
  }
  for (int i = 0; i < THREADS; i++) {
    CHECK(pthread_join(t[i], NULL) == 0);
  }
  CHECK(atomic_load(&race_wins) == 1);
  CHECK(atomic_load(&race_losses) == THREADS - 1);
  CHECK_STATUS(ovl_network_remove(ctl, "race-net"), OVL_OK);
}

int main(int argc, char **argv) {
  (void)argc;
  netns_require_root(argv[0]);
  setup();
  open_errors();

  ovl_controller *ctl = NULL;
  CHECK_STATUS(ovl_controller_open(config, &ctl), OVL_OK);
  if (ctl == NULL) {
    return harness_finish(argv[0]);
  }
  char *host_id = NULL;
  CHECK_STATUS(ovl_controller_host_id(ctl, &host_id), OVL_OK);
  CHECK(host_id != NULL && strcmp(host_id, "host1") == 0);
  /* Health: the store answers and every background task runs. */
  char *health = NULL;
  CHECK_STATUS(ovl_health(ctl, &health), OVL_OK);
  CHECK(health != NULL && strstr(health, "\"store_reachable\":true") != NULL);
  CHECK(health != NULL && strstr(health, "\"name\":\"sweep\"") != NULL);
  ovl_string_free(health);
  CHECK_STATUS(ovl_health(ctl, NULL), OVL_ERR_NULL_ARGUMENT);
  /* One live controller per host id: a second is refused, naming the holder's address. */
  ovl_controller *twin = NULL;
  CHECK_STATUS(ovl_controller_open(config, &twin), OVL_ERR_ALREADY_EXISTS);
  CHECK_ERROR_MENTIONS("192.168.240.1");
  CHECK(twin == NULL);
  ovl_string_free(host_id);
  CHECK_STATUS(ovl_controller_host_id(ctl, NULL), OVL_ERR_NULL_ARGUMENT);
  CHECK_STATUS(ovl_controller_host_id(NULL, &host_id), OVL_ERR_NULL_ARGUMENT);

  networks(ctl);
  containers(ctl);
  events(ctl);
  threads(ctl);

  CHECK_STATUS(ovl_disconnect(ctl, "my-net", "c1"), OVL_OK);
  CHECK_STATUS(ovl_network_remove(ctl, "my-net"), OVL_OK);

  /* After close, calls are refused as unavailable; free still works. */
  CHECK_STATUS(ovl_controller_close(ctl), OVL_OK);
  char *json2 = (char *)"untouched";
  CHECK_STATUS(ovl_network_list(ctl, &json2), OVL_ERR_UNAVAILABLE);
  CHECK_STATUS(ovl_network_create(ctl, "late-net", NULL, NULL), OVL_ERR_UNAVAILABLE);
  CHECK(strcmp(json2, "untouched") == 0);
  CHECK_STATUS(ovl_controller_close(NULL), OVL_ERR_NULL_ARGUMENT);
  ovl_controller_free(ctl);
  ovl_controller_free(NULL);
  return harness_finish(argv[0]);
}
