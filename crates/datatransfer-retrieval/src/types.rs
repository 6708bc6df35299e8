//! The retrieval-market vouchers as go-retrieval-types v1.2 writes them (the types lassie and
//! Boost exchange over data-transfer), with no I/O.
//!
//! Every type is a DAG-CBOR map with all its fields present, its keys in DAG-CBOR's canonical
//! order (shorter first, then bytewise), which is the order the fields are declared in here:
//! serde writes them in that order, so encoding gives go-ipld-prime's bytes. Token amounts are
//! Filecoin big integers ([`TokenAmount`]); the proposal's selector is an inline IPLD node.

use std::fmt;

use datatransfer_types::{Cid, DagCbor, NodeError, Registerable};
use ipld_core::ipld::Ipld;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A retrieval deal's id, chosen by the client (Go's `retrievaltypes.DealID`).
pub type DealId = u64;

/// An amount of attoFIL, as Filecoin's big integers travel: empty bytes for zero, otherwise a
/// sign byte (0 positive, 1 negative) then the magnitude, big-endian, without leading zeros.
///
/// Held as an `i128` (the whole FIL supply, 2·10²⁷ attoFIL, fits with room to spare); a
/// magnitude beyond that does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TokenAmount(i128);

impl TokenAmount {
    /// Zero.
    pub const ZERO: Self = Self(0);

    /// An amount in attoFIL.
    pub const fn from_atto(atto: i128) -> Self {
        Self(atto)
    }

    /// The amount in attoFIL.
    pub const fn atto(self) -> i128 {
        self.0
    }

    /// Whether the amount is zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// The big-integer bytes Filecoin writes.
    pub fn to_bytes(self) -> Vec<u8> {
        if self.0 == 0 {
            return Vec::new();
        }
        let magnitude = self.0.unsigned_abs().to_be_bytes();
        let first = magnitude.iter().position(|b| *b != 0).unwrap_or(0);
        let mut out = Vec::with_capacity(1 + magnitude.len() - first);
        out.push(u8::from(self.0 < 0));
        out.extend_from_slice(&magnitude[first..]);
        out
    }

    /// Reads Filecoin's big-integer bytes (leading zero bytes in the magnitude are accepted,
    /// as Go's `big.FromBytes` accepts them).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TokenAmountError> {
        let Some((&sign, magnitude)) = bytes.split_first() else {
            return Ok(Self::ZERO);
        };
        let negative = match sign {
            0 => false,
            1 => true,
            other => return Err(TokenAmountError::Sign(other)),
        };
        let start = magnitude
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(magnitude.len());
        let digits = &magnitude[start..];
        if digits.len() > 16 {
            return Err(TokenAmountError::TooLarge(digits.len()));
        }
        let mut buf = [0u8; 16];
        buf[16 - digits.len()..].copy_from_slice(digits);
        let value = u128::from_be_bytes(buf);
        let value = if negative {
            0i128.checked_sub_unsigned(value)
        } else {
            i128::try_from(value).ok()
        };
        value
            .map(Self)
            .ok_or(TokenAmountError::TooLarge(digits.len()))
    }
}

impl fmt::Display for TokenAmount {
    /// The amount in attoFIL, as a decimal number.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} attoFIL", self.0)
    }
}

/// Bytes that are not a Filecoin big integer we can hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenAmountError {
    /// The first byte is neither 0 (positive) nor 1 (negative).
    #[error("token amount has sign byte {0:#04x} (0 or 1 expected)")]
    Sign(u8),
    /// The magnitude does not fit an `i128`.
    #[error("token amount of {0} magnitude bytes is too large")]
    TooLarge(usize),
}

impl Serialize for TokenAmount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> Deserialize<'de> for TokenAmount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = d.deserialize_bytes(BytesVisitor)?;
        Self::from_bytes(&bytes).map_err(de::Error::custom)
    }
}

/// Accepts a CBOR byte string (serde_ipld_dagcbor hands over bytes in any of three ways).
struct BytesVisitor;

impl Visitor<'_> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }
}

/// A Filecoin address in its byte form (protocol byte, then payload), kept as it came: this
/// crate only carries payment channel addresses, it never interprets them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Address(pub Vec<u8>);

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_bytes(BytesVisitor).map(Self)
    }
}

/// Where a retrieval deal stands (go-retrieval-types' `DealStatus`): the number travels, and
/// numbers this crate does not name are kept as they are.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DealStatus(pub u64);

