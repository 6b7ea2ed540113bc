//! The generated client and `dispatch` end to end, on the loopback kernel of
//! `idl_runtime::testing` (one thread, no harness): leases both ways, error
//! codes, reply-faults, caller checks, server death and idempotent retry,
//! notifications.

use std::sync::{Arc, Mutex};

use idl_runtime::testing::{LoopbackKernel, CLIENT, FAULTED};
use idl_runtime::{Fixed, LeaseError, Leased, Read, ReplyFaultReason, Write};
use iommu_server_api::StreamId;
use pasid_alloc_api::Pasid;
use prq_server_api::*;
use userlib::TaskId;

#[derive(Default)]
struct FakePrq {
    allow: bool,
    notified: u32,
    callers: Vec<TaskId>,
    answers: Vec<ResponseEntry>,
    out_of_bounds_refused: bool,
}

fn record(i: u64) -> FaultRecord {
    FaultRecord {
        cookie: Cookie(i + 1),
        sid: StreamId(7),
        pasid: Pasid(42),
        kind: FaultKind::PageRequest,
        group: i as u16,
        addr: 0x1000 * i,
        perm: FaultPerm::READ | FaultPerm::WRITE,
        flags: FaultFlags::PASID_VALID,
    }
}

impl PrqServer for FakePrq {
    fn notification_mask(&self) -> u32 {
        0b110
    }
    fn handle_notification(&mut self, bits: u32) {
        self.notified |= bits;
    }
    fn check_caller(&mut self, caller: TaskId, allowed: &'static [PrqCaller]) -> bool {
        assert!(!allowed.is_empty());
        self.callers.push(caller);
        self.allow
    }
    fn fetch_faults(
        &mut self,
        _caller: TaskId,
        out: Leased<Write, FaultRecord>,
    ) -> Result<FetchOutcome, PrqError> {
        for i in 0..2 {
            out.write(i, &record(i as u64))
                .map_err(|_| PrqError::Invalid)?;
        }
        self.out_of_bounds_refused =
            out.write(out.len(), &record(9)) == Err(LeaseError::OutOfBounds);
        Ok(FetchOutcome { count: 2, lost: 3 })
    }
    fn respond(
        &mut self,
        _caller: TaskId,
        responses: Leased<Read, ResponseEntry>,
    ) -> Result<RespondOutcome, PrqError> {
        for i in 0..responses.len() {
            match responses.read(i) {
                Ok(r) if r.response != FaultResponse::Failure => self.answers.push(r),
                Ok(_) => {
                    return Ok(RespondOutcome {
                        done: i as u32,
                        status: RespondStatus::NotAllowed,
                    })
                }
                Err(_) => return Err(PrqError::Invalid),
            }
        }
        Ok(RespondOutcome {
            done: responses.len() as u32,
            status: RespondStatus::Complete,
        })
    }
    fn fetch_events(
        &mut self,
        _caller: TaskId,
        _out: Leased<Write, EventRecord>,
    ) -> Result<FetchOutcome, PrqError> {
        Err(PrqError::NotFound)
    }
    fn set_route(&mut self, _: TaskId, _: Attachment, _: TaskId, _: bool) -> Result<(), PrqError> {
        Ok(())
    }
    fn drain(
        &mut self,
        _caller: TaskId,
        att: Attachment,
        _uses_stop_marker: bool,
        issued: u32,
        out: Leased<Write, ResponseCmd>,
    ) -> Result<DrainOutcome, PrqError> {
        let cmd = ResponseCmd {
            sid: att.sid,
            pasid: att.pasid,
            pasid_valid: true,
            kind: FaultKind::PageRequest,
            group: 5,
            response: FaultResponse::Invalid,
        };
        out.write(0, &cmd).map_err(|_| PrqError::Invalid)?;
        Ok(DrainOutcome {
            responses: 1,
            revoked: 0,
            complete: true,
            seq: issued + 1,
        })
    }
    fn take_responses(
        &mut self,
        _: TaskId,
        issued: u32,
        _: Leased<Write, ResponseCmd>,
    ) -> Result<TakeOutcome, PrqError> {
        if issued == 7 {
            return Ok(TakeOutcome {
                count: 0,
                more: false,
                seq: 8,
            });
        }
        Err(PrqError::Again)
    }
    fn queue_layout(&mut self, _: TaskId) -> Result<QueueLayout, PrqError> {
        Ok(QueueLayout {
            eventq_base: 0x1000_0006,
            priq_base: 0x2000_0005,
        })
    }
    fn event_records_lost(&mut self, _: TaskId, aborts: u32) -> Result<(), PrqError> {
        if aborts == 0 {
            return Err(PrqError::Invalid);
        }
        Ok(())
    }
    fn owner_died(&mut self, _: TaskId, vm: TaskId) -> Result<u32, PrqError> {
        Ok(vm.0 as u32)
    }
    fn stats(&mut self, _: TaskId) -> Result<PrqStats, PrqError> {
        Ok(PrqStats {
            partial_groups: 1,
            queued_groups: 2,
            delivered_groups: 3,
            queued_responses: 4,
            hw_overflows: 5,
            stop_markers: 6,
        })
    }
}

