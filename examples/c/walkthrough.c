/*
 * The seed's walkthrough through the C API: two hosts share the embedded cluster store, a
 * network created on host 1 shows up with the same ID on host 2, four "ZooKeeper" containers
 * (two per host) join it, and each reaches every other by `name` and `name.my-net` over VXLAN.
 *
 * Run it (as root; it builds the library first):
 *
 *     sudo overlay-ffi/scripts/walkthrough
 *
 * Hosts and containers are network namespaces made with `ip netns` for the demonstration (a
 * real orchestrator passes its containers' namespaces instead); the hosts are joined by a veth
 * "underlay". No ZooKeeper is needed: each container answers ZooKeeper's `ruok` with `imok` on
 * port 2181. Everything made is removed at the end, also after a failure.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "overlay.h"

enum { CONTAINERS = 4, PORT = 2181 };

static char tag[24];      /* prefix of every namespace made, unique to this run */
static char workdir[64];  /* store file and hosts files */
static int namespaces_made;
static const char *ns_suffix[] = {"h1", "h2", "zk1", "zk2", "zk3", "zk4"};

/* ---- scaffolding: namespaces standing in for hosts and containers ---- */

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "walkthrough: ");
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
  exit(1);
}

static void sh(const char *fmt, ...) {
  char cmd[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  if (system(cmd) != 0) {
    die("setup command failed: %s", cmd);
  }
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static void cleanup(void) {
  for (int i = namespaces_made - 1; i >= 0; i--) {
    char cmd[96];
    snprintf(cmd, sizeof cmd, "ip netns del %s%s 2>/dev/null", tag, ns_suffix[i]);
    if (system(cmd) != 0) {
      fprintf(stderr, "cleanup: could not delete namespace %s%s\n", tag, ns_suffix[i]);
    }
  }
  if (workdir[0] != '\0') {
    nftw(workdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  }
}

static void make_namespaces(void) {
  snprintf(tag, sizeof tag, "ovw%d", (int)getpid());
  atexit(cleanup);
  for (size_t i = 0; i < sizeof ns_suffix / sizeof ns_suffix[0]; i++) {
    sh("ip netns add %s%s", tag, ns_suffix[i]);
    namespaces_made++;
    sh("ip -n %s%s link set lo up", tag, ns_suffix[i]);
  }
  /* The underlay: host1 192.168.242.1 <-> host2 192.168.242.2. */
  sh("ip -n %sh1 link add u0 type veth peer name u0 netns %sh2", tag, tag);
  sh("ip -n %sh1 addr add 192.168.242.1/24 dev u0 && ip -n %sh1 link set u0 up", tag, tag);
  sh("ip -n %sh2 addr add 192.168.242.2/24 dev u0 && ip -n %sh2 link set u0 up", tag, tag);
}

static int enter_namespace(const char *suffix) {
  char path[96];
  snprintf(path, sizeof path, "/run/netns/%s%s", tag, suffix);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return -1;
  }
  int rc = setns(fd, CLONE_NEWNET); /* this thread only */
  close(fd);
  return rc;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* ---- the overlay, through the C API ---- */

static void check(ovl_status status, const char *what) {
  if (status != OVL_OK) {
    die("%s failed with %s: %s", what, ovl_status_name(status), ovl_last_error());
  }
}

/* Copies the string value of the first "key":"value" in `json` (enough for these documents). */
static int json_string(const char *json, const char *key, char *out, size_t len) {
  char needle[64];
  snprintf(needle, sizeof needle, "\"%s\":\"", key);
  const char *at = strstr(json, needle);
  if (at == NULL) {
    return -1;
  }
  at += strlen(needle);
  const char *end = strchr(at, '"');
  snprintf(out, len, "%.*s", (int)(end == NULL ? 0 : end - at), at);
  return 0;
}

static ovl_controller *open_host(const char *host_id, const char *suffix, const char *ip) {
  char config[512];
  snprintf(config, sizeof config,
           "{\"store\": \"file://%s/store.db\", \"host_id\": \"%s\", \"advertise\": \"%s\", "
           "\"host_netns\": \"/run/netns/%s%s\"}",
           workdir, host_id, ip, tag, suffix);
  ovl_controller *ctl = NULL;
  check(ovl_controller_open(config, &ctl), "ovl_controller_open");
  return ctl;
}

static void network_ls(const char *host, ovl_controller *ctl, char *id_out, size_t len) {
  char *json = NULL;
  check(ovl_network_list(ctl, &json), "ovl_network_list");
  char id[80], name[64], driver[32];
  if (json_string(json, "ID", id, sizeof id) != 0 || json_string(json, "Name", name, sizeof name) ||
      json_string(json, "Driver", driver, sizeof driver)) {
    die("unexpected network list from %s: %s", host, json);
  }
  printf("%s$ network ls\nNETWORK ID          NAME                DRIVER\n%-20.12s%-20s%s\n\n",
         host, id, name, driver);
  snprintf(id_out, len, "%s", id);
  ovl_string_free(json);
}

struct container {
  const char *name;
  const char *ns; /* namespace suffix */
  int host;       /* 0: host1, 1: host2 */
  char ip[64];
};

static struct container zk[CONTAINERS] = {
    {"zookeeper1", "zk1", 0, ""},
    {"zookeeper2", "zk2", 1, ""},
    {"zookeeper3", "zk3", 0, ""},
    {"zookeeper4", "zk4", 1, ""},
};

/* ---- traffic: each container answers "ruok" with "imok" ---- */

static atomic_int stop_servers;
static atomic_int servers_ready;

static void *serve(void *arg) {
  struct container *c = arg;
  if (enter_namespace(c->ns) != 0) {
    die("cannot enter the namespace of %s", c->name);
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(PORT)};
  if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 16) != 0) {
    die("%s cannot listen on port %d", c->name, PORT);
  }
  atomic_fetch_add(&servers_ready, 1);
  while (!atomic_load(&stop_servers)) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 100) <= 0) {
      continue;
    }
    int conn = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
    if (conn < 0) {
      continue;
    }
    char buf[8] = {0};
    if (read(conn, buf, 4) == 4 && memcmp(buf, "ruok", 4) == 0) {
      (void)!write(conn, "imok", 4);
    }
    close(conn);
  }
  close(fd);
  return NULL;
}

