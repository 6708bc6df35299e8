package main

// Validation policy (v1 RequestValidator) and payments (v1 Revalidator).
//
// go-data-transfer v1 registers a Go type per voucher type, so the policy
// command can only change the behaviour of the one registered type,
// interop/voucher/1 (results: interop/result/1); the validator and the
// revalidator read the current policy on every call.
//
//   ValidatePull / ValidatePush: accept -> (nil, nil);
//     reject -> ({"rejected": msg}, error(msg)); restarts (isRestart) are
//     rejected when !accept or !accept_restarts ("restart rejected").
//   Revalidator (responder, pay_every > 0): OnPullDataSent (pull) /
//     OnPushDataReceived (push) add up the bytes; when the bytes neither paid
//     nor already asked for reach pay_every it returns ({"owed": those
//     bytes}, ErrPause), which go-data-transfer sends as a voucher result
//     (riding the block, for a pull) and pauses the channel. Revalidate (a voucher
//     {"deal","paid"} from the client, paid cumulative) records the payment
//     and returns ErrResume.
//   finalize: OnComplete returns ({"owed": rest}, ErrPause), rest being the
//     bytes no earlier request asked for: the Complete message is sent paused
//     and the channel goes Finalizing; the next payment resumes (completes) it.
//   Client (auto_pay): on NewVoucherResult {"owed": O} for a channel we
//     initiated, send {"deal": opening deal, "paid": cumulative sum of O}.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	datatransfer "github.com/filecoin-project/go-data-transfer"
	"github.com/filecoin-project/go-data-transfer/encoding"
	"github.com/filecoin-project/go-data-transfer/transport/graphsync/extension"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-graphsync"
	"github.com/ipld/go-ipld-prime"
)

type policy struct {
	VoucherType    string `json:"voucher_type"`
	ResultType     string `json:"result_type"`
	Accept         bool   `json:"accept"`
	RejectMessage  string `json:"reject_message"`
	PayEvery       uint64 `json:"pay_every"`
	Finalize       bool   `json:"finalize"`
	AutoPay        bool   `json:"auto_pay"`
	Manual         bool   `json:"manual"`
	AcceptRestarts bool   `json:"accept_restarts"`
}

func defaultPolicy() policy {
	return policy{
		VoucherType:    string(voucherType),
		ResultType:     string(resultType),
		Accept:         true,
		RejectMessage:  "rejected by policy",
		AcceptRestarts: true,
	}
}

type policyTable struct {
	mu sync.RWMutex
	p  policy
}

func newPolicyTable() *policyTable { return &policyTable{p: defaultPolicy()} }

func (t *policyTable) get() policy {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.p
}

func (t *policyTable) set(p policy) error {
	if datatransfer.TypeIdentifier(p.VoucherType) != voucherType {
		return fmt.Errorf("voucher_type %q: go-data-transfer v1 voucher types are Go types; this peer only has %q", p.VoucherType, voucherType)
	}
	if datatransfer.TypeIdentifier(p.ResultType) != resultType {
		return fmt.Errorf("result_type %q: this peer only has %q", p.ResultType, resultType)
	}
	if p.Manual {
		return errors.New("manual: go-data-transfer v1 has no SendVoucherResult/UpdateValidationStatus; payments are automatic (revalidator) only")
	}
	t.mu.Lock()
	t.p = p
	t.mu.Unlock()
	return nil
}

// registerTypes registers the voucher type with its validator, the result
// type and the revalidator (once; v1 refuses duplicate registrations).
func (n *node) registerTypes() error {
	if err := n.dt.RegisterVoucherType(&InteropVoucher{}, &validator{n: n}); err != nil {
		return fmt.Errorf("RegisterVoucherType: %w", err)
	}
	if err := n.dt.RegisterVoucherResultType(&InteropResult{}); err != nil {
		return fmt.Errorf("RegisterVoucherResultType: %w", err)
	}
	if err := n.dt.RegisterRevalidator(&InteropVoucher{}, &revalidator{n: n}); err != nil {
		return fmt.Errorf("RegisterRevalidator: %w", err)
	}
	return nil
}

