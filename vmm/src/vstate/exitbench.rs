//! Exit round-trip costs on this host, measured on a few-instruction guest
//! (64-bit, CPL 0, no kernel): a bare port-I/O exit against a breakpoint
//! hit and its resume, each way the vCPU loop can resume ([`ResumeMethod`]), in
//! one VM, alternating batches. The same guest counts the hardware
//! breakpoint slots that work (`doctor`), tells whether this host honours
//! `RFLAGS.RF`, and checks the VMM's instruction emulation against the
//! CPU's single step, form by form.
use super::emulate::{self, Outcome};
use super::vcpu::guest_debug;
use crate::arch::x86_64::{self as arch, regs};
pub use crate::host::ResumeMethod;
use kvm_bindings::{kvm_regs, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, SyncReg, VcpuExit, VcpuFd};
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

const MEM: u64 = 4 << 20;
const CODE: u64 = 0x1000;
// 0x1000: out 0x80, al ; jmp 0x1000              (port-I/O loop)
// 0x1004: nop          ; jmp 0x1004              (spare)
// 0x1008: nop x4       ; jmp 0x1008              (one site per slot)
// 0x1010: nop ; out 0x80, al ; jmp 0x1010        (RF probe)
// 0x1018: mov %eax,(%rsi) ; jmp 0x1018           (breakpoint loop: a store)
const PROGRAM: [u8; 28] = [
    0xe6, 0x80, 0xeb, 0xfc, 0x90, 0xeb, 0xfd, 0x90, // 0x1000
    0x90, 0x90, 0x90, 0x90, 0xeb, 0xfa, 0x90, 0x90, // 0x1008
    0x90, 0xe6, 0x80, 0xeb, 0xfb, 0x90, 0x90, 0x90, // 0x1010
    0x89, 0x06, 0xeb, 0xfc, // 0x1018
];
const SLOTS_LOOP: u64 = CODE + 8;
const RF_PROBE: u64 = CODE + 0x10;
const STORE_LOOP: u64 = CODE + 0x18;
/// Where the emulation check puts its instruction, and its data.
const INSN: u64 = 0x4000;
const DATA: u64 = 0x20_0000;
const STACK: u64 = 0x30_0000;

pub struct ExitCosts {
    pub io_exit: Duration,
    /// The same with the registers synced into the run structure at every
    /// exit (as while emulating resumes).
    pub io_exit_synced: Duration,
    /// Hit + resume, per method measured (RF only where it works).
    pub breakpoint: Vec<(ResumeMethod, Duration)>,
    /// A breakpoint exit with nothing done (resumed without moving past it,
    /// so it hits again): what a hit costs before any resume.
    pub bare_breakpoint: Duration,
    /// Single ioctls: get/set regs, get sregs, set guest debug.
    pub ioctls: Vec<(&'static str, Duration)>,
    pub rf_works: bool,
    pub samples: usize,
    /// Port-I/O exit and emulated hit again, on a thread confined by the
    /// vCPU seccomp filter: the filter's cost (None: filters are off).
    pub confined: Option<(Duration, Duration)>,
}

/// The median of the samples (the upper one of an even count); NaN-free
/// input assumed. Shared by every benchmark.
pub fn median<T: PartialOrd + Copy + Default>(v: &mut [T]) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn set_rip(vcpu: &VcpuFd, rip: u64) -> Result<(), String> {
    let mut r = vcpu.get_regs().map_err(s)?;
    r.rip = rip;
    r.rflags = 2;
    r.rsp = STACK;
    r.rsi = DATA;
    vcpu.set_regs(&r).map_err(s)
}

/// The program loaded in a VM of one vCPU in 64-bit mode (identity-mapped
/// pages with A and D already set, so the CPU's page walks write nothing).
/// The memory must outlive the VM: both are returned.
fn tiny_vm() -> Result<(kvm_ioctls::VmFd, GuestMemoryMmap, VcpuFd), String> {
    let kvm = Kvm::new().map_err(|e| format!("/dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(s)?;
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM as usize)]).map_err(s)?;
    let host = mem.get_host_address(GuestAddress(0)).map_err(s)? as u64;
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: MEM,
        userspace_addr: host,
        flags: 0,
    };
    // SAFETY: the caller keeps `mem` alive as long as the VM (returned together).
    unsafe { vm.set_user_memory_region(region) }.map_err(s)?;
    arch::write_gdt(&mem).map_err(s)?;
    arch::write_page_tables(&mem).map_err(s)?;
    for a in (arch::layout::PML4_START..arch::layout::PDE_START + 0x1000).step_by(8) {
        let e: u64 = mem.read_obj(GuestAddress(a)).map_err(s)?;
        if e & 1 != 0 {
            mem.write_obj(e | 0x60, GuestAddress(a)).map_err(s)?;
        }
    }
    mem.write_slice(&PROGRAM, GuestAddress(CODE)).map_err(s)?;
    let vcpu = vm.create_vcpu(0).map_err(s)?;
    regs::setup_long_mode(&vcpu, CODE).map_err(s)?;
    Ok((vm, mem, vcpu))
}

