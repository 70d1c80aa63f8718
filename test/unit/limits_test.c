/* limits_test: total and per-address connection caps, IPv4-mapped addresses. */
#include <arpa/inet.h>
#include <string.h>

#include "proxy/limits.h"
#include "test/unit/check.h"

static struct sockaddr_storage v4(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    sin->sin_family = AF_INET;
    inet_pton(AF_INET, ip, &sin->sin_addr);
    return ss;
}

static struct sockaddr_storage v6(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    sin6->sin6_family = AF_INET6;
    inet_pton(AF_INET6, ip, &sin6->sin6_addr);
    return ss;
}

#define SA(x) ((struct sockaddr *)&(x))

static void test_per_ip_cap(void)
{
    stp_limits_t l;
    struct sockaddr_storage a = v4("192.0.2.1"), b = v4("192.0.2.2");
    CHECK_EQ_INT(stp_limits_init(&l, 100, 2), 0);
    CHECK_EQ_INT(stp_limits_acquire(&l, SA(a)), STP_LIMIT_OK);
    CHECK_EQ_INT(stp_limits_acquire(&l, SA(a)), STP_LIMIT_OK);
    CHECK_EQ_INT(stp_limits_acquire(&l, SA(a)), STP_LIMIT_PER_IP);
    CHECK_EQ_INT(stp_limits_acquire(&l, SA(b)), STP_LIMIT_OK);
    CHECK_EQ_INT(l.total, 3);
    stp_limits_release(&l, SA(a));
    CHECK_EQ_INT(stp_limits_acquire(&l, SA(a)), STP_LIMIT_OK);
    stp_limits_free(&l);
}

static void test_total_cap(void)
{
    stp_limits_t l;
    char ip[32];
    CHECK_EQ_INT(stp_limits_init(&l, 3, 0), 0);
    for (int i = 0; i < 3; i++) {
        snprintf(ip, sizeof(ip), "198.51.100.%d", i);
        struct sockaddr_storage a = v4(ip);
        CHECK_EQ_INT(stp_limits_acquire(&l, SA(a)), STP_LIMIT_OK);
    }
    struct sockaddr_storage x = v4("203.0.113.9");
    CHECK_EQ_INT(stp_limits_acquire(&l, SA(x)), STP_LIMIT_TOTAL);
    struct sockaddr_storage a0 = v4("198.51.100.0");
    stp_limits_release(&l, SA(a0));
    CHECK_EQ_INT(stp_limits_acquire(&l, SA(x)), STP_LIMIT_OK);
    stp_limits_free(&l);
}

static void test_mapped_counts_as_ipv4(void)
{
    stp_limits_t l;
    struct sockaddr_storage a = v4("192.0.2.1"), m = v6("::ffff:192.0.2.1"), o = v6("2001:db8::1");
    CHECK_EQ_INT(stp_limits_init(&l, 0, 1), 0);
    CHECK_EQ_INT(stp_limits_acquire(&l, SA(a)), STP_LIMIT_OK);
    CHECK_EQ_INT(stp_limits_acquire(&l, SA(m)), STP_LIMIT_PER_IP);
    CHECK_EQ_INT(stp_limits_acquire(&l, SA(o)), STP_LIMIT_OK);
    stp_limits_release(&l, SA(m)); /* releases the IPv4 slot */
    CHECK_EQ_INT(stp_limits_acquire(&l, SA(a)), STP_LIMIT_OK);
    stp_limits_free(&l);
}

static void test_release_unknown_is_harmless(void)
{
    stp_limits_t l;
    struct sockaddr_storage a = v4("192.0.2.1");
    CHECK_EQ_INT(stp_limits_init(&l, 1, 1), 0);
    stp_limits_release(&l, SA(a));
    CHECK_EQ_INT(l.total, 0);
    CHECK_EQ_INT(stp_limits_acquire(&l, SA(a)), STP_LIMIT_OK);
    stp_limits_free(&l);
}

int main(void)
{
    STP_RUN(test_per_ip_cap);
    STP_RUN(test_total_cap);
    STP_RUN(test_mapped_counts_as_ipv4);
    STP_RUN(test_release_unknown_is_harmless);
    return STP_CHECK_DONE();
}
