//! A GDB remote-protocol server (the `gdbstub` crate) for a running guest:
//! one gdb thread per vCPU, registers, memory through guest-virtual
//! addresses, breakpoints, single step, continue, detach.
//!
//! The machine is *frozen* when something asks for it (boot start, a
//! kernel report's first line, or a handler — the stall engine at the
//! goal or at a trigger's stop): every vCPU leaves `KVM_RUN` (a kick) and
//! serves gdb's requests on its own thread, where its vCPU fd lives, until
//! gdb resumes it. The server thread accepts gdb once the machine is frozen
//! and talks to the vCPUs through per-vCPU command channels.
//!
//! Breakpoints: gdb's software breakpoints become hardware ones (guest
//! `int3` cannot be emulated on kvm_pvm, and one mechanism for every host
//! is simpler): at most 4 breakpoints in all, software and hardware
//! together. While gdb is attached its breakpoints own the debug registers
//! and the scenario's triggers are suspended; after `detach` they are back.
use gdbstub::common::{Signal, Tid};
use gdbstub::conn::ConnectionExt;
use gdbstub::outputln;
use gdbstub::stub::{run_blocking, DisconnectReason, GdbStub, MultiThreadStopReason};
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, SwBreakpoint, SwBreakpointOps,
};
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use gdbstub_arch::x86::reg::X86_64CoreRegs;
use gdbstub_arch::x86::X86_64_SSE;
use kvm_bindings::{kvm_regs, kvm_sregs};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// When to freeze the machine for gdb, as far as the VMM itself knows;
/// the goal and triggers are the stall engine's (it calls
/// [`GdbCtl::request_freeze`]).
#[derive(Debug, Clone, Default)]
pub struct GdbConfig {
    /// Where to listen, e.g. `127.0.0.1:1234`.
    pub addr: String,
    /// Before the first guest instruction.
    pub on_start: bool,
    /// At the first line of a kernel report (before the panic path).
    pub on_crash: bool,
}

/// What a vCPU is asked to do while frozen.
pub(crate) enum Cmd {
    Regs(Sender<Option<(kvm_regs, kvm_sregs)>>),
    SetRegs(Box<kvm_regs>, Sender<bool>),
    Read(u64, usize, Sender<Option<Vec<u8>>>),
    Write(u64, Vec<u8>, Sender<bool>),
    /// Leave the frozen state: run on (`step`: one instruction, then stop).
    Resume {
        step: bool,
    },
}

/// Why the machine stopped, for gdb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopKind {
    /// A freeze request (start, goal, trigger, crash) or gdb's Ctrl-C.
    Frozen,
    Breakpoint,
    Step,
}

struct State {
    /// The machine is frozen or freezing: every vCPU should serve gdb.
    frozen: bool,
    /// vCPUs that are serving gdb now.
    serving: Vec<bool>,
    /// The stop to report: (vCPU, kind), first one wins until taken.
    stop: Option<(usize, StopKind)>,
    /// Why the first freeze happened (for the message and the summary).
    why: Option<String>,
    /// gdb's breakpoints (hardware slots, in order).
    bps: Vec<u64>,
    /// vCPUs gdb asked to single-step.
    step: Vec<bool>,
    /// From the first freeze to the detach: the run's timeout pauses.
    held_since: Option<Instant>,
    held: Duration,
}

/// Shared between the vCPU threads and the gdb server thread.
pub struct GdbCtl {
    cfg: GdbConfig,
    vcpus: usize,
    st: Mutex<State>,
    cv: Condvar,
    /// gdb's breakpoints own the debug registers (attached, until detach).
    attached: AtomicBool,
    /// A freeze was ever requested (only the first counts).
    requested: AtomicBool,
    /// The run is over: stop serving.
    done: AtomicBool,
    exit_code: std::sync::atomic::AtomicU8,
    cmds: Vec<(Sender<Cmd>, Mutex<Receiver<Cmd>>)>,
}

