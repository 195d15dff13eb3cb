/* The benchmark fleet in C: Modbus TCP units served by libmodbus, fast enough that no gateway
 * under test waits on it.
 *
 *   fleet_server SPEC_FILE
 *
 * SPEC_FILE (written by bench/cfleet.py from the shipped device profiles) lists the ports to
 * listen on (127.0.0.1) and, per port, the units behind it with their register tables as raw
 * 16-bit words (libmodbus 3.1.6's float helpers swap bytes inside words, so none are used):
 *
 *   port 5020
 *   unit 1
 *   table holding 100 1 30          <- table, start address, count, values...
 *   table input 0 10 1800 16620 ...
 *   end
 *
 * One thread, one poll() loop over every listening and client socket; each readable client
 * socket gets one modbus_receive() and one modbus_reply() with the mapping of the request's
 * unit id (MBAP byte 6). A request for a unit that is not listed is answered with exception 11
 * (gateway target device failed to respond). Pipelined requests stay in the socket buffer and
 * are served in order on the following rounds. On stdout: "listening" once every port is open;
 * on SIGTERM/SIGINT it prints the requests it answered and exits.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <modbus.h>

#define MAX_PORTS 64
#define MAX_FDS 8192
#define MAX_UNITS 256

typedef struct {
    int port;
    int listen_fd;
    modbus_mapping_t *units[MAX_UNITS];
} bus_t;

static bus_t buses[MAX_PORTS];
static int n_buses = 0;
static volatile sig_atomic_t stopping = 0;

static void on_signal(int sig) {
    (void)sig;
    stopping = 1;
}

static int table_index(const char *name) {
    if (strcmp(name, "coil") == 0) return 0;
    if (strcmp(name, "discrete_input") == 0) return 1;
    if (strcmp(name, "holding") == 0) return 2;
    if (strcmp(name, "input") == 0) return 3;
    return -1;
}

/* Reads the spec; each unit's tables are kept as (start, count, values) until "end", then made
 * into one libmodbus mapping whose four tables start at the given addresses. */
static int load(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return -1;
    }
    char word[64];
    bus_t *bus = NULL;
    int unit = -1;
    int start[4], count[4];
    uint16_t *values[4];
    memset(values, 0, sizeof values);
    while (fscanf(f, "%63s", word) == 1) {
        if (strcmp(word, "port") == 0) {
            if (n_buses == MAX_PORTS || fscanf(f, "%d", &buses[n_buses].port) != 1) return -1;
            bus = &buses[n_buses++];
        } else if (strcmp(word, "unit") == 0) {
            if (!bus || fscanf(f, "%d", &unit) != 1 || unit < 0 || unit >= MAX_UNITS) return -1;
            for (int t = 0; t < 4; t++) {
                start[t] = 0;
                count[t] = 0;
                free(values[t]);
                values[t] = NULL;
            }
        } else if (strcmp(word, "table") == 0) {
            char name[32];
            int t, s, n;
            if (fscanf(f, "%31s %d %d", name, &s, &n) != 3 || (t = table_index(name)) < 0 ||
                n < 0 || n > 65536)
                return -1;
            start[t] = s;
            count[t] = n;
            values[t] = calloc(n ? n : 1, sizeof(uint16_t));
            for (int i = 0; i < n; i++) {
                unsigned v;
                if (fscanf(f, "%u", &v) != 1) return -1;
                values[t][i] = (uint16_t)v;
            }
        } else if (strcmp(word, "end") == 0) {
            if (!bus || unit < 0) return -1;
            modbus_mapping_t *m = modbus_mapping_new_start_address(
                start[0], count[0], start[1], count[1], start[2], count[2], start[3], count[3]);
            if (!m) return -1;
            for (int i = 0; i < count[0]; i++) m->tab_bits[i] = values[0][i] ? 1 : 0;
            for (int i = 0; i < count[1]; i++) m->tab_input_bits[i] = values[1][i] ? 1 : 0;
            if (count[2]) memcpy(m->tab_registers, values[2], count[2] * sizeof(uint16_t));
            if (count[3]) memcpy(m->tab_input_registers, values[3], count[3] * sizeof(uint16_t));
            bus->units[unit] = m;
            unit = -1;
        } else {
            fprintf(stderr, "%s: unknown word %s\n", path, word);
            return -1;
        }
    }
    fclose(f);
    return n_buses > 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s SPEC_FILE\n", argv[0]);
        return 2;
    }
    if (load(argv[1]) != 0) {
        fprintf(stderr, "%s: not a fleet spec\n", argv[1]);
        return 2;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);

    static struct pollfd fds[MAX_FDS];
    static int bus_of[MAX_FDS]; /* index into fds -> bus */
    int nfds = 0;
    for (int b = 0; b < n_buses; b++) {
        modbus_t *listener = modbus_new_tcp("127.0.0.1", buses[b].port);
        int fd = listener ? modbus_tcp_listen(listener, 1024) : -1;
        if (fd < 0) {
            fprintf(stderr, "cannot listen on port %d: %s\n", buses[b].port, modbus_strerror(errno));
            return 1;
        }
        buses[b].listen_fd = fd;
        fds[nfds].fd = fd;
        fds[nfds].events = POLLIN;
        bus_of[nfds++] = b;
    }
    modbus_t *ctx = modbus_new_tcp("127.0.0.1", 0); /* serves every client socket in turn */
    uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
    unsigned long long answered = 0;
    printf("listening\n");
    fflush(stdout);

    while (!stopping) {
        int ready = poll(fds, nfds, 500);
        if (ready < 0) {
            if (errno == EINTR) continue;
            perror("poll");
            return 1;
        }
        int listeners = n_buses;
        for (int i = 0; i < nfds && ready > 0; i++) {
            if (!fds[i].revents) continue;
            ready--;
            if (i < listeners) {
                int client = accept(fds[i].fd, NULL, NULL);
                if (client < 0) continue;
                if (nfds == MAX_FDS) {
                    close(client);
                    continue;
                }
                int one = 1;
                setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                fds[nfds].fd = client;
                fds[nfds].events = POLLIN;
                fds[nfds].revents = 0;
                bus_of[nfds++] = bus_of[i];
                continue;
            }
            modbus_set_socket(ctx, fds[i].fd);
            int rc = modbus_receive(ctx, query);
            if (rc > 0) {
                modbus_mapping_t *m = buses[bus_of[i]].units[query[6]];
                if (m) {
                    modbus_reply(ctx, query, rc, m);
                } else {
                    modbus_reply_exception(
                        ctx, query, MODBUS_EXCEPTION_GATEWAY_TARGET);
                }
                answered++;
            } else if (rc < 0) { /* closed by the peer, or a broken frame: drop the client */
                close(fds[i].fd);
                fds[i] = fds[nfds - 1];
                bus_of[i] = bus_of[nfds - 1];
                nfds--;
                i--; /* look at the one moved here (its revents were not read yet) */
            }
        }
    }
    printf("answered %llu\n", answered);
    return 0;
}
