/* The ceiling of the field-bus benchmark: libmodbus' own (blocking) client reading the fleet
 * as fast as it answers, one thread and one connection per bus, one request in flight each.
 *
 *   fleet_client SPEC_FILE SECONDS
 *
 * SPEC_FILE (written by bench/cfleet.py) lists per bus its port and the read requests of one
 * cycle over its units, each with the number of points it serves (from the planner):
 *
 *   port 5020
 *   read 1 4 0 10 7                 <- unit, function (1-4), start, count, points
 *   read 1 3 100 1 1
 *   end
 *
 * Each thread repeats its cycle until SECONDS have passed, then the program prints
 * "requests N points N errors N" for all threads together. Values are read, not decoded or
 * published: this is the cost of asking alone.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <modbus.h>

#define MAX_BUSES 64
#define MAX_READS 8192

typedef struct {
    int unit, function, start, count, points;
} read_t;

typedef struct {
    int port;
    int n;
    read_t reads[MAX_READS];
    unsigned long long requests, points, errors;
} bus_t;

static bus_t buses[MAX_BUSES];
static int n_buses = 0;
static double seconds = 10;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *run(void *arg) {
    bus_t *bus = arg;
    modbus_t *ctx = modbus_new_tcp("127.0.0.1", bus->port);
    if (!ctx || modbus_connect(ctx) != 0) {
        fprintf(stderr, "cannot connect to %d: %s\n", bus->port, modbus_strerror(errno));
        bus->errors++;
        return NULL;
    }
    uint16_t regs[MODBUS_MAX_READ_REGISTERS];
    uint8_t bits[MODBUS_MAX_READ_BITS];
    double end = now() + seconds;
    while (now() < end) {
        for (int i = 0; i < bus->n; i++) {
            read_t *r = &bus->reads[i];
            modbus_set_slave(ctx, r->unit);
            int rc;
            switch (r->function) {
                case 1: rc = modbus_read_bits(ctx, r->start, r->count, bits); break;
                case 2: rc = modbus_read_input_bits(ctx, r->start, r->count, bits); break;
                case 3: rc = modbus_read_registers(ctx, r->start, r->count, regs); break;
                default: rc = modbus_read_input_registers(ctx, r->start, r->count, regs); break;
            }
            bus->requests++;
            if (rc == r->count) {
                bus->points += r->points;
            } else {
                bus->errors++;
            }
        }
    }
    modbus_close(ctx);
    modbus_free(ctx);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s SPEC_FILE SECONDS\n", argv[0]);
        return 2;
    }
    seconds = atof(argv[2]);
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    char word[32];
    bus_t *bus = NULL;
    while (fscanf(f, "%31s", word) == 1) {
        if (strcmp(word, "port") == 0 && n_buses < MAX_BUSES) {
            bus = &buses[n_buses++];
            if (fscanf(f, "%d", &bus->port) != 1) return 2;
        } else if (strcmp(word, "read") == 0 && bus && bus->n < MAX_READS) {
            read_t *r = &bus->reads[bus->n++];
            if (fscanf(f, "%d %d %d %d %d", &r->unit, &r->function, &r->start, &r->count,
                       &r->points) != 5)
                return 2;
        } else if (strcmp(word, "end") != 0) {
            fprintf(stderr, "%s: unknown word %s\n", argv[1], word);
            return 2;
        }
    }
    fclose(f);
    pthread_t threads[MAX_BUSES];
    for (int b = 0; b < n_buses; b++) pthread_create(&threads[b], NULL, run, &buses[b]);
    unsigned long long requests = 0, points = 0, errors = 0;
    for (int b = 0; b < n_buses; b++) {
        pthread_join(threads[b], NULL);
        requests += buses[b].requests;
        points += buses[b].points;
        errors += buses[b].errors;
    }
    printf("requests %llu points %llu errors %llu\n", requests, points, errors);
    return 0;
}
