/*
 * toa_emu: an LD_PRELOAD stand-in for the TOA kernel modules, for tests only.
 *
 * It answers getsockopt(fd, IPPROTO_IP, 4096, ...) (the NAT64 lookup) and
 * Alibaba vtoa's getsockopt(fd, IPPROTO_IP, 1345..1347, ...) (the virtual
 * server), and rewrites the peer address that getpeername(), accept() and
 * accept4() report, exactly as docs/toa-module.md and docs/vendors/index.md say
 * the real modules do. Other calls pass through. (The real modules hook the
 * kernel's getname operation, which accept() also uses to fill in its address,
 * so the emulator wraps all three.) What the kernel's own TCP table says
 * (sock_diag, /proc/net/tcp) is left alone, as the modules leave it: it keeps
 * showing the real (loopback) peer.
 *
 * Configuration, read once at the first wrapped call (pthread_once):
 *
 *   TOA_EMU         rules "KEY=VALUE;KEY=VALUE;...". KEY is the client
 *                          IP as the real getpeername() reports it, IPv4-mapped
 *                          addresses written as dotted IPv4, or "*" for every
 *                          other client. VALUE is one of
 *                            nat64:[IPv6]:PORT   a NAT64 option (254/20 or 253/20)
 *                            v4toa:[IPv4]:PORT   an IPv4 TOA option (254/8)
 *                            toa200:[IPv4]:PORT  Tencent's and UCloud's IPv4 option (200/8)
 *                            v6vtoa:[IPv6]:PORT  Alibaba's V6VTOA option (249/40)
 *                            errno:N             the lookup fails with errno N
 *                            badlen:N            the lookup "succeeds" with N < 20
 *                                                bytes (a module we do not know)
 *                            none                no option (the default)
 *                            nomodule            ("*" only) no module on the host
 *                          optionally followed by "+vs:VID:[VIP]:VPORT": the
 *                          connection also carried Alibaba's virtual server
 *                          (VPC id, VIP, port: option 252/20 or 250/8 for an
 *                          IPv4 VIP; for v6vtoa, the IPv6 VIP of option 249).
 *   TOA_EMU_MODULE  which module is loaded, as observed in the lab:
 *                          "present" or unset  one with the lookup (Huawei IPv6
 *                                              build, dpvs): 254/8, NAT64
 *                          "rewriting"         one that only rewrites the peer
 *                                              (UCloud; Huawei master): 254/8
 *                                              and 200/8, the lookup ENOPROTOOPT
 *                          "vtoa"              Alibaba vtoa: 254/8, NAT64 on
 *                                              AF_INET6 only, 249, 1345..1347,
 *                                              the lookup ENOPROTOOPT
 *                          "absent"            none: rules are ignored.
 *   TOA_EMU_LOG     file to which every IPPROTO_IP/4096 and 1345..1347 call
 *                          appends one line "pid fd peer result call" (peer "-"
 *                          when not known, result 0 or the errno, call the
 *                          optname), and every sock_diag request one line with
 *                          call "diag", each in a single write.
 *
 * A configuration error aborts the process with a message: a test must never
 * run against rules other than the ones it wrote.
 *
 * glibc only (the __SOCKADDR_ARG transparent union in the wrapper signatures).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <linux/netlink.h>

enum {
    TOA_SO_GET_LOOKUP = 4096, /* level IPPROTO_IP */
    TOA_PEER_SIZE = 20,       /* sizeof(struct toa_nat64_peer) on Linux */
    VTOA_SO_GET_VS = 1345,    /* Alibaba vtoa, level IPPROTO_IP: struct vtoa_get_vs, 12 bytes */
    VTOA_SO_GET_VS4RDS = 1346, /* struct vtoa_get_vs4rds + one vtoa_vs: exactly 32 bytes */
    HYBRID_VTOA_SO_GET_VS = 1347, /* struct v6vtoa_get_vs, 24 bytes */
    VTOA_VS_SIZE = 12,
    VTOA_VS4RDS_SIZE = 32,
    V6VTOA_VS_SIZE = 24,
    MAX_RULES = 64,
};