// ---- validator ----

type validator struct{ n *node }

var _ datatransfer.RequestValidator = (*validator)(nil)

func (v *validator) validate(kind string, isRestart bool, chid datatransfer.ChannelID, voucher datatransfer.Voucher) (datatransfer.VoucherResult, error) {
	p := v.n.policies.get()
	var res datatransfer.VoucherResult
	var err error
	switch {
	case !p.Accept:
		res, err = &InteropResult{Rejected: str(p.RejectMessage)}, errors.New(p.RejectMessage)
	case isRestart && !p.AcceptRestarts:
		res, err = &InteropResult{Rejected: str("restart rejected")}, errors.New("restart rejected")
	}
	if isRestart {
		kind = "restart"
	}
	v.n.out.Emit(map[string]any{
		"type": "validated", "kind": kind, "chid": toChidJSON(chid), "accepted": err == nil,
		"voucher": toVoucherJSON(voucher),
	})
	return res, err
}

func (v *validator) ValidatePush(isRestart bool, chid datatransfer.ChannelID, sender peerID, voucher datatransfer.Voucher, baseCid cid.Cid, selector ipld.Node) (datatransfer.VoucherResult, error) {
	return v.validate("push", isRestart, chid, voucher)
}

func (v *validator) ValidatePull(isRestart bool, chid datatransfer.ChannelID, receiver peerID, voucher datatransfer.Voucher, baseCid cid.Cid, selector ipld.Node) (datatransfer.VoucherResult, error) {
	return v.validate("pull", isRestart, chid, voucher)
}

// ---- payments ----

type payState struct {
	progress   uint64      // responder: bytes queued (pull) / received (push)
	paid       uint64      // responder: cumulative bytes paid (from vouchers)
	requested  uint64      // responder: progress covered by payment requests so far
	payments   int         // responder: payments taken
	finalizing bool        // responder: final payment requested
	sentPaid   uint64      // initiator: cumulative amount paid
	expect     []dupResult // initiator: voucher results that arrive twice (see watchDuplicateResults)
}

type payments struct {
	mu sync.Mutex
	m  map[datatransfer.ChannelID]*payState
}

func newPayments() *payments { return &payments{m: make(map[datatransfer.ChannelID]*payState)} }

// with runs f on the channel's bookkeeping under the lock.
func (p *payments) with(chid datatransfer.ChannelID, f func(ps *payState)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ps := p.m[chid]
	if ps == nil {
		ps = &payState{}
		p.m[chid] = ps
	}
	f(ps)
}

// revalidator runs synchronously inside go-data-transfer (graphsync hooks,
// message handling): it only does bookkeeping and queues stdout lines.
type revalidator struct{ n *node }

var _ datatransfer.Revalidator = (*revalidator)(nil)

func (r *revalidator) onData(chid datatransfer.ChannelID, size uint64) (bool, datatransfer.VoucherResult, error) {
	if chid.Responder != r.n.host.ID() {
		return false, nil, nil
	}
	p := r.n.policies.get()
	if p.PayEvery == 0 {
		return false, nil, nil
	}
	// Ask for the bytes no earlier request covered, once they reach
	// pay_every (blocks still queued while a request is outstanding are
	// asked for by the next request, not twice).
	var owed uint64
	r.n.pay.with(chid, func(ps *payState) {
		ps.progress += size
		covered := max(ps.paid, ps.requested)
		if ps.progress > covered {
			owed = ps.progress - covered
		}
		if owed >= p.PayEvery {
			ps.requested = ps.progress
		}
	})
	if owed < p.PayEvery {
		return true, nil, nil
	}
	r.n.out.Emit(map[string]any{"type": "payment_request", "chid": toChidJSON(chid), "owed": owed, "final": false})
	return true, &InteropResult{Owed: i64(int64(owed))}, datatransfer.ErrPause
}

func (r *revalidator) OnPullDataSent(chid datatransfer.ChannelID, additionalBytesSent uint64) (bool, datatransfer.VoucherResult, error) {
	return r.onData(chid, additionalBytesSent)
}

