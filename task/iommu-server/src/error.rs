//! The server's typed errors. Each variant means what the iommufd errno in
//! its doc comment means, and maps one to one onto the interface's
//! `iommu_server_api::IommuError` (the only form that crosses IPC).

use iommu_server_api::IommuError;

/// Why a request was refused or failed. A refused request changed nothing
/// (except where an operation documents a partial result, e.g. the number
/// of guest invalidation commands done).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// ENOENT: no such domain, context or stream mapping.
    NotFound,
    /// EPERM: the object (stream, domain, context) is not the caller's, the
    /// memory is not the caller's, or the operation is reserved to another
    /// task (prq-server, supervisor).
    NotPermitted,
    /// EINVAL: a malformed request (alignment, range, kind of domain,
    /// forbidden command in a guest batch, ...).
    Invalid,
    /// EBUSY: the object is in use (a domain with users or nested children,
    /// a stream with bound contexts being replaced).
    Busy,
    /// ENOSPC / ENOMEM: a bounded table is full or the DMA page pool is
    /// exhausted.
    NoSpace,
    /// EOPNOTSUPP: the hardware lacks what the request needs (a stage,
    /// substreams, PRI, stall).
    Unsupported,
    /// EEXIST: the page is already mapped, or the (stream, PASID) pair is
    /// bound to a different context.
    AlreadyExists,
    /// EADDRINUSE: the IOVA lies in a reserved window (the MSI window, or
    /// the window where the server maps its CD tables for nested streams).
    Reserved,
    /// ETIMEDOUT: the SMMU did not complete a command queue sync (or a
    /// register handshake) within the bound.
    Timeout,
    /// EIO: the SMMU reported an error (CMDQ_CONS.ERR, GERROR) or is not
    /// usable.
    HardwareError,
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

    /// The interface's error of the same meaning (one to one).
    pub const fn api(self) -> IommuError {
        match self {
            Error::NotFound => IommuError::NotFound,
            Error::NotPermitted => IommuError::NotPermitted,
            Error::Invalid => IommuError::Invalid,
            Error::Busy => IommuError::Busy,
            Error::NoSpace => IommuError::NoSpace,
            Error::Unsupported => IommuError::Unsupported,
            Error::AlreadyExists => IommuError::AlreadyExists,
            Error::Reserved => IommuError::AddrInUse,
            Error::Timeout => IommuError::TimedOut,
            Error::HardwareError => IommuError::Io,
        }
    }
}

impl From<Error> for IommuError {
    fn from(e: Error) -> Self {
        e.api()
    }
}

/// Result with the server's error.
pub type Result<T> = core::result::Result<T, Error>;
