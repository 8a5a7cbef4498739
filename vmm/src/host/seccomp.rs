//! Confinement: each thread that runs guest-driven code installs a seccomp
//! filter (rust-vmm's `seccompiler`, as Firecracker does) allowing only the
//! system calls, and for `ioctl` only the KVM requests, that its role
//! needs. The filters are the tables below; change them there.
//!
//! Confined: vCPU threads (they take every exit the guest makes), the gdb
//! server (it talks to the network) and the random-preemption thread. Not
//! the main thread and the `--jobs` workers: they build kernels and
//! programs (fork, exec), create VMs and write results, so a filter for
//! them would allow nearly everything.
//!
//! A call outside its thread's filter does not run: the kernel sends
//! SIGSYS (`SECCOMP_RET_TRAP`); the handler records the call and its
//! thread and makes it return `EPERM`; the run loop ends the run as
//! `host-error` naming the call ([`take_violation`]). Never silent.
//!
//! `PREEMPTOR_SECCOMP=off` installs nothing (to compare costs, or to get
//! past a filter that misses a call on some host; report it).
//! `PREEMPTOR_SECCOMP_PROBE=1` makes vCPU 0 open a socket right after
//! installing its filter: the forced violation the tests check.
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("seccomp filter for {0}: {1}")]
    Build(String, seccompiler::BackendError),
    #[error("installing the seccomp filter for {0}: {1}")]
    Install(String, seccompiler::Error),
}

/// What a confined thread does, which decides its filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Vcpu(usize),
    Gdb,
    Preempt,
}

impl Role {
    fn code(self) -> u64 {
        match self {
            Role::Vcpu(i) => i as u64,
            Role::Gdb => 1 << 20,
            Role::Preempt => (1 << 20) + 1,
        }
    }
    fn of_code(c: u64) -> Self {
        match c {
            c if c == 1 << 20 => Role::Gdb,
            c if c == (1 << 20) + 1 => Role::Preempt,
            c => Role::Vcpu(c as usize),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Vcpu(i) => write!(f, "vCPU {i}"),
            Role::Gdb => f.write_str("the gdb server"),
            Role::Preempt => f.write_str("the preemption thread"),
        }
    }
}

// KVM's vCPU requests (linux/kvm.h), from the structures' sizes.
const KVMIO: u32 = 0xAE;
vmm_sys_util::ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
vmm_sys_util::ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_bindings::kvm_regs);
vmm_sys_util::ioctl_iow_nr!(KVM_SET_REGS, KVMIO, 0x82, kvm_bindings::kvm_regs);
vmm_sys_util::ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_bindings::kvm_sregs);
vmm_sys_util::ioctl_iowr_nr!(KVM_TRANSLATE, KVMIO, 0x85, kvm_bindings::kvm_translation);
vmm_sys_util::ioctl_ior_nr!(KVM_GET_MP_STATE, KVMIO, 0x98, kvm_bindings::kvm_mp_state);
vmm_sys_util::ioctl_iow_nr!(
    KVM_SET_GUEST_DEBUG,
    KVMIO,
    0x9b,
    kvm_bindings::kvm_guest_debug
);
vmm_sys_util::ioctl_ior_nr!(
    KVM_GET_VCPU_EVENTS,
    KVMIO,
    0x9f,
    kvm_bindings::kvm_vcpu_events
);
vmm_sys_util::ioctl_iow_nr!(
    KVM_SET_VCPU_EVENTS,
    KVMIO,
    0xa0,
    kvm_bindings::kvm_vcpu_events
);
vmm_sys_util::ioctl_io_nr!(KVM_KVMCLOCK_CTRL, KVMIO, 0xad);

