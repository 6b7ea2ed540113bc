//! Malformed postcard arguments of `set_ste` (a tagged enum): bad variant
//! tag, bad bool inside a variant, truncation.

use idl_runtime::testing::postcard_bytes;
use idl_runtime::ReplyFaultReason;
use vmm_frontend_api::*;

fn decode(bytes: &[u8]) -> Result<VmmFrontendRequest, ReplyFaultReason> {
    let op = VmmFrontendOp::SetSte;
    dispatch_decode(op as u32, bytes, op.reply_max(), &[]).map_err(|r| r.reason)
}

#[test]
fn idl_postcard_vmm_frontend_set_ste() {
    let args = SetSteArgs {
        vsid: VirtStreamId(3),
        mode: GuestSteMode::Nested {
            fault_capable: true,
            cd_max_bits: 5,
            cd_table_ipa: 0x1_0040,
        },
    };
    let bytes = postcard_bytes(&args);
    // vsid varint, variant index, bool, u8, u64 varint.
    assert_eq!(bytes, vec![3, 2, 1, 5, 0xc0, 0x80, 0x04]);
    assert_eq!(decode(&bytes), Ok(VmmFrontendRequest::SetSte(args)));

    let mut bad_tag = bytes.clone();
    bad_tag[1] = 3;
    assert_eq!(decode(&bad_tag), Err(ReplyFaultReason::BadMessageContents));

    let mut bad_bool = bytes.clone();
    bad_bool[2] = 2;
    assert_eq!(decode(&bad_bool), Err(ReplyFaultReason::BadMessageContents));

    assert_eq!(decode(&bytes[..3]), Err(ReplyFaultReason::BadMessageSize));
    assert_eq!(decode(&bytes[..5]), Err(ReplyFaultReason::BadMessageSize));
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(decode(&trailing), Err(ReplyFaultReason::BadMessageSize));
}
