//! The server's typed errors. Each variant means what the iommufd errno in
//! its doc comment means, so a VMM written against iommufd reads them the
//! same way.

/// Why a request was refused or failed. A refused request changed nothing
/// (except where an operation documents a partial result, e.g. the number
/// of guest invalidation commands done).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Error {
    /// ENOENT: no such domain, context or stream mapping.
    NotFound = 1,
    /// EPERM: the object (stream, domain, context) is not the caller's, or
    /// the operation is reserved to another task (prq-server, supervisor).
    NotPermitted = 2,
    /// EINVAL: a malformed request (alignment, range, kind of domain,
    /// forbidden command in a guest batch, ...).
    Invalid = 3,
    /// EBUSY: the object is in use (a domain with users or nested children,
    /// a stream with bound contexts being replaced).
    Busy = 4,
    /// ENOSPC / ENOMEM: a bounded table is full or the DMA page pool is
    /// exhausted.
    NoSpace = 5,
    /// EOPNOTSUPP: the hardware lacks what the request needs (a stage,
    /// substreams, PRI, stall).
    Unsupported = 6,
    /// EEXIST: the page is already mapped, or the (stream, PASID) pair is
    /// bound to a different context.
    AlreadyExists = 7,
    /// EADDRINUSE: the IOVA lies in a reserved window (the MSI window, or
    /// the window where the server maps its CD tables for nested streams).
    Reserved = 8,
    /// ETIMEDOUT: the SMMU did not complete a command queue sync (or a
    /// register handshake) within the bound.
    Timeout = 9,
    /// EIO: the SMMU reported an error (CMDQ_CONS.ERR, GERROR) or is not
    /// usable.
    HardwareError = 10,
}

impl Error {
    /// Every variant.
    pub const ALL: [Error; 10] = [
        Error::NotFound,
        Error::NotPermitted,
        Error::Invalid,
        Error::Busy,
        Error::NoSpace,
        Error::Unsupported,
        Error::AlreadyExists,
        Error::Reserved,
        Error::Timeout,
        Error::HardwareError,
    ];

    /// The reply code on the wire (never 0: 0 is success).
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// Decodes a reply code.
    pub fn from_code(code: u32) -> Option<Error> {
        Error::ALL.iter().copied().find(|e| e.code() == code)
    }

    /// The Linux errno name of the same meaning.
    pub const fn errno_name(self) -> &'static str {
        match self {
            Error::NotFound => "ENOENT",
            Error::NotPermitted => "EPERM",
            Error::Invalid => "EINVAL",
            Error::Busy => "EBUSY",
            Error::NoSpace => "ENOSPC",
            Error::Unsupported => "EOPNOTSUPP",
            Error::AlreadyExists => "EEXIST",
            Error::Reserved => "EADDRINUSE",
            Error::Timeout => "ETIMEDOUT",
            Error::HardwareError => "EIO",
        }
    }
}

/// Result with the server's error.
pub type Result<T> = core::result::Result<T, Error>;