macro_rules! deal_statuses {
    ($($(#[$doc:meta])* $name:ident = $n:literal, $go:literal;)*) => {
        impl DealStatus {
            $($(#[$doc])* pub const $name: Self = Self($n);)*

            /// Go's name for the status (`DealStatusAccepted`, ...), if it has one.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($n => Some($go),)*
                    _ => None,
                }
            }
        }
    };
}

deal_statuses! {
    /// The deal was just proposed.
    NEW = 0, "DealStatusNew";
    /// The provider is unsealing the data.
    UNSEALING = 1, "DealStatusUnsealing";
    /// The provider has unsealed the data.
    UNSEALED = 2, "DealStatusUnsealed";
    /// The client waits for the provider to accept.
    WAIT_FOR_ACCEPTANCE = 3, "DealStatusWaitForAcceptance";
    /// The client is creating a payment channel.
    PAYMENT_CHANNEL_CREATING = 4, "DealStatusPaymentChannelCreating";
    /// The client is adding funds to its payment channel.
    PAYMENT_CHANNEL_ADDING_FUNDS = 5, "DealStatusPaymentChannelAddingFunds";
    /// The provider accepted the proposal: data follows.
    ACCEPTED = 6, "DealStatusAccepted";
    /// The provider wants the unseal price paid first.
    FUNDS_NEEDED_UNSEAL = 7, "DealStatusFundsNeededUnseal";
    /// The deal is failing.
    FAILING = 8, "DealStatusFailing";
    /// The provider refused the proposal (the response's message says why).
    REJECTED = 9, "DealStatusRejected";
    /// The provider wants a payment before sending more.
    FUNDS_NEEDED = 10, "DealStatusFundsNeeded";
    /// The client is sending funds.
    SEND_FUNDS = 11, "DealStatusSendFunds";
    /// The client is sending the last payment.
    SEND_FUNDS_LAST_PAYMENT = 12, "DealStatusSendFundsLastPayment";
    /// Data is moving.
    ONGOING = 13, "DealStatusOngoing";
    /// The provider wants the last payment before it completes.
    FUNDS_NEEDED_LAST_PAYMENT = 14, "DealStatusFundsNeededLastPayment";
    /// The provider sent everything: the deal is done.
    COMPLETED = 15, "DealStatusCompleted";
    /// The provider does not know the deal.
    DEAL_NOT_FOUND = 16, "DealStatusDealNotFound";
    /// The deal failed (the response's message says why).
    ERRORED = 17, "DealStatusErrored";
    /// Every block arrived.
    BLOCKS_COMPLETE = 18, "DealStatusBlocksComplete";
    /// The deal is finalizing.
    FINALIZING = 19, "DealStatusFinalizing";
    /// The deal is completing.
    COMPLETING = 20, "DealStatusCompleting";
    /// The client checks that the deal completed.
    CHECK_COMPLETE = 21, "DealStatusCheckComplete";
    /// The client checks its funds.
    CHECK_FUNDS = 22, "DealStatusCheckFunds";
    /// The client lacks the funds.
    INSUFFICIENT_FUNDS = 23, "DealStatusInsufficientFunds";
    /// The client is allocating a payment channel lane.
    PAYMENT_CHANNEL_ALLOCATING_LANE = 24, "DealStatusPaymentChannelAllocatingLane";
    /// The deal is being cancelled.
    CANCELLING = 25, "DealStatusCancelling";
    /// The deal was cancelled.
    CANCELLED = 26, "DealStatusCancelled";
    /// The client retries with the legacy protocol.
    RETRY_LEGACY = 27, "DealStatusRetryLegacy";
    /// The client waits for acceptance on the legacy protocol.
    WAIT_FOR_ACCEPTANCE_LEGACY = 28, "DealStatusWaitForAcceptanceLegacy";
    /// The client waits for the last blocks.
    CLIENT_WAITING_FOR_LAST_BLOCKS = 29, "DealStatusWaitingForLastBlocks";
    /// The client adds the payment channel's first funds.
    PAYMENT_CHANNEL_ADDING_INITIAL_FUNDS = 30, "DealStatusPaymentChannelAddingInitialFunds";
    /// The deal is failing with an error.
    ERRORING = 31, "DealStatusErroring";
    /// The provider is rejecting the deal.
    REJECTING = 32, "DealStatusRejecting";
    /// The deal was not found and is being cleaned up.
    DEAL_NOT_FOUND_CLEANUP = 33, "DealStatusDealNotFoundCleanup";
    /// The client is finalizing its block store.
    FINALIZING_BLOCKSTORE = 34, "DealStatusFinalizingBlockstore";
}

impl DealStatus {
    /// Whether the provider asks for money (unseal, interval or last payment).
    pub fn asks_for_payment(self) -> bool {
        matches!(
            self,
            Self::FUNDS_NEEDED | Self::FUNDS_NEEDED_LAST_PAYMENT | Self::FUNDS_NEEDED_UNSEAL
        )
    }
}

impl fmt::Display for DealStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "DealStatus({})", self.0),
        }
    }
}