struct probe {
  struct container *from;
  int ok;
  char report[512]; /* printed by main, in order */
};

/* From inside `from`'s namespace, asks every other container "ruok" by each of its names. */
static void *probe_all(void *arg) {
  struct probe *p = arg;
  if (enter_namespace(p->from->ns) != 0) {
    return NULL;
  }
  p->ok = 1;
  for (int i = 0; i < CONTAINERS; i++) {
    struct container *to = &zk[i];
    if (to == p->from) {
      continue;
    }
    int answered = 0;
    /* The first packets may race the peer entries on the other host; retry briefly. */
    for (int attempt = 0; attempt < 50 && !answered; attempt++) {
      int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(PORT)};
      inet_pton(AF_INET, to->ip, &addr.sin_addr);
      char buf[8] = {0};
      if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0 && write(fd, "ruok", 4) == 4 &&
          read(fd, buf, 4) == 4 && memcmp(buf, "imok", 4) == 0) {
        answered = 1;
      }
      close(fd);
      if (!answered) {
        sleep_ms(100);
      }
    }
    size_t used = strlen(p->report);
    snprintf(p->report + used, sizeof p->report - used, "  %s -> %s / %s.my-net (%s): %s\n",
             p->from->name, to->name, to->name, to->ip, answered ? "imok" : "NO ANSWER");
    p->ok &= answered;
  }
  return NULL;
}

