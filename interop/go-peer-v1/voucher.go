package main

// The v1 voucher and voucher-result types.
//
// go-data-transfer v1 identifies a voucher type by a Go type: the registry
// is keyed by the string the type's Type() method returns, a message's VTyp
// field is that string, and on receipt the registered Go type is
// instantiated (reflect.New) and decoded from the DAG-CBOR voucher with its
// UnmarshalCBOR (cbor-gen style), after which voucher.Type() of the decoded
// value picks the validator. So the identifier is fixed per Go type at
// compile time; this peer has exactly two:
//
//	interop/voucher/1  {"deal": int, "paid": int}
//	interop/result/1   {"owed": int, "rejected": string}
//
// Both are encoded by hand as DAG-CBOR maps in canonical key order
// (length-first, then bytewise: deal < paid, owed < rejected), the same
// bytes go-ipld-prime's dagcbor writes for the DAG-JSON value
// {"deal":D,"paid":P}. Every field is optional so that a value round-trips
// exactly (an empty map stays empty); unknown keys are refused.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	datatransfer "github.com/filecoin-project/go-data-transfer"
	"github.com/filecoin-project/go-data-transfer/encoding"
	"github.com/ipld/go-ipld-prime"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/codec/dagjson"
	"github.com/ipld/go-ipld-prime/datamodel"
	basicnode "github.com/ipld/go-ipld-prime/node/basicnode"
)

const (
	voucherType = datatransfer.TypeIdentifier("interop/voucher/1")
	resultType  = datatransfer.TypeIdentifier("interop/result/1")
)

// InteropVoucher is the request and payment voucher.
type InteropVoucher struct {
	Deal *int64
	Paid *int64
}

// InteropResult is a provider's voucher result: a payment request or a rejection reason.
type InteropResult struct {
	Owed     *int64
	Rejected *string
}

var (
	_ datatransfer.Voucher       = (*InteropVoucher)(nil)
	_ datatransfer.VoucherResult = (*InteropResult)(nil)
)

func (*InteropVoucher) Type() datatransfer.TypeIdentifier { return voucherType }
func (*InteropResult) Type() datatransfer.TypeIdentifier  { return resultType }

func i64(v int64) *int64   { return &v }
func str(s string) *string { return &s }

// ---- DAG-CBOR encoding ----

