//! Output queues (events, page requests), global errors and interrupt
//! signalling.

use crate::log::{AutoPriReason, AutoPriResponse, DeviceResponse, PriGroup, ResponseCode};
use crate::smmu::{IrqCfg, State};
use smmuv3::regs::{irq_cfg0, CR0, GERROR, IRQ_CFG0, IRQ_CTRL};
use smmuv3::{Event, PriEntry, EVENTQ_ENTRY_BYTES, PRIQ_ENTRY_BYTES};
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
    /// Discarded because the queue was full or an overflow was still
    /// active (OVFLG != OVACKFLG): PRIQ_PROD.OVFLG toggled (if it was
    /// acknowledged), and a Last request was answered automatically.
    Overflow,
    /// Discarded because CR0.PRIQEN = 0, PRIQ_ABT_ERR was active or the
    /// queue memory is unbacked; answered ResponseFailure.
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
        // §7.2.1 / GERROR: with EVENTQ_ABT_ERR active the event queue is
        // not writable (delivery stops until software acknowledges it).
        if !pri && self.gerror_active(GERROR::EVENTQ_ABT_ERR) {
            return Push::Abort;
        }
        let q = if pri {
            &mut self.priq
        } else {
            &mut self.eventq
        };
        let prod = q.prod_ptr(max);
        let cons = q.cons_ptr(max);
        // §8.1: an active PRI queue overflow (OVFLG != OVACKFLG) inhibits
        // every write until software acknowledges it, even with room.
        if pri && prod.overflow() != cons.overflow() {
            return Push::Full;
        }
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
        let injected = !pri && self.eventq_write_aborts > 0;
        if injected {
            self.eventq_write_aborts -= 1;
        }
        if injected || self.mem.write(pa, bytes).is_err() {
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

    /// True if a record can be written to the event queue now (enabled,
    /// not full, no EVENTQ_ABT_ERR).
    fn eventq_writable(&self) -> bool {
        let max = self.cfg.eventqs;
        self.cr0_has(CR0::EVTQEN)
            && !self.gerror_active(GERROR::EVENTQ_ABT_ERR)
            && !self.eventq.prod_ptr(max).is_full(self.eventq.cons_ptr(max))
    }

    /// Records the event of a stalled transaction: written now if the queue
    /// is writable, otherwise held (in order) until it is (§7.2: stall
    /// records are never discarded and never cause an overflow).
    pub(crate) fn record_stall_event(&mut self, ev: &Event) {
        self.pending_stall_records.push_back(*ev);
        self.flush_stall_records();
    }

    /// Writes held stall records while the event queue is writable.
    pub(crate) fn flush_stall_records(&mut self) {
        while !self.pending_stall_records.is_empty() && self.eventq_writable() {
            let Some(ev) = self.pending_stall_records.pop_front() else {
                return;
            };
            if !self.record_event(&ev) {
                // A write abort loses it (§7.2.2); the transaction stays
                // stalled until RESUME / STALL_TERM.
                return;
            }
        }
    }

    /// Hands a page request to the PRI queue, answering it automatically
    /// where §8.1–8.2 say the SMMU does.
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
        self.seen_sids.insert(group.sid);
        if let Some(ss) = group.ssid {
            self.seen_ssids.insert((group.sid, ss));
        }
        // A stop marker carries a PASID; without one, the same bits
        // (Last, no read, no write) are an ordinary page request (§8).
        let stop = req.ssv() && req.is_stop_marker();
        // §8.2: with PRIQEN effectively 0 (SMMUEN = 0 implies it) or
        // PRIQ_ABT_ERR active nothing is written, and every page request
        // (not a stop marker) gets ResponseFailure without a PASID.
        let enabled = self.cr0_has(CR0::PRIQEN) && self.cr0_has(CR0::SMMUEN);
        let blocked = if !enabled {
            Some(AutoPriReason::QueueDisabled)
        } else if self.gerror_active(GERROR::PRIQ_ABT_ERR) {
            Some(AutoPriReason::QueueAbort)
        } else {
            None
        };
        if let Some(reason) = blocked {
            self.pri_lost += 1;
            if !stop {
                self.auto_respond(group, ResponseCode::ResponseFailure, None, reason);
            }
            return PriOutcome::Discarded;
        }
        match self.push(true, req.as_bytes()) {
            Push::Written => {
                // Only a Last request that is not a stop marker expects a
                // response.
                if req.last() && !stop {
                    *self.pri_pending.entry(group).or_insert(0) += 1;
                }
                PriOutcome::Queued
            }
            Push::Full => {
                self.pri_lost += 1;
                // §8.1: a discarded Last gets an automatic response so the
                // device does not wait forever; Last = 0 and stop markers
                // are dropped silently.
                if req.last() && !stop {
                    let (code, pasid) = self.overflow_response(group);
                    self.auto_respond(group, code, pasid, AutoPriReason::Overflow);
                }
                PriOutcome::Overflow
            }
            Push::Disabled | Push::Abort => {
                // A synchronous external abort on the write: ResponseFailure
                // for this request (§8.2).
                self.pri_lost += 1;
                if !stop {
                    self.auto_respond(
                        group,
                        ResponseCode::ResponseFailure,
                        None,
                        AutoPriReason::QueueAbort,
                    );
                }
                PriOutcome::Discarded
            }
        }
    }

    /// The code and PASID of an automatic response to a Last discarded by
    /// overflow (§8.1; this SMMU has IDR3.PPS = 0): Success without a PASID
    /// for a request without one; with a PASID, STE.PPAR decides whether
    /// the response carries it, and an STE that cannot be checked (SMMUEN
    /// = 0, StreamID out of range, fetch abort, ILLEGAL) gives
    /// ResponseFailure without a PASID.
    fn overflow_response(&mut self, g: PriGroup) -> (ResponseCode, Option<u32>) {
        let Some(ssid) = g.ssid else {
            return (ResponseCode::Success, None);
        };
        match self.ste_for_check(g.sid) {
            Some(ste) => (ResponseCode::Success, ste.ppar().then_some(ssid)),
            None => (ResponseCode::ResponseFailure, None),
        }
    }

    fn auto_respond(
        &mut self,
        group: PriGroup,
        code: ResponseCode,
        pasid: Option<u32>,
        reason: AutoPriReason,
    ) {
        self.auto_pri.push(AutoPriResponse {
            group,
            resp: code.pri_response(),
            reason,
        });
        self.device_responses.push(DeviceResponse {
            group,
            code,
            pasid,
            auto: Some(reason),
        });
    }
}
