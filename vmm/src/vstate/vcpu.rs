//! One thread per vCPU. The loop runs the guest, serves port I/O, ends the
//! run on reset / triple fault / host emulation failure, and hands
//! breakpoint hits to a [`DebugHandler`]. A handler that does not return
//! keeps its vCPU out of `KVM_RUN`: that is what a stall is, here.
//!
//! Past 800 lines because the loop, its exit handling and the stop/resume
//! protocol with the handler and gdb share one state machine per vCPU;
//! instruction emulation and gdb live beside it (`emulate.rs`, `gdb.rs`).
use super::emulate::{self, Outcome};
use super::gdb::{Cmd, GdbCtl, StopKind};
use crate::debug::stack::{self, RawStack};
use crate::devices::{PioBus, PioEvent};
use crate::host::{EmulationFixup, HostProfile, ResumeMethod};
use kvm_bindings::{
    kvm_guest_debug, kvm_regs, kvm_sregs, KVM_GUESTDBG_BLOCKIRQ, KVM_GUESTDBG_ENABLE,
    KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP,
};
use kvm_ioctls::{SyncReg, VcpuExit, VcpuFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Why a run ended. The first reason recorded wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// i8042 reset: the guest restarted (init's end, or `panic=-1`).
    Reset,
    /// The guest workload reached its snapshot point and a snapshot was wanted.
    SnapshotPoint,
    /// KVM_EXIT_SHUTDOWN: triple fault.
    TripleFault { vcpu: usize },
    /// The host could not emulate a guest instruction.
    EmulationFailure {
        vcpu: usize,
        rip: u64,
        bytes: Vec<u8>,
    },
    /// Wall-clock limit reached.
    Timeout,
    /// Ctrl-C.
    Interrupted,
    /// Any other KVM failure.
    HostError(String),
    /// The console showed the end of a kernel report (`ConsoleConfig::end_on`).
    ReportEnd(String),
    /// A kernel report's title could no longer change at this line (the
    /// rest of the report was not waited for).
    ReportSettled(String),
}

/// How [`End::ReportSettled`] reads in a console log's end note; `report`
/// recognises a log cut short on purpose by it.
pub const SETTLED_END: &str = "kernel report's title settled at";

impl End {
    /// The guest printed a kernel report (whole, or up to a settled title).
    pub fn is_report(&self) -> bool {
        matches!(self, End::ReportEnd(_) | End::ReportSettled(_))
    }
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Reset => write!(f, "guest reset"),
            End::SnapshotPoint => write!(f, "snapshot point"),
            End::TripleFault { vcpu } => write!(f, "triple fault on vCPU {vcpu}"),
            End::EmulationFailure { vcpu, rip, bytes } => {
                let b: Vec<String> = bytes.iter().map(|x| format!("{x:02x}")).collect();
                write!(
                    f,
                    "host cannot emulate instruction [{}] at rip {rip:#x} on vCPU {vcpu}",
                    b.join(" ")
                )
            }
            End::Timeout => write!(f, "timeout"),
            End::Interrupted => write!(f, "interrupted"),
            End::HostError(e) => write!(f, "host error: {e}"),
            End::ReportEnd(line) => write!(f, "kernel report ended: {}", line.trim()),
            End::ReportSettled(line) => {
                write!(f, "{SETTLED_END}: {}", line.trim())
            }
        }
    }
}

/// State shared by the vCPU threads and the thread that waits for the end.
pub struct RunShared {
    stop: AtomicBool,
    /// Stop at the guest's snapshot point (else its port write is ignored).
    pub snapshot_wanted: bool,
    /// vCPUs running with interrupts blocked, and until when: the waiting
    /// thread kicks them out of KVM_RUN then, as nothing else may.
    irq_blocks: Mutex<Vec<(usize, Instant)>>,
    end: Mutex<Option<End>>,
    cv: Condvar,
    pub start: Instant,
    /// vCPUs asked to call their handler's `on_inspect` (bit per vCPU).
    inspect: AtomicU64,
    /// Each vCPU thread, to kick it out of KVM_RUN.
    threads: Mutex<Vec<(usize, libc::pthread_t)>>,
    /// Each vCPU's stack when a run ended on a kernel report.
    final_stacks: Mutex<Vec<(usize, RawStack)>>,
    /// The gdb server's control, when there is one.
    pub gdb: Option<Arc<GdbCtl>>,
    /// Holds asked by random preemption: (vCPU, how long).
    preempt: Mutex<Vec<(usize, Duration)>>,
    /// Guest-physical pages the VMM itself wrote (emulated instructions):
    /// KVM's dirty log does not see them, a snapshot restore must.
    written: Mutex<Vec<u64>>,
}

