/*
 * realip TOA shim: one getsockopt() call with the exact struct the kernel
 * TOA module expects. Declarations and error codes: toa_shim.h.
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
#include <sys/socket.h>

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

#endif