enum module_kind { MOD_ABSENT, MOD_LOOKUP, MOD_REWRITING, MOD_VTOA };

enum action_kind { ACT_NONE, ACT_NAT64, ACT_V4TOA, ACT_TOA200, ACT_V6VTOA, ACT_ERRNO, ACT_BADLEN };

struct action {
    enum action_kind kind;
    int value;              /* the errno (ACT_ERRNO) or length (ACT_BADLEN) */
    unsigned char addr[16]; /* NAT64, V6VTOA: the IPv6 address; V4TOA, TOA200: first 4 bytes */
    uint16_t port;          /* host order */
    int has_vs;             /* "+vs:...": a virtual server came too */
    int vs_family;          /* AF_INET or AF_INET6 */
    uint32_t vs_vid;        /* host order */
    unsigned char vs_vip[16];
    uint16_t vs_port;       /* host order */
};

/* A client address, normalised: IPv4 and IPv4-mapped IPv6 are both AF_INET. */
struct client {
    int family;
    unsigned char addr[16];
};

struct rule {
    struct client key;
    struct action action;
};

static struct {
    enum module_kind module;
    int nrules;
    struct rule rules[MAX_RULES];
    int has_default;
    struct action default_action;
    char log_path[4096];
} cfg;

static int (*real_getsockopt)(int, int, int, void *, socklen_t *);
static int (*real_getpeername)(int, struct sockaddr *, socklen_t *);
static int (*real_accept)(int, struct sockaddr *, socklen_t *);
static int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);
static ssize_t (*real_sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("toa_emu: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

/* ---- configuration ---------------------------------------------------- */

static char *trim(char *s)
{
    char *end;
    while (*s == ' ' || *s == '\t')
        s++;
    end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
        *--end = '\0';
    return s;
}

static long parse_number(const char *text, long min, long max, const char *what)
{
    char *end;
    long n;
    errno = 0;
    n = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || n < min || n > max)
        die("%s must be a number from %ld to %ld, not '%s'", what, min, max, text);
    return n;
}

static void normalise(int family, const void *addr, struct client *out)
{
    memset(out, 0, sizeof(*out));
    if (family == AF_INET6 && IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)addr)) {
        out->family = AF_INET;
        memcpy(out->addr, (const unsigned char *)addr + 12, 4);
    } else if (family == AF_INET6) {
        out->family = AF_INET6;
        memcpy(out->addr, addr, 16);
    } else {
        out->family = AF_INET;
        memcpy(out->addr, addr, 4);
    }
}

static void parse_key(char *text, struct client *out)
{
    unsigned char buf[16];
    size_t n = strlen(text);
    if (n >= 2 && text[0] == '[' && text[n - 1] == ']') {
        text[n - 1] = '\0';
        text++;
    }
    if (inet_pton(AF_INET, text, buf) == 1)
        normalise(AF_INET, buf, out);
    else if (inet_pton(AF_INET6, text, buf) == 1)
        normalise(AF_INET6, buf, out);
    else
        die("rule key '%s' is not an IP address or '*'", text);
}

/* "[ADDR]:PORT" (brackets optional for IPv4) into action->addr and ->port. */
static void parse_endpoint(char *text, int family, struct action *action)
{
    char *colon = strrchr(text, ':');
    char *addr = text;
    if (colon == NULL)
        die("'%s' must be [ADDRESS]:PORT", text);
    *colon = '\0';
    if (addr[0] == '[') {
        size_t n = strlen(addr);
        if (n < 2 || addr[n - 1] != ']')
            die("'%s' must be [ADDRESS]:PORT", text);
        addr[n - 1] = '\0';
        addr++;
    } else if (family == AF_INET6) {
        die("IPv6 address '%s' must be in brackets: [ADDRESS]:PORT", addr);
    }
    if (inet_pton(family, addr, action->addr) != 1)
        die("'%s' is not an %s address", addr, family == AF_INET ? "IPv4" : "IPv6");
    action->port = (uint16_t)parse_number(colon + 1, 0, 65535, "a port");
}

