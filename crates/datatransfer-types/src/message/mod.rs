//! The data-transfer wire messages and their Go-compatible DAG-CBOR codec.
//!
//! A [`Message`] is a request (from the initiator) or a response (from the responder), each
//! carrying one of eight [`MessageType`]s. [`Message::to_cbor`] writes exactly the bytes Go
//! writes for the chosen [`WireVersion`], and [`Message::from_cbor`] reads what any Go version
//! sends, with typed errors for everything else:
//!
//! ```
//! use datatransfer_types::message::{Message, TransferRequest, WireVersion};
//! use datatransfer_types::TransferId;
//!
//! let msg = Message::Request(TransferRequest::update(TransferId(7), true));
//! let bytes = msg.to_cbor(WireVersion::V1_2);
//! assert_eq!(Message::from_cbor(WireVersion::V1_2, &bytes)?, msg);
//! # Ok::<(), datatransfer_types::message::MessageError>(())
//! ```
//!
//! The two versions share one schema (`TransferMessage { IsRq, Request, Response }`, see
//! go-data-transfer's `message/message1_1prime/schema.ipldsch`) and differ only in the order
//! map keys are written: `/fil/datatransfer/1.1.0` uses cbor-gen, which writes struct fields in
//! declaration order; `/fil/datatransfer/1.2.0` uses go-ipld-prime's dag-cbor encoder, which
//! sorts keys canonically (shorter first, then bytewise).

mod codec;

use std::fmt;

use cid::Cid;
use thiserror::Error;

use crate::cbor::{CborError, DEFAULT_MAX_DEPTH};
use crate::ids::{ChannelId, TransferId};
use crate::node::DagCbor;
use crate::voucher::{TypeIdentifier, TypedNode, Voucher, VoucherResult};

/// Default cap on the size of one encoded message: 4 MiB, libp2p's usual message maximum.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 << 20;

/// Which encoding of the messages to speak, named after the libp2p protocol that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WireVersion {
    /// `/fil/datatransfer/1.1.0`: cbor-gen maps, keys in struct field order.
    V1_1,
    /// `/fil/datatransfer/1.2.0`: go-ipld-prime DAG-CBOR, keys in canonical order.
    V1_2,
}

impl WireVersion {
    /// The libp2p protocol name for this version.
    pub fn protocol(self) -> &'static str {
        match self {
            Self::V1_1 => "/fil/datatransfer/1.1.0",
            Self::V1_2 => "/fil/datatransfer/1.2.0",
        }
    }

    /// The version a protocol name stands for, if it is one we speak.
    pub fn from_protocol(protocol: &str) -> Option<Self> {
        match protocol {
            "/fil/datatransfer/1.1.0" => Some(Self::V1_1),
            "/fil/datatransfer/1.2.0" => Some(Self::V1_2),
            _ => None,
        }
    }
}

/// The kind of a request or response (go-data-transfer `message/types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum MessageType {
    /// Open a channel / answer an open.
    New = 0,
    /// Pause or resume.
    Update = 1,
    /// Cancel the channel.
    Cancel = 2,
    /// The responder is done.
    Complete = 3,
    /// A new voucher (request side).
    Voucher = 4,
    /// A voucher result (response side).
    VoucherResult = 5,
    /// Re-open a channel after a disconnect / answer such a request.
    Restart = 6,
    /// Ask the other side to restart a channel it initiated.
    RestartExistingChannelRequest = 7,
}

impl MessageType {
    /// The numeric code on the wire.
    pub fn code(self) -> u64 {
        self as u64
    }
}

impl TryFrom<u64> for MessageType {
    type Error = MessageError;

    fn try_from(code: u64) -> Result<Self, MessageError> {
        Ok(match code {
            0 => Self::New,
            1 => Self::Update,
            2 => Self::Cancel,
            3 => Self::Complete,
            4 => Self::Voucher,
            5 => Self::VoucherResult,
            6 => Self::Restart,
            7 => Self::RestartExistingChannelRequest,
            other => return Err(MessageError::UnknownMessageType(other)),
        })
    }
}

