//! Output queues (events, page requests), global errors and interrupt
//! signalling.

use crate::log::{AutoPriReason, AutoPriResponse, PriGroup};
use crate::smmu::{IrqCfg, State};
use smmuv3::regs::{irq_cfg0, CR0, GERROR, IRQ_CFG0, IRQ_CTRL};
use smmuv3::{Event, PriEntry, PriResponse, EVENTQ_ENTRY_BYTES, PRIQ_ENTRY_BYTES};
use tock_registers::fields::Field;

/// Which interrupt source is signalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IrqSource {
    EventQ,
    PriQ,
    GError,
}

/// What happened to a page request handed to the SMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PriOutcome {
    /// Written to the PRI queue.
    Queued,
    /// Discarded because the queue was full: PRIQ_PROD.OVFLG toggled (if it
    /// was acknowledged), and a Last request was answered automatically.
    Overflow,
    /// Discarded because CR0.PRIQEN = 0 (or the queue memory is unbacked).
    Discarded,
    /// The SMMU has no PRI support (IDR0.PRI = 0).
    Unsupported,
}

/// The outcome of trying to write one record into an output queue.
enum Push {
    Written,
    Full,
    Disabled,
    Abort,
}

impl State {
    /// Raises GERROR bit `f` unless it is already active, and signals it.
    pub(crate) fn raise_gerror(&mut self, f: Field<u32, GERROR::Register>) {
        if self.gerror_active(f) {
            return;
        }
        self.gerror ^= f.mask << f.shift;
        if IRQ_CTRL::GERROR_IRQEN.read(self.irq_ctrl) != 0 {
            self.signal(IrqSource::GError);
        }
    }

    /// Signals an interrupt: an MSI write when the SMMU has MSIs and the
    /// source's IRQ_CFG0 holds an address, otherwise the wired line.
    pub(crate) fn signal(&mut self, src: IrqSource) {
        let (cfg, msi_err): (IrqCfg, Field<u32, GERROR::Register>) = match src {
            IrqSource::EventQ => (self.eventq_irq, GERROR::MSI_EVENTQ_ABT_ERR),
            IrqSource::PriQ => (self.priq_irq, GERROR::MSI_PRIQ_ABT_ERR),
            IrqSource::GError => (self.gerror_irq, GERROR::MSI_GERROR_ABT_ERR),
        };
        let addr = IRQ_CFG0::ADDR.read(cfg.cfg0) << IRQ_CFG0::ADDR.shift;
        if self.cfg.msi && addr != 0 {
            debug_assert_eq!(irq_cfg0(addr), addr);
            if self.mem.write_u32(addr, cfg.cfg1).is_ok() {
                self.msi_writes.push((addr, cfg.cfg1));
            } else if src != IrqSource::GError {
                self.raise_gerror(msi_err);
            }
            return;
        }
        match src {
            IrqSource::EventQ => self.irqs.eventq = true,
            IrqSource::PriQ => self.irqs.priq = true,
            IrqSource::GError => self.irqs.gerror = true,
        }
    }

    /// Writes `bytes` at the producer slot of the event or PRI queue.
    fn push(&mut self, pri: bool, bytes: &[u8]) -> Push {
        let (enabled, max, entry) = if pri {
            (self.cr0_has(CR0::PRIQEN), self.cfg.priqs, PRIQ_ENTRY_BYTES)
        } else {
            (
                self.cr0_has(CR0::EVTQEN),
                self.cfg.eventqs,
                EVENTQ_ENTRY_BYTES,
            )
        };
        if !enabled {
            return Push::Disabled;
        }
        let q = if pri {
            &mut self.priq
        } else {
            &mut self.eventq
        };
        let prod = q.prod_ptr(max);
        let cons = q.cons_ptr(max);
        if prod.is_full(cons) {
            // Overflow: the record is lost. OVFLG toggles only if software
            // has acknowledged the previous overflow (CONS.OVACKFLG ==
            // PROD.OVFLG); otherwise the queue is still "in overflow".
            if prod.overflow() == cons.overflow() {
                q.prod = prod.toggle_overflow().raw();
            }
            return Push::Full;
        }
        let pa = q.addr() + prod.entry_offset(entry) as u64;
        if self.mem.write(pa, bytes).is_err() {
            let f = if pri {
                GERROR::PRIQ_ABT_ERR
            } else {
                GERROR::EVENTQ_ABT_ERR
            };
            self.raise_gerror(f);
            return Push::Abort;
        }
        let q = if pri {
            &mut self.priq
        } else {
            &mut self.eventq
        };
        q.prod = prod.advance(1).raw();
        let irq_en = if pri {
            IRQ_CTRL::PRIQ_IRQEN
        } else {
            IRQ_CTRL::EVENTQ_IRQEN
        };
        if irq_en.read(self.irq_ctrl) != 0 {
            self.signal(if pri {
                IrqSource::PriQ
            } else {
                IrqSource::EventQ
            });
        }
        Push::Written
    }

    /// Records an event; false if it was lost (queue disabled, full, or
    /// unbacked).
    pub(crate) fn record_event(&mut self, ev: &Event) -> bool {
        use zerocopy::IntoBytes;
        match self.push(false, ev.as_bytes()) {
            Push::Written => {
                self.events_recorded += 1;
                true
            }
            Push::Full | Push::Disabled | Push::Abort => {
                self.events_lost += 1;
                false
            }
        }
    }

    /// Hands a page request to the PRI queue.
    pub(crate) fn page_request(&mut self, req: &PriEntry) -> PriOutcome {
        use zerocopy::IntoBytes;
        if !self.cfg.pri {
            return PriOutcome::Unsupported;
        }
        let group = PriGroup {
            sid: req.sid(),
            ssid: req.substream(),
            prgi: req.prgi(),
        };
        // Only a Last request that is not a stop marker expects a response;
        // a stop marker carries a PASID (without one, the same bits are an
        // ordinary request).
        let wants_response = req.last() && !(req.ssv() && req.is_stop_marker());
        let outcome = match self.push(true, req.as_bytes()) {
            Push::Written => {
                if wants_response {
                    *self.pri_pending.entry(group).or_insert(0) += 1;
                }
                return PriOutcome::Queued;
            }
            Push::Full => (PriOutcome::Overflow, AutoPriReason::Overflow),
            Push::Disabled => (PriOutcome::Discarded, AutoPriReason::QueueDisabled),
            Push::Abort => (PriOutcome::Discarded, AutoPriReason::QueueAbort),
        };
        self.pri_lost += 1;
        // The device must not wait forever for a group whose Last the SMMU
        // dropped: the SMMU answers it itself (Success, so the device
        // retries its translation and, if still unmapped, asks again).
        if wants_response {
            self.auto_pri.push(AutoPriResponse {
                group,
                resp: PriResponse::Success,
                reason: outcome.1,
            });
        }
        outcome.0
    }
}