/* "VID:[VIP]:VPORT" after "+vs:" into the action's virtual server. */
static void parse_virtual_server(char *text, struct action *out)
{
    char *colon = strchr(text, ':');
    struct action endpoint;
    if (colon == NULL)
        die("'+vs:%s' must be +vs:VID:[VIP]:VPORT", text);
    *colon = '\0';
    out->vs_vid = (uint32_t)parse_number(text, 0, 0xFFFFFF, "a VPC id");
    memset(&endpoint, 0, sizeof(endpoint));
    /* An IPv6 VIP is written in brackets with colons inside; try IPv4 first. */
    {
        char copy[128];
        if (strlen(colon + 1) >= sizeof(copy))
            die("'+vs:' value too long");
        strcpy(copy, colon + 1);
        if (strchr(copy, '.') != NULL) {
            parse_endpoint(copy, AF_INET, &endpoint);
            out->vs_family = AF_INET;
        } else {
            parse_endpoint(copy, AF_INET6, &endpoint);
            out->vs_family = AF_INET6;
        }
    }
    memcpy(out->vs_vip, endpoint.addr, 16);
    out->vs_port = endpoint.port;
    out->has_vs = 1;
}

/* Returns 0 for "nomodule" (valid for "*" only), 1 otherwise. */
static int parse_action(char *text, int is_default, struct action *out)
{
    char *vs = strstr(text, "+vs:");
    memset(out, 0, sizeof(*out));
    if (vs != NULL) {
        *vs = '\0';
        parse_virtual_server(vs + 4, out);
    }
    if (strcmp(text, "none") == 0) {
        out->kind = ACT_NONE;
    } else if (strcmp(text, "nomodule") == 0) {
        if (!is_default)
            die("'nomodule' describes the host, so only '*=nomodule' is allowed");
        return 0;
    } else if (strncmp(text, "nat64:", 6) == 0) {
        out->kind = ACT_NAT64;
        parse_endpoint(text + 6, AF_INET6, out);
    } else if (strncmp(text, "v4toa:", 6) == 0) {
        out->kind = ACT_V4TOA;
        parse_endpoint(text + 6, AF_INET, out);
    } else if (strncmp(text, "toa200:", 7) == 0) {
        out->kind = ACT_TOA200;
        parse_endpoint(text + 7, AF_INET, out);
    } else if (strncmp(text, "v6vtoa:", 7) == 0) {
        out->kind = ACT_V6VTOA;
        parse_endpoint(text + 7, AF_INET6, out);
    } else if (strncmp(text, "errno:", 6) == 0) {
        out->kind = ACT_ERRNO;
        out->value = (int)parse_number(text + 6, 1, 4095, "an errno");
    } else if (strncmp(text, "badlen:", 7) == 0) {
        out->kind = ACT_BADLEN;
        out->value = (int)parse_number(text + 7, 0, TOA_PEER_SIZE - 1, "a bad length");
    } else {
        die("unknown rule value '%s' (nat64:, v4toa:, toa200:, v6vtoa:, errno:, badlen:, none, nomodule)", text);
    }
    if (out->has_vs && (out->vs_family == AF_INET6) != (out->kind == ACT_V6VTOA))
        die("'+vs:' takes an IPv6 VIP after v6vtoa: only, and an IPv4 VIP after anything else");
    return 1;
}

static int same_client(const struct client *a, const struct client *b)
{
    return a->family == b->family && memcmp(a->addr, b->addr, a->family == AF_INET ? 4 : 16) == 0;
}