func cborHeader(buf *bytes.Buffer, major byte, n uint64) {
	m := major << 5
	switch {
	case n < 24:
		buf.WriteByte(m | byte(n))
	case n <= 0xff:
		buf.WriteByte(m | 24)
		buf.WriteByte(byte(n))
	case n <= 0xffff:
		buf.WriteByte(m | 25)
		buf.Write([]byte{byte(n >> 8), byte(n)})
	case n <= 0xffffffff:
		buf.WriteByte(m | 26)
		buf.Write([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	default:
		buf.WriteByte(m | 27)
		for i := 7; i >= 0; i-- {
			buf.WriteByte(byte(n >> (8 * i)))
		}
	}
}

func cborText(buf *bytes.Buffer, s string) {
	cborHeader(buf, 3, uint64(len(s)))
	buf.WriteString(s)
}

func cborInt(buf *bytes.Buffer, v int64) {
	if v >= 0 {
		cborHeader(buf, 0, uint64(v))
	} else {
		cborHeader(buf, 1, uint64(-1-v))
	}
}

func (v *InteropVoucher) MarshalCBOR(w io.Writer) error {
	var buf bytes.Buffer
	n := 0
	if v.Deal != nil {
		n++
	}
	if v.Paid != nil {
		n++
	}
	cborHeader(&buf, 5, uint64(n))
	if v.Deal != nil {
		cborText(&buf, "deal")
		cborInt(&buf, *v.Deal)
	}
	if v.Paid != nil {
		cborText(&buf, "paid")
		cborInt(&buf, *v.Paid)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

func (r *InteropResult) MarshalCBOR(w io.Writer) error {
	var buf bytes.Buffer
	n := 0
	if r.Owed != nil {
		n++
	}
	if r.Rejected != nil {
		n++
	}
	cborHeader(&buf, 5, uint64(n))
	if r.Owed != nil {
		cborText(&buf, "owed")
		cborInt(&buf, *r.Owed)
	}
	if r.Rejected != nil {
		cborText(&buf, "rejected")
		cborText(&buf, *r.Rejected)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// ---- decoding (DAG-CBOR or DAG-JSON, via go-ipld-prime's data model) ----

func (v *InteropVoucher) UnmarshalCBOR(r io.Reader) error {
	nd, err := decodeNode(r, dagcbor.Decode)
	if err != nil {
		return fmt.Errorf("%s: %w", voucherType, err)
	}
	return v.fromNode(nd)
}

func (r *InteropResult) UnmarshalCBOR(rd io.Reader) error {
	nd, err := decodeNode(rd, dagcbor.Decode)
	if err != nil {
		return fmt.Errorf("%s: %w", resultType, err)
	}
	return r.fromNode(nd)
}

func decodeNode(r io.Reader, dec ipld.Decoder) (datamodel.Node, error) {
	nb := basicnode.Prototype.Any.NewBuilder()
	if err := dec(nb, r); err != nil {
		return nil, err
	}
	return nb.Build(), nil
}

// eachField walks a map node, calling f for every key; unknown keys are an error.
func eachField(nd datamodel.Node, what datatransfer.TypeIdentifier, f func(k string, v datamodel.Node) (bool, error)) error {
	if nd.Kind() != datamodel.Kind_Map {
		return fmt.Errorf("%s: want a map, got %s", what, nd.Kind())
	}
	it := nd.MapIterator()
	for !it.Done() {
		k, v, err := it.Next()
		if err != nil {
			return err
		}
		ks, err := k.AsString()
		if err != nil {
			return err
		}
		known, err := f(ks, v)
		if err != nil {
			return fmt.Errorf("%s.%s: %w", what, ks, err)
		}
		if !known {
			return fmt.Errorf("%s: unknown field %q", what, ks)
		}
	}
	return nil
}

func (v *InteropVoucher) fromNode(nd datamodel.Node) error {
	*v = InteropVoucher{}
	return eachField(nd, voucherType, func(k string, f datamodel.Node) (bool, error) {
		switch k {
		case "deal", "paid":
			i, err := f.AsInt()
			if err != nil {
				return true, err
			}
			if k == "deal" {
				v.Deal = i64(i)
			} else {
				v.Paid = i64(i)
			}
			return true, nil
		}
		return false, nil
	})
}

func (r *InteropResult) fromNode(nd datamodel.Node) error {
	*r = InteropResult{}
	return eachField(nd, resultType, func(k string, f datamodel.Node) (bool, error) {
		switch k {
		case "owed":
			i, err := f.AsInt()
			if err != nil {
				return true, err
			}
			r.Owed = i64(i)
			return true, nil
		case "rejected":
			s, err := f.AsString()
			if err != nil {
				return true, err
			}
			r.Rejected = str(s)
			return true, nil
		}
		return false, nil
	})
}

// ---- JSON (the harness's {"type":..,"value":<DAG-JSON>}) ----

type voucherJSON struct {
	Type  string          `json:"type"`
	Value json.RawMessage `json:"value"`
}

// toVoucherJSON renders what go-data-transfer encodes for v (its DAG-CBOR,
// shown as DAG-JSON); nil for no voucher.
func toVoucherJSON(v datatransfer.Registerable) *voucherJSON {
	if v == nil {
		return nil
	}
	val := json.RawMessage("null")
	nd, err := encoding.EncodeToNode(v)
	if err == nil {
		var b []byte
		if b, err = ipld.Encode(nd, dagjson.Encode); err == nil {
			val = b
		}
	}
	if err != nil {
		val, _ = json.Marshal("<encode error: " + err.Error() + ">")
	}
	return &voucherJSON{Type: string(v.Type()), Value: val}
}

// toVoucher parses a harness voucher; only interop/voucher/1 exists in v1
// (voucher types are Go types).
func (j *voucherJSON) toVoucher() (*InteropVoucher, error) {
	if j == nil {
		return nil, errors.New("missing voucher")
	}
	if datatransfer.TypeIdentifier(j.Type) != voucherType {
		return nil, fmt.Errorf("voucher type %q: go-data-transfer v1 voucher types are Go types; this peer only has %q", j.Type, voucherType)
	}
	raw := bytes.TrimSpace(j.Value)
	if len(raw) == 0 || string(raw) == "null" {
		raw = []byte("{}")
	}
	nd, err := decodeNode(bytes.NewReader(raw), dagjson.Decode)
	if err != nil {
		return nil, fmt.Errorf("voucher value (dag-json): %w", err)
	}
	v := &InteropVoucher{}
	if err := v.fromNode(nd); err != nil {
		return nil, err
	}
	return v, nil
}
