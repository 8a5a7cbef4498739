//! Boot a guest and run it to its end: load the kernel and initramfs, write
//! the boot structures, start one thread per vCPU, wait for a reset, a
//! fault, the timeout or Ctrl-C, then stop and join every vCPU.
pub mod artifacts;
pub mod check;
pub mod embedded;
pub mod program;
pub mod snapcache;
pub mod verdict;

use crate::arch::x86_64::{self as arch, layout};
use crate::devices::{Console, ConsoleConfig, PioBus, SerialDevice};
use crate::host::HostProfile;
use crate::vstate::snapshot::{file::SnapshotKey, RestoreStats, Restorer, Snapshot};
use crate::vstate::vcpu::VcpuRunner;
use crate::vstate::{
    vm, DebugHandler, End, GdbConfig, GdbCtl, PreemptConfig, RunShared, Vm, VmConfig,
};
pub use artifacts::{Kernel, KernelFormat};
use kvm_ioctls::VcpuFd;
use linux_loader::cmdline::Cmdline;
use linux_loader::loader::{bzimage::BzImage, elf::Elf, load_cmdline, KernelLoader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Vm(#[from] vm::Error),
    #[error(transparent)]
    Artifacts(#[from] artifacts::Error),
    #[error("cannot load kernel '{0}': {1}")]
    Load(String, String),
    #[error("kernel command line: {0}")]
    Cmdline(String),
    #[error("boot setup: {0}")]
    Arch(#[from] arch::Error),
    #[error("console: {0}")]
    Console(std::io::Error),
    #[error("cannot start vCPU thread: {0}")]
    Thread(std::io::Error),
    #[error("host setup: {0}")]
    Host(String),
    #[error(transparent)]
    Snapshot(#[from] crate::vstate::snapshot::Error),
}

#[derive(Debug, Clone)]
pub struct BootConfig {
    pub kernel: Kernel,
    pub initramfs: Arc<Vec<u8>>,
    /// The complete guest command line (see [`cmdline`]).
    pub cmdline: String,
    pub vm: VmConfig,
    pub timeout: Duration,
    pub console: ConsoleConfig,
    /// What the guest workload reads as its seed (`ready()` in guest/src/lib.rs).
    pub guest_seed: u32,
    /// Serve gdb (see [`crate::vstate::gdb`]).
    pub gdb: Option<GdbConfig>,
    /// Random vCPU descheduling (see [`crate::vstate::preempt`]).
    pub preempt: Option<PreemptConfig>,
    /// End the run at the console line where a kernel report's title can
    /// no longer change ([`crate::report::settled`]), not at the report's
    /// end: the rest of an oops costs most of a crash run under emulation.
    pub end_when_settled: bool,
}

/// What every guest gets: ttyS0 console; restart on panic and on init's
/// reboot through the i8042 (`reboot=k`, the VMM's clean end); an oops
/// panics; no rodata pass (it poisons freed pages byte by byte: ~28 s
/// under emulation); warnings and worse on the console only (each UART byte
/// is an exit); no KASLR, so vmlinux addresses are where the code runs.
const BASE_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=-1 oops=panic rodata=off loglevel=5 nokaslr";

/// The guest command line on this host. What init runs is not on it: that
/// is in the initramfs ([`artifacts::Payload`]).
pub fn cmdline(profile: &HostProfile, extra: &str) -> String {
    let mut c = BASE_CMDLINE.to_string();
    for part in [profile.extra_cmdline, extra] {
        if !part.trim().is_empty() {
            c.push(' ');
            c.push_str(part.trim());
        }
    }
    c
}

pub struct RunOutput {
    pub end: End,
    /// The workload read its seed (guest `ready()`): it got going.
    pub workload_ready: bool,
    pub console: Console,
    pub elapsed: Duration,
    /// For a run restored from a snapshot: how the restore went.
    pub restore: Option<RestoreStats>,
    /// Each vCPU's kernel stack when the run ended on a kernel report.
    pub final_stacks: Vec<(usize, crate::debug::stack::RawStack)>,
    /// gdb was given the machine, and why (what froze it).
    pub inspected: Option<String>,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static INTERRUPTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// SIGINT or SIGTERM: the run in progress ends (`End::Interrupted`) and
/// [`interrupted`] tells the caller to run no more; a second one ends the
/// process at once (status 130).
extern "C" fn on_sigint(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    if INTERRUPTS.fetch_add(1, Ordering::SeqCst) >= 1 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether the user interrupted (SIGINT/SIGTERM): start no further runs.
pub fn interrupted() -> bool {
    INTERRUPTS.load(Ordering::SeqCst) > 0
}

static STOPPED: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// A host fault (e.g. `--out` could not be written) means no further run
/// should start: the runs so far are reported, with `reason`. The first
/// reason is kept.
pub fn stop_runs(reason: String) {
    let mut g = STOPPED.lock().unwrap_or_else(|e| e.into_inner());
    g.get_or_insert(reason);
}

/// Why runs were stopped by a host fault, if they were.
pub fn stop_reason() -> Option<String> {
    STOPPED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Start no further runs: interrupted, or stopped by a host fault.
pub fn stopped() -> bool {
    interrupted() || stop_reason().is_some()
}

/// Install the interrupt handlers now (before any boot), so that an
/// interrupt during set-up is seen too.
pub fn catch_interrupts() -> Result<(), Error> {
    install_signal_handlers()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn install_signal_handlers() -> Result<(), Error> {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let mut res = Ok(());
    ONCE.call_once(|| {
        // A signal that interrupts KVM_RUN (EINTR) is how a running vCPU is
        // made to look at the stop flag.
        res = register_signal_handler(SIGRTMIN(), on_kick)
            .and_then(|_| register_signal_handler(libc::SIGINT, on_sigint))
            .and_then(|_| register_signal_handler(libc::SIGTERM, on_sigint))
            .map_err(|e| Error::Host(format!("signal handlers: {e}")));
    });
    res
}

fn load_kernel(
    vm: &Vm,
    k: &Kernel,
) -> Result<(u64, Option<linux_loader::loader::bootparam::setup_header>), Error> {
    let mut f = std::fs::File::open(&k.path)
        .map_err(|e| Error::Load(k.path.display().to_string(), e.to_string()))?;
    let load_err =
        |e: linux_loader::loader::Error| Error::Load(k.path.display().to_string(), e.to_string());
    let himem = Some(GuestAddress(layout::HIMEM_START));
    match k.format {
        // vmlinux's ELF entry is startup_64 (physical): the 64-bit entry.
        KernelFormat::Elf => Elf::load(&vm.mem, None, &mut f, himem)
            .map(|r| (r.kernel_load.0, None))
            .map_err(load_err),
        // bzImage: protected-mode code at 1 MiB, 64-bit entry at +0x200.
        KernelFormat::BzImage => BzImage::load(&vm.mem, None, &mut f, himem)
            .map(|r| (r.kernel_load.0 + 0x200, r.setup_header))
            .map_err(load_err),
    }
}

/// Boot and run the guest until it ends. `handler` receives breakpoint hits.
pub fn run(
    cfg: &BootConfig,
    profile: &HostProfile,
    handler: Option<Arc<dyn DebugHandler>>,
) -> Result<RunOutput, Error> {
    execute(None, cfg, profile, handler, false).map(|(o, _)| o)
}

/// Boot until the workload's snapshot point (its command line must
/// carry `preemptor.snapshot`) and save the machine there.
pub fn take_snapshot(cfg: &BootConfig, profile: &HostProfile) -> Result<Snapshot, Error> {
    let (o, snap) = execute(None, cfg, profile, None, true)?;
    snap.ok_or_else(|| {
        let m = verdict::markers(&o);
        let why = match (m.started, m.status) {
            (false, _) => "the workload never started".to_string(),
            (true, Some(s)) => format!(
                "the workload exited (status {s}) without calling ready(), its snapshot point"
            ),
            (true, None) => "the workload died before its snapshot point".to_string(),
        };
        Error::Host(format!(
            "no snapshot: {why} (run ended: {}); --no-snapshot boots every run",
            o.end
        ))
    })
}

/// What a snapshot of this configuration depends on (`--snapshot FILE`).
pub fn snapshot_key(cfg: &BootConfig) -> Result<SnapshotKey, Error> {
    let kernel = std::fs::read(&cfg.kernel.path)
        .map_err(|e| Error::Load(cfg.kernel.path.display().to_string(), e.to_string()))?;
    Ok(SnapshotKey {
        kernel: cfg.kernel.path.display().to_string(),
        kernel_sha256: SnapshotKey::sha256(&kernel),
        initramfs_sha256: SnapshotKey::sha256(&cfg.initramfs),
        cmdline: cfg.cmdline.clone(),
        host_cpu: host_cpu(),
        vcpus: cfg.vm.vcpus,
        mem_mib: cfg.vm.mem_mib,
    })
}

/// The host CPU, as /proc/cpuinfo names it: guest CPUID comes from it, and
/// a guest restored onto other CPU features may fault.
fn host_cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// Restore a snapshot into a fresh VM and run it to its end.
pub fn run_from_snapshot(
    snap: &Restorer,
    cfg: &BootConfig,
    profile: &HostProfile,
    handler: Option<Arc<dyn DebugHandler>>,
) -> Result<RunOutput, Error> {
    execute(Some(snap), cfg, profile, handler, false).map(|(o, _)| o)
}

/// Boot the kernel into fresh guest memory.
fn cold_boot(vm: &Vm, cfg: &BootConfig) -> Result<(), Error> {
    let mem_size = cfg.vm.mem_mib << 20;
    let (entry, setup_header) = load_kernel(vm, &cfg.kernel)?;
    let initrd_addr = arch::initrd_address(mem_size, cfg.initramfs.len())?;
    vm.mem
        .write_slice(&cfg.initramfs, GuestAddress(initrd_addr))
        .map_err(|_| arch::Error::Memory(initrd_addr))?;
    let mut cl =
        Cmdline::new(layout::CMDLINE_MAX_SIZE).map_err(|e| Error::Cmdline(e.to_string()))?;
    cl.insert_str(&cfg.cmdline)
        .map_err(|e| Error::Cmdline(e.to_string()))?;
    load_cmdline(&vm.mem, GuestAddress(layout::CMDLINE_START), &cl)
        .map_err(|e| Error::Cmdline(e.to_string()))?;
    arch::write_zero_page(
        &vm.mem,
        setup_header,
        cfg.cmdline.len() + 1,
        Some((initrd_addr, cfg.initramfs.len())),
        mem_size,
    )?;
    arch::write_gdt(&vm.mem)?;
    arch::write_page_tables(&vm.mem)?;
    arch::mptable::write(&vm.mem, cfg.vm.vcpus).map_err(arch::Error::from)?;
    arch::acpi::write(&vm.mem, cfg.vm.vcpus).map_err(arch::Error::from)?;
    arch::regs::setup_long_mode(&vm.vcpus[0], entry).map_err(arch::Error::Kvm)?;
    Ok(())
}

fn execute(
    from: Option<&Restorer>,
    cfg: &BootConfig,
    profile: &HostProfile,
    handler: Option<Arc<dyn DebugHandler>>,
    want_snapshot: bool,
) -> Result<(RunOutput, Option<Snapshot>), Error> {
    install_signal_handlers()?;
    let start = Instant::now();
    let (mut vm, restore) = match from {
        None => {
            let vm = Vm::new(&cfg.vm)?;
            cold_boot(&vm, cfg)?;
            (vm, None)
        }
        Some(r) => {
            let (vm, stats) = r.vm(&cfg.vm)?;
            (vm, Some(stats))
        }
    };

    let console = Console::new(cfg.console.clone(), start).map_err(Error::Console)?;
    // `preemptor report` on the log symbolizes with this kernel's vmlinux.
    if let Some(v) = &cfg.kernel.vmlinux {
        console.note(&format!(
            "{}{}",
            crate::devices::console::KERNEL_NOTE,
            v.display()
        ));
    }
    if let Some(st) = &restore {
        console.note(&format!(
            "snapshot restored in {:.1} ms: {} pages ({:.1} MiB{}) copied in {:.1} ms",
            st.total.as_secs_f64() * 1e3,
            st.pages,
            st.pages as f64 / 256.0,
            if st.full {
                ", all memory"
            } else {
                " dirtied by the last run"
            },
            st.memory.as_secs_f64() * 1e3
        ));
    }
    let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| Error::Host(e.to_string()))?;
    vm.fd
        .register_irqfd(&irq, crate::devices::serial::SERIAL_IRQ)
        .map_err(|e| Error::Host(format!("serial irqfd: {e}")))?;
    let serial = match from {
        None => SerialDevice::new(irq, console.clone()),
        Some(r) => SerialDevice::from_state(&r.snapshot.serial, irq, console.clone()),
    };
    let bus = Arc::new(PioBus {
        serial,
        guest_seed: cfg.guest_seed,
        workload_ready: Default::default(),
        console: console.clone(),
    });
    let gdb = match &cfg.gdb {
        Some(g) => {
            let listener = std::net::TcpListener::bind(&g.addr)
                .map_err(|e| Error::Host(format!("--gdb {}: {e}", g.addr)))?;
            Some((Arc::new(GdbCtl::new(g.clone(), cfg.vm.vcpus)), listener))
        }
        None => None,
    };
    let mut rs = RunShared::new(start, want_snapshot);
    if let Some((ctl, _)) = &gdb {
        rs = rs.with_gdb(ctl.clone());
    }
    let shared = Arc::new(rs);
    {
        let shared = shared.clone();
        console.on_end_line(move |l| shared.finish(End::ReportEnd(l.to_string())));
    }
    if cfg.end_when_settled {
        let shared = shared.clone();
        // Offset in the console text of the first report's first line.
        let mut start: Option<usize> = None;
        console.on_line(move |line, text| {
            let Some(s) = start else {
                if crate::report::starts_report(line) {
                    let body = text.strip_suffix(b"\n").unwrap_or(text);
                    start = Some(body.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1));
                }
                return true;
            };
            if crate::report::settled(&String::from_utf8_lossy(&text[s..])).is_none() {
                return true;
            }
            shared.finish(End::ReportSettled(line.to_string()));
            false
        });
    }
    let gdb_thread = match gdb {
        Some((ctl, listener)) => {
            if ctl.on_crash() {
                // Freeze at the report's first line, on the vCPU printing it.
                let (c, sh) = (ctl.clone(), shared.clone());
                console.on_line(move |l, _| {
                    if !crate::report::starts_report(l) {
                        return true;
                    }
                    let v = crate::vstate::current_vcpu().unwrap_or(0);
                    if c.request_freeze(v, &format!("kernel report: {}", l.trim())) {
                        sh.kick_all();
                    }
                    false
                });
            }
            let sh = shared.clone();
            let c = ctl.clone();
            Some((
                ctl,
                std::thread::Builder::new()
                    .name("gdb".into())
                    .spawn(move || crate::vstate::gdb::serve(c, listener, move || sh.kick_all()))
                    .map_err(Error::Thread)?,
            ))
        }
        None => None,
    };

    let mut threads = Vec::new();
    for (index, fd) in vm.vcpus.drain(..).enumerate() {
        let runner = VcpuRunner {
            index,
            fd,
            mem: vm.mem.clone(),
            bus: bus.clone(),
            shared: shared.clone(),
            handler: handler.clone(),
            profile: profile.clone(),
        };
        let t = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || runner.run());
        match t {
            Ok(t) => threads.push(t),
            Err(e) => {
                shared.finish(End::HostError(e.to_string()));
                drop(stop_threads(threads));
                return Err(Error::Thread(e));
            }
        }
    }

    let preempter = match &cfg.preempt {
        Some(p) => {
            let (p, sh, n) = (p.clone(), shared.clone(), cfg.vm.vcpus);
            Some(
                std::thread::Builder::new()
                    .name("preempt".into())
                    .spawn(move || crate::vstate::preempt::run(p, sh, n))
                    .map_err(Error::Thread)?,
            )
        }
        None => None,
    };
    let end = loop {
        let (due, next) = shared.irq_blocks_due();
        for v in due {
            let _ = threads[v].kill(SIGRTMIN());
        }
        let slice = next
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_millis(50));
        if let Some(end) =
            shared.wait(slice.clamp(Duration::from_micros(200), Duration::from_millis(50)))
        {
            break end;
        }
        // Time gdb holds the machine does not count against the timeout.
        let held = gdb_thread
            .as_ref()
            .map(|(c, _)| c.held())
            .unwrap_or_default();
        if let Some(v) = crate::host::seccomp::take_violation() {
            shared.finish(End::HostError(v));
        } else if INTERRUPTED.swap(false, Ordering::SeqCst) {
            shared.finish(End::Interrupted);
        } else if start.elapsed().saturating_sub(held) >= cfg.timeout {
            shared.finish(End::Timeout);
        }
    };
    if let Some(t) = preempter {
        let _ = t.join();
    }
    let inspected = match gdb_thread {
        Some((ctl, t)) => {
            ctl.finish(u8::from(
                end.is_report() || matches!(end, End::TripleFault { .. }),
            ));
            let _ = t.join();
            ctl.inspected()
        }
        None => None,
    };
    let mut fds = stop_threads(threads);
    if let Some(r) = from {
        r.recycle(&vm, &shared.written_pages());
    }
    let snap = if end == End::SnapshotPoint {
        Some(Snapshot::capture(
            &vm.fd,
            &vm.mem,
            cfg.vm.mem_mib,
            &mut fds,
            bus.serial.state(),
        )?)
    } else {
        None
    };
    console.note(&format!("run ended: {end}"));
    console.flush();
    Ok((
        RunOutput {
            end,
            workload_ready: bus.workload_ready.load(Ordering::SeqCst),
            console,
            elapsed: start.elapsed(),
            restore,
            final_stacks: shared.final_stacks(),
            inspected,
        },
        snap,
    ))
}

/// Kick until every vCPU thread has left KVM_RUN and returned its vCPU.
/// Repeated kicks cover a signal that lands just before KVM_RUN.
fn stop_threads(threads: Vec<std::thread::JoinHandle<VcpuFd>>) -> Vec<VcpuFd> {
    loop {
        let running: Vec<_> = threads.iter().filter(|t| !t.is_finished()).collect();
        if running.is_empty() {
            break;
        }
        for t in running {
            let _ = t.kill(SIGRTMIN());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    threads.into_iter().filter_map(|t| t.join().ok()).collect()
}