static void parse_rules(const char *env)
{
    static char copy[16384];
    char *save = NULL;
    char *item;

    if (strlen(env) >= sizeof(copy))
        die("TOA_EMU is too long");
    strcpy(copy, env);
    for (item = strtok_r(copy, ";", &save); item != NULL; item = strtok_r(NULL, ";", &save)) {
        char *eq, *key, *value;
        item = trim(item);
        if (*item == '\0')
            continue;
        eq = strchr(item, '=');
        if (eq == NULL)
            die("rule '%s' must be KEY=VALUE", item);
        *eq = '\0';
        key = trim(item);
        value = trim(eq + 1);
        if (strcmp(key, "*") == 0) {
            if (cfg.has_default)
                die("two rules for '*'");
            cfg.has_default = 1;
            if (!parse_action(value, 1, &cfg.default_action))
                cfg.module = MOD_ABSENT;
        } else {
            struct rule *rule;
            int i;
            if (cfg.nrules == MAX_RULES)
                die("more than %d rules", MAX_RULES);
            rule = &cfg.rules[cfg.nrules];
            parse_key(key, &rule->key);
            for (i = 0; i < cfg.nrules; i++)
                if (same_client(&cfg.rules[i].key, &rule->key))
                    die("two rules for client '%s'", key);
            parse_action(value, 0, &rule->action);
            cfg.nrules++;
        }
    }
}

static void *need_symbol(const char *name)
{
    void *sym = dlsym(RTLD_NEXT, name);
    if (sym == NULL)
        die("dlsym(RTLD_NEXT, \"%s\") failed: %s", name, dlerror());
    return sym;
}

static void init(void)
{
    const char *rules = getenv("TOA_EMU");
    const char *module = getenv("TOA_EMU_MODULE");
    const char *log = getenv("TOA_EMU_LOG");

    real_getsockopt = need_symbol("getsockopt");
    real_getpeername = need_symbol("getpeername");
    real_accept = need_symbol("accept");
    real_accept4 = need_symbol("accept4");
    real_sendto = need_symbol("sendto");

    cfg.module = MOD_LOOKUP;
    if (module != NULL && *module != '\0') {
        if (strcmp(module, "absent") == 0)
            cfg.module = MOD_ABSENT;
        else if (strcmp(module, "rewriting") == 0)
            cfg.module = MOD_REWRITING;
        else if (strcmp(module, "vtoa") == 0)
            cfg.module = MOD_VTOA;
        else if (strcmp(module, "present") != 0)
            die("TOA_EMU_MODULE must be 'present', 'rewriting', 'vtoa' or 'absent', not '%s'", module);
    }
    cfg.default_action.kind = ACT_NONE;
    if (rules != NULL)
        parse_rules(rules); /* after the module: '*=nomodule' overrides it */
    if (log != NULL) {
        if (strlen(log) >= sizeof(cfg.log_path))
            die("TOA_EMU_LOG is too long");
        strcpy(cfg.log_path, log);
    }
}

/* ---- the emulated module ---------------------------------------------- */

static const struct action *action_for(const struct client *client)
{
    int i;
    for (i = 0; i < cfg.nrules; i++)
        if (same_client(&cfg.rules[i].key, client))
            return &cfg.rules[i].action;
    return &cfg.default_action;
}

static void client_of(const struct sockaddr_storage *ss, struct client *out)
{
    if (ss->ss_family == AF_INET6)
        normalise(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, out);
    else
        normalise(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, out);
}

static int is_tcp(int fd)
{
    int type = 0;
    socklen_t len = sizeof(type);
    return real_getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM;
}