func (r *revalidator) OnPushDataReceived(chid datatransfer.ChannelID, additionalBytesReceived uint64) (bool, datatransfer.VoucherResult, error) {
	return r.onData(chid, additionalBytesReceived)
}

func (r *revalidator) OnComplete(chid datatransfer.ChannelID) (bool, datatransfer.VoucherResult, error) {
	if chid.Responder != r.n.host.ID() {
		return false, nil, nil
	}
	p := r.n.policies.get()
	if !p.Finalize {
		return false, nil, nil
	}
	// The last data request may still be unpaid (v1 completes the graphsync
	// response even when the revalidator paused on its last block): ask only
	// for what no request has covered yet, so the client pays every byte once.
	var owed uint64
	r.n.pay.with(chid, func(ps *payState) {
		ps.finalizing = true
		covered := max(ps.paid, ps.requested)
		if ps.progress > covered {
			owed = ps.progress - covered
		}
		ps.requested = ps.progress
	})
	r.n.out.Emit(map[string]any{"type": "payment_request", "chid": toChidJSON(chid), "owed": owed, "final": true})
	return true, &InteropResult{Owed: i64(int64(owed))}, datatransfer.ErrPause
}

// Revalidate takes a payment voucher {"deal","paid"} (paid cumulative).
func (r *revalidator) Revalidate(chid datatransfer.ChannelID, voucher datatransfer.Voucher) (datatransfer.VoucherResult, error) {
	v, ok := voucher.(*InteropVoucher)
	if !ok || v.Paid == nil || *v.Paid < 0 {
		return nil, errors.New("not a payment voucher")
	}
	var owed uint64
	var count int
	var final bool
	r.n.pay.with(chid, func(ps *payState) {
		ps.paid = uint64(*v.Paid)
		ps.payments++
		count = ps.payments
		final = ps.finalizing
		if ps.progress > ps.paid {
			owed = ps.progress - ps.paid
		}
	})
	r.n.out.Emit(map[string]any{"type": "payment", "chid": toChidJSON(chid), "paid": *v.Paid, "owed": owed, "payments": count, "final": final})
	return nil, datatransfer.ErrResume
}

// ---- client side: auto_pay ----

// serialWorker runs submitted functions one at a time per channel, off the
// event callback's goroutine.
type serialWorker struct {
	mu      sync.Mutex
	queues  map[datatransfer.ChannelID][]func()
	running map[datatransfer.ChannelID]bool
}

func newSerialWorker() *serialWorker {
	return &serialWorker{queues: make(map[datatransfer.ChannelID][]func()), running: make(map[datatransfer.ChannelID]bool)}
}

func (w *serialWorker) submit(chid datatransfer.ChannelID, f func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.queues[chid] = append(w.queues[chid], f)
	if !w.running[chid] {
		w.running[chid] = true
		go w.run(chid)
	}
}

func (w *serialWorker) run(chid datatransfer.ChannelID) {
	for {
		w.mu.Lock()
		q := w.queues[chid]
		if len(q) == 0 {
			delete(w.queues, chid)
			delete(w.running, chid)
			w.mu.Unlock()
			return
		}
		f := q[0]
		w.queues[chid] = q[1:]
		w.mu.Unlock()
		f()
	}
}

// dupResult is a voucher result go-data-transfer v1 will report twice.
type dupResult struct {
	owed uint64
	seen bool
}