/// A request, sent by the channel's initiator (Go's `TransferRequest`).
///
/// All fields are always on the wire; which ones matter depends on `message_type`. Build
/// requests with the constructors, which set the fields exactly as Go's do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRequest {
    /// What the request asks for.
    pub message_type: MessageType,
    /// The initiator's transfer id (`XferID`).
    pub transfer_id: TransferId,
    /// The root of the DAG (`BCid`); set on New and Restart.
    pub base_cid: Option<Cid>,
    /// The selector (`Stor`); set on New and Restart.
    pub selector: Option<DagCbor>,
    /// The voucher's node (`Vouch`); `None` is written as null.
    pub voucher: Option<DagCbor>,
    /// The voucher's type (`VTyp`); empty when there is no voucher.
    pub voucher_type: TypeIdentifier,
    /// Pause (`Paus`) on Update, or open paused.
    pub pause: bool,
    /// Partial transfer (`Part`); never set by Go, carried for completeness.
    pub partial: bool,
    /// The initiator pulls (`Pull`).
    pub pull: bool,
    /// The channel to restart (`RestartChannel`) on RestartExistingChannelRequest;
    /// `None` is written as Go's zero value `["", "", 0]`.
    pub restart_channel: Option<ChannelId>,
}

/// A response, sent by the channel's responder (Go's `TransferResponse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferResponse {
    /// What the response answers.
    pub message_type: MessageType,
    /// The initiator's transfer id (`XferID`).
    pub transfer_id: TransferId,
    /// Whether the request was accepted (`Acpt`).
    pub accepted: bool,
    /// Whether the responder is paused (`Paus`).
    pub paused: bool,
    /// The voucher result's node (`VRes`); `None` is written as null.
    pub voucher_result: Option<DagCbor>,
    /// The voucher result's type (`VTyp`).
    pub voucher_result_type: TypeIdentifier,
}

/// One data-transfer message.
// A request is a few hundred bytes (CID and peer ids inline), a response less; boxing would
// cost an allocation per message for no gain, since messages are built, encoded and dropped.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// From the initiator.
    Request(TransferRequest),
    /// From the responder.
    Response(TransferResponse),
}