fn expect_debug(r: Result<VcpuExit, kvm_ioctls::Error>, what: &str) -> Result<u64, String> {
    match r {
        Ok(VcpuExit::Debug(d)) => Ok(d.pc),
        Ok(e) => Err(format!("unexpected exit {e:?} {what}")),
        Err(e) => Err(format!("{e} {what}")),
    }
}

/// How many of the 4 debug-register slots stop the guest: one breakpoint
/// per slot on four consecutive `nop`s, each hit stepped over as the vCPU
/// loop does, until every slot has hit or 32 exits have passed.
pub fn breakpoint_slots() -> Result<usize, String> {
    let (_vm, _mem, mut vcpu) = tiny_vm()?;
    let bp = [0, 1, 2, 3].map(|i| Some(SLOTS_LOOP + i));
    set_rip(&vcpu, SLOTS_LOOP)?;
    let mut hit = [false; 4];
    for _ in 0..32 {
        vcpu.set_guest_debug(&guest_debug(&bp, false, false))
            .map_err(s)?;
        let pc = expect_debug(vcpu.run(), "waiting for a breakpoint")?;
        if let Some(i) = bp.iter().position(|b| *b == Some(pc)) {
            hit[i] = true;
        }
        if hit.iter().all(|h| *h) {
            break;
        }
        vcpu.set_guest_debug(&guest_debug(&bp, true, false))
            .map_err(s)?;
        expect_debug(vcpu.run(), "while stepping")?;
    }
    Ok(hit.iter().filter(|h| **h).count())
}

/// Whether `RFLAGS.RF` set after a breakpoint hit lets the instruction run:
/// a breakpoint on a `nop` followed by a port write; the next exit is the
/// port write if RF is honoured, the same breakpoint again if not.
pub fn resume_flag_works() -> Result<bool, String> {
    let (_vm, _mem, mut vcpu) = tiny_vm()?;
    rf_probe(&mut vcpu)
}

/// [`resume_flag_works`], probed once per process (false if it cannot be).
pub fn rf_honoured() -> bool {
    static RF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *RF.get_or_init(|| resume_flag_works().unwrap_or(false))
}

fn rf_probe(vcpu: &mut VcpuFd) -> Result<bool, String> {
    let bp = [Some(RF_PROBE), None, None, None];
    set_rip(vcpu, RF_PROBE)?;
    vcpu.set_guest_debug(&guest_debug(&bp, false, false))
        .map_err(s)?;
    expect_debug(vcpu.run(), "waiting for the breakpoint")?;
    let mut r = vcpu.get_regs().map_err(s)?;
    r.rflags |= 1 << 16;
    vcpu.set_regs(&r).map_err(s)?;
    let works = match vcpu.run() {
        Ok(VcpuExit::IoOut(0x80, _)) => true,
        Ok(VcpuExit::Debug(_)) => false,
        Ok(e) => return Err(format!("unexpected exit {e:?} after resuming with RF")),
        Err(e) => return Err(e.to_string()),
    };
    vcpu.set_guest_debug(&guest_debug(&[None; 4], false, false))
        .map_err(s)?;
    Ok(works)
}

