/* LD_PRELOAD shim for benchmarking Janus on loopback only.
 *
 * Janus (libnice) never gathers candidates on interfaces flagged IFF_LOOPBACK and then offers
 * every other interface of the machine, which must not carry benchmark traffic. With this
 * library preloaded, getifaddrs() reports a single interface with address 127.0.0.1 and
 * without the loopback flag, so the only candidate Janus can offer is 127.0.0.1.
 *
 * Built by comet-loadgen (cc -shared -fPIC) when it starts Janus; see benches/README.md. */
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

struct loopback_only {
    struct ifaddrs ifa; /* first: freeifaddrs() gets this pointer back */
    struct sockaddr_in addr;
    struct sockaddr_in mask;
    char name[8];
};

int getifaddrs(struct ifaddrs **out) {
    struct loopback_only *o = calloc(1, sizeof *o);
    if (o == NULL)
        return -1;
    strcpy(o->name, "lo");
    o->addr.sin_family = AF_INET;
    o->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    o->mask.sin_family = AF_INET;
    o->mask.sin_addr.s_addr = htonl(0xff000000u);
    o->ifa.ifa_next = NULL;
    o->ifa.ifa_name = o->name;
    o->ifa.ifa_flags = IFF_UP | IFF_RUNNING;
    o->ifa.ifa_addr = (struct sockaddr *)&o->addr;
    o->ifa.ifa_netmask = (struct sockaddr *)&o->mask;
    *out = &o->ifa;
    return 0;
}

void freeifaddrs(struct ifaddrs *ifa) {
    free(ifa);
}
