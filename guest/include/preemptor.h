/*
 * preemptor.h - what a C reproducer may call to cooperate with preemptor.
 * One header, no dependencies beyond libc, nothing to link. The scenario's
 * `program = "repro.c"` is compiled with this directory on the include path
 * (gcc -static -O2 -pthread).
 *
 * A reproducer needs none of this: a plain main() runs as it is, and the
 * snapshot is then taken just before init starts it (every run pays for
 * the process start). Calling preemptor_ready() moves the snapshot point
 * to where the reproducer is set up, so each run starts right there.
 *
 * Contract (the same as the Rust guest library's ready()/pin_to_cpu()):
 *
 *   uint32_t preemptor_ready(void)
 *       The snapshot point. Call it once, after the expensive setup
 *       (threads spawned and parked, files opened, memory mapped) and
 *       before the racy part. The VMM saves the machine here the first
 *       time and restores that state for every run; the call then returns
 *       the run's seed, different per run: use it to jitter timing.
 *       Threads that could hold a lock the race needs should stay parked
 *       until after it. Outside preemptor (no port 0x501) it returns 0.
 *
 *   int preemptor_pin(int cpu)
 *       Pin the calling thread to one CPU (vCPU index); 0 or -1 (errno).
 *
 *   uint32_t preemptor_seed(void)
 *       The run's seed for programs that do not call preemptor_ready():
 *       init passes it in the environment (PREEMPTOR_SEED); 0 without.
 *
 *   void preemptor_args(int argc, char **argv, const struct preemptor_arg *a)
 *       Parse key=value integer arguments (the scenario's `args`) into the
 *       variables an array of { "key", &var } names, ended by { 0 }. An
 *       unknown key or a value that is not a whole number is one line on
 *       stderr and exit status 2.
 *
 * How it works: preemptor_ready() writes port 0x501 (the VMM stops every
 * vCPU there when it is taking a snapshot, and ignores it otherwise) and
 * then reads the seed from it. The string below, present in the binary
 * only when preemptor_ready() is used, tells the VMM where to snapshot.
 */
#ifndef PREEMPTOR_H
#define PREEMPTOR_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

#define PREEMPTOR_PORT 0x501
#define PREEMPTOR_READY_ABI "preemptor-ready-abi-1"

static inline uint32_t preemptor_ready(void)
{
	static const char abi[] = PREEMPTOR_READY_ABI;
	uint32_t seed;

	/* Keep the marker string in the binary whenever this is called. */
	__asm__ volatile("" : : "r"(abi));
	if (syscall(SYS_ioperm, PREEMPTOR_PORT, 4, 1) != 0)
		return 0;
	__asm__ volatile("outb %b0, %w1" : : "a"(1), "Nd"(PREEMPTOR_PORT));
	__asm__ volatile("inl %w1, %0" : "=a"(seed) : "Nd"(PREEMPTOR_PORT));
	return seed;
}

static inline int preemptor_pin(int cpu)
{
	unsigned long mask[1024 / (8 * sizeof(unsigned long))] = { 0 };

	if (cpu < 0 || cpu >= 1024)
		return -1;
	mask[cpu / (8 * sizeof(unsigned long))] |= 1UL << (cpu % (8 * sizeof(unsigned long)));
	return syscall(SYS_sched_setaffinity, 0, sizeof(mask), mask) == 0 ? 0 : -1;
}

static inline uint32_t preemptor_seed(void)
{
	const char *s = getenv("PREEMPTOR_SEED");

	return s ? (uint32_t)strtoul(s, NULL, 10) : 0;
}

struct preemptor_arg {
	const char *key;
	int *val;
};

static inline void preemptor_args(int argc, char **argv, const struct preemptor_arg *a)
{
	for (int i = 1; i < argc; i++) {
		const char *eq = strchr(argv[i], '=');
		const struct preemptor_arg *k = a;
		char *end;
		long v;

		while (k->key && (!eq || strlen(k->key) != (size_t)(eq - argv[i]) ||
				  strncmp(k->key, argv[i], eq - argv[i])))
			k++;
		if (!k->key) {
			fprintf(stderr, "%s: unknown argument '%s'\n", argv[0], argv[i]);
			exit(2);
		}
		v = strtol(eq + 1, &end, 10);
		if (*end || end == eq + 1 || v < -2147483647L || v > 2147483647L) {
			fprintf(stderr, "%s: argument '%s': not a whole number\n", argv[0], argv[i]);
			exit(2);
		}
		*k->val = (int)v;
	}
}

#endif /* PREEMPTOR_H */
