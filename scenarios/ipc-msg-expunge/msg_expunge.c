/*
 * ipc-msg-expunge: the race fixed by a11ddb37bf36 ("ipc/mqueue, msg, sem:
 * avoid relying on a stack reference past its expiry"), msg.c part.
 *
 *   R (CPU b) blocks in msgrcv() on queue Q; its struct msg_receiver lives
 *     in msgrcv's frame on R's kernel stack. A thread-directed timer signal
 *     (SIGUSR1) is armed to wake R after wake_ms, whatever happens to Q.
 *   S (CPU a) removes Q (IPC_RMID): expunge_all() publishes -EIDRM in R's
 *     msg_receiver and then, with the fix reverted, reads msr->r_tsk again
 *     to queue R's wakeup.
 *
 * If S is delayed between the two, R wakes on its own (the signal), sees
 * -EIDRM and returns: msgrcv's frame is dead. R's next system call,
 * poll(NULL, 0, 0), builds its frames over the same stack: do_sys_poll's
 * prologue saves its caller's registers where msr->r_tsk was, and the
 * caller (__x64_sys_poll) holds nfds and the timeout there, both 0. R then
 * calls getppid() (the mark the scenario waits for) and spins in user
 * mode, so nothing else writes that stack while S goes on: S's late read
 * of msr->r_tsk finds NULL.
 *
 * Arguments (key=value): a, b (CPUs), wake_ms (R's timer), rmid_ms (when
 * S removes Q, after R blocked), spin_m (R's user-mode spin after the
 * mark, in millions of loop iterations).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "preemptor.h"

static int cpu_a = 0, cpu_b = 1, wake_ms = 20, rmid_ms = 5, spin_m = 50;
static int q;
static sem_t go_r, go_s;
/* The sleeper is about to block: only then may the other side count down. */
static volatile int r_blocking;

struct msgbuf1 {
	long mtype;
	char mtext[8];
};

static void on_signal(int sig)
{
	(void)sig;
}

static void spin(int millions)
{
	/* A plain loop: even clock_gettime may be a system call (no vDSO
	 * clock), and any system call would write over R's stack. */
	for (volatile long i = 0; i < millions * 1000000L; i++)
		;
}

static void *receiver(void *arg)
{
	struct sigevent ev = { 0 };
	struct itimerspec it = { 0 };
	struct msgbuf1 m;
	timer_t t;

	(void)arg;
	preemptor_pin(cpu_b);
	ev.sigev_notify = SIGEV_THREAD_ID;
	ev.sigev_signo = SIGUSR1;
	ev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
	if (timer_create(CLOCK_MONOTONIC, &ev, &t)) {
		perror("msg-expunge: timer_create");
		exit(1);
	}
	sem_wait(&go_r);
	it.it_value.tv_nsec = wake_ms * 1000000L;
	timer_settime(t, 0, &it, NULL);
	r_blocking = 1;
	if (msgrcv(q, &m, sizeof(m.mtext), 0, 0) >= 0 || (errno != EIDRM && errno != EINTR))
		perror("msg-expunge: msgrcv");
	/* Raw system calls: libc wrappers may add calls of their own. */
	syscall(SYS_poll, NULL, 0, 0);
	syscall(SYS_getppid);
	spin(spin_m);
	return NULL;
}

static void *remover(void *arg)
{
	struct timespec ts = { 0, 0 };

	(void)arg;
	preemptor_pin(cpu_a);
	sem_wait(&go_s);
	ts.tv_nsec = rmid_ms * 1000000L;
	nanosleep(&ts, NULL);
	if (msgctl(q, IPC_RMID, NULL))
		perror("msg-expunge: IPC_RMID");
	return NULL;
}

int main(int argc, char **argv)
{
	const struct preemptor_arg args[] = {
		{ "a", &cpu_a },	 { "b", &cpu_b },	  { "wake_ms", &wake_ms },
		{ "rmid_ms", &rmid_ms }, { "spin_m", &spin_m }, { 0 },
	};
	struct sigaction sa = { 0 };
	pthread_t r, s;

	preemptor_args(argc, argv, args);
	sa.sa_handler = on_signal;
	sigaction(SIGUSR1, &sa, NULL);
	q = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
	if (q < 0) {
		perror("msg-expunge: msgget");
		return 1;
	}
	sem_init(&go_r, 0, 0);
	sem_init(&go_s, 0, 0);
	if (pthread_create(&r, NULL, receiver, NULL) || pthread_create(&s, NULL, remover, NULL)) {
		perror("msg-expunge: pthread_create");
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
	printf("msg-expunge: queue removed under a blocked receiver\n");
	return 0;
}