thread_local! {
    /// The vCPU this thread runs, for hooks that run on it (the console's).
    static VCPU: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The vCPU the calling thread runs, if it is a vCPU thread.
pub fn current_vcpu() -> Option<usize> {
    VCPU.with(|v| v.get())
}

impl RunShared {
    pub fn new(start: Instant, snapshot_wanted: bool) -> Self {
        Self {
            stop: AtomicBool::new(false),
            snapshot_wanted,
            irq_blocks: Mutex::new(Vec::new()),
            end: Mutex::new(None),
            cv: Condvar::new(),
            start,
            inspect: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
            final_stacks: Mutex::new(Vec::new()),
            gdb: None,
            preempt: Mutex::new(Vec::new()),
            written: Mutex::new(Vec::new()),
        }
    }

    fn note_written(&self, gpas: &[u64]) {
        let mut g = self.written.lock().unwrap_or_else(|e| e.into_inner());
        for a in gpas {
            let page = a >> 12;
            if !g.contains(&page) {
                g.push(page);
            }
        }
    }

    /// Page numbers the VMM wrote in guest memory during the run.
    pub fn written_pages(&self) -> Vec<u64> {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Ask `vcpu` to hold for `d` at its next loop turn (random
    /// preemption; a kick gets it there).
    pub fn request_preempt(&self, vcpu: usize, d: Duration) {
        self.preempt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((vcpu, d));
        self.kick(Some(vcpu));
    }

    fn take_preempt(&self, vcpu: usize) -> Option<Duration> {
        let mut g = self.preempt.lock().unwrap_or_else(|e| e.into_inner());
        let i = g.iter().position(|(v, _)| *v == vcpu)?;
        Some(g.remove(i).1)
    }

    pub fn with_gdb(mut self, g: Arc<GdbCtl>) -> Self {
        self.gdb = Some(g);
        self
    }

    /// Kick every vCPU thread out of KVM_RUN (they look at their flags).
    pub fn kick_all(&self) {
        self.kick(None);
    }

    /// Kick `vcpu`'s thread (every vCPU's with None) out of KVM_RUN.
    fn kick(&self, vcpu: Option<usize>) {
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        for (v, t) in threads.iter() {
            if vcpu.is_none_or(|x| x == *v) {
                // SAFETY: the thread is alive while the run is (vCPU threads
                // are joined after the run ends); SIGRTMIN has a handler.
                unsafe { libc::pthread_kill(*t, vmm_sys_util::signal::SIGRTMIN()) };
            }
        }
    }

    fn register_thread(&self, vcpu: usize) {
        VCPU.with(|v| v.set(Some(vcpu)));
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((vcpu, me));
    }

    /// Ask `vcpu` to call its handler's `on_inspect` as soon as it is out
    /// of KVM_RUN: a signal kicks it out. One that lands just before it
    /// enters KVM_RUN is seen at its next exit (a timer tick at the latest).
    pub fn request_inspect(&self, vcpu: usize) {
        if vcpu >= 64 {
            return;
        }
        self.inspect.fetch_or(1 << vcpu, Ordering::AcqRel);
        self.kick(Some(vcpu));
    }

    fn take_inspect(&self, vcpu: usize) -> bool {
        vcpu < 64
            && self.inspect.load(Ordering::Relaxed) & (1 << vcpu) != 0
            && self.inspect.fetch_and(!(1 << vcpu), Ordering::AcqRel) & (1 << vcpu) != 0
    }

    /// Each vCPU's kernel stack as the run ended on a kernel report.
    pub fn final_stacks(&self) -> Vec<(usize, RawStack)> {
        let mut v = self
            .final_stacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        v.sort_by_key(|s| s.0);
        v
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Record why the run ends (first caller wins) and stop every vCPU.
    pub fn finish(&self, end: End) {
        // A call a seccomp filter refused fails with EPERM: the error that
        // ends the run is the violation, named.
        let end = match end {
            End::HostError(e) => {
                End::HostError(crate::host::seccomp::take_violation().unwrap_or(e))
            }
            e => e,
        };
        let mut g = self.end.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(end);
        }
        self.stop.store(true, Ordering::Release);
        self.cv.notify_all();
    }

    /// Wait until the run ends or `timeout` passes; None on timeout.
    pub fn wait(&self, timeout: Duration) -> Option<End> {
        let g = self.end.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = self
            .cv
            .wait_timeout_while(g, timeout, |e| e.is_none())
            .unwrap_or_else(|e| e.into_inner());
        g.clone()
    }

    fn set_irq_block(&self, vcpu: usize, until: Option<Instant>) {
        let mut g = self.irq_blocks.lock().unwrap_or_else(|e| e.into_inner());
        g.retain(|(v, _)| *v != vcpu);
        if let Some(t) = until {
            g.push((vcpu, t));
        }
    }

    /// vCPUs whose interrupt block has expired (to be kicked), and the
    /// next expiry.
    pub fn irq_blocks_due(&self) -> (Vec<usize>, Option<Instant>) {
        let g = self.irq_blocks.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let due = g
            .iter()
            .filter(|(_, t)| *t <= now)
            .map(|(v, _)| *v)
            .collect();
        (due, g.iter().map(|(_, t)| *t).filter(|t| *t > now).min())
    }

    pub fn end(&self) -> Option<End> {
        self.end.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What a handler wants after a hit, once it returns.
#[derive(Debug, Clone, Copy, Default)]
pub struct Resume {
    /// Keep interrupt injection off (`KVM_GUESTDBG_BLOCKIRQ`) for at most
    /// this long, or until this vCPU's next breakpoint hit: interrupts that
    /// fell due while it was stalled would otherwise be injected the moment
    /// it resumes. Bounded, because a vCPU that never takes an interrupt
    /// again stops the whole guest (IPIs, ticks).
    pub block_irq: Option<Duration>,
}

/// The vCPU loop's view of guest debugging. Implemented by the stall engine.
pub trait DebugHandler: Send + Sync {
    /// Hardware breakpoint addresses (DR0..DR3) for this vCPU.
    fn breakpoints(&self, vcpu: usize) -> [Option<u64>; 4];
    /// A breakpoint in `slot` fired on this vCPU. May block (a stall); must
    /// return promptly once `ctx.stopping()`.
    fn on_hit(&self, ctx: &mut VcpuCtx<'_>, slot: usize) -> Resume;
    /// This vCPU was asked to look at itself ([`VcpuCtx::request_inspect`]).
    /// Should be quick: the vCPU is out of the guest meanwhile.
    fn on_inspect(&self, _ctx: &mut VcpuCtx<'_>) {}
    /// Random preemption: hold this vCPU for `d` (the default just sleeps).
    fn on_preempt(&self, _ctx: &mut VcpuCtx<'_>, d: Duration) {
        std::thread::sleep(d);
    }
}

/// Guest state of a vCPU stopped at a hit.
pub struct VcpuCtx<'a> {
    pub index: usize,
    fd: &'a VcpuFd,
    mem: &'a GuestMemoryMmap,
    shared: &'a RunShared,
}

impl VcpuCtx<'_> {
    pub fn regs(&self) -> Option<kvm_regs> {
        self.fd.get_regs().ok()
    }

    pub fn sregs(&self) -> Option<kvm_sregs> {
        self.fd.get_sregs().ok()
    }

    /// Guest-virtual `gva..gva+len` as (offset, guest-physical address,
    /// length) pieces, one per page, through this vCPU's page tables
    /// (`KVM_TRANSLATE`); None if a page is not mapped.
    fn pieces(&self, gva: u64, len: usize) -> Option<Vec<(usize, GuestAddress, usize)>> {
        let mut out = Vec::new();
        let mut done = 0;
        while done < len {
            let va = gva + done as u64;
            let t = self.fd.translate_gva(va).ok()?;
            if t.valid == 0 {
                return None;
            }
            let n = (len - done).min((0x1000 - (va & 0xfff)) as usize);
            out.push((done, GuestAddress(t.physical_address), n));
            done += n;
        }
        Some(out)
    }

    /// Read guest memory at a guest-virtual address, page by page.
    pub fn read_virt(&self, gva: u64, buf: &mut [u8]) -> Option<()> {
        for (at, pa, n) in self.pieces(gva, buf.len())? {
            self.mem.read_slice(&mut buf[at..at + n], pa).ok()?;
        }
        Some(())
    }

    pub fn read_u64(&self, gva: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read_virt(gva, &mut b)?;
        Some(u64::from_le_bytes(b))
    }

    /// This vCPU's kernel stack, unsymbolized (see [`crate::debug::stack`]).
    /// A stack spans a page or two: each page is translated once.
    pub fn stack(&self) -> RawStack {
        let (Some(r), Some(s)) = (self.regs(), self.sregs()) else {
            return RawStack::default();
        };
        let pages = std::cell::RefCell::new(Vec::<(u64, u64)>::new());
        let read = |gva: u64| -> Option<u64> {
            if gva & 0xfff > 0xff8 {
                return self.read_u64(gva);
            }
            let page = gva & !0xfff;
            let known = pages.borrow().iter().find(|p| p.0 == page).map(|p| p.1);
            let phys = match known {
                Some(p) => p,
                None => {
                    let t = self.fd.translate_gva(page).ok()?;
                    if t.valid == 0 {
                        return None;
                    }
                    pages.borrow_mut().push((page, t.physical_address));
                    t.physical_address
                }
            };
            self.mem
                .read_obj::<u64>(GuestAddress(phys + (gva & 0xfff)))
                .ok()
        };
        stack::walk(r.rip, r.rsp, r.rbp, s.cs.selector & 3 == 3, read)
    }

    /// Write guest memory at a guest-virtual address, page by page.
    pub fn write_virt(&self, gva: u64, buf: &[u8]) -> Option<()> {
        for (at, pa, n) in self.pieces(gva, buf.len())? {
            self.mem.write_slice(&buf[at..at + n], pa).ok()?;
        }
        Some(())
    }

    /// Freeze the machine for gdb, if a gdb server is waiting for this
    /// (the first request only): every vCPU serves gdb at its next exit.
    pub fn request_freeze(&self, why: &str) {
        if let Some(g) = &self.shared.gdb {
            if g.request_freeze(self.index, why) {
                self.shared.kick_all();
            }
        }
    }

    /// If the machine is frozen for gdb, serve gdb here (a handler that
    /// holds its vCPU, in a stall, calls this); returns the time it took.
    pub fn serve_gdb(&self) -> Duration {
        let t0 = Instant::now();
        if let Some(g) = self.shared.gdb.as_ref().filter(|g| g.frozen()) {
            serve_gdb(g, self);
        }
        t0.elapsed()
    }

    /// Have `vcpu` call the handler's `on_inspect` soon (its next exit).
    pub fn request_inspect(&self, vcpu: usize) {
        self.shared.request_inspect(vcpu)
    }

    /// Tell the guest it was paused (`KVM_KVMCLOCK_CTRL`): its watchdogs
    /// then do not count the pause. An SMI would not announce itself.
    pub fn announce_pause(&self) {
        let _ = self.fd.kvmclock_ctrl();
    }

    pub fn stopping(&self) -> bool {
        self.shared.stopping()
    }

    pub fn elapsed(&self) -> Duration {
        self.shared.start.elapsed()
    }
}

/// Serve gdb's requests with this vCPU's state until gdb resumes it.
fn serve_gdb(g: &GdbCtl, ctx: &VcpuCtx<'_>) {
    g.serve(ctx.index, |cmd| match cmd {
        Cmd::Regs(tx) => {
            let _ = tx.send(ctx.regs().zip(ctx.sregs()));
            None
        }
        Cmd::SetRegs(r, tx) => {
            let _ = tx.send(ctx.fd.set_regs(&r).is_ok());
            None
        }
        Cmd::Read(a, n, tx) => {
            let mut b = vec![0u8; n];
            let _ = tx.send(ctx.read_virt(a, &mut b).map(|_| b));
            None
        }
        Cmd::Write(a, b, tx) => {
            let _ = tx.send(ctx.write_virt(a, &b).is_some());
            None
        }
        Cmd::Resume { step } => Some(step),
    });
    // As QEMU does on `cont`: the guest's watchdogs should not count the
    // time gdb held it.
    ctx.announce_pause();
}

const DR6_BS: u64 = 1 << 14;

fn dr7_for(bps: &[Option<u64>; 4]) -> u64 {
    // Global-enable each used slot; R/W = 00 (execute), LEN = 00. GE (bit 9)
    // as Firecracker sets it.
    let mut dr7 = 1 << 9;
    for (i, b) in bps.iter().enumerate() {
        if b.is_some() {
            dr7 |= 1 << (2 * i + 1);
        }
    }
    dr7
}

pub(crate) fn guest_debug(bps: &[Option<u64>; 4], step: bool, block_irq: bool) -> kvm_guest_debug {
    let mut d = kvm_guest_debug {
        control: KVM_GUESTDBG_ENABLE,
        ..Default::default()
    };
    if step {
        d.control |= KVM_GUESTDBG_SINGLESTEP;
    } else {
        d.control |= KVM_GUESTDBG_USE_HW_BP;
        for (i, b) in bps.iter().enumerate() {
            d.arch.debugreg[i] = b.unwrap_or(0);
        }
        d.arch.debugreg[7] = dr7_for(bps);
    }
    if block_irq {
        d.control |= KVM_GUESTDBG_BLOCKIRQ;
    }
    d
}

pub struct VcpuRunner {
    pub index: usize,
    pub fd: VcpuFd,
    pub mem: GuestMemoryMmap,
    pub bus: Arc<PioBus>,
    pub shared: Arc<RunShared>,
    pub handler: Option<Arc<dyn DebugHandler>>,
    pub profile: HostProfile,
}

impl VcpuRunner {
    /// Gets past the instruction a breakpoint stopped this vCPU on without
    /// a step, if `how` can here; false: the caller steps.
    fn resume_past(&mut self, how: ResumeMethod, pending: &mut bool) -> bool {
        match how {
            ResumeMethod::Step => false,
            ResumeMethod::ResumeFlag => match self.fd.get_regs() {
                Ok(mut r) => {
                    r.rflags |= 1 << 16;
                    self.fd.set_regs(&r).is_ok()
                }
                Err(_) => false,
            },
            ResumeMethod::Emulate => {
                let sregs = self.fd.sync_regs().sregs;
                let mut r = self.fd.sync_regs().regs;
                let mut written = Vec::new();
                let out = emulate::step_over(&mut r, &sregs, &self.mem, &mut written);
                // A page walk may have set accessed bits either way.
                self.shared.note_written(&written);
                match out {
                    Outcome::Done => {
                        self.fd.sync_regs_mut().regs = r;
                        self.fd.set_sync_dirty_reg(SyncReg::Register);
                        *pending = true;
                        true
                    }
                    Outcome::Unsupported(why) => {
                        tracing::trace!(why, rip = r.rip, "breakpoint resumed by a step");
                        false
                    }
                }
            }
        }
    }

    /// Hands registers waiting in the run structure to KVM now, for code
    /// that uses the register ioctls before the next KVM_RUN.
    fn flush_sync(&mut self, pending: &mut bool) {
        if std::mem::take(pending) {
            let r = self.fd.sync_regs().regs;
            self.fd.clear_sync_dirty_reg(SyncReg::Register);
            if let Err(e) = self.fd.set_regs(&r) {
                self.shared.finish(End::HostError(format!(
                    "vCPU {}: set regs: {e}",
                    self.index
                )));
            }
        }
    }

    /// Run until the VM stops. Never panics on guest behaviour: every exit
    /// either continues or ends the run with a reason.
    pub fn run(mut self) -> VcpuFd {
        self.run_loop();
        self.fd
    }

    fn run_loop(&mut self) {
        self.shared.register_thread(self.index);
        if let Err(e) = crate::host::seccomp::install(crate::host::seccomp::Role::Vcpu(self.index))
        {
            self.shared.finish(End::HostError(e.to_string()));
            return;
        }
        let bps = self
            .handler
            .as_ref()
            .map(|h| h.breakpoints(self.index))
            .unwrap_or([None; 4]);
        let armed = bps.iter().any(Option::is_some);
        if armed {
            if let Err(e) = self.fd.set_guest_debug(&guest_debug(&bps, false, false)) {
                self.shared.finish(End::HostError(format!(
                    "vCPU {}: set guest debug: {e}",
                    self.index
                )));
                return;
            }
        }
        let mut stepping = false;
        let mut block_until: Option<Instant> = None;
        let gdb = self.shared.gdb.clone();
        // How a hit gets past its instruction. With gdb, always a step: a
        // stop must show the vCPU at the breakpoint, not one instruction on.
        let resume = match self.profile.resume {
            _ if gdb.is_some() => ResumeMethod::Step,
            ResumeMethod::ResumeFlag if !super::exitbench::rf_honoured() => ResumeMethod::Step,
            r => r,
        };
        if armed && resume == ResumeMethod::Emulate {
            // Registers and system registers come with each exit (and
            // registers go back with the next KVM_RUN) in the run
            // structure: no ioctl at a hit. (An earlier build that synced
            // the system registers lost guest wakeups on kvm_pvm: that was
            // the BLOCKIRQ left on, fixed since; the stall engine still
            // reads by ioctl.)
            self.fd.set_sync_valid_reg(SyncReg::Register);
            self.fd.set_sync_valid_reg(SyncReg::SystemRegister);
        }
        // Registers handed back through the run structure, not yet taken
        // by KVM: anything else that reads or writes them flushes first.
        let mut sync_pending = false;
        while !self.shared.stopping() {
            if let Some(g) = gdb.as_ref().filter(|g| g.frozen()) {
                self.flush_sync(&mut sync_pending);
                let t0 = Instant::now();
                serve_gdb(g, &self.ctx());
                // An interrupt block in force keeps its remaining time: the
                // freeze does not count (timer interrupts that fell due
                // meanwhile would otherwise land first).
                if let Some(t) = block_until.as_mut() {
                    *t += t0.elapsed();
                    self.shared.set_irq_block(self.index, Some(*t));
                }
                // gdb's breakpoints and step while attached, ours after.
                self.set_debug(if g.attached() {
                    let (b, step) = g.debug_for(self.index);
                    guest_debug(&b, step, step || block_until.is_some())
                } else {
                    guest_debug(&bps, false, block_until.is_some())
                });
                continue;
            }
            if let Some(d) = self.shared.take_preempt(self.index) {
                self.flush_sync(&mut sync_pending);
                match self.handler.clone() {
                    Some(h) => h.on_preempt(&mut self.ctx(), d),
                    None => std::thread::sleep(d),
                }
            }
            if self.shared.take_inspect(self.index) {
                self.flush_sync(&mut sync_pending);
                if let Some(h) = self.handler.clone() {
                    h.on_inspect(&mut self.ctx());
                }
            }
            if block_until.is_some_and(|t| t <= Instant::now()) && !stepping {
                block_until = None;
                self.shared.set_irq_block(self.index, None);
                match gdb.as_ref().filter(|g| g.attached()) {
                    Some(g) => {
                        let (b, step) = g.debug_for(self.index);
                        self.set_debug(guest_debug(&b, step, step));
                    }
                    None => self.set_debug(guest_debug(&bps, false, false)),
                }
            }
            // KVM takes the registers at this entry, and clears the dirty
            // flag itself (before it checks for an immediate exit).
            sync_pending = false;
            let exit = match self.fd.run() {
                Ok(exit) => exit,
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.fd.set_kvm_immediate_exit(0);
                    continue;
                }
                Err(e) => {
                    self.shared
                        .finish(End::HostError(format!("vCPU {}: KVM_RUN: {e}", self.index)));
                    break;
                }
            };
            match exit {
                VcpuExit::IoIn(port, data) => self.bus.read(port, data),
                VcpuExit::IoOut(port, data) => match self.bus.write(port, data) {
                    PioEvent::Reset => self.shared.finish(End::Reset),
                    PioEvent::SnapshotPoint if self.shared.snapshot_wanted => {
                        self.shared.finish(End::SnapshotPoint)
                    }
                    _ => {}
                },
                VcpuExit::MmioRead(addr, data) => {
                    tracing::debug!(addr, "ignored MMIO read");
                    data.fill(0xff);
                }
                VcpuExit::MmioWrite(addr, _) => tracing::debug!(addr, "ignored MMIO write"),
                VcpuExit::Debug(arch) => {
                    let g = gdb.as_ref().filter(|g| g.attached());
                    if stepping {
                        // Stepped past the breakpointed instruction: re-arm
                        // (gdb's breakpoints if it holds the machine now).
                        stepping = false;
                        match g {
                            Some(g) if g.debug_for(self.index).1 => {
                                g.report_stop(self.index, StopKind::Step)
                            }
                            Some(g) => {
                                let (b, _) = g.debug_for(self.index);
                                self.set_debug(guest_debug(&b, false, block_until.is_some()));
                            }
                            None => self.set_debug(guest_debug(&bps, false, block_until.is_some())),
                        }
                    } else if let Some(g) = g {
                        // gdb's own breakpoint or step.
                        let kind = if arch.dr6 & DR6_BS != 0 {
                            StopKind::Step
                        } else {
                            StopKind::Breakpoint
                        };
                        g.report_stop(self.index, kind);
                    } else if let Some(h) = self.handler.clone() {
                        let slot = (arch.dr6 & 0xf).trailing_zeros() as usize;
                        if slot > 3 || arch.dr6 & DR6_BS != 0 {
                            continue;
                        }
                        let mut ctx = self.ctx();
                        let r = h.on_hit(&mut ctx, slot);
                        // KVM's BLOCKIRQ is on exactly while a block runs.
                        let was_blocked = block_until.is_some();
                        block_until = r.block_irq.map(|d| Instant::now() + d);
                        self.shared.set_irq_block(self.index, block_until);
                        if self.resume_past(resume, &mut sync_pending) {
                            // One exit per hit: the breakpoints stay armed.
                            // BLOCKIRQ follows this hit's block: on when it
                            // blocks, and off when a hit that does not
                            // block cuts an earlier block short. Left on,
                            // no interrupt reaches this vCPU again (the
                            // expiry below only sees a running block): an
                            // IPI's wakeup is lost and its task sleeps for
                            // ever. This was the explore test's hang with
                            // emulation (found by reading; the step path
                            // re-arms after its step and never had it).
                            if block_until.is_some() || was_blocked {
                                self.set_debug(guest_debug(&bps, false, block_until.is_some()));
                            }
                        } else {
                            // Step over the instruction with the breakpoints
                            // off, IRQs blocked so the step lands on the
                            // next instruction.
                            stepping = true;
                            self.set_debug(guest_debug(&bps, true, true));
                        }
                    }
                }
                VcpuExit::Shutdown => self.shared.finish(End::TripleFault { vcpu: self.index }),
                VcpuExit::SystemEvent(kind, _) => {
                    tracing::debug!(kind, "system event");
                    self.shared.finish(End::Reset);
                }
                VcpuExit::InternalError => self.internal_error(),
                VcpuExit::FailEntry(reason, cpu) => self.shared.finish(End::HostError(format!(
                    "vCPU {}: entry failed, hardware reason {reason:#x} on host cpu {cpu}",
                    self.index
                ))),
                VcpuExit::Hlt | VcpuExit::Intr | VcpuExit::IrqWindowOpen => {}
                other => {
                    let s = format!("{other:?}");
                    tracing::debug!(exit = %s, "unhandled exit ignored");
                }
            }
        }
        self.flush_sync(&mut sync_pending);
        if self.shared.end().is_some_and(|e| e.is_report()) {
            let st = self.ctx().stack();
            self.shared
                .final_stacks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((self.index, st));
        }
        if let (Ok(r), Ok(s)) = (self.fd.get_regs(), self.fd.get_sregs()) {
            let mp = self
                .fd
                .get_mp_state()
                .map(|m| m.mp_state)
                .unwrap_or(u32::MAX);
            tracing::debug!(
                vcpu = self.index,
                rip = format_args!("{:#x}", r.rip),
                cs = s.cs.selector,
                cr0 = format_args!("{:#x}", s.cr0),
                mp,
                "vCPU stopped"
            );
        }
    }

    fn ctx(&self) -> VcpuCtx<'_> {
        VcpuCtx {
            index: self.index,
            fd: &self.fd,
            mem: &self.mem,
            shared: &self.shared,
        }
    }

    fn set_debug(&self, d: kvm_guest_debug) {
        if let Err(e) = self.fd.set_guest_debug(&d) {
            self.shared.finish(End::HostError(format!(
                "vCPU {}: set guest debug: {e}",
                self.index
            )));
        }
    }

    fn internal_error(&mut self) {
        // kvm-ioctls' InternalError carries no data; the raw kvm_run has the
        // suberror and, for emulation failures, the instruction bytes.
        let run = self.fd.get_kvm_run();
        // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is
        // the active member of the union.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        const KVM_INTERNAL_ERROR_EMULATION: u32 = 1;
        const FLAG_INSN_BYTES: u64 = 1;
        let rip = self.fd.get_regs().map(|r| r.rip).unwrap_or(0);
        if internal.suberror != KVM_INTERNAL_ERROR_EMULATION {
            self.shared.finish(End::HostError(format!(
                "vCPU {}: KVM internal error, suberror {} at rip {rip:#x}",
                self.index, internal.suberror
            )));
            return;
        }
        let mut bytes = Vec::new();
        if internal.ndata >= 2 && internal.data[0] & FLAG_INSN_BYTES != 0 {
            let raw: Vec<u8> = internal.data[1..3]
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect();
            let n = (raw[0] as usize).min(15);
            bytes = raw[1..1 + n].to_vec();
        }
        if bytes.is_empty() {
            let mut b = [0u8; 15];
            let ctx = self.ctx();
            if ctx.read_virt(rip, &mut b).is_some() {
                bytes = b.to_vec();
            }
        }
        let fixed = match self.profile.emulation_fixup(&bytes) {
            EmulationFixup::Skip(n) => self.skip(rip, n),
            EmulationFixup::Breakpoint => self.deliver_int3(rip),
            EmulationFixup::Fail => false,
        };
        if fixed {
            return;
        }
        self.shared.finish(End::EmulationFailure {
            vcpu: self.index,
            rip,
            bytes,
        });
    }

    fn skip(&mut self, rip: u64, len: u64) -> bool {
        let Ok(mut regs) = self.fd.get_regs() else {
            return false;
        };
        regs.rip = rip + len;
        self.fd.set_regs(&regs).is_ok()
    }

    /// The guest's own `int3` on a host that cannot run it: deliver the #BP
    /// it would have raised (rip past the 0xCC, trap-style).
    fn deliver_int3(&mut self, rip: u64) -> bool {
        let Ok(mut regs) = self.fd.get_regs() else {
            return false;
        };
        regs.rip = rip + 1;
        let Ok(mut ev) = self.fd.get_vcpu_events() else {
            return false;
        };
        ev.exception.injected = 1;
        ev.exception.nr = 3;
        ev.exception.has_error_code = 0;
        self.fd.set_regs(&regs).is_ok() && self.fd.set_vcpu_events(&ev).is_ok()
    }
}
