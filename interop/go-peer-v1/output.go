package main

// Everything that goes to stdout: the single writer goroutine with its
// unbounded queue, and the JSON shapes of channel ids, vouchers and channel
// states (as in go-peer, minus the v2-only state fields).

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"

	datatransfer "github.com/filecoin-project/go-data-transfer"
	"github.com/libp2p/go-libp2p-core/peer"
)

type peerID = peer.ID

// writer serialises every stdout line through one goroutine; emit never
// blocks on I/O, so it is safe from event callbacks and graphsync hooks.
type writer struct {
	mu     sync.Mutex
	cond   *sync.Cond
	queue  []func() any
	closed bool
	done   chan struct{}
}

func newWriter(w io.Writer) *writer {
	wr := &writer{done: make(chan struct{})}
	wr.cond = sync.NewCond(&wr.mu)
	go wr.run(bufio.NewWriter(w))
	return wr
}

func (w *writer) run(bw *bufio.Writer) {
	defer close(w.done)
	for {
		w.mu.Lock()
		for len(w.queue) == 0 && !w.closed {
			w.cond.Wait()
		}
		if len(w.queue) == 0 && w.closed {
			w.mu.Unlock()
			return
		}
		item := w.queue[0]
		w.queue[0] = nil
		w.queue = w.queue[1:]
		w.mu.Unlock()

		v := item()
		var line []byte
		var err error
		if r, ok := v.(rawLine); ok {
			line = r
		} else {
			line, err = json.Marshal(v)
		}
		if err != nil {
			line, _ = json.Marshal(map[string]any{"type": "error", "error": "marshal: " + err.Error()})
		}
		bw.Write(line)
		bw.WriteByte('\n')
		bw.Flush()
	}
}

type rawLine []byte

func (w *writer) emitLazy(f func() any) {
	w.mu.Lock()
	if !w.closed {
		w.queue = append(w.queue, f)
		w.cond.Signal()
	}
	w.mu.Unlock()
}

func (w *writer) emit(v any) { w.emitLazy(func() any { return v }) }

// emitResult prints {"type":"result","id":N,"ok":true,...fields} or
// {"type":"result","id":N,"ok":false,"error":"..."}.
func (w *writer) emitResult(id int64, fields map[string]any, err error) {
	head := fmt.Sprintf(`{"type":"result","id":%d,"ok":%t`, id, err == nil)
	if err != nil {
		msg, _ := json.Marshal(err.Error())
		w.emit(rawLine(head + `,"error":` + string(msg) + `}`))
		return
	}
	if len(fields) == 0 {
		w.emit(rawLine(head + "}"))
		return
	}
	w.emitLazy(func() any {
		body, merr := json.Marshal(fields)
		if merr != nil {
			msg, _ := json.Marshal("marshal result: " + merr.Error())
			return rawLine(fmt.Sprintf(`{"type":"result","id":%d,"ok":false,"error":%s}`, id, msg))
		}
		return rawLine(head + "," + string(body[1:]))
	})
}

func (w *writer) close() {
	w.mu.Lock()
	w.closed = true
	w.cond.Broadcast()
	w.mu.Unlock()
	<-w.done
}

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
	n.out.emitLazy(func() any {
		return eventJSON{Type: "event", Code: eventName(ev.Code), Message: ev.Message, stateJSON: toStateJSON(st)}
	})
	n.reactToEvent(ev, st)
}