/// One breakpoint hit on a store and its resume by `how`, timed.
fn hit_and_resume(
    vcpu: &mut VcpuFd,
    mem: &GuestMemoryMmap,
    bp: &[Option<u64>; 4],
    how: ResumeMethod,
) -> Result<Duration, String> {
    let t = Instant::now();
    expect_debug(vcpu.run(), "waiting for the breakpoint")?;
    match how {
        ResumeMethod::Step => {
            vcpu.set_guest_debug(&guest_debug(bp, true, true))
                .map_err(s)?;
            expect_debug(vcpu.run(), "while stepping")?;
            vcpu.set_guest_debug(&guest_debug(bp, false, false))
                .map_err(s)?;
        }
        ResumeMethod::ResumeFlag => {
            let mut r = vcpu.get_regs().map_err(s)?;
            r.rflags |= 1 << 16;
            vcpu.set_regs(&r).map_err(s)?;
        }
        ResumeMethod::Emulate => {
            // As the vCPU loop does it: registers and system registers
            // from the run structure's synced copy, registers handed back
            // the same way.
            let sregs = vcpu.sync_regs().sregs;
            let mut r = vcpu.sync_regs().regs;
            let mut w = Vec::new();
            match emulate::step_over(&mut r, &sregs, mem, &mut w) {
                Outcome::Done => {}
                Outcome::Unsupported(why) => return Err(format!("store not emulated: {why}")),
            }
            vcpu.sync_regs_mut().regs = r;
            vcpu.set_sync_dirty_reg(SyncReg::Register);
        }
    }
    Ok(t.elapsed())
}