// watchDuplicateResults registers a graphsync incoming response hook (before
// go-data-transfer's own) that spots voucher results go-data-transfer will
// process twice.
//
// A v1 provider attaches the DT message it sends with a block (e.g. the
// paused VoucherResult carrying a payment request) under both
// fil/data-transfer/outgoing-block/1.1 and fil/data-transfer/1.1, and the
// v1 client's incoming response hook processes the message under
// incoming-request/1.1 (else 1.1) and then, again, the one under
// outgoing-block/1.1: NewVoucherResult fires twice for one request. For every
// response carrying a non-empty voucher result in both places, one copy of
// that result (same owed) is expected to come twice; reactToEvent pays the
// first copy and reports the second as a duplicate_result line.
func (n *node) watchDuplicateResults() {
	dec, err := encoding.NewDecoder(&InteropResult{})
	if err != nil {
		panic(err)
	}
	owedOf := func(resp graphsync.ResponseData, names ...graphsync.ExtensionName) (datatransfer.TransferID, uint64, bool) {
		msg, err := extension.GetTransferData(resp, names)
		if err != nil || msg == nil || msg.IsRequest() {
			return 0, 0, false
		}
		r := msg.(datatransfer.Response)
		if !r.IsVoucherResult() || r.EmptyVoucherResult() || r.VoucherResultType() != resultType {
			return 0, 0, false
		}
		v, err := r.VoucherResult(dec)
		if err != nil {
			return 0, 0, false
		}
		res, ok := v.(*InteropResult)
		if !ok || res.Owed == nil || *res.Owed < 0 {
			return 0, 0, false
		}
		return msg.TransferID(), uint64(*res.Owed), true
	}
	n.gs.RegisterIncomingResponseHook(func(p peerID, resp graphsync.ResponseData, ha graphsync.IncomingResponseHookActions) {
		id1, owed1, ok1 := owedOf(resp, extension.ExtensionIncomingRequest1_1, extension.ExtensionDataTransfer1_1)
		id2, owed2, ok2 := owedOf(resp, extension.ExtensionOutgoingBlock1_1)
		if !ok1 || !ok2 || id1 != id2 || owed1 != owed2 {
			return
		}
		chid := datatransfer.ChannelID{Initiator: n.host.ID(), Responder: p, ID: id1}
		n.pay.with(chid, func(ps *payState) {
			ps.expect = append(ps.expect, dupResult{owed: owed1})
		})
	})
}

// reactToEvent is called from the event callback; it only does bookkeeping
// and queues work (auto_pay: answer {"owed": O} with a payment).
func (n *node) reactToEvent(ev datatransfer.Event, st datatransfer.ChannelState) {
	chid := st.ChannelID()
	if chid.Initiator != n.host.ID() {
		return
	}
	if ev.Code != datatransfer.NewVoucherResult {
		return
	}
	rs := st.VoucherResults()
	if len(rs) == 0 {
		return
	}
	res, ok := rs[len(rs)-1].(*InteropResult)
	if !ok || res.Owed == nil || *res.Owed < 0 {
		return
	}
	owed := uint64(*res.Owed)
	dup := false
	n.pay.with(chid, func(ps *payState) {
		for i, e := range ps.expect {
			if e.owed != owed {
				continue
			}
			if e.seen {
				dup = true
				ps.expect = append(ps.expect[:i], ps.expect[i+1:]...)
			} else {
				ps.expect[i].seen = true
			}
			break
		}
	})
	if dup {
		n.out.Emit(map[string]any{"type": "duplicate_result", "chid": toChidJSON(chid), "owed": owed})
		return
	}
	if !n.policies.get().AutoPay {
		return
	}
	var deal int64
	if vs := st.Vouchers(); len(vs) > 0 {
		if v, ok := vs[0].(*InteropVoucher); ok && v.Deal != nil {
			deal = *v.Deal
		}
	}
	n.worker.submit(chid, func() {
		var paid uint64
		n.pay.with(chid, func(ps *payState) {
			ps.sentPaid += owed
			paid = ps.sentPaid
		})
		n.out.Emit(map[string]any{"type": "paid", "chid": toChidJSON(chid), "paid": paid, "owed": owed})
		ctx, cancel := context.WithTimeout(n.ctx, 60*time.Second)
		defer cancel()
		if err := n.dt.SendVoucher(ctx, chid, &InteropVoucher{Deal: i64(deal), Paid: i64(int64(paid))}); err != nil {
			log.Warnf("SendVoucher on %s: %s", chid, err)
			n.out.Emit(map[string]any{"type": "action_error", "chid": toChidJSON(chid), "action": "SendVoucher", "error": err.Error()})
		}
	})
}
