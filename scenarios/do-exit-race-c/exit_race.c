/*
 * exit_race.c - C port of the Rust workload guest/src/workloads/exit_race.rs
 * (the `exit-race` program of the guest binary), for scenarios that run a
 * C reproducer. Same arguments, same behaviour, same output.
 *
 * The seed race's workload (b5740f4b2cb3): threads pinned to CPU `a` exit
 * while a sibling pinned to CPU `b` takes `mmap_lock` for writing in a
 * loop. An exiting thread's do_exit() -> exit_mm() -> mmap_read_lock()
 * then queues on the rwsem behind the writer, and the writer's up_write()
 * wakes it through rwsem_wake() -> wake_up_q() -> try_to_wake_up():
 * the waker on CPU b, the exiting task on CPU a.
 *
 * Arguments (key=value): iters (rounds), threads (exiting threads per
 * round), a, b (CPU numbers), jitter (each exiting thread first spins a
 * number of iterations below this, drawn from the run's seed, so runs
 * restored from one snapshot still differ in timing). Defaults: iters=20
 * threads=4 a=0 b=1 jitter=10000. An unknown key or a bad value is a
 * message on stderr and exit status 2, so a typo in a scenario never
 * silently runs the default workload.
 *
 * The main thread, which spawns the exiting threads, runs on CPU b too.
 *
 * The snapshot point (preemptor_ready()) is after the setup: pinned, the
 * writer and all exiting threads spawned and parked. Restored runs start
 * straight at the exits.
 *
 * Build: gcc -static -O2 -pthread -Wall -I guest/include exit_race.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "preemptor.h"

#define NAME "exit-race"
#define PAGE 4096UL
/*
 * Thread stacks: small, since every exiting thread of every round is alive
 * at once (the guest has 128 MiB) and thread creation is emulated (slow).
 * The Rust workload uses std's default (2 MiB, only virtual); the threads
 * here need a few hundred bytes of it.
 */
#define STACK_SIZE (64UL * 1024)

static void die(const char *what)
{
	fprintf(stderr, NAME ": %s\n", what);
	exit(1);
}

static void die_errno(const char *what, int err)
{
	fprintf(stderr, NAME ": %s: %s\n", what, strerror(err));
	exit(1);
}

/*
 * A small PRNG for workload jitter (xorshift64*): reproducible per seed.
 * The same constants and below() as Rng in guest/src/lib.rs, so for a seed
 * the C port draws the same spin counts as the Rust workload.
 */
struct rng {
	uint64_t s;
};

static void rng_init(struct rng *r, uint64_t seed)
{
	r->s = (seed * 0x9e3779b97f4a7c15ULL) | 1;
}

static uint64_t rng_below(struct rng *r, uint64_t n)
{
	uint64_t x;

	r->s ^= r->s >> 12;
	r->s ^= r->s << 25;
	r->s ^= r->s >> 27;
	x = r->s * 0x2545f4914f6cdd1dULL;
	return n == 0 ? 0 : x % n;
}

/*
 * Parse `key=value` arguments with defaults; unknown keys are an error so
 * a typo in a scenario never silently runs the default workload. Values
 * are what Rust's u64::from_str takes: an optional '+', then decimal
 * digits, no overflow.
 */
struct arg {
	const char *name;
	uint64_t val;
};

static int parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (*s == '+')
		s++;
	if (!*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return 0;
}

/* NULL, or the first argument's error message (in buf). */
static const char *parse_args(int argc, char **argv, struct arg *known, size_t n,
			      char *buf, size_t len)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *eq = strchr(a, '=');
		size_t klen, k;

		if (!eq) {
			snprintf(buf, len, "argument '%s' is not key=value", a);
			return buf;
		}
		klen = (size_t)(eq - a);
		for (k = 0; k < n; k++)
			if (strlen(known[k].name) == klen && !strncmp(known[k].name, a, klen))
				break;
		if (k == n) {
			snprintf(buf, len, "unknown argument '%.*s'", (int)klen, a);
			return buf;
		}
		if (parse_u64(eq + 1, &known[k].val)) {
			snprintf(buf, len, "argument '%.*s': '%s' is not a number",
				 (int)klen, a, eq + 1);
			return buf;
		}
	}
	return NULL;
}

/* Pin the calling thread to one CPU; 0 or an errno value. */
static int pin(uint64_t cpu)
{
	if (cpu >= 1024)
		return EINVAL;
	return preemptor_pin((int)cpu) ? errno : 0;
}

static atomic_bool stop;
static atomic_uint_fast64_t writes;
static uint64_t cpu_a, cpu_b;
/* The writer waits on go; every thread posts parked once it is parked. */
static sem_t go, parked;

static void *writer_main(void *arg)
{
	void *p;
	int prot = PROT_READ, err;

	(void)arg;
	err = pin(cpu_b);
	if (err)
		die_errno("pin writer", err);
	/*
	 * mprotect() of a mapping that was never touched: mmap_lock for
	 * writing, and no page-table entries to change, so no TLB shootdown.
	 * munmap() would IPI CPU a while holding the lock, and with CPU a
	 * stopped by the injector the waker then never comes (measured: most
	 * stops of the exiting thread timed out). The page toggles between
	 * read and read+exec between two read+write neighbours: it is its own
	 * VMA and never merges or splits, so each call is cheap (a split or
	 * merge costs maple tree work, ~26 ms a call here).
	 */
	p = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("writer: mmap failed");
	/* The middle page of our own mapping; only its protection changes. */
	p = (char *)p + PAGE;
	sem_post(&parked);
	while (sem_wait(&go) && errno == EINTR)
		;
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		mprotect(p, PAGE, prot);
		prot ^= PROT_EXEC;
		atomic_fetch_add_explicit(&writes, 1, memory_order_relaxed);
	}
	return NULL;
}

