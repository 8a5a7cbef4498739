/*
 * ipc-sem-wake: the race fixed by a11ddb37bf36 ("ipc/mqueue, msg, sem:
 * avoid relying on a stack reference past its expiry"), sem.c part.
 *
 *   R (CPU b) blocks in semtimedop() (P on semaphore 0, timeout wake_ms);
 *     its struct sem_queue lives in the semop's frame on R's kernel stack.
 *   S (CPU a) does V on semaphore 0 (semop +1) rel_ms after R blocked:
 *     update_queue() completes R's operation, publishes the status in R's
 *     sem_queue with a release store and then, with the fix reverted,
 *     reads q->sleeper again to queue R's wakeup.
 *
 * If S is delayed between the two, R's own timeout wakes it; it sees the
 * status (its P is done), returns without the array's lock, and its next
 * system call, poll(NULL, 0, 0), zeroes its large frame on the same stack,
 * q->sleeper included. R then calls getppid() (the mark the scenario waits
 * for) and spins in user mode. S's late read of q->sleeper finds NULL.
 *
 * Arguments (key=value): a, b (CPUs), wake_ms (R's timeout), rel_ms (when S
 * releases, after R blocked), spin_m (R's user-mode spin after the mark,
 * in millions of loop iterations).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "preemptor.h"

static int cpu_a = 0, cpu_b = 1, wake_ms = 60, rel_ms = 5, spin_m = 50;
static int set;
static sem_t go_r, go_s;
/* The sleeper is about to block: only then may the other side count down. */
static volatile int r_blocking;

static void spin(int millions)
{
	/* A plain loop: any system call would write over R's stack. */
	for (volatile long i = 0; i < millions * 1000000L; i++)
		;
}

static void *sleeper(void *arg)
{
	struct sembuf p = { .sem_num = 0, .sem_op = -1 };
	struct timespec ts = { 0, 0 };

	(void)arg;
	preemptor_pin(cpu_b);
	sem_wait(&go_r);
	ts.tv_sec = wake_ms / 1000;
	ts.tv_nsec = (wake_ms % 1000) * 1000000L;
	r_blocking = 1;
	if (syscall(SYS_semtimedop, set, &p, 1, &ts) && errno != EAGAIN)
		perror("sem-wake: semtimedop");
	/* Raw system calls: libc wrappers may add calls of their own. */
	syscall(SYS_poll, NULL, 0, 0);
	syscall(SYS_getppid);
	spin(spin_m);
	return NULL;
}

static void *releaser(void *arg)
{
	struct sembuf v = { .sem_num = 0, .sem_op = 1 };
	struct timespec ts = { 0, 0 };

	(void)arg;
	preemptor_pin(cpu_a);
	sem_wait(&go_s);
	ts.tv_nsec = rel_ms * 1000000L;
	nanosleep(&ts, NULL);
	if (semop(set, &v, 1))
		perror("sem-wake: semop");
	return NULL;
}

int main(int argc, char **argv)
{
	const struct preemptor_arg args[] = {
		{ "a", &cpu_a },       { "b", &cpu_b },	       { "wake_ms", &wake_ms },
		{ "rel_ms", &rel_ms }, { "spin_m", &spin_m }, { 0 },
	};
	pthread_t r, s;

	preemptor_args(argc, argv, args);
	set = semget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
	if (set < 0) {
		perror("sem-wake: semget");
		return 1;
	}
	sem_init(&go_r, 0, 0);
	sem_init(&go_s, 0, 0);
	if (pthread_create(&r, NULL, sleeper, NULL) || pthread_create(&s, NULL, releaser, NULL)) {
		perror("sem-wake: pthread_create");
		return 1;
	}
	/*
	 * On the other side's CPU, not the sleeper's, and the sleeper first:
	 * when main shared its CPU and released both at once, the sleeper
	 * sometimes had not blocked yet when its queue was acted on (no stop
	 * at all: 2 of 8 restored runs, measured 2026-12-06).
	 */
	preemptor_pin(cpu_a);
	preemptor_ready();
	sem_post(&go_r);
	while (!r_blocking)
		;
	sem_post(&go_s);
	pthread_join(s, NULL);
	pthread_join(r, NULL);
	semctl(set, 0, IPC_RMID);
	printf("sem-wake: V on a semaphore with a sleeper\n");
	return 0;
}