static void log_call(int fd, const char *peer, int result, const char *call)
{
    char line[160];
    int n, log_fd;

    if (cfg.log_path[0] == '\0')
        return;
    n = snprintf(line, sizeof(line), "%ld %d %s %d %s\n", (long)getpid(), fd, peer, result, call);
    /* Opened per call, O_APPEND, one write: lines from threads and forked
     * workers never interleave, and no descriptor leaks into the app. */
    log_fd = open(cfg.log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (log_fd < 0)
        die("cannot open TOA_EMU_LOG '%s': %s", cfg.log_path, strerror(errno));
    if (write(log_fd, line, (size_t)n) != n)
        die("cannot write TOA_EMU_LOG '%s'", cfg.log_path);
    close(log_fd);
}

/*
 * The module's getsockopt handler (inet64_getname_toa in the module source):
 * check the buffer, then the connection state, then the stored option.
 * Returns 0 or a positive errno; *peer gets the normalised client text.
 */
static int emulate_lookup(int fd, void *optval, socklen_t *optlen, char *peer, size_t peer_size)
{
    int family = 0, connected, peer_errno;
    socklen_t len = sizeof(family);
    struct sockaddr_storage ss;
    socklen_t ss_len = sizeof(ss);
    struct client client;
    const struct action *action;
    unsigned char answer[TOA_PEER_SIZE];
    uint16_t port_be;

    if (real_getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &len) != 0 ||
        (family != AF_INET && family != AF_INET6)) {
        /* Not an IP socket (or not a socket): the kernel answers, not the module. */
        return real_getsockopt(fd, IPPROTO_IP, TOA_SO_GET_LOOKUP, optval, optlen) == 0 ? 0 : errno;
    }
    /* The real peer, for the log and the rules; errors are reported below. */
    connected = real_getpeername(fd, (struct sockaddr *)&ss, &ss_len) == 0;
    peer_errno = errno;
    if (connected) {
        client_of(&ss, &client);
        inet_ntop(client.family, client.addr, peer, (socklen_t)peer_size);
    }

    if (cfg.module != MOD_LOOKUP)
        return ENOPROTOOPT; /* no module, or one without the lookup */
    if (optlen == NULL)
        return EFAULT; /* the kernel cannot read the length */
    if (optval == NULL || *optlen < TOA_PEER_SIZE)
        return EINVAL;
    if (!connected)
        return peer_errno; /* ENOTCONN: listening or unconnected */
    if (!is_tcp(fd))
        return EINVAL; /* TCP only: no option can have arrived */

    action = action_for(&client);
    switch (action->kind) {
    case ACT_NONE:
    case ACT_TOA200: /* options this module does not parse */
    case ACT_V6VTOA:
        return EINVAL;
    case ACT_ERRNO:
        return action->value;
    case ACT_V4TOA:
        return EFAULT; /* getpeername() is rewritten instead */
    case ACT_NAT64:
        if (family == AF_INET6)
            return EFAULT; /* getpeername() is rewritten instead */
        /* fall through */
    case ACT_BADLEN:
        memcpy(answer, action->addr, 16);
        port_be = htons(action->port);
        memcpy(answer + 16, &port_be, 2);
        answer[18] = answer[19] = 0xAB; /* tail padding: undefined contents */
        len = action->kind == ACT_BADLEN ? (socklen_t)action->value : TOA_PEER_SIZE;
        memcpy(optval, answer, len);
        *optlen = len;
        return 0;
    }
    return EINVAL;
}

/* Which client address the loaded module writes into the peer name of a socket
 * of this family for this action: 4 (IPv4), 6 (IPv6), or 0 (the peer is left alone). */
static int rewritten_as(const struct action *action, int family)
{
    switch (cfg.module) {
    case MOD_LOOKUP: /* Huawei IPv6 build, dpvs */
        if (action->kind == ACT_V4TOA)
            return 4;
        return action->kind == ACT_NAT64 && family == AF_INET6 ? 6 : 0;
    case MOD_REWRITING: /* UCloud (Huawei master: the same on AF_INET) */
        return action->kind == ACT_V4TOA || action->kind == ACT_TOA200 ? 4 : 0;
    case MOD_VTOA:
        if (action->kind == ACT_V4TOA)
            return 4;
        if (action->kind == ACT_V6VTOA)
            return 6; /* on an AF_INET socket too: a sockaddr_in6 of 28 bytes */
        return action->kind == ACT_NAT64 && family == AF_INET6 ? 6 : 0;
    case MOD_ABSENT:
        break;
    }
    return 0;
}

/*
 * The module's getname hook: report the option's address in place of the real
 * peer, as rewritten_as() says. Returns 1 and rewrites *ss / *ss_len when it applies.
 */