impl fmt::Debug for DealStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self} ({})", self.0)
    }
}

/// The terms a client proposes (go-retrieval-types' `Params`). Keys in canonical order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// The piece holding the payload, if the client knows it (`null` otherwise).
    #[serde(rename = "PieceCID")]
    pub piece_cid: Option<Cid>,
    /// The selector of the part of the DAG wanted (`null`: the whole DAG).
    #[serde(rename = "Selector")]
    pub selector: Option<Ipld>,
    /// What the client pays for unsealing.
    #[serde(rename = "UnsealPrice", default)]
    pub unseal_price: TokenAmount,
    /// What the client pays per byte.
    #[serde(rename = "PricePerByte")]
    pub price_per_byte: TokenAmount,
    /// Bytes between payments.
    #[serde(rename = "PaymentInterval")]
    pub payment_interval: u64,
    /// How much the interval grows after each payment.
    #[serde(rename = "PaymentIntervalIncrease")]
    pub payment_interval_increase: u64,
}

impl Params {
    /// The terms of a free retrieval of what `selector` chooses (`None`: the whole DAG): zero
    /// prices, no piece, no payment interval.
    pub fn free(selector: Option<&DagCbor>) -> Result<Self, NodeError> {
        Ok(Self {
            piece_cid: None,
            selector: selector.map(DagCbor::to_ipld).transpose()?,
            unseal_price: TokenAmount::ZERO,
            price_per_byte: TokenAmount::ZERO,
            payment_interval: 0,
            payment_interval_increase: 0,
        })
    }

    /// Whether the client offers to pay nothing at all.
    pub fn is_free(&self) -> bool {
        self.price_per_byte.is_zero() && self.unseal_price.is_zero()
    }

    /// The selector as DAG-CBOR (`None` when the proposal names none).
    pub fn selector_cbor(&self) -> Result<Option<DagCbor>, NodeError> {
        self.selector.as_ref().map(DagCbor::from_ipld).transpose()
    }
}

/// A client's retrieval proposal, the voucher of its pull (`RetrievalDealProposal/1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DealProposal {
    /// The deal's id, the client's choice.
    #[serde(rename = "ID")]
    pub id: DealId,
    /// The terms.
    #[serde(rename = "Params")]
    pub params: Params,
    /// The root of the DAG to retrieve.
    #[serde(rename = "PayloadCID")]
    pub payload_cid: Cid,
}

impl Registerable for DealProposal {
    const TYPE: &'static str = "RetrievalDealProposal/1";
}

/// A provider's answer about a deal, the voucher result of its responses
/// (`RetrievalDealResponse/1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealResponse {
    /// The deal's id, as proposed.
    #[serde(rename = "ID")]
    pub id: DealId,
    /// Where the deal stands.
    #[serde(rename = "Status")]
    pub status: DealStatus,
    /// Why, for a rejection or an error (empty otherwise).
    #[serde(rename = "Message")]
    pub message: String,
    /// What the client owes now.
    #[serde(rename = "PaymentOwed")]
    pub payment_owed: TokenAmount,
}

impl DealResponse {
    /// A response with no message and nothing owed.
    pub fn new(id: DealId, status: DealStatus) -> Self {
        Self {
            id,
            status,
            message: String::new(),
            payment_owed: TokenAmount::ZERO,
        }
    }

    /// A rejection saying why.
    pub fn rejected(id: DealId, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            ..Self::new(id, DealStatus::REJECTED)
        }
    }
}

impl Registerable for DealResponse {
    const TYPE: &'static str = "RetrievalDealResponse/1";
}

