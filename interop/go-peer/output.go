package main

// The JSON shapes of stdout lines and commands: channel ids, typed vouchers,
// channel states. The writer itself is gopeerkit's (interop/gopeerkit).

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	datatransfer "github.com/filecoin-project/go-data-transfer/v2"
	"github.com/ipld/go-ipld-prime"
	"github.com/ipld/go-ipld-prime/codec/dagjson"
	"github.com/libp2p/go-libp2p/core/peer"
)

type peerID = peer.ID

// ---- channel ids ----

// chidJSON is a channel id on the wire of this harness; the transfer id is
// a decimal string (it does not fit a JSON double).
type chidJSON struct {
	Initiator string `json:"initiator"`
	Responder string `json:"responder"`
	ID        string `json:"id"`
}

func toChidJSON(c datatransfer.ChannelID) chidJSON {
	return chidJSON{Initiator: c.Initiator.String(), Responder: c.Responder.String(), ID: strconv.FormatUint(uint64(c.ID), 10)}
}

func (c *chidJSON) toChannelID() (datatransfer.ChannelID, error) {
	if c == nil {
		return datatransfer.ChannelID{}, errors.New("missing chid")
	}
	ini, err := peer.Decode(c.Initiator)
	if err != nil {
		return datatransfer.ChannelID{}, fmt.Errorf("chid.initiator: %w", err)
	}
	resp, err := peer.Decode(c.Responder)
	if err != nil {
		return datatransfer.ChannelID{}, fmt.Errorf("chid.responder: %w", err)
	}
	id, err := strconv.ParseUint(c.ID, 10, 64)
	if err != nil {
		return datatransfer.ChannelID{}, fmt.Errorf("chid.id: %w", err)
	}
	return datatransfer.ChannelID{Initiator: ini, Responder: resp, ID: datatransfer.TransferID(id)}, nil
}

// ---- typed vouchers ----

// voucherJSON is a typed voucher / voucher result: the type identifier and
// the IPLD node as DAG-JSON, embedded as JSON.
type voucherJSON struct {
	Type  string          `json:"type"`
	Value json.RawMessage `json:"value"`
}

// toVoucherJSON returns nil (JSON null) for an absent voucher.
func toVoucherJSON(tv datatransfer.TypedVoucher) *voucherJSON {
	if tv.Voucher == nil && tv.Type == "" {
		return nil
	}
	val := json.RawMessage("null")
	if tv.Voucher != nil {
		b, err := ipld.Encode(tv.Voucher, dagjson.Encode)
		if err != nil {
			b, _ = json.Marshal("<dag-json encode error: " + err.Error() + ">")
		}
		val = b
	}
	return &voucherJSON{Type: string(tv.Type), Value: val}
}

func (v *voucherJSON) toTyped() (datatransfer.TypedVoucher, error) {
	if v == nil {
		return datatransfer.TypedVoucher{}, errors.New("missing voucher")
	}
	raw := v.Value
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = json.RawMessage("null")
	}
	nd, err := ipld.Decode(raw, dagjson.Decode)
	if err != nil {
		return datatransfer.TypedVoucher{}, fmt.Errorf("voucher value (dag-json): %w", err)
	}
	return datatransfer.TypedVoucher{Type: datatransfer.TypeIdentifier(v.Type), Voucher: nd}, nil
}

// ---- channel states ----

// stateJSON is a channel state as printed in events, `status` and `channels`.
type stateJSON struct {
	Chid                 chidJSON     `json:"chid"`
	Status               string       `json:"status"`
	Sent                 uint64       `json:"sent"`
	Received             uint64       `json:"received"`
	Queued               uint64       `json:"queued"`
	ReceivedCids         int64        `json:"received_cids"`
	QueuedCids           int64        `json:"queued_cids"`
	SentCids             int64        `json:"sent_cids"`
	Self                 string       `json:"self"`
	Other                string       `json:"other"`
	IsPull               bool         `json:"is_pull"`
	BaseCid              string       `json:"base_cid"`
	Voucher              *voucherJSON `json:"voucher"`
	VoucherResult        *voucherJSON `json:"voucher_result"`
	DataLimit            uint64       `json:"data_limit"`
	RequiresFinalization bool         `json:"requires_finalization"`
	InitiatorPaused      bool         `json:"initiator_paused"`
	ResponderPaused      bool         `json:"responder_paused"`
}

func toStateJSON(st datatransfer.ChannelState) stateJSON {
	return stateJSON{
		Chid:                 toChidJSON(st.ChannelID()),
		Status:               datatransfer.Statuses[st.Status()],
		Sent:                 st.Sent(),
		Received:             st.Received(),
		Queued:               st.Queued(),
		ReceivedCids:         st.ReceivedCidsTotal(),
		QueuedCids:           st.QueuedCidsTotal(),
		SentCids:             st.SentCidsTotal(),
		Self:                 st.SelfPeer().String(),
		Other:                st.OtherPeer().String(),
		IsPull:               st.IsPull(),
		BaseCid:              st.BaseCID().String(),
		Voucher:              toVoucherJSON(lastVoucher(st)),
		VoucherResult:        toVoucherJSON(lastVoucherResult(st)),
		DataLimit:            st.DataLimit(),
		RequiresFinalization: st.RequiresFinalization(),
		InitiatorPaused:      st.InitiatorPaused(),
		ResponderPaused:      st.ResponderPaused(),
	}
}

// lastVoucher / lastVoucherResult: go-data-transfer's LastVoucher and
// LastVoucherResult index the last element and panic on an empty list.
func lastVoucher(st datatransfer.ChannelState) datatransfer.TypedVoucher {
	vs := st.Vouchers()
	if len(vs) == 0 {
		return datatransfer.TypedVoucher{}
	}
	return vs[len(vs)-1]
}

func lastVoucherResult(st datatransfer.ChannelState) datatransfer.TypedVoucher {
	vs := st.VoucherResults()
	if len(vs) == 0 {
		return datatransfer.TypedVoucher{}
	}
	return vs[len(vs)-1]
}

// eventJSON is one {"type":"event",...} line.
type eventJSON struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
	stateJSON
}

// onEvent is go-data-transfer's subscriber. It runs on the state machine's
// notifier goroutine and must never block: it only queues work.
func (n *node) onEvent(ev datatransfer.Event, st datatransfer.ChannelState) {
	n.out.EmitLazy(func() any {
		return eventJSON{Type: "event", Code: datatransfer.Events[ev.Code], Message: ev.Message, stateJSON: toStateJSON(st)}
	})
	n.reactToEvent(ev, st) // payment automation; queues work, never blocks
}
