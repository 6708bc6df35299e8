package main

// Decoding retrieval vouchers (go-retrieval-types) from dag-cbor and turning
// them into the simple "fields" JSON objects that `vectors` and `decode`
// print: CIDs as strings, token amounts / big ints as decimal strings,
// selectors as DAG-JSON strings, statuses and integers as JSON numbers
// (exact: Go prints uint64 digits, never a float), byte strings as hex.

import (
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/filecoin-project/go-address"
	datatransfer "github.com/filecoin-project/go-data-transfer/v2"
	retrievaltypes "github.com/filecoin-project/go-retrieval-types"
	"github.com/filecoin-project/go-state-types/big"
	paychtypes "github.com/filecoin-project/go-state-types/builtin/v8/paych"
	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/codec/dagjson"
	"github.com/ipld/go-ipld-prime/datamodel"
)

// typeNames maps the accepted TYPE spellings of `decode` to the voucher type
// identifiers.
var typeNames = map[string]datatransfer.TypeIdentifier{
	string(retrievaltypes.DealProposalType): retrievaltypes.DealProposalType,
	string(retrievaltypes.DealResponseType): retrievaltypes.DealResponseType,
	string(retrievaltypes.DealPaymentType):  retrievaltypes.DealPaymentType,
	"DealProposal":                          retrievaltypes.DealProposalType,
	"DealResponse":                          retrievaltypes.DealResponseType,
	"DealPayment":                           retrievaltypes.DealPaymentType,
}

// decodeVoucher decodes dag-cbor bytes as go-data-transfer does (into a
// basicnode, which go-retrieval-types then binds to its Go type) and returns
// the fields object.
func decodeVoucher(typ datatransfer.TypeIdentifier, data []byte) (map[string]any, error) {
	nd, err := ipld.Decode(data, dagcbor.Decode)
	if err != nil {
		return nil, fmt.Errorf("dag-cbor: %w", err)
	}
	switch typ {
	case retrievaltypes.DealProposalType:
		p, err := retrievaltypes.DealProposalFromNode(nd)
		if err != nil {
			return nil, err
		}
		return proposalFields(p)
	case retrievaltypes.DealResponseType:
		r, err := retrievaltypes.DealResponseFromNode(nd)
		if err != nil {
			return nil, err
		}
		return responseFields(r), nil
	case retrievaltypes.DealPaymentType:
		p, err := retrievaltypes.DealPaymentFromNode(nd)
		if err != nil {
			return nil, err
		}
		return paymentFields(p), nil
	}
	return nil, fmt.Errorf("unknown type %q", typ)
}

// encodeVoucher is the encoding under test: the registry's TypeToNode, then
// go-ipld-prime's dag-cbor encoder on the node's representation (what
// ipld.Encode does with a typed node).
func encodeVoucher(v any) ([]byte, error) {
	return ipld.Encode(retrievaltypes.BindnodeRegistry.TypeToNode(v), dagcbor.Encode)
}

func proposalFields(p *retrievaltypes.DealProposal) (map[string]any, error) {
	var sel any // null when the proposal has no selector
	if p.SelectorSpecified() {
		s, err := dagJSONString(p.Selector.Node)
		if err != nil {
			return nil, fmt.Errorf("selector: %w", err)
		}
		sel = s
	}
	return map[string]any{
		"PayloadCID": cidString(p.PayloadCID),
		"ID":         uint64(p.ID),
		"Params": map[string]any{
			"Selector":                sel,
			"PieceCID":                optCidString(p.PieceCID),
			"PricePerByte":            bigString(p.PricePerByte),
			"PaymentInterval":         p.PaymentInterval,
			"PaymentIntervalIncrease": p.PaymentIntervalIncrease,
			"UnsealPrice":             bigString(p.UnsealPrice),
		},
	}, nil
}

