/*
 * tty-tiocspgrp: the race fixed by 54ffccbf053b ("tty: Fix ->pgrp locking
 * in tiocspgrp()"). Set-up, before the snapshot point:
 *
 *   - devpts on /dev/pts, a pty pair; this process becomes a session
 *     leader S with the slave as its controlling tty (SIGTTOU ignored, so
 *     a background TIOCSPGRP is allowed);
 *   - a child C in its own process group becomes the foreground group
 *     (slave->pgrp = C), then is killed and reaped: the only reference to
 *     C's struct pid left is slave->pgrp;
 *   - threads A (CPU a) and B (CPU b), parked.
 *
 * After it, B is released first and spins on its CPU; then A sets the
 * foreground group back to S through the master and, delay_us after A
 * entered the ioctl, B does the same through the slave. With the fix reverted
 * they lock different locks: if B's put_pid(slave->pgrp) comes between A's
 * put_pid (C freed) and A's store, C's count underflows.
 *
 * Arguments (key=value): a, b (CPUs), delay_us (B's start after A entered
 * its ioctl).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "preemptor.h"

static int cpu_a = 0, cpu_b = 1, delay_us = 5000;
static int master, slave;
static pid_t session;
static sem_t go_a, go_b;
static volatile int a_in; /* A is about to enter its ioctl */
static volatile int b_spinning; /* B runs on its CPU, waiting for a_in */

static void die(const char *what)
{
	fprintf(stderr, "tiocspgrp: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void *side_a(void *arg)
{
	(void)arg;
	preemptor_pin(cpu_a);
	sem_wait(&go_a);
	a_in = 1;
	if (ioctl(master, TIOCSPGRP, &session))
		perror("tiocspgrp: A: TIOCSPGRP on the master");
	return NULL;
}

static long long now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static void *side_b(void *arg)
{
	long long until;

	(void)arg;
	preemptor_pin(cpu_b);
	sem_wait(&go_b);
	b_spinning = 1;
	/*
	 * B starts delay_us after A entered its ioctl (A's wake-up after the
	 * release varied from 20 to 90 ms, measured), spinning rather than
	 * sleeping: without high-resolution timers a short nanosleep() lasts
	 * one to two 10 ms ticks. Either way B sometimes came before A reached
	 * its window, or after A's stop had ended: inconclusive runs.
	 * B is running before A is released (see main): when main shared B's
	 * CPU and released A first, B started 25 to 40 ms after A had stopped
	 * in cold boots (main's own futex wake-ups, emulated), often after A's
	 * stop had ended.
	 */
	while (!a_in)
		;
	until = now_us() + delay_us;
	while (now_us() < until)
		;
	if (ioctl(slave, TIOCSPGRP, &session))
		perror("tiocspgrp: B: TIOCSPGRP on the slave");
	return NULL;
}

int main(int argc, char **argv)
{
	const struct preemptor_arg args[] = {
		{ "a", &cpu_a }, { "b", &cpu_b }, { "delay_us", &delay_us }, { 0 },
	};
	pthread_t ta, tb;
	pid_t child;
	int zero = 0;

	preemptor_args(argc, argv, args);
	mkdir("/dev/pts", 0755);
	if (mount("devpts", "/dev/pts", "devpts", 0, "ptmxmode=0666") && errno != EBUSY)
		die("mount devpts");
	signal(SIGTTOU, SIG_IGN);
	if (setsid() < 0)
		die("setsid");
	session = getpid();
	master = open("/dev/ptmx", O_RDWR | O_NOCTTY);
	if (master < 0)
		die("open /dev/ptmx");
	if (ioctl(master, TIOCSPTLCK, &zero))
		die("unlock pty");
	slave = ioctl(master, TIOCGPTPEER, O_RDWR);
	if (slave < 0)
		die("open the slave");
	if (ioctl(slave, TIOCSCTTY, 0))
		die("TIOCSCTTY");

	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		setpgid(0, 0);
		for (;;)
			pause();
	}
	setpgid(child, child);
	if (ioctl(slave, TIOCSPGRP, &child))
		die("TIOCSPGRP to the child's group");
	kill(child, SIGKILL);
	if (waitpid(child, NULL, 0) != child)
		die("waitpid");

	sem_init(&go_a, 0, 0);
	sem_init(&go_b, 0, 0);
	if (pthread_create(&ta, NULL, side_a, NULL) || pthread_create(&tb, NULL, side_b, NULL))
		die("pthread_create");
	/* On A's CPU, not B's: B must not wait for main to block. */
	preemptor_pin(cpu_a);
	preemptor_ready();
	sem_post(&go_b);
	while (!b_spinning)
		;
	sem_post(&go_a);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	printf("tiocspgrp: foreground group back to %d from both sides\n", session);
	return 0;
}