/// Limits the decoder enforces on input from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted encoded message, in bytes.
    pub max_message_size: usize,
    /// Deepest accepted nesting of maps, arrays and tags (selectors and vouchers included).
    pub max_depth: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// Why bytes from a peer are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The input is larger than [`DecodeLimits::max_message_size`].
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size of the input.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The input is not well-formed CBOR of the expected shape.
    #[error("malformed message: {0}")]
    Cbor(#[from] CborError),
    /// A field holds something of the wrong shape.
    #[error("malformed field {field}: {source}")]
    Field {
        /// The field's wire name.
        field: &'static str,
        /// What was wrong.
        #[source]
        source: CborError,
    },
    /// The `Type` field holds a code outside 0..=7.
    #[error("unknown message type {0}")]
    UnknownMessageType(u64),
    /// A field appears twice in one map.
    #[error("field {0} appears more than once")]
    DuplicateField(&'static str),
    /// `IsRq` names a body that is null or absent.
    #[error("message has IsRq={is_request} but no {} body", if *.is_request { "Request" } else { "Response" })]
    MissingBody {
        /// The value of `IsRq`.
        is_request: bool,
    },
    /// A peer id in `RestartChannel` is not a valid peer id.
    #[error("invalid peer id in RestartChannel: {0}")]
    InvalidPeerId(String),
    /// `VTyp` is not UTF-8.
    #[error("voucher type identifier is not valid UTF-8")]
    InvalidTypeIdentifier,
}

impl TransferRequest {
    fn base(message_type: MessageType, transfer_id: TransferId) -> Self {
        Self {
            message_type,
            transfer_id,
            base_cid: None,
            selector: None,
            voucher: None,
            voucher_type: TypeIdentifier::EMPTY,
            pause: false,
            partial: false,
            pull: false,
            restart_channel: None,
        }
    }

    fn opening(
        message_type: MessageType,
        transfer_id: TransferId,
        pull: bool,
        voucher: Voucher,
        base_cid: Cid,
        selector: DagCbor,
    ) -> Self {
        Self {
            base_cid: Some(base_cid),
            selector: Some(selector),
            voucher: Some(voucher.node),
            voucher_type: voucher.type_id,
            pull,
            ..Self::base(message_type, transfer_id)
        }
    }

    /// Opens a channel: a push (`pull == false`) or a pull of `selector` under `base_cid`.
    pub fn new_channel(
        transfer_id: TransferId,
        pull: bool,
        voucher: Voucher,
        base_cid: Cid,
        selector: DagCbor,
    ) -> Self {
        Self::opening(
            MessageType::New,
            transfer_id,
            pull,
            voucher,
            base_cid,
            selector,
        )
    }

    /// Re-opens a channel after a disconnect, with the same parameters as the original.
    pub fn restart(
        transfer_id: TransferId,
        pull: bool,
        voucher: Voucher,
        base_cid: Cid,
        selector: DagCbor,
    ) -> Self {
        Self::opening(
            MessageType::Restart,
            transfer_id,
            pull,
            voucher,
            base_cid,
            selector,
        )
    }

    /// Asks the other side to restart `channel`, which it initiated.
    pub fn restart_existing_channel(channel: ChannelId) -> Self {
        Self {
            restart_channel: Some(channel),
            ..Self::base(MessageType::RestartExistingChannelRequest, TransferId(0))
        }
    }

    /// Cancels the channel.
    pub fn cancel(transfer_id: TransferId) -> Self {
        Self::base(MessageType::Cancel, transfer_id)
    }

    /// Pauses (`paused == true`) or resumes the initiator's side.
    pub fn update(transfer_id: TransferId, paused: bool) -> Self {
        Self {
            pause: paused,
            ..Self::base(MessageType::Update, transfer_id)
        }
    }

    /// Sends a new voucher on an open channel.
    pub fn voucher(transfer_id: TransferId, voucher: Voucher) -> Self {
        Self {
            voucher: Some(voucher.node),
            voucher_type: voucher.type_id,
            ..Self::base(MessageType::Voucher, transfer_id)
        }
    }

    /// The voucher as a typed node, if the request carries one.
    pub fn typed_voucher(&self) -> Option<Voucher> {
        self.voucher
            .as_ref()
            .map(|v| TypedNode::new(self.voucher_type.clone(), v.clone()))
    }

    /// What the request asks for, with the fields its kind must carry: the flat wire form
    /// parsed once. A request whose type only a response may have (Complete, VoucherResult),
    /// or that lacks a field its kind needs, is an error.
    pub fn kind(&self) -> Result<RequestKind, RequestError> {
        let missing = |what| RequestError::Missing(self.message_type, what);
        Ok(match self.message_type {
            MessageType::New | MessageType::Restart => RequestKind::Open(OpenRequest {
                restart: self.message_type == MessageType::Restart,
                root: self.base_cid.ok_or_else(|| missing("base CID"))?,
                selector: self.selector.clone().ok_or_else(|| missing("selector"))?,
                voucher: self.typed_voucher().ok_or_else(|| missing("voucher"))?,
                pull: self.pull,
                paused: self.pause,
            }),
            MessageType::Update => RequestKind::Update { paused: self.pause },
            MessageType::Cancel => RequestKind::Cancel,
            MessageType::Voucher => {
                RequestKind::Voucher(self.typed_voucher().ok_or_else(|| missing("voucher"))?)
            }
            MessageType::RestartExistingChannelRequest => RequestKind::RestartExisting(
                self.restart_channel
                    .ok_or_else(|| missing("channel to restart"))?,
            ),
            t @ (MessageType::Complete | MessageType::VoucherResult) => {
                return Err(RequestError::NotARequest(t));
            }
        })
    }
}

/// A request by what it asks for ([`TransferRequest::kind`]); the flat [`TransferRequest`]
/// stays the wire form, byte for byte. Not `#[non_exhaustive]`: the protocol's request kinds
/// are a closed set, and the engine matches them exhaustively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKind {
    /// Open a channel, or open it again after a disconnect or a crash.
    Open(OpenRequest),
    /// The initiator pauses (`paused`) or resumes its side.
    Update {
        /// Pause, or resume.
        paused: bool,
    },
    /// The initiator cancels the channel.
    Cancel,
    /// A new voucher on an open channel.
    Voucher(Voucher),
    /// The responder asks the initiator to open this channel again.
    RestartExisting(ChannelId),
}

