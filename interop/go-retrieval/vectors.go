package main

// `go-retrieval vectors`: golden dag-cbor encodings of the retrieval-market
// vouchers of go-retrieval-types v1.2.0, one JSON line each:
//
//	{"name":"..","type":"RetrievalDealProposal/1","hex":"..","fields":{...}}
//
// hex is ipld.Encode(BindnodeRegistry.TypeToNode(&v), dagcbor.Encode). Every
// vector is checked before it is printed:
//   - decoding hex back (dag-cbor -> basicnode -> XFromNode, as
//     go-data-transfer and lassie decode vouchers) gives the same fields as
//     the Go value the vector was built from;
//   - the bytes occur verbatim inside the go-data-transfer v2 message that
//     carries the value (a pull request for proposals and payments, a New
//     response for deal responses), i.e. they are exactly what Go puts on
//     the wire.
//
// Fixed inputs:
//
//	payload CID  CIDv1 raw sha2-256("interop")
//	             = bafkreid3qss2f5en43dcgtoknq53imyuxipbihkob42cmouap5kh3gsodm
//	piece CID    CIDv1 fil-commitment-unsealed, sha2-256-trunc254-padded of
//	             sha2-256("interop piece") with the top two bits of the last
//	             byte cleared
//	addresses    printed with go-address's default network (mainnet, "f")

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"reflect"

	"github.com/filecoin-project/go-address"
	datatransfer "github.com/filecoin-project/go-data-transfer/v2"
	dtmessage "github.com/filecoin-project/go-data-transfer/v2/message"
	retrievaltypes "github.com/filecoin-project/go-retrieval-types"
	"github.com/filecoin-project/go-state-types/abi"
	"github.com/filecoin-project/go-state-types/big"
	paychtypes "github.com/filecoin-project/go-state-types/builtin/v8/paych"
	"github.com/filecoin-project/go-state-types/crypto"
	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/datamodel"
	selectorparse "github.com/ipld/go-ipld-prime/traversal/selector/parse"
	"github.com/multiformats/go-multihash"
)

type vectorLine struct {
	Name   string         `json:"name"`
	Type   string         `json:"type"`
	Hex    string         `json:"hex"`
	Fields map[string]any `json:"fields"`
}

type vecInputs struct {
	payload cid.Cid
	piece   cid.Cid
}

func newVecInputs() (*vecInputs, error) {
	payload, err := cid.NewPrefixV1(cid.Raw, multihash.SHA2_256).Sum([]byte("interop"))
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256([]byte("interop piece"))
	digest[31] &= 0x3f // a valid fr32 commitment has the top two bits clear
	mh, err := multihash.Encode(digest[:], multihash.SHA2_256_TRUNC254_PADDED)
	if err != nil {
		return nil, err
	}
	return &vecInputs{payload: payload, piece: cid.NewCidV1(cid.FilCommitmentUnsealed, mh)}, nil
}

