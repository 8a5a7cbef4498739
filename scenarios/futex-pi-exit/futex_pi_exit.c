/*
 * futex-pi-exit: the race fixed by 153fbd1226fb ("futex: Fix more
 * put_pi_state() vs. exit_pi_state_list() races"). Per iteration, on a
 * fresh PI futex word F:
 *
 *   O (pinned to CPU a) takes F in user space (F = its TID), waits until W
 *     has set FUTEX_WAITERS and blocked, then FUTEX_UNLOCK_PI(F): the kernel
 *     hands F and its pi_state to W (the pi_state moves to W's
 *     pi_state_list), and drops O's own reference with the unlocked
 *     put_pi_state() at the end of futex_unlock_pi().
 *   W (pinned to CPU b) FUTEX_LOCK_PI(F), blocks, wakes as the owner,
 *     drops its reference (futex_unqueue_pi()) and exits still owning F:
 *     do_exit() -> exit_pi_state_list(W) cleans the pi_state up.
 *
 * If O's put is the last (1 -> 0) and O is preempted right after the
 * decrement, before it unlinks the pi_state from W's list, W's exit finds
 * it there with refcount 0. With the fix W retries until O has unlinked
 * it; without it, get_pi_state() warns (kernel/futex/pi.c:70).
 *
 * Arguments (key=value): iters, a, b (CPUs), hold_us (how long O keeps F
 * after W blocked). The snapshot point is right after start-up; each
 * iteration spawns its two threads.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "preemptor.h"

static int iters = 4, cpu_a = 0, cpu_b = 1, hold_us = 2000;
static _Atomic uint32_t *word; /* F of this iteration */
static atomic_int o_locked;    /* O owns F in user space */

static long futex(_Atomic uint32_t *u, int op)
{
	return syscall(SYS_futex, (uint32_t *)u, op, 0, NULL, NULL, 0);
}

static void sleep_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static void *owner(void *arg)
{
	uint32_t tid = (uint32_t)syscall(SYS_gettid), zero = 0;

	(void)arg;
	preemptor_pin(cpu_a);
	if (!atomic_compare_exchange_strong(word, &zero, tid)) {
		fprintf(stderr, "futex-pi-exit: F not free\n");
		exit(1);
	}
	atomic_store(&o_locked, 1);
	/* W's FUTEX_LOCK_PI sets FUTEX_WAITERS before it blocks. */
	while (!(atomic_load(word) & FUTEX_WAITERS))
		sched_yield();
	sleep_us(hold_us); /* W is asleep on the rtmutex by then */
	if (futex(word, FUTEX_UNLOCK_PI | FUTEX_PRIVATE_FLAG))
		perror("FUTEX_UNLOCK_PI");
	return NULL;
}

static void *waiter(void *arg)
{
	(void)arg;
	preemptor_pin(cpu_b);
	while (!atomic_load(&o_locked))
		sched_yield();
	if (futex(word, FUTEX_LOCK_PI | FUTEX_PRIVATE_FLAG))
		perror("FUTEX_LOCK_PI");
	/* Returning exits the thread while it owns F. */
	return NULL;
}

int main(int argc, char **argv)
{
	const struct preemptor_arg args[] = {
		{ "iters", &iters }, { "a", &cpu_a }, { "b", &cpu_b }, { "hold_us", &hold_us }, { 0 },
	};
	_Atomic uint32_t *words;

	preemptor_args(argc, argv, args);
	words = calloc(iters > 0 ? iters : 1, 64);
	if (!words)
		return 1;
	preemptor_pin(cpu_b);
	preemptor_ready();
	for (int i = 0; i < iters; i++) {
		pthread_t o, w;

		word = (_Atomic uint32_t *)((char *)words + 64 * i);
		atomic_store(&o_locked, 0);
		if (pthread_create(&o, NULL, owner, NULL) ||
		    pthread_create(&w, NULL, waiter, NULL)) {
			perror("pthread_create");
			return 1;
		}
		pthread_join(o, NULL);
		pthread_join(w, NULL);
	}
	printf("futex-pi-exit: %d iterations done\n", iters);
	return 0;
}
