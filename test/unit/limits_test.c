/* limits_test: total and per-address connection caps, IPv4-mapped addresses,
 * and the caps holding when several worker threads share one table. */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
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

/* IPv6 clients count by /64: addresses picked from one network share the
 * cap, another network has its own. */
static void test_ipv6_counts_by_64(void)
{
    stp_limits_t l;
    struct sockaddr_storage a = v6("2001:db8:1:2::1"), b = v6("2001:db8:1:2:ffff:1:2:3"),
                            c = v6("2001:db8:1:3::1"), m1 = v6("::ffff:192.0.2.1"),
                            m2 = v6("::ffff:192.0.2.2");
    CHECK_EQ_INT(stp_limits_init(&l, 0, 2), 0);
    CHECK_EQ_INT(stp_limits_acquire(&l, SA(a)), STP_LIMIT_OK);
    CHECK_EQ_INT(stp_limits_acquire(&l, SA(b)), STP_LIMIT_OK);
    CHECK_EQ_INT(stp_limits_acquire(&l, SA(a)), STP_LIMIT_PER_IP);
    CHECK_EQ_INT(stp_limits_acquire(&l, SA(b)), STP_LIMIT_PER_IP);
    CHECK_EQ_INT(stp_limits_acquire(&l, SA(c)), STP_LIMIT_OK);
    stp_limits_release(&l, SA(b)); /* frees a slot of the /64 */
    CHECK_EQ_INT(stp_limits_acquire(&l, SA(a)), STP_LIMIT_OK);
    /* IPv4-mapped addresses stay per address, as IPv4 */
    CHECK_EQ_INT(stp_limits_acquire(&l, SA(m1)), STP_LIMIT_OK);
    CHECK_EQ_INT(stp_limits_acquire(&l, SA(m1)), STP_LIMIT_OK);
    CHECK_EQ_INT(stp_limits_acquire(&l, SA(m2)), STP_LIMIT_OK);
    CHECK_EQ_INT(stp_limits_acquire(&l, SA(m1)), STP_LIMIT_PER_IP);
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

/* Worker threads hammering one table: the per-IP cap is never exceeded at
 * any moment, and every slot taken is given back. */
#define THREADS 4
#define ROUNDS 20000
#define CAP 3

typedef struct {
    stp_limits_t *l;
    atomic_int *held;
    atomic_int *over;
    atomic_int *ok;
} shared_t;

static void *hammer(void *arg)
{
    shared_t *sh = arg;
    struct sockaddr_storage a = v4("192.0.2.7");
    for (int i = 0; i < ROUNDS; i++) {
        if (stp_limits_acquire(sh->l, SA(a)) == STP_LIMIT_OK) {
            atomic_fetch_add(sh->ok, 1);
            if (atomic_fetch_add(sh->held, 1) + 1 > CAP) {
                atomic_fetch_add(sh->over, 1);
            }
            atomic_fetch_sub(sh->held, 1);
            stp_limits_release(sh->l, SA(a));
        }
    }
    return NULL;
}

static void test_shared_by_threads(void)
{
    stp_limits_t l;
    atomic_int held = 0, over = 0, ok = 0;
    shared_t sh = {&l, &held, &over, &ok};
    pthread_t t[THREADS];
    CHECK_EQ_INT(stp_limits_init(&l, 0, CAP), 0);
    for (int i = 0; i < THREADS; i++) {
        CHECK_EQ_INT(pthread_create(&t[i], NULL, hammer, &sh), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
    }
    CHECK_EQ_INT(atomic_load(&over), 0);
    CHECK(atomic_load(&ok) > 0);
    CHECK_EQ_INT(stp_limits_total(&l), 0);
    /* and the table is empty again: exactly CAP fresh slots for that address */
    struct sockaddr_storage a = v4("192.0.2.7");
    for (int i = 0; i < CAP; i++) {
        CHECK_EQ_INT(stp_limits_acquire(&l, SA(a)), STP_LIMIT_OK);
    }
    CHECK_EQ_INT(stp_limits_acquire(&l, SA(a)), STP_LIMIT_PER_IP);
    stp_limits_free(&l);
}

/* Threads racing for the last slots of a total cap: exactly the cap wins. */
static void *grab(void *arg)
{
    shared_t *sh = arg;
    char ip[32];
    for (int i = 0; i < 50; i++) {
        snprintf(ip, sizeof(ip), "198.51.100.%d", i);
        struct sockaddr_storage a = v4(ip);
        if (stp_limits_acquire(sh->l, SA(a)) == STP_LIMIT_OK) {
            atomic_fetch_add(sh->ok, 1);
        }
    }
    return NULL;
}

static void test_total_cap_across_threads(void)
{
    stp_limits_t l;
    atomic_int held = 0, over = 0, ok = 0;
    shared_t sh = {&l, &held, &over, &ok};
    pthread_t t[THREADS];
    CHECK_EQ_INT(stp_limits_init(&l, 70, 0), 0);
    for (int i = 0; i < THREADS; i++) {
        CHECK_EQ_INT(pthread_create(&t[i], NULL, grab, &sh), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
    }
    CHECK_EQ_INT(atomic_load(&ok), 70);
    CHECK_EQ_INT(stp_limits_total(&l), 70);
    stp_limits_free(&l);
}

int main(void)
{
    STP_RUN(test_shared_by_threads);
    STP_RUN(test_total_cap_across_threads);
    STP_RUN(test_per_ip_cap);
    STP_RUN(test_total_cap);
    STP_RUN(test_mapped_counts_as_ipv4);
    STP_RUN(test_ipv6_counts_by_64);
    STP_RUN(test_release_unknown_is_harmless);
    return STP_CHECK_DONE();
}