func tokens(s string) abi.TokenAmount {
	b, err := big.FromString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func mustParams(sel datamodel.Node, piece *cid.Cid, price abi.TokenAmount, interval, increase uint64, unseal abi.TokenAmount) retrievaltypes.Params {
	p, err := retrievaltypes.NewParamsV1(price, interval, increase, sel, piece, unseal)
	if err != nil {
		panic(err)
	}
	return p
}

type vecDef struct {
	name  string
	typ   datatransfer.TypeIdentifier
	value any // pointer to a go-retrieval-types value
}

func vectorDefs(in *vecInputs) ([]vecDef, error) {
	explore := selectorparse.CommonSelector_ExploreAllRecursively
	matcher := selectorparse.CommonSelector_MatchPoint
	piece := in.piece

	idAddr, err := address.NewIDAddress(1234)
	if err != nil {
		return nil, err
	}
	// f1: secp256k1 address of a fixed 65-byte "public key" (the address is
	// blake2b-160 of it; the key does not have to be a valid curve point).
	pub := make([]byte, 65)
	pub[0] = 0x04
	for i := 1; i < len(pub); i++ {
		pub[i] = byte(i)
	}
	secpAddr, err := address.NewSecp256k1Address(pub)
	if err != nil {
		return nil, err
	}
	actorAddr, err := address.NewActorAddress([]byte("interop paych"))
	if err != nil {
		return nil, err
	}
	sigData := make([]byte, 65)
	for i := range sigData {
		sigData[i] = byte(0xa0 + i%16)
	}

	proposal := func(id uint64, params retrievaltypes.Params) *retrievaltypes.DealProposal {
		return &retrievaltypes.DealProposal{PayloadCID: in.payload, ID: retrievaltypes.DealID(id), Params: params}
	}
	response := func(status retrievaltypes.DealStatus, id uint64, owed abi.TokenAmount, msg string) *retrievaltypes.DealResponse {
		return &retrievaltypes.DealResponse{Status: status, ID: retrievaltypes.DealID(id), PaymentOwed: owed, Message: msg}
	}
	zero := big.Zero()

	defs := []vecDef{
		// ---- DealProposal ----
		{"proposal/free_explore_all_id0", retrievaltypes.DealProposalType,
			proposal(0, mustParams(explore, nil, zero, 0, 0, zero))},
		{"proposal/free_explore_all_id_max_int64", retrievaltypes.DealProposalType,
			proposal(math.MaxInt64, mustParams(explore, nil, zero, 0, 0, zero))},
		{"proposal/free_explore_all_id_max_uint64", retrievaltypes.DealProposalType,
			proposal(math.MaxUint64, mustParams(explore, nil, zero, 0, 0, zero))},
		{"proposal/paid_piece_cid_matcher_big_unseal", retrievaltypes.DealProposalType,
			proposal(42, mustParams(matcher, &piece, tokens("1000"), 1<<20, 1<<18,
				tokens("123456789012345678901234567890")))}, // > 2^64
		{"proposal/null_selector", retrievaltypes.DealProposalType,
			&retrievaltypes.DealProposal{PayloadCID: in.payload, ID: 7, Params: retrievaltypes.Params{
				PricePerByte: zero, UnsealPrice: zero}}}, // Selector.Node nil -> null
		// what lassie v0.25.0 proposes: NewParamsV1(big.Zero(), 0, 0, selector, nil, big.Zero())
		{"proposal/lassie_style_id_1234567890", retrievaltypes.DealProposalType,
			proposal(1234567890, mustParams(explore, nil, big.Zero(), 0, 0, big.Zero()))},

		// ---- DealResponse, one per interesting status ----
		{"response/accepted", retrievaltypes.DealResponseType,
			response(retrievaltypes.DealStatusAccepted, 42, zero, "")},
		{"response/rejected_with_message", retrievaltypes.DealResponseType,
			response(retrievaltypes.DealStatusRejected, 42, zero, "no thanks")},
		{"response/funds_needed", retrievaltypes.DealResponseType,
			response(retrievaltypes.DealStatusFundsNeeded, 42, tokens("1000"), "")},
		{"response/funds_needed_last_payment", retrievaltypes.DealResponseType,
			response(retrievaltypes.DealStatusFundsNeededLastPayment, 42, tokens("2048"), "")},
		{"response/completed", retrievaltypes.DealResponseType,
			response(retrievaltypes.DealStatusCompleted, 42, zero, "")},
		{"response/errored_with_message", retrievaltypes.DealResponseType,
			response(retrievaltypes.DealStatusErrored, 42, zero, "something went wrong")},
		{"response/cancelled", retrievaltypes.DealResponseType,
			response(retrievaltypes.DealStatusCancelled, 42, zero, "")},
		// PaymentOwed left unset (nil big.Int): encodes like zero
		{"response/completed_nil_payment_owed", retrievaltypes.DealResponseType,
			&retrievaltypes.DealResponse{Status: retrievaltypes.DealStatusCompleted, ID: 1}},

		// ---- TokenAmount edge cases (through PaymentOwed) ----
		{"response/payment_owed_0", retrievaltypes.DealResponseType,
			response(retrievaltypes.DealStatusFundsNeeded, 1, tokens("0"), "")},
		{"response/payment_owed_1", retrievaltypes.DealResponseType,
			response(retrievaltypes.DealStatusFundsNeeded, 1, tokens("1"), "")},
		{"response/payment_owed_255", retrievaltypes.DealResponseType,
			response(retrievaltypes.DealStatusFundsNeeded, 1, tokens("255"), "")},
		{"response/payment_owed_256", retrievaltypes.DealResponseType,
			response(retrievaltypes.DealStatusFundsNeeded, 1, tokens("256"), "")},
		{"response/payment_owed_1e18", retrievaltypes.DealResponseType,
			response(retrievaltypes.DealStatusFundsNeeded, 1, tokens("1000000000000000000"), "")},
		{"response/payment_owed_2pow64", retrievaltypes.DealResponseType,
			response(retrievaltypes.DealStatusFundsNeeded, 1, tokens("18446744073709551616"), "")},
		{"response/payment_owed_negative_1", retrievaltypes.DealResponseType,
			response(retrievaltypes.DealStatusFundsNeeded, 1, tokens("-1"), "")},
		{"response/payment_owed_negative_256", retrievaltypes.DealResponseType,
			response(retrievaltypes.DealStatusFundsNeeded, 1, tokens("-256"), "")},

		// ---- DealPayment ----
		{"payment/id_address_nil_voucher", retrievaltypes.DealPaymentType,
			&retrievaltypes.DealPayment{ID: 42, PaymentChannel: idAddr}},
		{"payment/secp256k1_address_nil_voucher", retrievaltypes.DealPaymentType,
			&retrievaltypes.DealPayment{ID: 43, PaymentChannel: secpAddr}},
		{"payment/actor_address_signed_voucher", retrievaltypes.DealPaymentType,
			&retrievaltypes.DealPayment{ID: 44, PaymentChannel: actorAddr, PaymentVoucher: &paychtypes.SignedVoucher{
				ChannelAddr:     actorAddr,
				TimeLockMin:     1,
				TimeLockMax:     0,
				SecretHash:      []byte{},
				Lane:            0,
				Nonce:           1,
				Amount:          tokens("1048576000"),
				MinSettleHeight: 0,
				Merges:          []paychtypes.Merge{},
				Signature:       &crypto.Signature{Type: crypto.SigTypeSecp256k1, Data: sigData},
			}}},
	}
	return defs, nil
}

// fieldsOf returns the fields object of a Go value (before encoding).
func fieldsOf(v any) (map[string]any, error) {
	switch x := v.(type) {
	case *retrievaltypes.DealProposal:
		return proposalFields(x)
	case *retrievaltypes.DealResponse:
		return responseFields(x), nil
	case *retrievaltypes.DealPayment:
		return paymentFields(x), nil
	}
	return nil, fmt.Errorf("unexpected %T", v)
}

// dtMessageBytes encodes the go-data-transfer v2 message that would carry v:
// a new pull request (proposals, payments) or a New response (results).
func dtMessageBytes(in *vecInputs, typ datatransfer.TypeIdentifier, v any) ([]byte, error) {
	tv := datatransfer.TypedVoucher{Type: typ, Voucher: retrievaltypes.BindnodeRegistry.TypeToNode(v)}
	var msg datatransfer.Message
	var err error
	if typ == retrievaltypes.DealResponseType {
		msg, err = dtmessage.NewResponse(1, true, false, &tv)
	} else {
		msg, err = dtmessage.NewRequest(1, false, true, &tv, in.payload, selectorparse.CommonSelector_ExploreAllRecursively)
	}
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := msg.ToNet(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func printVectors(w io.Writer) error {
	in, err := newVecInputs()
	if err != nil {
		return err
	}
	defs, err := vectorDefs(in)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, d := range defs {
		data, err := encodeVoucher(d.value)
		if err != nil {
			return fmt.Errorf("%s: encode: %w", d.name, err)
		}
		want, err := fieldsOf(d.value)
		if err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
		got, err := decodeVoucher(d.typ, data)
		if err != nil {
			return fmt.Errorf("%s: decoding our own bytes: %w", d.name, err)
		}
		if !sameJSON(want, got) {
			return fmt.Errorf("%s: round trip changed the value:\n  built   %s\n  decoded %s", d.name, mustJSON(want), mustJSON(got))
		}
		msg, err := dtMessageBytes(in, d.typ, d.value)
		if err != nil {
			return fmt.Errorf("%s: data-transfer message: %w", d.name, err)
		}
		if !bytes.Contains(msg, data) {
			return fmt.Errorf("%s: voucher bytes %x not found in the data-transfer message %x", d.name, data, msg)
		}
		if err := enc.Encode(vectorLine{Name: d.name, Type: string(d.typ), Hex: hex.EncodeToString(data), Fields: got}); err != nil {
			return err
		}
	}
	return nil
}

func sameJSON(a, b any) bool {
	// json.Number keeps integers exact (uint64 would not survive float64).
	parse := func(v any) (any, error) {
		d := json.NewDecoder(bytes.NewReader(mustJSON(v)))
		d.UseNumber()
		var out any
		err := d.Decode(&out)
		return out, err
	}
	x, errx := parse(a)
	y, erry := parse(b)
	return errx == nil && erry == nil && reflect.DeepEqual(x, y)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return []byte(fmt.Sprintf("<%s>", err))
	}
	return b
}
