//! `cargo xtask mutants`: deliberate bugs in the SMMU driver, each of which
//! some test must catch. A mutation replaces one exact piece of source
//! (it must occur exactly once, so a stale entry is an error, not a silent
//! pass), builds the named test, runs it, and restores the file whatever
//! happens. The named test failing is "caught"; passing is "SURVIVED"; the
//! mutated code not building is an error of the table. The list and the
//! catching tests are documented in docs/iommu-server.md ("Mutations").

use crate::ws::Workspace;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// One deliberate bug and the test that must catch it.
pub struct Mutation {
    pub name: &'static str,
    /// File relative to the workspace root.
    pub file: &'static str,
    /// Exact source text, present once.
    pub find: &'static str,
    pub replace: &'static str,
    /// `cargo test -p <package> <target> <filter> -- --exact`.
    pub package: &'static str,
    /// `--lib` or `--test=<name>`.
    pub target: &'static str,
    pub test: &'static str,
}

pub const MUTATIONS: &[Mutation] = &[
    Mutation {
        name: "no TLBI_NH_ALL on unmap of a nest parent",
        file: "task/iommu-server/src/server/map.rs",
        find: "if nest {\n            cmds[n] = Command::tlbi_nh_all",
        replace: "if false {\n            cmds[n] = Command::tlbi_nh_all",
        package: "harness",
        target: "--test=harness_iommu_pasid",
        test: "harness_iommu_unmap_on_a_nest_parent_reaches_dma_through_a_pasid",
    },
    Mutation {
        name: "no CFGI_STE after an STE store (stage 2 only)",
        file: "task/iommu-server/src/driver.rs",
        find: "            &both[..1]\n",
        replace: "            &both[..0]\n",
        package: "harness",
        target: "--test=harness_iommu_device",
        test: "harness_iommu_device_sees_each_stage2_ste_change_when_the_request_returns",
    },
    Mutation {
        name: "no CMD_SYNC closing a batch",
        file: "task/iommu-server/src/cmdq.rs",
        find: "        self.write_entry(mem, self.prod, &Command::sync(self.sync_cs));\n        self.prod = self.prod.advance(1);\n",
        replace: "",
        package: "harness",
        target: "--test=harness_iommu_device",
        test: "harness_iommu_device_unmap_is_in_force_when_it_returns",
    },
    Mutation {
        name: "no break-before-make (two-word STE change written in place)",
        file: "task/iommu-server/src/update.rs",
        find: "        unused_update[0] = 0;\n        set_words(w, &unused_update, 0, 1)?;\n",
        replace: "",
        package: "harness",
        target: "--test=harness_iommu_device",
        test: "harness_iommu_device_replace_s2_never_mixes_two_domains",
    },
    Mutation {
        name: "MSI window not reserved on map",
        file: "task/iommu-server/src/server/map.rs",
        find: "            return Err(Error::Invalid);\n        }\n        if MSI_WINDOW.overlaps(iova, len)",
        replace: "            return Err(Error::Invalid);\n        }\n        if false && MSI_WINDOW.overlaps(iova, len)",
        package: "iommu-server",
        target: "--test=model",
        test: "map_is_all_or_nothing_and_reserved_windows_refuse",
    },
    Mutation {
        name: "map of a range skips the already-mapped check",
        file: "task/iommu-server/src/server/map.rs",
        find: "        if pt.any_mapped(mem, iova, pages) {",
        replace: "        if false {",
        package: "iommu-server",
        target: "--test=model",
        test: "map_is_all_or_nothing_and_reserved_windows_refuse",
    },
    Mutation {
        name: "range invalidation one page short of the unmapped span",
        file: "task/iommu-server/src/server/map.rs",
        find: "        let span = (gone.last - gone.first) / PAGE_SIZE as u64 + 1;",
        replace: "        let span = (gone.last - gone.first) / PAGE_SIZE as u64;",
        package: "harness",
        target: "--test=harness_iommu_ops",
        test: "harness_iommu_unmap_invalidates_in_one_batch_with_one_sync",
    },
    Mutation {
        name: "no ownership check on domains",
        file: "task/iommu-server/src/server/mod.rs",
        find: "        if d.owner != caller {\n            return Err(Error::NotPermitted);",
        replace: "        if false {\n            return Err(Error::NotPermitted);",
        package: "harness",
        target: "--test=harness_iommu_owner",
        test: "harness_iommu_second_vm_refused_on_first_vms_objects_nothing_changes",
    },
    Mutation {
        name: "a failed strict unmap forgets its invalidation",
        file: "task/iommu-server/src/server/map.rs",
        find: "        if !d.owed {",
        replace: "        if true {",
        package: "harness",
        target: "--test=harness_iommu_restart",
        test: "harness_iommu_failed_strict_unmap_stays_owed_until_a_sync_completes",
    },
    Mutation {
        name: "no ATC_INV on the last unbind",
        file: "task/iommu-server/src/server/bind.rs",
        find: "        if self.smmu.features.ats {\n            // PASID 0",
        replace: "        if false {\n            // PASID 0",
        package: "harness",
        target: "--test=harness_iommu_pasid",
        test: "harness_iommu_bind_counts_users_last_unbind_clears_cd_and_invalidates",
    },
    Mutation {
        name: "ATC_INV for PASID 0 under S1DSS=SSID0 with SSV = 1",
        file: "task/iommu-server/src/server/bind.rs",
        find: "(table.s1cdmax > 0 && c.pasid != 0)",
        replace: "(table.s1cdmax > 0)",
        package: "iommu-server",
        target: "--test=model",
        test: "unbind_of_pasid_0_under_ssid0_invalidates_the_atc_without_a_pasid",
    },
    Mutation {
        name: "CERROR_ABT skips the command instead of refetching it",
        file: "task/iommu-server/src/cmdq.rs",
        find: "                        self.stats.fetch_aborts += 1;\n",
        replace: "                        self.stats.fetch_aborts += 1;\n                        self.write_entry(mem, at, &Command::sync(SyncCs::None));\n",
        package: "iommu-server",
        target: "--lib",
        test: "cmdq::tests::fetch_abort_is_retried_not_skipped",
    },
    Mutation {
        name: "GBPA.ABORT not read back",
        file: "task/iommu-server/src/driver.rs",
        find: "        if mmio.read32(offset::GBPA) & abort == 0 {",
        replace: "        if false {",
        package: "iommu-server",
        target: "--lib",
        test: "driver::tests::gbpa_abort_that_does_not_stick_fails_init",
    },
    Mutation {
        name: "MSI configuration (*_IRQ_CFG*) not cleared",
        file: "task/iommu-server/src/driver.rs",
        find: "        for (cfg0, cfg1, cfg2) in IRQ_CFGS {",
        replace: "        for (cfg0, cfg1, cfg2) in [(0usize, 0usize, 0usize); 0] {",
        package: "iommu-server",
        target: "--lib",
        test: "driver::tests::msi_configuration_is_cleared_before_interrupts_are_enabled",
    },
];

