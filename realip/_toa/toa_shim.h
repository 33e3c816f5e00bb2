/*
 * realip TOA shim: ask the kernel TOA module about one accepted TCP socket
 * (see docs/toa.md, docs/toa-module.md and docs/vendors/index.md).
 *
 * This file is both the C header and the cffi cdef (build.py reads it), so it
 * holds plain declarations only: cffi's parser accepts no #include or #if,
 * which is also why there is no include guard. It is included exactly once
 * per translation unit. The structures the kernel modules fill live in
 * toa_shim.c, each with its size asserted when it is compiled.
 *
 * Every function returns 0 or a positive errno value (ENOSYS from the stub
 * built for a platform other than Linux) and leaves its outputs untouched
 * when it fails.
 */

/*
 * Ask getsockopt(fd, IPPROTO_IP, 4096) for the NAT64 peer.
 * Returns 0 and fills out_addr (16 bytes, network order, possibly an
 * IPv4-mapped address) and *out_port (host order) on success; otherwise a
 * positive errno value and leaves both untouched:
 *   EINVAL / EFAULT  the module has nothing to add for this connection
 *                    (EFAULT: it rewrote getpeername() itself),
 *   ENOPROTOOPT      no TOA module is loaded on this host (or one that
 *                    only rewrites getpeername()),
 *   EPROTO           getsockopt "succeeded" but did not return 20 bytes,
 *   ENOSYS           this is the stub built for a non-Linux platform,
 *   anything else    passed through from getsockopt (ENOTCONN, EBADF, ...).
 */
int realip_toa_lookup(int fd, unsigned char out_addr[16], unsigned int *out_port);

/* sizeof(struct toa_nat64_peer) as compiled here: must be 20 on Linux. */
unsigned int realip_toa_struct_size(void);

/* 1 for the real Linux shim, 0 for the stub. */
int realip_toa_available(void);

/*
 * getpeername() (peer != 0) or getsockname() (peer == 0) into a struct
 * sockaddr_storage, whatever the socket's own family: Alibaba's vtoa answers
 * getpeername() of an AF_INET socket with a 28-byte sockaddr_in6, which a
 * buffer sized for the socket's family (16 bytes) truncates. On success up to
 * *len bytes (at most realip_sockaddr_size()) are copied to buf and *len is
 * set to the length the kernel reported.
 */
int realip_socket_name(int fd, int peer, unsigned char *buf, unsigned int *len);

/* sizeof(struct sockaddr_storage): the buffer realip_socket_name() fills (128). */
unsigned int realip_sockaddr_size(void);

/* The socket's own family (SO_DOMAIN): AF_INET, AF_INET6, ... in *out_family. */
int realip_socket_domain(int fd, int *out_family);

/* The socket's cookie (SO_COOKIE, Linux >= 4.12): the number sock_diag reports for it. */
int realip_socket_cookie(int fd, unsigned long long *out_cookie);

/*
 * Alibaba vtoa: the virtual server of this connection, from
 * getsockopt(fd, IPPROTO_IP, optname) with optname
 *   1345  VTOA_SO_GET_VS         struct vtoa_get_vs (12 bytes)
 *   1346  VTOA_SO_GET_VS4RDS     struct vtoa_get_vs4rds + one vtoa_vs (32 bytes)
 *   1347  HYBRID_VTOA_SO_GET_VS  struct v6vtoa_get_vs (24 bytes)
 * Fills *out_vid (the VPC id, host order), out_vip (4 bytes for AF_INET, 16
 * for AF_INET6, network order), *out_family and *out_port (host order).
 * ESRCH: the connection carried no virtual-server option (the module's own
 * answer); EINVAL for any other optname; ENOPROTOOPT: no vtoa module.
 */
int realip_vtoa_virtual_server(int fd, int optname, unsigned int *out_vid, unsigned char out_vip[16],
                               int *out_family, unsigned int *out_port);

/* The size of the structure getsockopt(IPPROTO_IP, optname) takes here: 20 for
 * 4096, 12 for 1345, 32 for 1346, 24 for 1347; 0 for any other optname. */
unsigned int realip_option_struct_size(int optname);