/*
 * One exiting thread: pinned to CPU a and parked until released with its
 * spin count. Exiting threads are released one at a time, each spinning
 * its share of jitter before it exits: two exiting threads on CPU a at once
 * would let one hold mmap_lock for reading while stopped with the other,
 * and the waker would never come.
 */
struct exiter {
	pthread_t tid;
	sem_t go;
	uint64_t spins; /* written before go is posted */
};

static void *exiter_main(void *arg)
{
	struct exiter *e = arg;
	int err = pin(cpu_a);

	if (err)
		die_errno("pin exiter", err);
	sem_post(&parked);
	while (sem_wait(&e->go) && errno == EINTR)
		;
	for (uint64_t i = 0; i < e->spins; i++)
		__builtin_ia32_pause(); /* std::hint::spin_loop() */
	/*
	 * Returning ends the thread: exit() -> do_exit() -> exit_mm(). (Not
	 * pthread_exit(), which would unwind first; the kernel path is the
	 * same, but returning is what the Rust threads do.)
	 */
	return NULL;
}

static void spawn(pthread_t *tid, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
	int err = pthread_create(tid, attr, fn, arg);

	if (err)
		die_errno("spawn thread", err);
}

int main(int argc, char **argv)
{
	struct arg known[] = {
		{ "iters", 20 }, { "threads", 4 }, { "a", 0 }, { "b", 1 }, { "jitter", 10000 },
	};
	char msg[256];
	const char *e = parse_args(argc, argv, known, sizeof(known) / sizeof(known[0]),
				   msg, sizeof(msg));
	uint64_t iters, threads, jitter, total, exited = 0;
	struct exiter *ex;
	pthread_attr_t attr;
	pthread_t writer;
	struct rng rng;
	int err;

	if (e) {
		fprintf(stderr, NAME ": %s\n", e);
		return 2;
	}
	iters = known[0].val;
	threads = known[1].val;
	cpu_a = known[2].val;
	cpu_b = known[3].val;
	jitter = known[4].val;
	/*
	 * The spawning thread stays off CPU a: it takes mmap_lock itself
	 * (thread stacks), and an owner on CPU a would be stopped along with
	 * the exiting thread, so the waker would never come.
	 */
	err = pin(cpu_b);
	if (err) {
		fprintf(stderr, NAME ": cannot pin to cpu %llu: %s\n",
			(unsigned long long)cpu_b, strerror(err));
		return 2;
	}

	if (threads && iters > SIZE_MAX / sizeof(*ex) / threads)
		die("too many threads");
	total = iters * threads;
	ex = calloc(total ? total : 1, sizeof(*ex));
	if (!ex)
		die("out of memory");
	if (sem_init(&go, 0, 0) || sem_init(&parked, 0, 0))
		die_errno("sem_init", errno);
	err = pthread_attr_init(&attr);
	if (!err)
		err = pthread_attr_setstacksize(&attr, STACK_SIZE);
	if (err)
		die_errno("pthread_attr", err);

	spawn(&writer, &attr, writer_main, NULL);
	/*
	 * The writer and every exiting thread are spawned and parked before
	 * the snapshot point, so a restored run is all exits (a thread spawn
	 * costs tens of ms of emulated kernel work here). The writer is parked
	 * too: running, it shares CPU b with this thread and delayed a
	 * restored run's start by ~200 ms.
	 */
	for (uint64_t i = 0; i < total; i++) {
		if (sem_init(&ex[i].go, 0, 0))
			die_errno("sem_init", errno);
		spawn(&ex[i].tid, &attr, exiter_main, &ex[i]);
	}
	/*
	 * Not in the Rust workload, which relies on spawns being slow: wait
	 * until the writer and every exiting thread have pinned themselves
	 * and are about to park, so none of that setup runs after the
	 * snapshot point. (New threads inherit CPU b from this thread and
	 * only move to CPU a once they run.)
	 */
	for (uint64_t i = 0; i < total + 1; i++)
		while (sem_wait(&parked) && errno == EINTR)
			;
	rng_init(&rng, (uint64_t)preemptor_ready());
	sem_post(&go);
	/*
	 * Let the threads exit round by round, one after the other: each is
	 * released with its spin count and joined before the next one goes.
	 */
	for (uint64_t i = 0; i < total; i++) {
		ex[i].spins = rng_below(&rng, jitter);
		sem_post(&ex[i].go);
		err = pthread_join(ex[i].tid, NULL);
		if (err)
			die_errno("join exiting thread", err);
		exited++;
	}
	atomic_store_explicit(&stop, true, memory_order_relaxed);
	err = pthread_join(writer, NULL);
	if (err)
		die_errno("join writer", err);
	printf(NAME ": %llu threads exited on cpu %llu, %llu mmap_lock write cycles on cpu %llu\n",
	       (unsigned long long)exited, (unsigned long long)cpu_a,
	       (unsigned long long)atomic_load_explicit(&writes, memory_order_relaxed),
	       (unsigned long long)cpu_b);
	fflush(stdout);
	return 0;
}
