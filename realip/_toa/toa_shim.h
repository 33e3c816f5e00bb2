/*
 * realip TOA shim: ask the kernel TOA module for the NAT64 client of one
 * accepted TCP socket (see docs/toa.md and docs/toa-module.md).
 *
 * This file is both the C header and the cffi cdef (build.py reads it), so it
 * holds plain declarations only: cffi's parser accepts no #include or #if,
 * which is also why there is no include guard. It is included exactly once
 * per translation unit.
 */

/*
 * Ask getsockopt(fd, IPPROTO_IP, 4096) for the NAT64 peer.
 * Returns 0 and fills out_addr (16 bytes, network order, possibly an
 * IPv4-mapped address) and *out_port (host order) on success; otherwise a
 * positive errno value and leaves both untouched:
 *   EINVAL / EFAULT  the module has nothing to add for this connection
 *                    (EFAULT: it rewrote getpeername() itself),
 *   ENOPROTOOPT      no TOA module is loaded on this host,
 *   EPROTO           getsockopt "succeeded" but did not return 20 bytes,
 *   ENOSYS           this is the stub built for a non-Linux platform,
 *   anything else    passed through from getsockopt (ENOTCONN, EBADF, ...).
 */
int realip_toa_lookup(int fd, unsigned char out_addr[16], unsigned int *out_port);

/* sizeof(struct toa_nat64_peer) as compiled here: must be 20 on Linux. */
unsigned int realip_toa_struct_size(void);

/* 1 for the real Linux shim, 0 for the stub. */
int realip_toa_available(void);
