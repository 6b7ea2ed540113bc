//! The postcard operations of pasid-alloc end to end on the loopback kernel,
//! and malformed postcard payloads (bad tag, trailing bytes) on both sides.

use std::sync::{Arc, Mutex};

use idl_runtime::testing::{postcard_bytes, LoopbackKernel};
use idl_runtime::{decode_postcard_reply, ReplyFaultReason};
use pasid_alloc_api::*;
use userlib::TaskId;

struct FakeAlloc {
    defunct: Option<PasidHandle>,
}

impl PasidAllocServer for FakeAlloc {
    fn notification_mask(&self) -> u32 {
        0
    }
    fn handle_notification(&mut self, _bits: u32) {}
    fn check_caller(&mut self, _caller: TaskId, _allowed: &'static [PasidAllocCaller]) -> bool {
        true
    }
    fn alloc(&mut self, _caller: TaskId) -> Result<PasidHandle, PasidAllocError> {
        Err(PasidAllocError::NoSpace)
    }
    fn free(&mut self, _caller: TaskId, _pasid: PasidHandle) -> Result<(), PasidAllocError> {
        Ok(())
    }
    fn owner_of(&mut self, _caller: TaskId, pasid: Pasid) -> Result<PasidOwner, PasidAllocError> {
        match pasid.0 {
            0 => Err(PasidAllocError::Invalid),
            1 => Ok(PasidOwner::Free),
            n => Ok(PasidOwner::Defunct {
                owner: TaskId(n as u32),
                generation: PasidGen(n),
            }),
        }
    }
    fn usage(&mut self, _caller: TaskId) -> Result<PasidUsage, PasidAllocError> {
        Ok(PasidUsage {
            allocated: 1,
            defunct: 2,
            quota: 3,
        })
    }
    fn next_defunct(&mut self, _caller: TaskId) -> Result<Option<PasidHandle>, PasidAllocError> {
        Ok(self.defunct.take())
    }
    fn mark_drained(
        &mut self,
        _caller: TaskId,
        _pasid: PasidHandle,
    ) -> Result<(), PasidAllocError> {
        Err(PasidAllocError::NotFound)
    }
    fn owner_died(&mut self, _caller: TaskId, vm: TaskId) -> Result<u32, PasidAllocError> {
        Ok(u32::from(vm.0))
    }
}

fn setup() -> PasidAllocClient {
    let handle = PasidHandle {
        pasid: Pasid(0xF_FFFF),
        generation: PasidGen(u32::MAX),
    };
    let server = Arc::new(Mutex::new(FakeAlloc {
        defunct: Some(handle),
    }));
    let k =
        LoopbackKernel::install(move |msg, buf| dispatch(&mut *server.lock().unwrap(), msg, buf));
    PasidAllocClient::new(k.server_id())
}

#[test]
fn idl_postcard_pasid_alloc_loopback() {
    let client = setup();
    assert_eq!(client.owner_of(Pasid(0)), Err(PasidAllocError::Invalid));
    assert_eq!(client.owner_of(Pasid(1)), Ok(PasidOwner::Free));
    assert_eq!(
        client.owner_of(Pasid(0x1_2345)),
        Ok(PasidOwner::Defunct {
            owner: TaskId(0x1_2345),
            generation: PasidGen(0x1_2345)
        })
    );
    let handle = PasidHandle {
        pasid: Pasid(0xF_FFFF),
        generation: PasidGen(u32::MAX),
    };
    assert_eq!(client.next_defunct(), Ok(Some(handle)));
    assert_eq!(client.next_defunct(), Ok(None));
    assert_eq!(client.alloc(), Err(PasidAllocError::NoSpace));
    assert_eq!(
        client.usage(),
        Ok(PasidUsage {
            allocated: 1,
            defunct: 2,
            quota: 3
        })
    );
    assert_eq!(client.mark_drained(handle), Err(PasidAllocError::NotFound));
    assert_eq!(client.owner_died(TaskId(77)), Ok(77));
}

#[test]
fn idl_postcard_pasid_alloc_bad_reply_tag_is_protocol() {
    // Variant index 3 does not exist in PasidOwner.
    let got = decode_postcard_reply::<PasidOwner, PasidAllocError>(0, &[3]);
    assert_eq!(got, Err(PasidAllocError::Protocol));
    // Option tag 2 is neither None nor Some.
    let got = decode_postcard_reply::<Option<PasidHandle>, PasidAllocError>(0, &[2, 1, 1]);
    assert_eq!(got, Err(PasidAllocError::Protocol));
    // A valid encoding followed by junk.
    let got = decode_postcard_reply::<PasidOwner, PasidAllocError>(0, &[0, 0]);
    assert_eq!(got, Err(PasidAllocError::Protocol));
    // A dead code is a death, whatever the payload.
    let got = decode_postcard_reply::<PasidOwner, PasidAllocError>(
        userlib::dead_code(userlib::Generation(3)),
        &[],
    );
    assert_eq!(got, Err(PasidAllocError::ServerDied));
}

#[test]
fn idl_postcard_pasid_alloc_bad_args() {
    let cap = PasidAllocOp::OwnerOf.reply_max();
    let op = PasidAllocOp::OwnerOf as u32;
    let good = postcard_bytes(&OwnerOfArgs { pasid: Pasid(5) });
    assert_eq!(
        dispatch_decode(op, &good, cap, &[]),
        Ok(PasidAllocRequest::OwnerOf(OwnerOfArgs { pasid: Pasid(5) }))
    );
    // An unterminated varint.
    let reason = dispatch_decode(op, &[0x80, 0x80], cap, &[]).map_err(|r| r.reason);
    assert_eq!(reason, Err(ReplyFaultReason::BadMessageSize));
    // A varint too long for u32.
    let reason =
        dispatch_decode(op, &[0xFF, 0xFF, 0xFF, 0xFF, 0x7F], cap, &[]).map_err(|r| r.reason);
    assert_eq!(reason, Err(ReplyFaultReason::BadMessageContents));
    // The reply of owner_of needs room for its largest encoding.
    let reason = dispatch_decode(op, &good, cap - 1, &[]).map_err(|r| r.reason);
    assert_eq!(reason, Err(ReplyFaultReason::ReplyBufferTooSmall));
}