pub fn measure(samples: usize) -> Result<ExitCosts, String> {
    let (_vm, mem, mut vcpu) = tiny_vm()?;
    let rf_works = rf_probe(&mut vcpu)?;
    let mut methods = vec![ResumeMethod::Step, ResumeMethod::Emulate];
    if rf_works {
        methods.push(ResumeMethod::ResumeFlag);
    }
    let bp = [Some(STORE_LOOP), None, None, None];
    let (mut io, mut io_synced, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    let mut brk: Vec<Vec<Duration>> = vec![Vec::new(); methods.len()];
    let mut ioctls: Vec<(&'static str, Vec<Duration>)> =
        ["get regs", "set regs", "get sregs", "set guest debug"]
            .iter()
            .map(|n| (*n, Vec::new()))
            .collect();
    let batch = 100;
    while io.len() < samples {
        set_rip(&vcpu, CODE)?;
        vcpu.set_guest_debug(&guest_debug(&[None; 4], false, false))
            .map_err(s)?;
        for synced in [false, true] {
            if synced {
                vcpu.set_sync_valid_reg(SyncReg::Register);
                vcpu.set_sync_valid_reg(SyncReg::SystemRegister);
            }
            for _ in 0..batch {
                let t = Instant::now();
                match vcpu.run() {
                    Ok(VcpuExit::IoOut(0x80, _)) => {
                        if synced { &mut io_synced } else { &mut io }.push(t.elapsed())
                    }
                    Ok(e) => return Err(format!("unexpected exit {e:?} in the I/O loop")),
                    Err(e) => return Err(e.to_string()),
                }
            }
            vcpu.clear_sync_valid_reg(SyncReg::Register);
            vcpu.clear_sync_valid_reg(SyncReg::SystemRegister);
        }
        for _ in 0..batch {
            let t = Instant::now();
            let r = vcpu.get_regs().map_err(s)?;
            ioctls[0].1.push(t.elapsed());
            let t = Instant::now();
            vcpu.set_regs(&r).map_err(s)?;
            ioctls[1].1.push(t.elapsed());
            let t = Instant::now();
            vcpu.get_sregs().map_err(s)?;
            ioctls[2].1.push(t.elapsed());
            let t = Instant::now();
            vcpu.set_guest_debug(&guest_debug(&[None; 4], false, false))
                .map_err(s)?;
            ioctls[3].1.push(t.elapsed());
        }
        set_rip(&vcpu, STORE_LOOP)?;
        vcpu.set_guest_debug(&guest_debug(&bp, false, false))
            .map_err(s)?;
        expect_debug(vcpu.run(), "waiting for the breakpoint")?;
        for _ in 0..batch {
            let t = Instant::now();
            expect_debug(vcpu.run(), "hitting the breakpoint again")?;
            bare.push(t.elapsed());
        }
        for (m, how) in methods.iter().enumerate() {
            set_rip(&vcpu, STORE_LOOP)?;
            vcpu.set_guest_debug(&guest_debug(&bp, false, false))
                .map_err(s)?;
            if *how == ResumeMethod::Emulate {
                vcpu.set_sync_valid_reg(SyncReg::Register);
                vcpu.set_sync_valid_reg(SyncReg::SystemRegister);
            }
            for _ in 0..batch {
                brk[m].push(hit_and_resume(&mut vcpu, &mem, &bp, *how)?);
            }
            // The last resume's registers are not wanted (the next batch
            // sets its own); the synced copy goes on every exit: only
            // while emulating.
            vcpu.clear_sync_dirty_reg(SyncReg::Register);
            vcpu.clear_sync_valid_reg(SyncReg::Register);
            vcpu.clear_sync_valid_reg(SyncReg::SystemRegister);
        }
    }
    let confined = if crate::host::seccomp::enabled() {
        Some(confined(&mut vcpu, &mem, &bp, samples)?)
    } else {
        None
    };
    Ok(ExitCosts {
        confined,
        io_exit: median(&mut io),
        io_exit_synced: median(&mut io_synced),
        bare_breakpoint: median(&mut bare),
        breakpoint: methods
            .iter()
            .zip(brk.iter_mut())
            .map(|(m, v)| (*m, median(v)))
            .collect(),
        ioctls: ioctls
            .into_iter()
            .map(|(n, mut v)| (n, median(&mut v)))
            .collect(),
        rf_works,
        samples: samples.max(batch),
    })
}

/// The I/O exit and the emulated hit measured on a thread that installed
/// the vCPU threads' seccomp filter first (a filter is for life, so not
/// this one).
fn confined(
    vcpu: &mut VcpuFd,
    mem: &GuestMemoryMmap,
    bp: &[Option<u64>; 4],
    samples: usize,
) -> Result<(Duration, Duration), String> {
    std::thread::scope(|sc| {
        sc.spawn(|| {
            crate::host::seccomp::install(crate::host::seccomp::Role::Vcpu(0))
                .map_err(|e| e.to_string())?;
            let (mut io, mut hit) = (Vec::new(), Vec::new());
            vcpu.set_sync_valid_reg(SyncReg::Register);
            vcpu.set_sync_valid_reg(SyncReg::SystemRegister);
            while io.len() < samples {
                set_rip(vcpu, CODE)?;
                vcpu.set_guest_debug(&guest_debug(&[None; 4], false, false))
                    .map_err(s)?;
                for _ in 0..100 {
                    let t = Instant::now();
                    match vcpu.run() {
                        Ok(VcpuExit::IoOut(0x80, _)) => io.push(t.elapsed()),
                        Ok(e) => return Err(format!("unexpected exit {e:?} in the I/O loop")),
                        Err(e) => return Err(e.to_string()),
                    }
                }
                set_rip(vcpu, STORE_LOOP)?;
                vcpu.set_guest_debug(&guest_debug(bp, false, false))
                    .map_err(s)?;
                for _ in 0..100 {
                    hit.push(hit_and_resume(vcpu, mem, bp, ResumeMethod::Emulate)?);
                }
                vcpu.clear_sync_dirty_reg(SyncReg::Register);
            }
            vcpu.clear_sync_valid_reg(SyncReg::Register);
            vcpu.clear_sync_valid_reg(SyncReg::SystemRegister);
            Ok((median(&mut io), median(&mut hit)))
        })
        .join()
        .map_err(|_| "the confined measurement thread panicked".to_string())?
    })
}

/// An instruction form the emulator does, as bytes from real kernel code.
pub const FORMS: &[(&str, &[u8])] = &[
    ("nop", &[0x90]),
    ("nopl 0x0(%rax,%rax,1)", &[0x0f, 0x1f, 0x44, 0x00, 0x00]),
    ("xchg %ax,%ax", &[0x66, 0x90]),
    ("mov %rsp,%rbp", &[0x48, 0x89, 0xe5]),
    ("mov %rsi,%r8", &[0x49, 0x89, 0xf0]),
    ("mov %eax,%edi", &[0x89, 0xc7]),
    ("mov 0x20(%rsp),%rax", &[0x48, 0x8b, 0x44, 0x24, 0x20]),
    ("mov 0x18(%rsi),%eax", &[0x8b, 0x46, 0x18]),
    ("mov (%rsi,%rcx,8),%rdx", &[0x48, 0x8b, 0x14, 0xce]),
    ("mov %r9d,0x18(%rsi)", &[0x44, 0x89, 0x4e, 0x18]),
    ("mov %rdi,0x8(%rsi)", &[0x48, 0x89, 0x7e, 0x08]),
    ("movl $0x0,0x18(%rsi)", &[0xc7, 0x46, 0x18, 0, 0, 0, 0]),
    (
        "movq $-1,0x8(%rsi)",
        &[0x48, 0xc7, 0x46, 0x08, 0xff, 0xff, 0xff, 0xff],
    ),
    ("movb $0x1,0x3(%rsi)", &[0xc6, 0x46, 0x03, 0x01]),
    (
        "mov %gs:0x1ac00,%rax",
        &[0x65, 0x48, 0x8b, 0x04, 0x25, 0x00, 0xac, 0x01, 0x00],
    ),
    (
        "mov 0xf9(%rip),%rax",
        &[0x48, 0x8b, 0x05, 0xf9, 0x00, 0x00, 0x00],
    ),
    ("lea 0x8(%rsp),%rax", &[0x48, 0x8d, 0x44, 0x24, 0x08]),
    (
        "lea 0x1000(%rip),%rdi",
        &[0x48, 0x8d, 0x3d, 0x00, 0x10, 0x00, 0x00],
    ),
    ("mov $0x1,%eax", &[0xb8, 0x01, 0x00, 0x00, 0x00]),
    ("mov $-1,%rax", &[0x48, 0xc7, 0xc0, 0xff, 0xff, 0xff, 0xff]),
    (
        "movabs $0x123456789abcdef0,%rbx",
        &[0x48, 0xbb, 0xf0, 0xde, 0xbc, 0x9a, 0x78, 0x56, 0x34, 0x12],
    ),
];

/// Forms the emulator must leave to a single step.
pub const UNSUPPORTED: &[(&str, &[u8])] = &[
    ("xor %eax,%eax (flags)", &[0x31, 0xc0]),
    ("push %rbp (writes RSP)", &[0x55]),
    ("mov %rbp,%rsp (writes RSP)", &[0x48, 0x89, 0xec]),
    ("lock incl (%rsi)", &[0xf0, 0xff, 0x06]),
    ("mov %ax,(%rsi) (16-bit register)", &[0x66, 0x89, 0x06]),
    ("mov 0x1(%rsi),%rax (unaligned)", &[0x48, 0x8b, 0x46, 0x01]),
    ("call", &[0xe8, 0x00, 0x00, 0x00, 0x00]),
];

/// Registers for a check: pseudo-random values, with RSI, RCX and RSP
/// pointing where the forms' memory operands land.
fn check_regs(seed: u64) -> kvm_regs {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    kvm_regs {
        rax: next(),
        rbx: next(),
        rcx: next() % 16,
        rdx: next(),
        rsi: DATA + (next() % 256) * 64,
        rdi: next(),
        rsp: STACK - (next() % 64) * 16,
        rbp: next(),
        r8: next(),
        r9: next(),
        r10: next(),
        r11: next(),
        r12: next(),
        r13: next(),
        r14: next(),
        r15: next(),
        rip: INSN,
        // ZF, PF, CF set, and bit 1: no instruction here may change them.
        rflags: 0x2 | 0x40 | 0x4 | 0x1,
    }
}

/// The result of one form: `Ok` when the emulated instruction left the
/// registers and memory as the CPU's single step did (the text of each
/// difference otherwise).
pub struct FormCheck {
    pub name: &'static str,
    pub result: Result<(), String>,
}

/// Each form of [`FORMS`] from `rounds` random register states, stepped by
/// the CPU and done by [`emulate::step_over`] from the same state: same
/// registers (RF and TF aside), same memory. Each of [`UNSUPPORTED`] must
/// come back unsupported, with nothing changed.
pub fn check_emulation(rounds: u64) -> Result<Vec<FormCheck>, String> {
    let (_vm, mem, mut vcpu) = tiny_vm()?;
    let mut sregs = vcpu.get_sregs().map_err(s)?;
    sregs.gs.base = DATA;
    vcpu.set_sregs(&sregs).map_err(s)?;
    let mut fill = vec![0u8; (MEM - DATA) as usize];
    for (i, b) in fill.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(151).wrapping_add(7);
    }
    let snapshot = |mem: &GuestMemoryMmap| -> Result<Vec<u8>, String> {
        let mut v = vec![0u8; MEM as usize];
        mem.read_slice(&mut v, GuestAddress(0)).map_err(s)?;
        Ok(v)
    };
    let mut out = Vec::new();
    for (name, bytes) in FORMS.iter().chain(UNSUPPORTED) {
        let supported = FORMS.iter().any(|(n, _)| n == name);
        let mut result = Ok(());
        for round in 0..rounds {
            let start = check_regs(round + 1);
            let prepare = |vcpu: &VcpuFd| -> Result<(), String> {
                mem.write_slice(&fill, GuestAddress(DATA)).map_err(s)?;
                mem.write_slice(&[0x90; 16], GuestAddress(INSN))
                    .map_err(s)?;
                mem.write_slice(bytes, GuestAddress(INSN)).map_err(s)?;
                vcpu.set_regs(&start).map_err(s)
            };
            // The CPU's single step.
            prepare(&vcpu)?;
            vcpu.set_guest_debug(&guest_debug(&[None; 4], true, true))
                .map_err(s)?;
            let stepped = match vcpu.run() {
                Ok(VcpuExit::Debug(_)) => Some((vcpu.get_regs().map_err(s)?, snapshot(&mem)?)),
                // An instruction that faults or exits (`call` into the
                // nops is fine; a fault is not expected here).
                Ok(e) => return Err(format!("{name}: unexpected exit {e:?} while stepping")),
                Err(e) => return Err(format!("{name}: {e} while stepping")),
            };
            vcpu.set_guest_debug(&guest_debug(&[None; 4], false, false))
                .map_err(s)?;
            // The emulator, from the same state.
            prepare(&vcpu)?;
            let before = snapshot(&mem)?;
            let mut w = Vec::new();
            let mut regs = vcpu.get_regs().map_err(s)?;
            let outcome = emulate::step_over(&mut regs, &sregs, &mem, &mut w);
            let after = snapshot(&mem)?;
            let diffs = match (supported, outcome) {
                (true, Outcome::Done) => {
                    let (want_regs, want_mem) = stepped.expect("stepped");
                    let mut d = regs_differ(&want_regs, &regs);
                    if let Some(p) = (0..after.len()).find(|&i| after[i] != want_mem[i]) {
                        d.push(format!("memory at {p:#x}"));
                    }
                    for p in (0..after.len()).filter(|&i| after[i] != before[i]) {
                        if !w.iter().any(|g| p as u64 >> 12 == g >> 12) {
                            d.push(format!("write at {p:#x} not reported"));
                            break;
                        }
                    }
                    d
                }
                (true, Outcome::Unsupported(why)) => vec![format!("not emulated: {why}")],
                (false, Outcome::Unsupported(_)) => {
                    let mut d = regs_differ(&start, &regs);
                    if after != before {
                        d.push("memory changed".into());
                    }
                    d
                }
                (false, Outcome::Done) => vec!["emulated, but must not be".into()],
            };
            if !diffs.is_empty() {
                result = Err(format!("round {round}: {}", diffs.join(", ")));
                break;
            }
        }
        out.push(FormCheck { name, result });
    }
    Ok(out)
}

fn regs_differ(a: &kvm_regs, b: &kvm_regs) -> Vec<String> {
    let f = |r: &kvm_regs| {
        [
            ("rax", r.rax),
            ("rbx", r.rbx),
            ("rcx", r.rcx),
            ("rdx", r.rdx),
            ("rsi", r.rsi),
            ("rdi", r.rdi),
            ("rsp", r.rsp),
            ("rbp", r.rbp),
            ("r8", r.r8),
            ("r9", r.r9),
            ("r10", r.r10),
            ("r11", r.r11),
            ("r12", r.r12),
            ("r13", r.r13),
            ("r14", r.r14),
            ("r15", r.r15),
            ("rip", r.rip),
            // RF and TF are the stepping's own.
            ("rflags", r.rflags & !((1 << 16) | (1 << 8))),
        ]
    };
    f(a).iter()
        .zip(f(b).iter())
        .filter(|(x, y)| x.1 != y.1)
        .map(|(x, y)| format!("{} {:#x} != {:#x}", x.0, x.1, y.1))
        .collect()
}
