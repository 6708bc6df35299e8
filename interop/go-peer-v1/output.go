package main

// The JSON shapes of stdout lines: channel ids, vouchers and channel states
// (as in go-peer, minus the v2-only state fields). The writer itself is
// gopeerkit's (interop/gopeerkit).

import (
	"errors"
	"fmt"
	"strconv"

	datatransfer "github.com/filecoin-project/go-data-transfer"
	"github.com/libp2p/go-libp2p-core/peer"
)

type peerID = peer.ID

// ---- channel ids ----

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

// ---- channel states ----

// stateJSON is a channel state as printed in events and `status`. v1 has no
// data limit / finalization flags; initiator_paused and responder_paused are
// derived from the status (v1 keeps pauses in the status itself).
type stateJSON struct {
	Chid            chidJSON     `json:"chid"`
	Status          string       `json:"status"`
	Sent            uint64       `json:"sent"`
	Received        uint64       `json:"received"`
	Queued          uint64       `json:"queued"`
	ReceivedCids    int64        `json:"received_cids"`
	QueuedCids      int64        `json:"queued_cids"`
	SentCids        int64        `json:"sent_cids"`
	Self            string       `json:"self"`
	Other           string       `json:"other"`
	IsPull          bool         `json:"is_pull"`
	BaseCid         string       `json:"base_cid"`
	Voucher         *voucherJSON `json:"voucher"`
	VoucherResult   *voucherJSON `json:"voucher_result"`
	InitiatorPaused bool         `json:"initiator_paused"`
	ResponderPaused bool         `json:"responder_paused"`
}

func toStateJSON(st datatransfer.ChannelState) stateJSON {
	s := st.Status()
	var lastV datatransfer.Registerable
	if vs := st.Vouchers(); len(vs) > 0 {
		lastV = vs[len(vs)-1]
	}
	var lastR datatransfer.Registerable
	if rs := st.VoucherResults(); len(rs) > 0 {
		lastR = rs[len(rs)-1]
	}
	return stateJSON{
		Chid:            toChidJSON(st.ChannelID()),
		Status:          datatransfer.Statuses[s],
		Sent:            st.Sent(),
		Received:        st.Received(),
		Queued:          st.Queued(),
		ReceivedCids:    st.ReceivedCidsTotal(),
		QueuedCids:      st.QueuedCidsTotal(),
		SentCids:        st.SentCidsTotal(),
		Self:            st.SelfPeer().String(),
		Other:           st.OtherPeer().String(),
		IsPull:          st.IsPull(),
		BaseCid:         st.BaseCID().String(),
		Voucher:         toVoucherJSON(lastV),
		VoucherResult:   toVoucherJSON(lastR),
		InitiatorPaused: s == datatransfer.InitiatorPaused || s == datatransfer.BothPaused,
		ResponderPaused: s == datatransfer.ResponderPaused || s == datatransfer.BothPaused || s == datatransfer.Finalizing,
	}
}

type eventJSON struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
	stateJSON
}

// eventName is the name from datatransfer.Events; v1.15.2's map lacks
// Opened (the last event code), so it is named here.
func eventName(c datatransfer.EventCode) string {
	if name, ok := datatransfer.Events[c]; ok {
		return name
	}
	if c == datatransfer.Opened {
		return "Opened"
	}
	return fmt.Sprintf("Event%d", c)
}

// onEvent is go-data-transfer's subscriber; it must never block.
func (n *node) onEvent(ev datatransfer.Event, st datatransfer.ChannelState) {
	n.out.EmitLazy(func() any {
		return eventJSON{Type: "event", Code: eventName(ev.Code), Message: ev.Message, stateJSON: toStateJSON(st)}
	})
	n.reactToEvent(ev, st)
}