/// A request to open a channel (New), or to open it again (Restart), with every field it
/// needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRequest {
    /// A restart of a channel the responder may know (`false`: a new channel).
    pub restart: bool,
    /// The root of the DAG.
    pub root: Cid,
    /// The selector.
    pub selector: DagCbor,
    /// The voucher that justifies it.
    pub voucher: Voucher,
    /// The initiator pulls (else it pushes).
    pub pull: bool,
    /// Open it paused.
    pub paused: bool,
}

impl OpenRequest {
    /// The type of the message that asks for it (New or Restart), which its answer has too.
    pub fn message_type(&self) -> MessageType {
        if self.restart {
            MessageType::Restart
        } else {
            MessageType::New
        }
    }
}

/// Why a request cannot be taken for what its type says.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The type is one only a response may have.
    #[error("a request cannot be of type {0:?}")]
    NotARequest(MessageType),
    /// A field its type needs is missing.
    #[error("request carries no {1}")]
    Missing(MessageType, &'static str),
}

impl TransferResponse {
    fn with_result(
        message_type: MessageType,
        transfer_id: TransferId,
        accepted: bool,
        paused: bool,
        result: Option<VoucherResult>,
    ) -> Self {
        let (voucher_result, voucher_result_type) = match result {
            Some(r) => (Some(r.node), r.type_id),
            None => (None, TypeIdentifier::EMPTY),
        };
        Self {
            message_type,
            transfer_id,
            accepted,
            paused,
            voucher_result,
            voucher_result_type,
        }
    }

    /// Answers a New request.
    pub fn new_channel(
        transfer_id: TransferId,
        accepted: bool,
        paused: bool,
        result: Option<VoucherResult>,
    ) -> Self {
        Self::with_result(MessageType::New, transfer_id, accepted, paused, result)
    }

    /// Answers a Restart request.
    pub fn restart(
        transfer_id: TransferId,
        accepted: bool,
        paused: bool,
        result: Option<VoucherResult>,
    ) -> Self {
        Self::with_result(MessageType::Restart, transfer_id, accepted, paused, result)
    }

    /// Answers a voucher (or asks for one) with a voucher result.
    pub fn voucher_result(
        transfer_id: TransferId,
        accepted: bool,
        paused: bool,
        result: Option<VoucherResult>,
    ) -> Self {
        Self::with_result(
            MessageType::VoucherResult,
            transfer_id,
            accepted,
            paused,
            result,
        )
    }

    /// Says the responder is done (or finalizing, when `paused`).
    pub fn complete(
        transfer_id: TransferId,
        accepted: bool,
        paused: bool,
        result: Option<VoucherResult>,
    ) -> Self {
        Self::with_result(MessageType::Complete, transfer_id, accepted, paused, result)
    }

    /// Pauses (`paused == true`) or resumes the responder's side.
    pub fn update(transfer_id: TransferId, paused: bool) -> Self {
        Self::with_result(MessageType::Update, transfer_id, false, paused, None)
    }

    /// Cancels the channel.
    pub fn cancel(transfer_id: TransferId) -> Self {
        Self::with_result(MessageType::Cancel, transfer_id, false, false, None)
    }

    /// The voucher result as a typed node, if the response carries one.
    pub fn typed_voucher_result(&self) -> Option<VoucherResult> {
        self.voucher_result
            .as_ref()
            .map(|v| TypedNode::new(self.voucher_result_type.clone(), v.clone()))
    }
}

impl Message {
    /// Decodes one message that fills `bytes` exactly, with the default [`DecodeLimits`].
    pub fn from_cbor(version: WireVersion, bytes: &[u8]) -> Result<Self, MessageError> {
        Self::from_cbor_with_limits(version, bytes, &DecodeLimits::default())
    }

    /// Decodes one message that fills `bytes` exactly.
    ///
    /// Both versions accept keys in any order (Go's decoders do), skip unknown keys, and
    /// reject trailing bytes, unknown message types and inputs over the limits.
    pub fn from_cbor_with_limits(
        version: WireVersion,
        bytes: &[u8],
        limits: &DecodeLimits,
    ) -> Result<Self, MessageError> {
        // Both versions share one schema; the version only changes how we write.
        let _ = version;
        if bytes.len() > limits.max_message_size {
            return Err(MessageError::TooLarge {
                size: bytes.len(),
                max: limits.max_message_size,
            });
        }
        codec::decode(bytes, limits.max_depth)
    }

