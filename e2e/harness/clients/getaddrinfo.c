/*
 * getaddrinfo [-4|-6] NAME [NAME...]
 *
 * Resolves each NAME the way applications do: getaddrinfo(NAME, NULL, hints)
 * with hints {ai_family = AF_UNSPEC (or AF_INET with -4, AF_INET6 with -6),
 * ai_socktype = SOCK_STREAM}. Prints one line per name:
 *
 *   NAME ok ADDR [ADDR...]      numeric addresses (getnameinfo NI_NUMERICHOST),
 *                               sorted, without duplicates
 *   NAME fail <gai_strerror>    the resolver's own error text
 *
 * Always exits 0 once the arguments are valid (2 on a usage error), so the
 * caller reads the outcome from the lines, not the exit status.
 *
 * Built twice by e2e/realclients.py: `musl-gcc -static -O2` (the resolver of
 * Alpine and busybox images) and `gcc -O2` (glibc, through nsswitch).
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#define MAX_ADDRS 64

static int compare(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

static void resolve(const char *name, int family)
{
    struct addrinfo hints;
    struct addrinfo *res = NULL;
    struct addrinfo *ai;
    static char addrs[MAX_ADDRS][NI_MAXHOST];
    size_t count = 0;
    size_t i;
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = family;
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(name, NULL, &hints, &res);
    if (rc != 0) {
        printf("%s fail %s\n", name, gai_strerror(rc));
        fflush(stdout);
        return;
    }
    for (ai = res; ai != NULL && count < MAX_ADDRS; ai = ai->ai_next) {
        char host[NI_MAXHOST];
        int dup = 0;
        if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof(host), NULL, 0,
                        NI_NUMERICHOST) != 0)
            continue;
        for (i = 0; i < count; i++) {
            if (strcmp(addrs[i], host) == 0) {
                dup = 1;
                break;
            }
        }
        if (!dup) {
            snprintf(addrs[count], sizeof(addrs[count]), "%s", host);
            count++;
        }
    }
    freeaddrinfo(res);
    qsort(addrs, count, sizeof(addrs[0]), compare);
    printf("%s ok", name);
    for (i = 0; i < count; i++)
        printf(" %s", addrs[i]);
    printf("\n");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int family = AF_UNSPEC;
    int i = 1;

    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "-4") == 0) {
            family = AF_INET;
        } else if (strcmp(argv[i], "-6") == 0) {
            family = AF_INET6;
        } else if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        } else {
            fprintf(stderr, "usage: %s [-4|-6] NAME [NAME...]\n", argv[0]);
            return 2;
        }
    }
    if (i >= argc) {
        fprintf(stderr, "usage: %s [-4|-6] NAME [NAME...]\n", argv[0]);
        return 2;
    }
    for (; i < argc; i++)
        resolve(argv[i], family);
    return 0;
}