/// A client's payment on a paid deal (`RetrievalDealPayment/1`). This crate carries it but
/// makes none: the signed payment-channel voucher is kept as the IPLD node it came as.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DealPayment {
    /// The deal's id.
    #[serde(rename = "ID")]
    pub id: DealId,
    /// The payment channel's address.
    #[serde(rename = "PaymentChannel")]
    pub payment_channel: Address,
    /// The signed payment-channel voucher (a tuple), or `null`.
    #[serde(rename = "PaymentVoucher")]
    pub payment_voucher: Option<Ipld>,
}

impl Registerable for DealPayment {
    const TYPE: &'static str = "RetrievalDealPayment/1";
}

/// A proposal sent under the unversioned name `RetrievalDealProposal` (go-fil-markets before
/// v1 named its types so). Only the name differs: the body is read as a
/// [`DealProposal`] map, with a missing `UnsealPrice` taken as zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LegacyDealProposal(pub DealProposal);

impl Registerable for LegacyDealProposal {
    const TYPE: &'static str = "RetrievalDealProposal";
}

/// A response sent under the unversioned name `RetrievalDealResponse`; see
/// [`LegacyDealProposal`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LegacyDealResponse(pub DealResponse);

impl Registerable for LegacyDealResponse {
    const TYPE: &'static str = "RetrievalDealResponse";
}

/// The proposal type names a provider accepts: `RetrievalDealProposal/1` and the legacy name.
pub const PROPOSAL_TYPES: [&str; 2] = [DealProposal::TYPE, LegacyDealProposal::TYPE];

/// The response type names a client accepts: `RetrievalDealResponse/1` and the legacy name.
pub const RESPONSE_TYPES: [&str; 2] = [DealResponse::TYPE, LegacyDealResponse::TYPE];

/// Reads a proposal sent under either of [`PROPOSAL_TYPES`].
pub fn proposal_of(voucher: &datatransfer_types::Voucher) -> Result<DealProposal, VoucherError> {
    match voucher.type_id.as_str() {
        DealProposal::TYPE | LegacyDealProposal::TYPE => {
            voucher.node.decode().map_err(VoucherError::Decode)
        }
        other => Err(VoucherError::NotRetrieval(other.to_owned())),
    }
}

/// Reads a response sent under either of [`RESPONSE_TYPES`].
pub fn response_of(
    result: &datatransfer_types::VoucherResult,
) -> Result<DealResponse, VoucherError> {
    match result.type_id.as_str() {
        DealResponse::TYPE | LegacyDealResponse::TYPE => {
            result.node.decode().map_err(VoucherError::Decode)
        }
        other => Err(VoucherError::NotRetrieval(other.to_owned())),
    }
}