fn setup(allow: bool) -> (Arc<LoopbackKernel>, Arc<Mutex<FakePrq>>, PrqClient) {
    let server = Arc::new(Mutex::new(FakePrq {
        allow,
        ..FakePrq::default()
    }));
    let s = server.clone();
    let k = LoopbackKernel::install(move |msg, buf| dispatch(&mut *s.lock().unwrap(), msg, buf));
    let client = PrqClient::new(k.server_id());
    (k, server, client)
}

#[test]
fn idl_loopback_prq_write_lease_reaches_client() {
    let (k, server, client) = setup(true);
    let mut out = [record(0).to_wire(); 4];
    for e in out.iter_mut() {
        *e = FaultRecord {
            cookie: Cookie(0),
            ..record(0)
        }
        .to_wire();
    }
    assert_eq!(
        client.fetch_faults(&mut out),
        Ok(FetchOutcome { count: 2, lost: 3 })
    );
    assert_eq!(FaultRecord::from_wire(&out[0]), Some(record(0)));
    assert_eq!(FaultRecord::from_wire(&out[1]), Some(record(1)));
    let s = server.lock().unwrap();
    assert!(s.out_of_bounds_refused);
    assert_eq!(s.callers, vec![CLIENT]);
    assert!(k.faults().is_empty());
}

#[test]
fn idl_loopback_prq_read_lease_reaches_server() {
    let (_k, server, client) = setup(true);
    let answers = [
        ResponseEntry {
            cookie: Cookie(1),
            response: FaultResponse::Success,
        },
        ResponseEntry {
            cookie: Cookie(2),
            response: FaultResponse::Invalid,
        },
        ResponseEntry {
            cookie: Cookie(3),
            response: FaultResponse::Failure,
        },
    ];
    let wire: Vec<_> = answers.iter().map(Fixed::to_wire).collect();
    let got = client.respond(&wire);
    assert_eq!(
        got,
        Ok(RespondOutcome {
            done: 2,
            status: RespondStatus::NotAllowed
        })
    );
    assert_eq!(server.lock().unwrap().answers, answers[..2].to_vec());
}

#[test]
fn idl_loopback_prq_bad_entry_in_lease_is_bad_contents() {
    let (_k, _server, client) = setup(true);
    let mut wire = ResponseEntry {
        cookie: Cookie(1),
        response: FaultResponse::Success,
    }
    .to_wire();
    wire.response = 9;
    assert_eq!(client.respond(&[wire]), Err(PrqError::Invalid));
}

#[test]
fn idl_loopback_prq_args_and_errors_cross() {
    let (_k, _server, client) = setup(true);
    assert_eq!(
        client.fetch_events(&mut [EventRecord {
            sid: StreamId(1),
            event_id: 2,
            words: [0; 4]
        }
        .to_wire()]),
        Err(PrqError::NotFound)
    );
    assert_eq!(
        client.take_responses(
            0,
            &mut [ResponseCmd {
                sid: StreamId(1),
                pasid: Pasid(0),
                pasid_valid: false,
                kind: FaultKind::Stall,
                group: 0,
                response: FaultResponse::Success,
            }
            .to_wire()]
        ),
        Err(PrqError::Again)
    );
    let mut one = [ResponseCmd {
        sid: StreamId(1),
        pasid: Pasid(0),
        pasid_valid: false,
        kind: FaultKind::Stall,
        group: 0,
        response: FaultResponse::Success,
    }
    .to_wire()];
    assert_eq!(
        client.take_responses(7, &mut one),
        Ok(TakeOutcome {
            count: 0,
            more: false,
            seq: 8
        })
    );
    assert_eq!(
        client.queue_layout(),
        Ok(QueueLayout {
            eventq_base: 0x1000_0006,
            priq_base: 0x2000_0005,
        })
    );
    assert_eq!(client.owner_died(TaskId(0x1234)), Ok(0x1234));
    let att = Attachment {
        sid: StreamId(3),
        pasid: Pasid(9),
    };
    let mut out = [ResponseCmd {
        sid: StreamId(0),
        pasid: Pasid(0),
        pasid_valid: false,
        kind: FaultKind::Stall,
        group: 0,
        response: FaultResponse::Success,
    }
    .to_wire(); 2];
    assert_eq!(
        client.drain(att, true, 3, &mut out),
        Ok(DrainOutcome {
            responses: 1,
            revoked: 0,
            complete: true,
            seq: 4,
        })
    );
    let cmd = ResponseCmd::from_wire(&out[0]).unwrap();
    assert_eq!(
        (cmd.sid, cmd.pasid, cmd.response),
        (StreamId(3), Pasid(9), FaultResponse::Invalid)
    );
    assert_eq!(client.set_route(att, TaskId(5), true), Ok(()));
}

