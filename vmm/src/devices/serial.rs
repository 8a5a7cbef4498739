//! ttyS0: vm-superio's 16550 on port 0x3f8, interrupting through IRQ 4 (an
//! irqfd on the in-kernel IOAPIC).
use super::console::Console;
use std::sync::{Arc, Mutex};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

pub const SERIAL_IRQ: u32 = 4;

pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

#[derive(Clone)]
pub struct SerialDevice(Arc<Mutex<Serial<IrqTrigger, vm_superio::serial::NoEvents, Console>>>);

impl SerialDevice {
    pub fn new(irq: EventFd, console: Console) -> Self {
        Self(Arc::new(Mutex::new(Serial::new(IrqTrigger(irq), console))))
    }

    /// A UART restored from a snapshot, printing to `console`.
    pub fn from_state(
        state: &vm_superio::serial::SerialState,
        irq: EventFd,
        console: Console,
    ) -> Self {
        let s = Serial::from_state(
            state,
            IrqTrigger(irq),
            vm_superio::serial::NoEvents,
            console,
        )
        .unwrap_or_else(|_| unreachable!("state taken from a live UART"));
        Self(Arc::new(Mutex::new(s)))
    }

    pub fn state(&self) -> vm_superio::serial::SerialState {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).state()
    }

    pub fn read(&self, offset: u8) -> u8 {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read(offset)
    }

    pub fn write(&self, offset: u8, value: u8) {
        if let Err(e) = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write(offset, value)
        {
            tracing::debug!(?e, "serial write");
        }
    }
}