    /// Encodes the message exactly as Go does for `version`.
    pub fn to_cbor(&self, version: WireVersion) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        self.encode_into(version, &mut out);
        out
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, version: WireVersion, out: &mut Vec<u8>) {
        codec::encode(self, version, out);
    }

    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        matches!(self, Self::Request(_))
    }

    /// The message's type.
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::Request(r) => r.message_type,
            Self::Response(r) => r.message_type,
        }
    }

    /// The transfer id the message is about.
    pub fn transfer_id(&self) -> TransferId {
        match self {
            Self::Request(r) => r.transfer_id,
            Self::Response(r) => r.transfer_id,
        }
    }
}

impl fmt::Display for Message {
    /// A readable multi-line summary, for logs and the `inspect` tools.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Request(r) => {
                writeln!(
                    f,
                    "request {:?} transfer {} ({}{}{})",
                    r.message_type,
                    r.transfer_id,
                    if r.pull { "pull" } else { "push" },
                    if r.pause { ", paused" } else { "" },
                    if r.partial { ", partial" } else { "" },
                )?;
                if let Some(c) = &r.base_cid {
                    writeln!(f, "  base CID:  {c}")?;
                }
                if let Some(s) = &r.selector {
                    writeln!(f, "  selector:  {s}")?;
                }
                if let Some(v) = &r.voucher {
                    writeln!(f, "  voucher:   {} {v}", r.voucher_type)?;
                }
                if let Some(ch) = &r.restart_channel {
                    writeln!(f, "  restart:   {ch}")?;
                }
            }
            Self::Response(r) => {
                writeln!(
                    f,
                    "response {:?} transfer {} ({}{})",
                    r.message_type,
                    r.transfer_id,
                    if r.accepted {
                        "accepted"
                    } else {
                        "not accepted"
                    },
                    if r.paused { ", paused" } else { "" },
                )?;
                if let Some(v) = &r.voucher_result {
                    writeln!(f, "  result:    {} {v}", r.voucher_result_type)?;
                }
            }
        }
        Ok(())
    }
}

impl From<TransferRequest> for Message {
    fn from(r: TransferRequest) -> Self {
        Self::Request(r)
    }
}

impl From<TransferResponse> for Message {
    fn from(r: TransferResponse) -> Self {
        Self::Response(r)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure.
mod tests {
    use super::*;

    fn voucher() -> Voucher {
        TypedNode::new(TypeIdentifier::new("V"), DagCbor::null())
    }

    #[test]
    fn each_request_type_parses_to_its_kind_with_the_fields_it_needs() {
        let id = TransferId(3);
        let open =
            TransferRequest::new_channel(id, true, voucher(), Cid::default(), DagCbor::null());
        assert_eq!(
            open.kind(),
            Ok(RequestKind::Open(OpenRequest {
                restart: false,
                root: Cid::default(),
                selector: DagCbor::null(),
                voucher: voucher(),
                pull: true,
                paused: false,
            }))
        );
        let restart =
            TransferRequest::restart(id, false, voucher(), Cid::default(), DagCbor::null());
        assert!(matches!(
            restart.kind(),
            Ok(RequestKind::Open(OpenRequest {
                restart: true,
                pull: false,
                ..
            }))
        ));
        assert_eq!(
            TransferRequest::update(id, true).kind(),
            Ok(RequestKind::Update { paused: true })
        );
        assert_eq!(TransferRequest::cancel(id).kind(), Ok(RequestKind::Cancel));
        assert_eq!(
            TransferRequest::voucher(id, voucher()).kind(),
            Ok(RequestKind::Voucher(voucher()))
        );
        // Missing fields and response-only types are errors, with Go's wording.
        let mut bare = open.clone();
        bare.selector = None;
        assert_eq!(
            bare.kind().unwrap_err().to_string(),
            "request carries no selector"
        );
        let mut bare = open;
        bare.voucher = None;
        assert_eq!(
            bare.kind().unwrap_err().to_string(),
            "request carries no voucher"
        );
        let mut odd = TransferRequest::cancel(id);
        odd.message_type = MessageType::Complete;
        assert_eq!(
            odd.kind(),
            Err(RequestError::NotARequest(MessageType::Complete))
        );
        let mut lost = TransferRequest::cancel(id);
        lost.message_type = MessageType::RestartExistingChannelRequest;
        assert!(lost.kind().is_err(), "no channel named");
    }
}