#[test]
fn idl_loopback_prq_caller_not_allowed_is_faulted() {
    let (k, server, client) = setup(false);
    // `stats` names no callers: no check, served.
    assert!(client.stats().is_ok());
    assert!(server.lock().unwrap().callers.is_empty());
    // `owner_died` is for the supervisor only: the server says no.
    assert_eq!(client.owner_died(TaskId(1)), Err(PrqError::Protocol));
    assert_eq!(k.faults(), vec![ReplyFaultReason::AccessViolation]);
}

#[test]
fn idl_loopback_prq_lease_checks_fault_the_client() {
    let (k, _server, client) = setup(true);
    let entry = record(0).to_wire();
    let mut too_many = vec![entry; 65];
    assert_eq!(client.fetch_faults(&mut too_many), Err(PrqError::Protocol));
    assert_eq!(client.fetch_faults(&mut []), Err(PrqError::Protocol));
    assert_eq!(
        k.faults(),
        vec![ReplyFaultReason::BadLeases, ReplyFaultReason::BadLeases]
    );
}

#[test]
fn idl_loopback_prq_raw_malformed_messages_fault() {
    let (k, _server, _client) = setup(true);
    let id = k.server_id();
    let mut reply = [0u8; 64];
    // Unknown operation.
    assert_eq!(userlib::sys_send(id, 99, &[], &mut reply, &[]).0, FAULTED);
    // `set_route` with a short message.
    assert_eq!(
        userlib::sys_send(id, PrqOp::SetRoute as u16, &[1, 2, 3], &mut reply, &[]).0,
        FAULTED
    );
    // `stats` with no room for the reply.
    assert_eq!(
        userlib::sys_send(id, PrqOp::Stats as u16, &[], &mut reply[..3], &[]).0,
        FAULTED
    );
    assert_eq!(
        k.faults(),
        vec![
            ReplyFaultReason::UndefinedOperation,
            ReplyFaultReason::BadMessageSize,
            ReplyFaultReason::ReplyBufferTooSmall
        ]
    );
}

#[test]
fn idl_loopback_prq_death_retries_idempotent_once() {
    let (k, _server, client) = setup(true);
    let before = client.task_id();
    k.kill_server(1);
    assert!(
        client.stats().is_ok(),
        "idempotent stats retried on the new instance"
    );
    assert_eq!(k.sends(), 2);
    assert_ne!(client.task_id(), before);
    assert_eq!(client.task_id(), k.server_id());

    k.kill_server(2);
    assert_eq!(
        client.stats(),
        Err(PrqError::ServerDied),
        "retried once only"
    );
    assert_eq!(k.sends(), 4);
    assert!(client.stats().is_ok());
}

#[test]
fn idl_loopback_prq_death_not_retried_when_not_idempotent() {
    let (k, _server, client) = setup(true);
    k.kill_server(1);
    let mut out = [record(0).to_wire(); 2];
    assert_eq!(client.fetch_faults(&mut out), Err(PrqError::ServerDied));
    assert_eq!(k.sends(), 1);
    assert_eq!(client.task_id(), k.server_id(), "task id refreshed");
    assert!(client.fetch_faults(&mut out).is_ok());
}

#[test]
fn idl_loopback_prq_notification_reaches_server() {
    let (k, server, _client) = setup(true);
    k.notify(0b100);
    assert_eq!(server.lock().unwrap().notified, 0b100);
}