/// The KVM requests a vCPU thread makes, and why.
fn vcpu_ioctls() -> Vec<(u64, &'static str)> {
    vec![
        (KVM_RUN(), "run the guest"),
        (KVM_GET_REGS(), "stall conditions, captures, stacks, gdb"),
        (KVM_SET_REGS(), "resume past a breakpoint, gdb writes"),
        (KVM_GET_SREGS(), "page walks for stacks and gdb"),
        (
            KVM_TRANSLATE(),
            "guest virtual addresses (stacks, captures)",
        ),
        (KVM_GET_MP_STATE(), "kvm-ioctls asks at a halt"),
        (KVM_SET_GUEST_DEBUG(), "arm, disarm, step, block interrupts"),
        (KVM_GET_VCPU_EVENTS(), "a #BP delivered for a guest int3"),
        (KVM_SET_VCPU_EVENTS(), "a #BP delivered for a guest int3"),
        (KVM_KVMCLOCK_CTRL(), "tell the guest a stall was the host's"),
    ]
}

/// What every confined thread needs: Rust's runtime, the allocator,
/// locks and channels, timing, and writing messages.
const COMMON: &[(i64, &str)] = &[
    (libc::SYS_futex, "locks, condition variables, channels"),
    (libc::SYS_mmap, "the allocator"),
    (libc::SYS_munmap, "the allocator, thread exit"),
    (libc::SYS_mremap, "the allocator (realloc)"),
    (libc::SYS_mprotect, "the allocator grows its thread arena"),
    (libc::SYS_madvise, "the allocator, thread exit"),
    (libc::SYS_brk, "the allocator"),
    (libc::SYS_rt_sigprocmask, "thread exit"),
    (libc::SYS_rt_sigreturn, "return from the kick signal"),
    (libc::SYS_sigaltstack, "thread exit frees its signal stack"),
    (libc::SYS_exit, "thread exit"),
    (libc::SYS_sched_yield, "spin loops"),
    (libc::SYS_clock_gettime, "when the vDSO is not used"),
    (libc::SYS_clock_nanosleep, "sleeps (stalls, preemption)"),
    (libc::SYS_nanosleep, "sleeps"),
    (libc::SYS_getrandom, "hash map seeds"),
    (libc::SYS_gettid, "thread identity"),
    (libc::SYS_getpid, "signals to threads"),
    (libc::SYS_tgkill, "kicking vCPU threads out of KVM_RUN"),
    (
        libc::SYS_write,
        "console log, stdout, stderr (open files only)",
    ),
];

/// The gdb server's own calls beyond [`COMMON`]: one TCP connection.
const GDB: &[(i64, &str)] = &[
    (libc::SYS_accept, "gdb connects"),
    (libc::SYS_accept4, "gdb connects"),
    (libc::SYS_read, "gdb's packets"),
    (libc::SYS_recvfrom, "gdb's packets"),
    (libc::SYS_sendto, "replies"),
    (libc::SYS_poll, "waiting for gdb or a stop"),
    (libc::SYS_ppoll, "waiting for gdb or a stop"),
    (libc::SYS_setsockopt, "TCP_NODELAY"),
    (libc::SYS_getsockopt, "socket errors"),
    (libc::SYS_ioctl, "FIONBIO on the socket"),
    (libc::SYS_fcntl, "non-blocking socket"),
    (libc::SYS_shutdown, "detach"),
    (libc::SYS_close, "detach"),
];

/// A table's calls, allowed whatever their arguments.
fn any_args(
    table: &'static [(i64, &'static str)],
) -> impl Iterator<Item = (i64, Vec<SeccompRule>)> {
    table.iter().map(|(nr, _)| (*nr, vec![]))
}

fn rules(role: Role) -> BTreeMap<i64, Vec<SeccompRule>> {
    let mut m: BTreeMap<i64, Vec<SeccompRule>> = any_args(COMMON).collect();
    match role {
        Role::Vcpu(_) => {
            let reqs = vcpu_ioctls()
                .into_iter()
                .map(|(req, _)| {
                    SeccompRule::new(vec![SeccompCondition::new(
                        1,
                        SeccompCmpArgLen::Dword,
                        SeccompCmpOp::Eq,
                        req,
                    )
                    .expect("argument 1 exists")])
                    .expect("one condition")
                })
                .collect();
            m.insert(libc::SYS_ioctl, reqs);
        }
        Role::Gdb => m.extend(any_args(GDB)),
        Role::Preempt => {}
    }
    m
}