func responseFields(r *retrievaltypes.DealResponse) map[string]any {
	return map[string]any{
		"Status":      uint64(r.Status),
		"ID":          uint64(r.ID),
		"PaymentOwed": bigString(r.PaymentOwed),
		"Message":     r.Message,
	}
}

func paymentFields(p *retrievaltypes.DealPayment) map[string]any {
	var v any
	if p.PaymentVoucher != nil {
		v = signedVoucherFields(p.PaymentVoucher)
	}
	return map[string]any{
		"ID":                  uint64(p.ID),
		"PaymentChannel":      addrString(p.PaymentChannel),
		"PaymentChannelBytes": hex.EncodeToString(p.PaymentChannel.Bytes()),
		"PaymentVoucher":      v,
	}
}

func signedVoucherFields(sv *paychtypes.SignedVoucher) map[string]any {
	var extra any
	if sv.Extra != nil {
		extra = map[string]any{
			"Actor":      addrString(sv.Extra.Actor),
			"ActorBytes": hex.EncodeToString(sv.Extra.Actor.Bytes()),
			"Method":     uint64(sv.Extra.Method),
			"Data":       hex.EncodeToString(sv.Extra.Data),
		}
	}
	merges := make([]any, 0, len(sv.Merges))
	for _, m := range sv.Merges {
		merges = append(merges, map[string]any{"Lane": m.Lane, "Nonce": m.Nonce})
	}
	var sig any
	if sv.Signature != nil {
		sig = map[string]any{"Type": uint64(sv.Signature.Type), "Data": hex.EncodeToString(sv.Signature.Data)}
	}
	return map[string]any{
		"ChannelAddr":      addrString(sv.ChannelAddr),
		"ChannelAddrBytes": hex.EncodeToString(sv.ChannelAddr.Bytes()),
		"TimeLockMin":      int64(sv.TimeLockMin),
		"TimeLockMax":      int64(sv.TimeLockMax),
		"SecretHash":       hex.EncodeToString(sv.SecretHash),
		"Extra":            extra,
		"Lane":             sv.Lane,
		"Nonce":            sv.Nonce,
		"Amount":           bigString(sv.Amount),
		"MinSettleHeight":  int64(sv.MinSettleHeight),
		"Merges":           merges,
		"Signature":        sig,
	}
}

// ---- simple forms ----

func cidString(c cid.Cid) any {
	if !c.Defined() {
		return nil
	}
	return c.String()
}

func optCidString(c *cid.Cid) any {
	if c == nil {
		return nil
	}
	return cidString(*c)
}

// bigString prints a token amount / big int in decimal; a nil big.Int (never
// set) prints as "0", which is also how it encodes.
func bigString(b big.Int) string {
	if b.Int == nil {
		return "0"
	}
	return b.String()
}

// addrString prints an address with go-address's current network prefix
// ("f" for mainnet, the library default; see vectors.go).
func addrString(a address.Address) string {
	if a == address.Undef {
		return ""
	}
	return a.String()
}

func dagJSONString(n datamodel.Node) (string, error) {
	b, err := ipld.Encode(n, dagjson.Encode)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// reencodeVoucher decodes data into the go-retrieval-types value and encodes
// that value again (Go's canonical bytes for it).
func reencodeVoucher(typ datatransfer.TypeIdentifier, data []byte) ([]byte, error) {
	nd, err := ipld.Decode(data, dagcbor.Decode)
	if err != nil {
		return nil, err
	}
	var v any
	switch typ {
	case retrievaltypes.DealProposalType:
		v, err = retrievaltypes.DealProposalFromNode(nd)
	case retrievaltypes.DealResponseType:
		v, err = retrievaltypes.DealResponseFromNode(nd)
	case retrievaltypes.DealPaymentType:
		v, err = retrievaltypes.DealPaymentFromNode(nd)
	default:
		err = fmt.Errorf("unknown type %q", typ)
	}
	if err != nil {
		return nil, err
	}
	return encodeVoucher(v)
}