impl GdbCtl {
    pub fn new(cfg: GdbConfig, vcpus: usize) -> Self {
        let st = State {
            frozen: cfg.on_start,
            serving: vec![false; vcpus],
            stop: cfg.on_start.then_some((0, StopKind::Frozen)),
            why: cfg.on_start.then(|| "boot".to_string()),
            bps: Vec::new(),
            step: vec![false; vcpus],
            held_since: cfg.on_start.then(Instant::now),
            held: Duration::ZERO,
        };
        let cmds = (0..vcpus)
            .map(|_| {
                let (tx, rx) = channel();
                (tx, Mutex::new(rx))
            })
            .collect();
        Self {
            requested: AtomicBool::new(cfg.on_start),
            attached: AtomicBool::new(cfg.on_start),
            cfg,
            vcpus,
            st: Mutex::new(st),
            cv: Condvar::new(),
            done: AtomicBool::new(false),
            exit_code: Default::default(),
            cmds,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn on_crash(&self) -> bool {
        self.cfg.on_crash
    }

    /// Freeze the machine for gdb (the first request only); `vcpu` is the
    /// thread gdb is shown first. The caller kicks the other vCPUs.
    pub fn request_freeze(&self, vcpu: usize, why: &str) -> bool {
        if self.requested.swap(true, Ordering::AcqRel) {
            return false;
        }
        let mut st = self.lock();
        st.frozen = true;
        st.stop.get_or_insert((vcpu, StopKind::Frozen));
        st.why = Some(why.to_string());
        st.held_since = Some(Instant::now());
        self.attached.store(true, Ordering::Release);
        self.cv.notify_all();
        true
    }

    /// Whether this vCPU should stop and serve gdb now.
    pub fn frozen(&self) -> bool {
        self.requested.load(Ordering::Relaxed) && self.lock().frozen
    }

    pub fn attached(&self) -> bool {
        self.attached.load(Ordering::Acquire)
    }

    /// gdb's debug registers for a vCPU while attached: its breakpoints,
    /// and whether to single-step it.
    pub fn debug_for(&self, vcpu: usize) -> ([Option<u64>; 4], bool) {
        let st = self.lock();
        let mut bps = [None; 4];
        for (i, a) in st.bps.iter().take(4).enumerate() {
            bps[i] = Some(*a);
        }
        (bps, st.step.get(vcpu).copied().unwrap_or(false))
    }

    /// Whether `addr` is one of gdb's breakpoints.
    pub fn is_breakpoint(&self, addr: u64) -> bool {
        self.lock().bps.contains(&addr)
    }

    /// A vCPU stopped for gdb (breakpoint, step done): freeze the machine.
    pub(crate) fn report_stop(&self, vcpu: usize, kind: StopKind) {
        let mut st = self.lock();
        st.frozen = true;
        st.stop.get_or_insert((vcpu, kind));
        if let Some(s) = st.step.get_mut(vcpu) {
            *s = false;
        }
        self.cv.notify_all();
    }

    /// How long gdb has held the machine (the run's timeout does not count it).
    pub fn held(&self) -> Duration {
        let st = self.lock();
        st.held + st.held_since.map(|t| t.elapsed()).unwrap_or_default()
    }

    /// Why gdb was given the machine, if it ever was.
    pub fn inspected(&self) -> Option<String> {
        self.lock().why.clone()
    }

    /// The run is over; gdb sees the inferior exit with `code` (the VMM
    /// says 1 for a run that ended on a kernel report or a triple fault).
    pub fn finish(&self, code: u8) {
        self.exit_code.store(code, Ordering::Release);
        self.done.store(true, Ordering::Release);
        self.cv.notify_all();
    }

    /// Serve gdb's requests on this vCPU's thread until gdb resumes it (or
    /// the run ends). `exec` runs one request with the vCPU's state.
    pub(crate) fn serve(&self, vcpu: usize, mut exec: impl FnMut(Cmd) -> Option<bool>) {
        {
            let mut st = self.lock();
            st.serving[vcpu] = true;
            self.cv.notify_all();
        }
        let rx = self.cmds[vcpu].1.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.done.load(Ordering::Acquire) {
                break;
            }
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(cmd) => {
                    if let Some(step) = exec(cmd) {
                        let mut st = self.lock();
                        st.step[vcpu] = step;
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let mut st = self.lock();
        st.serving[vcpu] = false;
        self.cv.notify_all();
    }

    fn send(&self, vcpu: usize, cmd: Cmd) {
        let _ = self.cmds[vcpu].0.send(cmd);
    }

    /// Wait until `ready(state)` or the run ends; false if it ended.
    fn wait_until(&self, ready: impl Fn(&State) -> bool) -> bool {
        let mut st = self.lock();
        loop {
            if self.done.load(Ordering::Acquire) {
                return false;
            }
            if ready(&st) {
                return true;
            }
            st = self
                .cv
                .wait_timeout(st, Duration::from_millis(20))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Wait until every vCPU serves gdb (or the run ends).
    fn wait_all_serving(&self) -> bool {
        self.wait_until(|st| st.serving.iter().all(|s| *s))
    }

    fn detach(&self) {
        let mut st = self.lock();
        st.bps.clear();
        st.step.iter_mut().for_each(|s| *s = false);
        st.frozen = false;
        if let Some(t) = st.held_since.take() {
            st.held += t.elapsed();
        }
        self.attached.store(false, Ordering::Release);
        drop(st);
        for v in 0..self.vcpus {
            self.send(v, Cmd::Resume { step: false });
        }
    }
}

/// The server: waits for the first freeze, then serves one gdb session.
/// `kick` gets every vCPU out of KVM_RUN.
pub fn serve(ctl: std::sync::Arc<GdbCtl>, listener: TcpListener, kick: impl Fn() + Send + 'static) {
    if let Err(e) = crate::host::seccomp::install(crate::host::seccomp::Role::Gdb) {
        tracing::error!("{e}");
        return;
    }
    if !ctl.wait_until(|st| st.frozen) {
        return;
    }
    kick();
    if !ctl.wait_all_serving() {
        return;
    }
    let why = ctl.inspected().unwrap_or_default();
    eprintln!(
        "preemptor: gdb: machine frozen ({why}); waiting for gdb on {} (gdb vmlinux -ex 'target remote {}')",
        ctl.cfg.addr, ctl.cfg.addr
    );
    // Polled, so that a run that ends without gdb does not leave this
    // thread blocked in accept().
    let _ = listener.set_nonblocking(true);
    let conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if ctl.done.load(Ordering::Acquire) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                eprintln!("preemptor: gdb: accept: {e}");
                ctl.detach();
                return;
            }
        }
    };
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_nodelay(true);
    let mut target = GdbTarget {
        ctl: ctl.clone(),
        actions: vec![None; ctl.vcpus],
        others_continue: true,
        kick: Box::new(kick),
    };
    match GdbStub::new(conn).run_blocking::<EventLoop>(&mut target) {
        Ok(DisconnectReason::Disconnect) | Ok(DisconnectReason::Kill) => {
            eprintln!("preemptor: gdb: detached; the run goes on")
        }
        Ok(_) => {}
        Err(e) => eprintln!("preemptor: gdb: {e}"),
    }
    ctl.detach();
}

struct GdbTarget {
    ctl: std::sync::Arc<GdbCtl>,
    /// Per vCPU: Some(step) to resume it, None: no explicit action.
    actions: Vec<Option<bool>>,
    /// Threads without an action continue (no scheduler locking).
    others_continue: bool,
    kick: Box<dyn Fn() + Send>,
}

fn tid(v: usize) -> Tid {
    Tid::new(v + 1).expect("non-zero")
}

fn vcpu_of(t: Tid) -> usize {
    t.get() - 1
}

impl GdbTarget {
    fn ask<T>(&self, t: Tid, make: impl FnOnce(Sender<T>) -> Cmd) -> Option<T> {
        let v = vcpu_of(t);
        if v >= self.ctl.vcpus {
            return None;
        }
        let (tx, rx) = channel();
        self.ctl.send(v, make(tx));
        rx.recv_timeout(Duration::from_secs(5)).ok()
    }
}

impl Target for GdbTarget {
    type Arch = X86_64_SSE;
    type Error = String;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::MultiThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }

    // The kernel is in guest memory; gdb should not write int3 into it.
    fn guard_rail_implicit_sw_breakpoints(&self) -> bool {
        true
    }
}

impl MultiThreadBase for GdbTarget {
    fn read_registers(&mut self, regs: &mut X86_64CoreRegs, t: Tid) -> TargetResult<(), Self> {
        let (r, s) = self
            .ask(t, Cmd::Regs)
            .flatten()
            .ok_or(TargetError::NonFatal)?;
        regs.regs = [
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15,
        ];
        regs.rip = r.rip;
        regs.eflags = r.rflags as u32;
        regs.segments.cs = s.cs.selector.into();
        regs.segments.ss = s.ss.selector.into();
        regs.segments.ds = s.ds.selector.into();
        regs.segments.es = s.es.selector.into();
        regs.segments.fs = s.fs.selector.into();
        regs.segments.gs = s.gs.selector.into();
        Ok(())
    }

    fn write_registers(&mut self, regs: &X86_64CoreRegs, t: Tid) -> TargetResult<(), Self> {
        let (mut r, _) = self
            .ask(t, Cmd::Regs)
            .flatten()
            .ok_or(TargetError::NonFatal)?;
        let g = &regs.regs;
        (r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp) =
            (g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]);
        (r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15) =
            (g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
        r.rip = regs.rip;
        r.rflags = (r.rflags & !0xffff_ffff) | u64::from(regs.eflags);
        match self.ask(t, |tx| Cmd::SetRegs(Box::new(r), tx)) {
            Some(true) => Ok(()),
            _ => Err(TargetError::NonFatal),
        }
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], t: Tid) -> TargetResult<usize, Self> {
        match self.ask(t, |tx| Cmd::Read(start, data.len(), tx)).flatten() {
            Some(b) => {
                data.copy_from_slice(&b);
                Ok(b.len())
            }
            None => Err(TargetError::NonFatal),
        }
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], t: Tid) -> TargetResult<(), Self> {
        match self.ask(t, |tx| Cmd::Write(start, data.to_vec(), tx)) {
            Some(true) => Ok(()),
            _ => Err(TargetError::NonFatal),
        }
    }

