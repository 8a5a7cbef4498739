//! The VMM's instruction emulation (`vstate::emulate`) against the CPU's
//! single step on real KVM: for every form it does, from random register
//! states, the same registers and memory after; every form it must not do
//! comes back unsupported with nothing changed. Also the probes the vCPU
//! loop and `doctor` rely on. Fails loudly without /dev/kvm.
use preemptor::vstate::exitbench;

fn require_kvm() {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        panic!("KVM tests cannot run: /dev/kvm: {e}. Run them on a KVM host.");
    }
}

#[test]
fn emulated_forms_equal_the_cpu_step() {
    require_kvm();
    let checks = exitbench::check_emulation(50).expect("tiny guest");
    assert!(checks.len() >= exitbench::FORMS.len() + exitbench::UNSUPPORTED.len());
    let bad: Vec<String> = checks
        .iter()
        .filter_map(|c| c.result.as_ref().err().map(|e| format!("{}: {e}", c.name)))
        .collect();
    assert!(
        bad.is_empty(),
        "differ from the CPU's step:\n{}",
        bad.join("\n")
    );
}

#[test]
fn probes_answer() {
    require_kvm();
    assert_eq!(exitbench::breakpoint_slots().expect("slots"), 4);
    // Either answer is a host fact; the probe must give one.
    exitbench::resume_flag_works().expect("RF probe");
}