/// The explorer's mutants (`cargo xtask explore --mutants`,
/// docs/exploration.md): cargo features of the harness, each forwarded to
/// a `cfg`'d deliberate bug in one task crate, each caught by a test in
/// `host/harness/tests/harness_explore_mutants.rs`.
pub const EXPLORE_MUTANTS: &[(&str, &str)] = &[
    (
        "explore-mutant-i1",
        "prq-server: a dead owner's groups never answered",
    ),
    (
        "explore-mutant-i2",
        "prq-server: a group routed by PASID alone",
    ),
    (
        "explore-mutant-i3",
        "pasid-alloc: a freed PASID reusable before its drain",
    ),
    (
        "explore-mutant-i4",
        "iommu-server: a dead owner's stream left in bypass",
    ),
    (
        "explore-mutant-i5",
        "prq-server: a cookie accepted from a non-owner",
    ),
    (
        "explore-mutant-i6",
        "prq-server: partial groups kept across a PRI overflow",
    ),
];

/// Puts the file back when dropped (also on error or panic).
struct Restore {
    path: PathBuf,
    original: String,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, &self.original) {
            eprintln!("error: cannot restore {}: {e}", self.path.display());
        }
    }
}

fn cargo_test(ws: &Workspace, m: &Mutation, no_run: bool) -> Result<bool, String> {
    let mut c = ws.cargo();
    c.args(["test", "--quiet", "-p", m.package, m.target]);
    if no_run {
        c.arg("--no-run");
    } else {
        c.args([m.test, "--", "--exact"]);
    }
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let st = c
        .status()
        .map_err(|e| format!("cannot run cargo test: {e}"))?;
    Ok(st.success())
}

/// Runs every mutation whose name contains `filter`; true when each was
/// caught.
pub fn run(ws: &Workspace, filter: Option<&str>) -> Result<bool, String> {
    let mut all = true;
    for m in MUTATIONS
        .iter()
        .filter(|m| filter.is_none_or(|f| m.name.contains(f)))
    {
        let path = ws.root.join(Path::new(m.file));
        let original =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: cannot read: {e}", m.file))?;
        if original.matches(m.find).count() != 1 {
            return Err(format!(
                "mutation \"{}\": its text is not exactly once in {} (stale table entry)",
                m.name, m.file
            ));
        }
        // The unmutated test must pass, or "caught" would mean nothing.
        if !cargo_test(ws, m, false)? {
            println!("mutant {:<60} BASELINE FAILS ({})", m.name, m.test);
            all = false;
            continue;
        }
        let guard = Restore {
            path: path.clone(),
            original: original.clone(),
        };
        std::fs::write(&path, original.replacen(m.find, m.replace, 1))
            .map_err(|e| format!("{}: cannot write: {e}", m.file))?;
        let verdict = if !cargo_test(ws, m, true)? {
            all = false;
            "DOES NOT BUILD (fix the table)"
        } else if cargo_test(ws, m, false)? {
            all = false;
            "SURVIVED"
        } else {
            "caught"
        };
        drop(guard);
        println!("mutant {:<60} {verdict} by {}", m.name, m.test);
    }
    Ok(all)
}