fn program(role: Role) -> Result<BpfProgram, Error> {
    let f = SeccompFilter::new(
        rules(role),
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| Error::Build(role.to_string(), e))?;
    f.try_into().map_err(|e| Error::Build(role.to_string(), e))
}

/// Off with `PREEMPTOR_SECCOMP=off`.
pub fn enabled() -> bool {
    std::env::var("PREEMPTOR_SECCOMP").as_deref() != Ok("off")
}

thread_local! {
    // Read in the SIGSYS handler: a const initializer without a destructor
    // is a plain thread-local access there.
    static ROLE: Cell<u64> = const { Cell::new(u64::MAX) };
}

/// The first violation: role code << 32 | syscall number + 1; 0 none.
static VIOLATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // siginfo for SIGSYS: after signo, errno, code and padding, the
    // union holds `void *_call_addr; int _syscall; unsigned _arch`.
    // SAFETY: the kernel passes a valid siginfo and ucontext to an
    // SA_SIGINFO handler.
    unsafe {
        let nr = *((info as *const u8).add(24) as *const i32);
        let role = ROLE.with(Cell::get);
        let _ = VIOLATION.compare_exchange(
            0,
            ((role & 0xffff_ffff) << 32) | (nr as u32 as u64 + 1),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        let uc = ctx as *mut libc::ucontext_t;
        (*uc).uc_mcontext.gregs[libc::REG_RAX as usize] = -(libc::EPERM as i64);
    }
}

fn install_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a plain SA_SIGINFO handler that only touches atomics,
        // a const thread-local and its own ucontext.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigsys as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut());
        }
    });
}

/// Confine the calling thread for `role`, for the rest of its life.
pub fn install(role: Role) -> Result<(), Error> {
    if !enabled() {
        return Ok(());
    }
    install_handler();
    let p = program(role)?;
    ROLE.with(|r| r.set(role.code()));
    seccompiler::apply_filter(&p).map_err(|e| Error::Install(role.to_string(), e))?;
    if role == Role::Vcpu(0) && std::env::var_os("PREEMPTOR_SECCOMP_PROBE").is_some() {
        // SAFETY: a plain system call; the filter refuses it.
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    }
    Ok(())
}

/// The first call a filter refused since the last take, as the run's
/// host-error message.
pub fn take_violation() -> Option<String> {
    let v = VIOLATION.swap(0, Ordering::SeqCst);
    (v != 0).then(|| {
        let nr = (v & 0xffff_ffff) - 1;
        let name = syscalls::Sysno::new(nr as usize).map_or("?", |s| s.name());
        format!(
            "seccomp: {} made system call {name} ({nr}), which its filter does not allow",
            Role::of_code(v >> 32)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_filter_compiles() {
        for r in [Role::Vcpu(0), Role::Gdb, Role::Preempt] {
            assert!(program(r).is_ok(), "{r}");
        }
    }

    #[test]
    fn kvm_requests_match_linux() {
        // From linux/kvm.h on x86_64.
        assert_eq!(KVM_RUN(), 0xae80);
        assert_eq!(KVM_GET_REGS(), 0x8090_ae81);
        assert_eq!(KVM_SET_GUEST_DEBUG(), 0x4048_ae9b);
        assert_eq!(KVM_KVMCLOCK_CTRL(), 0xaead);
    }

    #[test]
    fn roles_round_trip() {
        for r in [Role::Vcpu(0), Role::Vcpu(7), Role::Gdb, Role::Preempt] {
            assert_eq!(Role::of_code(r.code()), r);
        }
    }
}