/// A voucher or voucher result that is not the retrieval type asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VoucherError {
    /// Its type is not a retrieval type.
    #[error("{0:?} is not a retrieval voucher type")]
    NotRetrieval(String),
    /// Its body does not decode as the type it names.
    #[error("{0}")]
    Decode(NodeError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use datatransfer_types::TypedNode;
    use proptest::prelude::*;

    fn root() -> Cid {
        "bafkreiaxnnnb7qz2focittuqq3ya25q7rcv3bqynnczfzako47346wosmu"
            .parse()
            .expect("cid")
    }

    #[test]
    fn token_amounts_travel_as_filecoin_big_integers() {
        assert_eq!(TokenAmount::ZERO.to_bytes(), Vec::<u8>::new());
        assert_eq!(TokenAmount::from_atto(1).to_bytes(), [0, 1]);
        assert_eq!(TokenAmount::from_atto(256).to_bytes(), [0, 1, 0]);
        assert_eq!(TokenAmount::from_atto(-255).to_bytes(), [1, 255]);
        assert_eq!(
            TokenAmount::from_bytes(&[0, 0, 0, 7]),
            Ok(TokenAmount::from_atto(7))
        );
        assert_eq!(TokenAmount::from_bytes(&[0]), Ok(TokenAmount::ZERO));
        assert_eq!(
            TokenAmount::from_bytes(&[2, 1]),
            Err(TokenAmountError::Sign(2))
        );
        let huge = [&[0u8][..], &[0xff; 17][..]].concat();
        assert_eq!(
            TokenAmount::from_bytes(&huge),
            Err(TokenAmountError::TooLarge(17))
        );
        // 2^127 fits as a negative number only.
        let edge = [&[0u8, 0x80][..], &[0; 15][..]].concat();
        assert_eq!(
            TokenAmount::from_bytes(&edge),
            Err(TokenAmountError::TooLarge(16))
        );
        let mut negative = edge.clone();
        negative[0] = 1;
        assert_eq!(
            TokenAmount::from_bytes(&negative),
            Ok(TokenAmount::from_atto(i128::MIN))
        );
    }

    proptest! {
        #[test]
        fn every_token_amount_round_trips(atto in any::<i128>()) {
            let t = TokenAmount::from_atto(atto);
            prop_assert_eq!(TokenAmount::from_bytes(&t.to_bytes()), Ok(t));
            let node = DagCbor::encode(&t).expect("encodes");
            prop_assert_eq!(node.decode::<TokenAmount>().expect("decodes"), t);
        }
    }

    #[test]
    fn a_free_proposal_has_its_keys_in_canonical_order_and_round_trips() {
        let p = DealProposal {
            id: 5,
            params: Params::free(None).expect("params"),
            payload_cid: root(),
        };
        let v = TypedNode::encode(&p).expect("encodes");
        assert_eq!(v.type_id.as_str(), "RetrievalDealProposal/1");
        let ipld = v.node.to_ipld().expect("ipld");
        let Ipld::Map(outer) = &ipld else {
            panic!("{ipld:?}")
        };
        assert_eq!(outer.len(), 3);
        // The bytes: a 3-entry map whose first key is "ID" (shortest first).
        assert_eq!(&v.node.as_bytes()[..4], &[0xa3, 0x62, b'I', b'D']);
        let back = proposal_of(&v).expect("decodes");
        assert_eq!(back, p);
        assert!(back.params.is_free());
    }

    #[test]
    fn a_legacy_named_proposal_without_an_unseal_price_is_read_as_free_in_unseal() {
        // A map with the v1 fields but no UnsealPrice, under the unversioned name.
        let body = Ipld::Map(
            [
                ("ID".to_owned(), Ipld::Integer(9)),
                ("PayloadCID".to_owned(), Ipld::Link(root())),
                (
                    "Params".to_owned(),
                    Ipld::Map(
                        [
                            ("PieceCID".to_owned(), Ipld::Null),
                            ("Selector".to_owned(), Ipld::Null),
                            ("PricePerByte".to_owned(), Ipld::Bytes(vec![])),
                            ("PaymentInterval".to_owned(), Ipld::Integer(0)),
                            ("PaymentIntervalIncrease".to_owned(), Ipld::Integer(0)),
                        ]
                        .into(),
                    ),
                ),
            ]
            .into(),
        );
        let v = TypedNode::new(
            LegacyDealProposal::TYPE.into(),
            DagCbor::from_ipld(&body).expect("node"),
        );
        let p = proposal_of(&v).expect("decodes");
        assert_eq!(p.id, 9);
        assert_eq!(p.params.unseal_price, TokenAmount::ZERO);
        assert_eq!(p.params.selector, None);
        let other = TypedNode::new("interop/voucher/1".into(), v.node.clone());
        assert!(matches!(
            proposal_of(&other),
            Err(VoucherError::NotRetrieval(_))
        ));
    }

    #[test]
    fn a_response_with_a_bad_token_amount_is_a_decode_error_not_a_panic() {
        let body = Ipld::Map(
            [
                ("ID".to_owned(), Ipld::Integer(1)),
                ("Status".to_owned(), Ipld::Integer(9)),
                ("Message".to_owned(), Ipld::String("no".into())),
                ("PaymentOwed".to_owned(), Ipld::Bytes(vec![7, 1])),
            ]
            .into(),
        );
        let r = TypedNode::new(
            DealResponse::TYPE.into(),
            DagCbor::from_ipld(&body).expect("node"),
        );
        let e = response_of(&r).expect_err("bad sign byte");
        assert!(e.to_string().contains("sign byte"), "{e}");
    }

    #[test]
    fn statuses_have_go_names_and_unknown_ones_survive() {
        assert_eq!(DealStatus::ACCEPTED.to_string(), "DealStatusAccepted");
        assert_eq!(DealStatus::COMPLETED.0, 15);
        assert_eq!(DealStatus::CANCELLED.0, 26);
        assert_eq!(DealStatus(99).to_string(), "DealStatus(99)");
        assert!(DealStatus::FUNDS_NEEDED_LAST_PAYMENT.asks_for_payment());
        assert!(!DealStatus::ACCEPTED.asks_for_payment());
        let node = DagCbor::encode(&DealStatus(99)).expect("encodes");
        assert_eq!(
            node.decode::<DealStatus>().expect("decodes"),
            DealStatus(99)
        );
    }
}
