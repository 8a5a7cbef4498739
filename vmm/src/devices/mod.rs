//! Emulated devices: the 16550 console on ttyS0 and the one i8042 function
//! the guest uses (reset through port 0x64). Everything else a guest pokes
//! at is ignored, never fatal.
pub mod console;
pub mod serial;

pub use console::{Console, ConsoleConfig};
pub use serial::SerialDevice;

/// What the guest asked for through port I/O, beyond plain device access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PioEvent {
    None,
    /// i8042 "pulse reset line" (0xFE to port 0x64): `reboot=k`.
    Reset,
    /// The guest workload's snapshot point (any write to port 0x501).
    SnapshotPoint,
}

const SERIAL_BASE: u16 = 0x3f8;
const I8042_DATA: u16 = 0x60;
const I8042_COMMAND: u16 = 0x64;
const I8042_RESET_CMD: u8 = 0xfe;
/// Owned by the VMM (guest/src/lib.rs `ready()`): a write is the snapshot
/// point, a read returns the run's seed.
pub const SNAPSHOT_PORT: u16 = 0x501;

/// Port-I/O bus shared by all vCPUs.
pub struct PioBus {
    pub serial: SerialDevice,
    /// What the guest reads from the snapshot port: this run's seed. Read
    /// after the snapshot point, so each restored run sees its own.
    pub guest_seed: u32,
    /// The workload read its seed: it is set up and running.
    pub workload_ready: std::sync::atomic::AtomicBool,
    pub console: Console,
}

impl PioBus {
    pub fn read(&self, port: u16, data: &mut [u8]) {
        match port {
            SERIAL_BASE..=0x3ff if data.len() == 1 => {
                data[0] = self.serial.read((port - SERIAL_BASE) as u8)
            }
            // i8042: status "output empty, input empty" so kb_wait() ends.
            I8042_DATA | I8042_COMMAND => data.fill(0),
            SNAPSHOT_PORT => {
                if !self
                    .workload_ready
                    .swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    self.console
                        .note(&format!("workload ready, seed {}", self.guest_seed));
                }
                let seed = self.guest_seed.to_le_bytes();
                for (i, b) in data.iter_mut().enumerate() {
                    *b = seed.get(i).copied().unwrap_or(0);
                }
            }
            _ => {
                tracing::debug!(port, len = data.len(), "ignored port read");
                data.fill(0xff);
            }
        }
    }

    pub fn write(&self, port: u16, data: &[u8]) -> PioEvent {
        match port {
            SERIAL_BASE..=0x3ff if data.len() == 1 => {
                self.serial.write((port - SERIAL_BASE) as u8, data[0])
            }
            I8042_COMMAND if data.first() == Some(&I8042_RESET_CMD) => return PioEvent::Reset,
            SNAPSHOT_PORT => return PioEvent::SnapshotPoint,
            _ => tracing::debug!(port, ?data, "ignored port write"),
        }
        PioEvent::None
    }
}