static int rewrite_peer(int fd, struct sockaddr_storage *ss, socklen_t *ss_len)
{
    struct client client;
    const struct action *action;
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    int as;

    if (cfg.module == MOD_ABSENT || (ss->ss_family != AF_INET && ss->ss_family != AF_INET6) || !is_tcp(fd))
        return 0;
    client_of(ss, &client);
    action = action_for(&client);
    as = rewritten_as(action, ss->ss_family);
    if (as == 4 && ss->ss_family == AF_INET) {
        memcpy(&sin->sin_addr, action->addr, 4);
        sin->sin_port = htons(action->port);
        return 1;
    }
    if (as != 0) {
        /* An AF_INET6 socket reports an IPv4 client IPv4-mapped; vtoa's V6VTOA makes an
         * AF_INET socket report an AF_INET6 address too (28 bytes, not 16). */
        memset(sin6, 0, sizeof(*sin6));
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(action->port);
        if (as == 4) {
            sin6->sin6_addr.s6_addr[10] = 0xff;
            sin6->sin6_addr.s6_addr[11] = 0xff;
            memcpy(&sin6->sin6_addr.s6_addr[12], action->addr, 4);
        } else {
            memcpy(&sin6->sin6_addr, action->addr, 16);
        }
        *ss_len = sizeof(*sin6);
        return 1;
    }
    return 0;
}

/*
 * Alibaba vtoa's virtual-server calls (do_vtoa_get_ctl): check the buffer, then
 * what the connection carried. 1345 and 1346 answer for an IPv4 VIP (the vid in
 * network order, as the option carried it), 1347 for a V6VTOA option only (as
 * observed in the lab: vid in host order, the IPv6 VIP, AF_INET6, port 0);
 * everything else, a listening socket included, gets ESRCH.
 */
static int emulate_virtual_server(int fd, int optname, void *optval, socklen_t *optlen, char *peer,
                                  size_t peer_size)
{
    struct sockaddr_storage ss;
    socklen_t ss_len = sizeof(ss);
    struct client client;
    const struct action *action;
    unsigned char answer[V6VTOA_VS_SIZE];
    uint32_t vid_be;
    uint16_t port_be;
    uint16_t family16;
    socklen_t need = optname == VTOA_SO_GET_VS       ? VTOA_VS_SIZE
                     : optname == VTOA_SO_GET_VS4RDS ? VTOA_VS4RDS_SIZE
                                                     : V6VTOA_VS_SIZE;

    if (real_getpeername(fd, (struct sockaddr *)&ss, &ss_len) == 0) {
        client_of(&ss, &client);
        inet_ntop(client.family, client.addr, peer, (socklen_t)peer_size);
    } else {
        ss.ss_family = AF_UNSPEC;
    }
    if (cfg.module != MOD_VTOA)
        return ENOPROTOOPT;
    if (optlen == NULL || optval == NULL)
        return EFAULT;
    if (*optlen < need || (optname == VTOA_SO_GET_VS4RDS && *optlen != need))
        return EINVAL;
    if (ss.ss_family == AF_UNSPEC || !is_tcp(fd))
        return ESRCH;
    action = action_for(&client);
    memset(answer, 0, sizeof(answer));
    if (optname == HYBRID_VTOA_SO_GET_VS) {
        if (action->kind != ACT_V6VTOA)
            return ESRCH;
        {
            uint32_t vid = action->has_vs ? action->vs_vid : 0xFFFFFF;
            memcpy(answer, &vid, 4);
        }
        if (action->has_vs)
            memcpy(answer + 4, action->vs_vip, 16);
        family16 = AF_INET6;
        memcpy(answer + 20, &family16, 2); /* port 0 */
        memcpy(optval, answer, V6VTOA_VS_SIZE);
        return 0;
    }
    if (!action->has_vs || action->vs_family != AF_INET)
        return ESRCH;
    vid_be = htonl(action->vs_vid);
    port_be = htons(action->vs_port);
    memcpy(answer, &vid_be, 4);
    memcpy(answer + 4, action->vs_vip, 4);
    memcpy(answer + 8, &port_be, 2);
    /* 1346 writes only its one entry, after the 20-byte header the caller filled. */
    memcpy((unsigned char *)optval + (optname == VTOA_SO_GET_VS4RDS ? 20 : 0), answer, VTOA_VS_SIZE);
    return 0;
}