int main(void) {
  if (geteuid() != 0) {
    const char *ci = getenv("CI");
    fprintf(stderr,
            "walkthrough: needs root to create namespaces and VXLAN links; run it as "
            "`sudo overlay-ffi/scripts/walkthrough`\n");
    return ci != NULL && strcmp(ci, "true") == 0 ? 1 : 77;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  snprintf(workdir, sizeof workdir, "/tmp/overlay-walkthrough-XXXXXX");
  if (mkdtemp(workdir) == NULL) {
    workdir[0] = '\0';
    die("cannot create a temporary directory");
  }
  make_namespaces();
  printf("overlay %s: two hosts as namespaces, one embedded store in %s\n\n", ovl_version(),
         workdir);

  ovl_controller *hosts[2] = {open_host("host1", "h1", "192.168.242.1"),
                              open_host("host2", "h2", "192.168.242.2")};

  char *json = NULL;
  check(ovl_network_create(hosts[0], "my-net", NULL, &json), "ovl_network_create");
  ovl_string_free(json);
  printf("host1$ network create --driver overlay my-net\n\n");
  char id1[80], id2[80];
  network_ls("host1", hosts[0], id1, sizeof id1);
  network_ls("host2", hosts[1], id2, sizeof id2);
  if (strcmp(id1, id2) != 0) {
    die("the hosts disagree on the network's ID: %s vs %s", id1, id2);
  }

  for (int i = 0; i < CONTAINERS; i++) {
    char spec[512], *out = NULL;
    snprintf(spec, sizeof spec,
             "{\"id\": \"%s-%s\", \"name\": \"%s\", \"netns\": {\"path\": \"/run/netns/%s%s\"}, "
             "\"hosts_file\": \"%s/%s.hosts\"}",
             tag, zk[i].ns, zk[i].name, tag, zk[i].ns, workdir, zk[i].name);
    check(ovl_connect(hosts[zk[i].host], "my-net", spec, &out), "ovl_connect");
    char cidr[64];
    json_string(out, "IPv4Address", cidr, sizeof cidr);
    ovl_string_free(out);
    printf("host%d$ run --net=my-net --name %s   # %s\n", zk[i].host + 1, zk[i].name, cidr);
  }

  /* Both hosts learn every container: by name and by name.my-net. */
  for (int h = 0; h < 2; h++) {
    for (int i = 0; i < CONTAINERS; i++) {
      for (int form = 0; form < 2; form++) {
        char name[64], *ip = NULL;
        snprintf(name, sizeof name, form == 0 ? "%s" : "%s.my-net", zk[i].name);
        ovl_status status = OVL_ERR_NOT_FOUND;
        for (int attempt = 0; attempt < 100; attempt++) {
          status = ovl_resolve(hosts[h], name, &ip);
          if (status != OVL_ERR_NOT_FOUND) {
            break;
          }
          sleep_ms(50);
        }
        check(status, "ovl_resolve");
        if (zk[i].ip[0] == '\0') {
          snprintf(zk[i].ip, sizeof zk[i].ip, "%s", ip);
        } else if (strcmp(zk[i].ip, ip) != 0) {
          die("host%d resolves %s to %s, expected %s", h + 1, name, ip, zk[i].ip);
        }
        ovl_string_free(ip);
      }
    }
  }

  /* zookeeper1's hosts file, as in the seed (kept current by host1's agent). */
  char path[128], line[256];
  snprintf(path, sizeof path, "%s/zookeeper1.hosts", workdir);
  printf("\nzookeeper1$ cat /etc/hosts\n");
  FILE *hosts_file = NULL;
  for (int attempt = 0; attempt < 100 && hosts_file == NULL; attempt++) {
    hosts_file = fopen(path, "r");
    if (hosts_file == NULL) {
      sleep_ms(50);
    }
  }
  if (hosts_file == NULL) {
    die("host1 did not write zookeeper1's hosts file %s", path);
  }
  while (fgets(line, sizeof line, hosts_file) != NULL) {
    printf("%s", line);
  }
  fclose(hosts_file);

  check(ovl_network_inspect(hosts[1], "my-net", &json), "ovl_network_inspect");
  printf("\nhost2$ network inspect my-net\n%s\n\n", json);
  ovl_string_free(json);

  /* Real TCP between every pair, across hosts too. */
  pthread_t servers[CONTAINERS], probes[CONTAINERS];
  struct probe results[CONTAINERS];
  for (int i = 0; i < CONTAINERS; i++) {
    pthread_create(&servers[i], NULL, serve, &zk[i]);
  }
  while (atomic_load(&servers_ready) < CONTAINERS) {
    sleep_ms(10);
  }
  printf("ruok on port %d, by name and by name.my-net:\n", PORT);
  int all_ok = 1;
  for (int i = 0; i < CONTAINERS; i++) {
    results[i] = (struct probe){.from = &zk[i], .ok = 0, .report = ""};
    pthread_create(&probes[i], NULL, probe_all, &results[i]);
  }
  for (int i = 0; i < CONTAINERS; i++) {
    pthread_join(probes[i], NULL);
    printf("%s", results[i].report);
    all_ok &= results[i].ok;
  }
  atomic_store(&stop_servers, 1);
  for (int i = 0; i < CONTAINERS; i++) {
    pthread_join(servers[i], NULL);
  }

  /* Tear down through the API: containers leave, the network goes, the hosts close. */
  for (int i = 0; i < CONTAINERS; i++) {
    char id[64];
    snprintf(id, sizeof id, "%s-%s", tag, zk[i].ns);
    check(ovl_disconnect(hosts[zk[i].host], "my-net", id), "ovl_disconnect");
  }
  check(ovl_network_remove(hosts[1], "my-net"), "ovl_network_remove");
  ovl_controller_free(hosts[0]);
  ovl_controller_free(hosts[1]);

  if (!all_ok) {
    die("some containers could not reach each other");
  }
  printf("\nevery container reached every other; removed everything\n");
  return 0;
}
