/*
 * realip TOA shim: the getsockopt() and getpeername() calls the kernel TOA
 * modules answer, each with the exact struct the module expects (sizes checked
 * when this is compiled). Declarations and error codes: toa_shim.h.
 *
 * build.py defines REALIP_TOA_STUB when it builds for a platform other than
 * Linux; the stub is also chosen when the compiler is not targeting Linux.
 */
#include "toa_shim.h"

#include <errno.h>

#if defined(__linux__) && !defined(REALIP_TOA_STUB)

#include <stdint.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>

#ifndef SO_COOKIE
#define SO_COOKIE 57 /* Linux >= 4.12; older C libraries do not name it */
#endif

/* From the module's toa.h: the one "get" option, at level IPPROTO_IP. */
enum { TOA_SO_GET_LOOKUP = 4096 };

struct toa_nat64_peer {
    struct in6_addr saddr; /* network byte order */
    uint16_t sport;        /* network byte order */
};

/* in6_addr is 4-byte aligned, so 2 bytes of tail padding make it 20, not 18.
 * The module rejects a shorter buffer with EINVAL: fail the build instead. */
_Static_assert(sizeof(struct toa_nat64_peer) == 20, "struct toa_nat64_peer must be 20 bytes");

int realip_toa_lookup(int fd, unsigned char out_addr[16], unsigned int *out_port)
{
    struct toa_nat64_peer peer;
    socklen_t len = sizeof(peer);

    memset(&peer, 0, sizeof(peer));
    if (getsockopt(fd, IPPROTO_IP, TOA_SO_GET_LOOKUP, &peer, &len) != 0) {
        /* errno is always positive after a failed call; EIO guards the
         * impossible case so that 0 keeps meaning "found". */
        return errno > 0 ? errno : EIO;
    }
    if (len != sizeof(peer)) {
        /* Not the module we know: refuse rather than guess at the layout. */
        return EPROTO;
    }
    memcpy(out_addr, &peer.saddr, 16);
    *out_port = ntohs(peer.sport);
    return 0;
}

unsigned int realip_toa_struct_size(void)
{
    return (unsigned int)sizeof(struct toa_nat64_peer);
}

int realip_toa_available(void)
{
    return 1;
}

/* errno after a failed call; EIO guards the impossible case so that 0 keeps meaning "done". */
static int failure(void)
{
    return errno > 0 ? errno : EIO;
}

int realip_socket_name(int fd, int peer, unsigned char *buf, unsigned int *len)
{
    struct sockaddr_storage name;
    socklen_t name_len = sizeof(name);
    int rc;

    memset(&name, 0, sizeof(name));
    rc = peer ? getpeername(fd, (struct sockaddr *)&name, &name_len)
              : getsockname(fd, (struct sockaddr *)&name, &name_len);
    if (rc != 0)
        return failure();
    memcpy(buf, &name, *len < name_len ? *len : name_len);
    *len = (unsigned int)name_len;
    return 0;
}

unsigned int realip_sockaddr_size(void)
{
    return (unsigned int)sizeof(struct sockaddr_storage);
}

int realip_socket_domain(int fd, int *out_family)
{
    int family = 0;
    socklen_t len = sizeof(family);

    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &len) != 0)
        return failure();
    *out_family = family;
    return 0;
}

int realip_socket_cookie(int fd, unsigned long long *out_cookie)
{
    uint64_t cookie = 0;
    socklen_t len = sizeof(cookie);

    if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) != 0)
        return failure();
    if (len != sizeof(cookie))
        return EPROTO;
    *out_cookie = cookie;
    return 0;
}

/* From Alibaba's vtoa (vtoa_ctl.h), all at level IPPROTO_IP (base 1344). */
enum { VTOA_SO_GET_VS = 1345, VTOA_SO_GET_VS4RDS = 1346, HYBRID_VTOA_SO_GET_VS = 1347 };

struct vtoa_vs {
    uint32_t vid;   /* the VPC id as the option carried it: network order */
    uint32_t vaddr; /* the VIP, network order */
    uint16_t vport; /* network order */
};

struct vtoa_get_vs4rds {
    uint16_t protocol; /* which connection: the module reads its own socket instead */
    uint32_t caddr;
    uint16_t cport;
    uint32_t daddr;
    uint16_t dport;
    struct vtoa_vs entrytable[1]; /* the module writes exactly one entry here */
};

struct v6vtoa_vs {
    uint32_t vid; /* host order */
    union {
        uint32_t ip;
        unsigned char ip6[16];
    } vaddr;           /* network order */
    uint16_t vaddr_af; /* AF_INET or AF_INET6 */
    uint16_t vport;    /* network order (0 for a V6VTOA option) */
};