/* After a successful getpeername()/accept() into (addr, *len) whose buffer held
 * `capacity` bytes: overwrite it with the rewritten peer, if any, truncating
 * like the kernel does. errno is left as it was. */
static void rewrite_reported_peer(int fd, struct sockaddr *addr, socklen_t *len, socklen_t capacity)
{
    struct sockaddr_storage ss;
    socklen_t ss_len = sizeof(ss);
    int saved_errno = errno;

    if (addr != NULL && len != NULL && real_getpeername(fd, (struct sockaddr *)&ss, &ss_len) == 0 &&
        rewrite_peer(fd, &ss, &ss_len)) {
        memcpy(addr, &ss, capacity < ss_len ? capacity : ss_len);
        *len = ss_len;
    }
    errno = saved_errno;
}

/* ---- the wrapped libc functions ---------------------------------------- */

int getsockopt(int fd, int level, int optname, void *optval, socklen_t *optlen)
{
    char peer[INET6_ADDRSTRLEN] = "-";
    char call[16];
    int result;

    pthread_once(&init_once, init);
    if (level != IPPROTO_IP ||
        (optname != TOA_SO_GET_LOOKUP && (optname < VTOA_SO_GET_VS || optname > HYBRID_VTOA_SO_GET_VS)))
        return real_getsockopt(fd, level, optname, optval, optlen);
    if (optname == TOA_SO_GET_LOOKUP)
        result = emulate_lookup(fd, optval, optlen, peer, sizeof(peer));
    else
        result = emulate_virtual_server(fd, optname, optval, optlen, peer, sizeof(peer));
    snprintf(call, sizeof(call), "%d", optname);
    log_call(fd, peer, result, call);
    if (result != 0) {
        errno = result;
        return -1;
    }
    return 0;
}

/* Log each sock_diag request (a read of the kernel's TCP table); pass everything through. */
ssize_t sendto(int fd, const void *buf, size_t n, int flags, __CONST_SOCKADDR_ARG addr, socklen_t addr_len)
{
    int domain = 0, protocol = 0;
    socklen_t len = sizeof(domain);

    pthread_once(&init_once, init);
    if (real_getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain == AF_NETLINK) {
        len = sizeof(protocol);
        if (real_getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) == 0 && protocol == NETLINK_SOCK_DIAG)
            log_call(fd, "-", 0, "diag");
    }
    return real_sendto(fd, buf, n, flags, addr.__sockaddr__, addr_len);
}

int getpeername(int fd, __SOCKADDR_ARG addr, socklen_t *__restrict len)
{
    socklen_t capacity = len != NULL ? *len : 0;

    pthread_once(&init_once, init);
    if (real_getpeername(fd, addr.__sockaddr__, len) != 0)
        return -1;
    rewrite_reported_peer(fd, addr.__sockaddr__, len, capacity);
    return 0;
}

int accept(int fd, __SOCKADDR_ARG addr, socklen_t *__restrict len)
{
    socklen_t capacity = len != NULL ? *len : 0;
    int conn;

    pthread_once(&init_once, init);
    conn = real_accept(fd, addr.__sockaddr__, len);
    if (conn >= 0)
        rewrite_reported_peer(conn, addr.__sockaddr__, len, capacity);
    return conn;
}

int accept4(int fd, __SOCKADDR_ARG addr, socklen_t *__restrict len, int flags)
{
    socklen_t capacity = len != NULL ? *len : 0;
    int conn;

    pthread_once(&init_once, init);
    conn = real_accept4(fd, addr.__sockaddr__, len, flags);
    if (conn >= 0)
        rewrite_reported_peer(conn, addr.__sockaddr__, len, capacity);
    return conn;
}