    fn list_active_threads(&mut self, register: &mut dyn FnMut(Tid)) -> Result<(), String> {
        for v in 0..self.ctl.vcpus {
            register(tid(v));
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadResume for GdbTarget {
    fn resume(&mut self) -> Result<(), String> {
        let others = self.others_continue.then_some(false);
        for a in self.actions.iter_mut() {
            *a = a.or(others);
        }
        {
            let mut st = self.ctl.lock();
            st.frozen = false;
            st.stop = None;
            for (v, a) in self.actions.iter().enumerate() {
                st.step[v] = *a == Some(true);
            }
        }
        for (v, a) in self.actions.iter().enumerate() {
            if let Some(step) = a {
                self.ctl.send(v, Cmd::Resume { step: *step });
            }
        }
        Ok(())
    }

    /// gdbstub's contract: a thread without an explicit action continues,
    /// unless gdb asks for scheduler locking.
    fn clear_resume_actions(&mut self) -> Result<(), String> {
        self.actions.iter_mut().for_each(|a| *a = None);
        self.others_continue = true;
        Ok(())
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }

    fn set_resume_action_continue(&mut self, t: Tid, sig: Option<Signal>) -> Result<(), String> {
        if sig.is_some() {
            return Err("no signals to deliver to a vCPU".into());
        }
        if let Some(a) = self.actions.get_mut(vcpu_of(t)) {
            *a = Some(false);
        }
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadSchedulerLocking for GdbTarget {
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), String> {
        self.others_continue = false;
        Ok(())
    }
}

impl MultiThreadSingleStep for GdbTarget {
    fn set_resume_action_step(&mut self, t: Tid, sig: Option<Signal>) -> Result<(), String> {
        if sig.is_some() {
            return Err("no signals to deliver to a vCPU".into());
        }
        if let Some(a) = self.actions.get_mut(vcpu_of(t)) {
            *a = Some(true);
        }
        Ok(())
    }
}

impl Breakpoints for GdbTarget {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }
}

impl GdbTarget {
    fn add_bp(&mut self, addr: u64) -> bool {
        let mut st = self.ctl.lock();
        if st.bps.contains(&addr) {
            return true;
        }
        if st.bps.len() >= 4 {
            return false;
        }
        st.bps.push(addr);
        true
    }

    fn remove_bp(&mut self, addr: u64) -> bool {
        let mut st = self.ctl.lock();
        let n = st.bps.len();
        st.bps.retain(|a| *a != addr);
        st.bps.len() != n
    }
}

// Software breakpoints are hardware ones here (see the module docs).
impl SwBreakpoint for GdbTarget {
    fn add_sw_breakpoint(&mut self, addr: u64, _k: usize) -> TargetResult<bool, Self> {
        Ok(self.add_bp(addr))
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _k: usize) -> TargetResult<bool, Self> {
        Ok(self.remove_bp(addr))
    }
}

impl HwBreakpoint for GdbTarget {
    fn add_hw_breakpoint(&mut self, addr: u64, _k: usize) -> TargetResult<bool, Self> {
        Ok(self.add_bp(addr))
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _k: usize) -> TargetResult<bool, Self> {
        Ok(self.remove_bp(addr))
    }
}

impl MonitorCmd for GdbTarget {
    fn handle_monitor_cmd(&mut self, cmd: &[u8], mut out: ConsoleOutput<'_>) -> Result<(), String> {
        match std::str::from_utf8(cmd).unwrap_or("").trim() {
            "regs" | "sregs" => {
                for v in 0..self.ctl.vcpus {
                    match self.ask(tid(v), Cmd::Regs).flatten() {
                        Some((_, s)) => outputln!(
                            out,
                            "vCPU {v}: cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} fs_base={:#x} gs_base={:#x}",
                            s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.fs.base, s.gs.base
                        ),
                        None => outputln!(out, "vCPU {v}: not stopped"),
                    }
                }
            }
            "why" => outputln!(
                out,
                "frozen for gdb at: {}",
                self.ctl.inspected().unwrap_or_default()
            ),
            _ => outputln!(
                out,
                "preemptor monitor commands: regs (control registers, EFER, FS/GS base of every vCPU), why (what froze the machine)"
            ),
        }
        Ok(())
    }
}

enum EventLoop {}

impl run_blocking::BlockingEventLoop for EventLoop {
    type Target = GdbTarget;
    type Connection = TcpStream;
    type StopReason = MultiThreadStopReason<u64>;

    fn wait_for_stop_reason(
        target: &mut GdbTarget,
        conn: &mut TcpStream,
    ) -> Result<
        run_blocking::Event<MultiThreadStopReason<u64>>,
        run_blocking::WaitForStopReasonError<String, std::io::Error>,
    > {
        use run_blocking::{Event, WaitForStopReasonError as E};
        loop {
            if target.ctl.done.load(Ordering::Acquire) {
                return Ok(Event::TargetStopped(MultiThreadStopReason::Exited(
                    target.ctl.exit_code.load(Ordering::Acquire),
                )));
            }
            let stop = target.ctl.lock().stop.take();
            if let Some((v, kind)) = stop {
                (target.kick)();
                if !target.ctl.wait_all_serving() {
                    return Ok(Event::TargetStopped(MultiThreadStopReason::Exited(
                        target.ctl.exit_code.load(Ordering::Acquire),
                    )));
                }
                let t = tid(v);
                return Ok(Event::TargetStopped(match kind {
                    StopKind::Breakpoint => MultiThreadStopReason::HwBreak(t),
                    StopKind::Step => MultiThreadStopReason::DoneStep,
                    StopKind::Frozen => MultiThreadStopReason::SignalWithThread {
                        tid: t,
                        signal: Signal::SIGTRAP,
                    },
                }));
            }
            if conn.peek().map_err(E::Connection)?.is_some() {
                let b = ConnectionExt::read(conn).map_err(E::Connection)?;
                return Ok(Event::IncomingData(b));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn on_interrupt(target: &mut GdbTarget) -> Result<Option<MultiThreadStopReason<u64>>, String> {
        target.ctl.report_stop(0, StopKind::Frozen);
        (target.kick)();
        if !target.ctl.wait_all_serving() {
            return Ok(Some(MultiThreadStopReason::Exited(
                target.ctl.exit_code.load(Ordering::Acquire),
            )));
        }
        target.ctl.lock().stop = None;
        Ok(Some(MultiThreadStopReason::SignalWithThread {
            tid: tid(0),
            signal: Signal::SIGINT,
        }))
    }
}