/* The module refuses a shorter buffer (EINVAL), and 1346 anything but exactly 32. */
_Static_assert(sizeof(struct vtoa_vs) == 12, "struct vtoa_get_vs must be 12 bytes");
_Static_assert(offsetof(struct vtoa_get_vs4rds, entrytable) == 20, "vtoa_get_vs4rds entries start at byte 20");
_Static_assert(sizeof(struct vtoa_get_vs4rds) == 32, "vtoa_get_vs4rds plus one entry must be 32 bytes");
_Static_assert(sizeof(struct v6vtoa_vs) == 24, "struct v6vtoa_get_vs must be 24 bytes");
_Static_assert(offsetof(struct v6vtoa_vs, vaddr_af) == 20, "v6vtoa_vs.vaddr_af is at byte 20");

int realip_vtoa_virtual_server(int fd, int optname, unsigned int *out_vid, unsigned char out_vip[16],
                               int *out_family, unsigned int *out_port)
{
    union {
        struct vtoa_vs vs;
        struct vtoa_get_vs4rds rds;
        struct v6vtoa_vs v6;
    } answer;
    const struct vtoa_vs *vs = &answer.vs;
    socklen_t len;

    memset(&answer, 0, sizeof(answer));
    switch (optname) {
    case VTOA_SO_GET_VS:
        len = sizeof(answer.vs);
        break;
    case VTOA_SO_GET_VS4RDS:
        len = sizeof(answer.rds);
        answer.rds.protocol = IPPROTO_TCP;
        vs = &answer.rds.entrytable[0];
        break;
    case HYBRID_VTOA_SO_GET_VS:
        len = sizeof(answer.v6);
        break;
    default:
        return EINVAL;
    }
    if (getsockopt(fd, IPPROTO_IP, optname, &answer, &len) != 0)
        return failure();
    memset(out_vip, 0, 16);
    if (optname == HYBRID_VTOA_SO_GET_VS) {
        if (answer.v6.vaddr_af == AF_INET6) {
            memcpy(out_vip, answer.v6.vaddr.ip6, 16);
        } else if (answer.v6.vaddr_af == AF_INET) {
            memcpy(out_vip, &answer.v6.vaddr.ip, 4);
        } else {
            return EPROTO; /* not the module we know */
        }
        *out_vid = answer.v6.vid;
        *out_family = answer.v6.vaddr_af;
        *out_port = ntohs(answer.v6.vport);
        return 0;
    }
    *out_vid = ntohl(vs->vid);
    memcpy(out_vip, &vs->vaddr, 4);
    *out_family = AF_INET;
    *out_port = ntohs(vs->vport);
    return 0;
}

unsigned int realip_option_struct_size(int optname)
{
    switch (optname) {
    case TOA_SO_GET_LOOKUP:
        return (unsigned int)sizeof(struct toa_nat64_peer);
    case VTOA_SO_GET_VS:
        return (unsigned int)sizeof(struct vtoa_vs);
    case VTOA_SO_GET_VS4RDS:
        return (unsigned int)sizeof(struct vtoa_get_vs4rds);
    case HYBRID_VTOA_SO_GET_VS:
        return (unsigned int)sizeof(struct v6vtoa_vs);
    default:
        return 0;
    }
}

#else /* stub: no TOA module outside Linux */

int realip_toa_lookup(int fd, unsigned char out_addr[16], unsigned int *out_port)
{
    (void)fd;
    (void)out_addr;
    (void)out_port;
    return ENOSYS;
}

unsigned int realip_toa_struct_size(void)
{
    /* The Linux layout, for tests that compare against the ABI. */
    return 20;
}

int realip_toa_available(void)
{
    return 0;
}

int realip_socket_name(int fd, int peer, unsigned char *buf, unsigned int *len)
{
    (void)fd;
    (void)peer;
    (void)buf;
    (void)len;
    return ENOSYS;
}

unsigned int realip_sockaddr_size(void)
{
    return 128;
}

int realip_socket_domain(int fd, int *out_family)
{
    (void)fd;
    (void)out_family;
    return ENOSYS;
}

int realip_socket_cookie(int fd, unsigned long long *out_cookie)
{
    (void)fd;
    (void)out_cookie;
    return ENOSYS;
}

int realip_vtoa_virtual_server(int fd, int optname, unsigned int *out_vid, unsigned char out_vip[16],
                               int *out_family, unsigned int *out_port)
{
    (void)fd;
    (void)optname;
    (void)out_vid;
    (void)out_vip;
    (void)out_family;
    (void)out_port;
    return ENOSYS;
}

unsigned int realip_option_struct_size(int optname)
{
    /* The Linux layouts, for tests that compare against the ABI. */
    switch (optname) {
    case 4096:
        return 20;
    case 1345:
        return 12;
    case 1346:
        return 32;
    case 1347:
        return 24;
    default:
        return 0;
    }
}

#endif
