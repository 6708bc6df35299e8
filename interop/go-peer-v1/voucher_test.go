package main

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/filecoin-project/go-data-transfer/encoding"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/codec/dagjson"
)

// The hand-written encoders must write exactly what go-ipld-prime's dagcbor
// writes for the same DAG-JSON value, and decode it back.
func TestVoucherCBORMatchesDagCBOR(t *testing.T) {
	for _, js := range []string{
		`{}`, `{"deal":42,"paid":0}`, `{"deal":0}`, `{"paid":23}`, `{"paid":24}`,
		`{"deal":255,"paid":256}`, `{"deal":65535,"paid":65536}`, `{"deal":4294967295,"paid":4294967296}`,
		`{"deal":9223372036854775807,"paid":-1}`, `{"deal":-25,"paid":-9223372036854775808}`,
	} {
		v := &InteropVoucher{}
		if err := v.UnmarshalCBOR(dagcborOf(t, js)); err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		var got bytes.Buffer
		if err := v.MarshalCBOR(&got); err != nil {
			t.Fatal(err)
		}
		if want := dagcborOf(t, js).Bytes(); !bytes.Equal(got.Bytes(), want) {
			t.Errorf("%s: got %x want %x", js, got.Bytes(), want)
		}
		// Through go-data-transfer's own encoding path.
		enc, err := encoding.Encode(v)
		if err != nil || !bytes.Equal(enc, got.Bytes()) {
			t.Errorf("%s: encoding.Encode %x %v", js, enc, err)
		}
	}
	for _, js := range []string{`{}`, `{"owed":1048576}`, `{"rejected":"nope"}`, `{"owed":0,"rejected":""}`, `{"owed":-3,"rejected":"` + strings.Repeat("x", 300) + `"}`} {
		r := &InteropResult{}
		if err := r.UnmarshalCBOR(dagcborOf(t, js)); err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		var got bytes.Buffer
		if err := r.MarshalCBOR(&got); err != nil {
			t.Fatal(err)
		}
		if want := dagcborOf(t, js).Bytes(); !bytes.Equal(got.Bytes(), want) {
			t.Errorf("%s: got %x want %x", js, got.Bytes(), want)
		}
	}
	// The go-peer vector voucher {"deal":42,"paid":0}.
	var b bytes.Buffer
	(&InteropVoucher{Deal: i64(42), Paid: i64(0)}).MarshalCBOR(&b)
	if want := "a2646465616c182a647061696400"; hex.EncodeToString(b.Bytes()) != want {
		t.Errorf("got %x want %s", b.Bytes(), want)
	}
	// Unknown keys and wrong kinds are refused.
	for _, js := range []string{`{"deal":1,"x":2}`, `[1]`, `{"deal":"1"}`} {
		if err := (&InteropVoucher{}).UnmarshalCBOR(dagcborOf(t, js)); err == nil {
			t.Errorf("%s: accepted", js)
		}
	}
}

func dagcborOf(t *testing.T, js string) *bytes.Buffer {
	t.Helper()
	nd, err := decodeNode(strings.NewReader(js), dagjson.Decode)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := dagcbor.Encode(nd, &buf); err != nil {
		t.Fatal(err)
	}
	return &buf
}
