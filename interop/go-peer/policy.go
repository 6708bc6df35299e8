package main

// Validation policy (the RequestValidator registered per voucher type) and
// the payment automation that go-data-transfer v1's Revalidator used to do:
//
//   responder (data provider in a pull, receiver in a push), pay_every > 0:
//     DataLimitExceeded -> SendVoucherResult({"owed": unpaid bytes})
//     NewVoucher {"deal","paid"} -> UpdateValidationStatus(limit + pay_every)
//   responder with finalize:
//     BeginFinalizing (status Finalizing) -> SendVoucherResult({"owed": rest})
//     NewVoucher while Finalizing -> UpdateValidationStatus(RequiresFinalization: false)
//   initiator with auto_pay:
//     NewVoucherResult {"owed": O} -> SendVoucher({"deal": D, "paid": cumulative})
//
// Every call back into go-data-transfer happens on a per-channel worker
// goroutine, never in the event callback.

import (
	"context"
	"fmt"
	"sync"
	"time"

	datatransfer "github.com/filecoin-project/go-data-transfer/v2"
	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/fluent/qp"
	basicnode "github.com/ipld/go-ipld-prime/node/basicnode"
)

const (
	defaultVoucherType = "interop/voucher/1"
	defaultResultType  = "interop/result/1"
)

// policy is the node's behaviour for one voucher type.
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
		VoucherType:    defaultVoucherType,
		ResultType:     defaultResultType,
		Accept:         true,
		RejectMessage:  "rejected by policy",
		AcceptRestarts: true,
	}
}

// policyTable holds the current policy of every registered voucher type.
type policyTable struct {
	mu sync.RWMutex
	m  map[datatransfer.TypeIdentifier]policy
}

func newPolicyTable() *policyTable {
	return &policyTable{m: make(map[datatransfer.TypeIdentifier]policy)}
}

func (t *policyTable) get(vt datatransfer.TypeIdentifier) (policy, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	p, ok := t.m[vt]
	return p, ok
}

// set stores p and reports whether the voucher type is new.
func (t *policyTable) set(p policy) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, had := t.m[datatransfer.TypeIdentifier(p.VoucherType)]
	t.m[datatransfer.TypeIdentifier(p.VoucherType)] = p
	return !had
}

func (n *node) applyPolicy(p policy) error {
	if p.VoucherType == "" {
		return fmt.Errorf("policy: empty voucher_type")
	}
	if n.policies.set(p) {
		v := &validator{n: n, vtype: datatransfer.TypeIdentifier(p.VoucherType)}
		if err := n.dt.RegisterVoucherType(v.vtype, v); err != nil {
			return err
		}
	}
	return nil
}

// ---- validator ----

type validator struct {
	n     *node
	vtype datatransfer.TypeIdentifier
}

var _ datatransfer.RequestValidator = (*validator)(nil)

func (v *validator) policy() policy {
	p, ok := v.n.policies.get(v.vtype)
	if !ok {
		p = defaultPolicy()
		p.VoucherType = string(v.vtype)
	}
	return p
}

// rejection builds the voucher result carried by a rejecting response:
// {type: result_type, value: {"rejected": message}}.
func rejection(p policy, msg string) *datatransfer.TypedVoucher {
	nd := mapNode(func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "rejected", qp.String(msg))
	})
	return &datatransfer.TypedVoucher{Type: datatransfer.TypeIdentifier(p.ResultType), Voucher: nd}
}

func (v *validator) validateNew(kind string, chid datatransfer.ChannelID, voucher datamodel.Node) datatransfer.ValidationResult {
	p := v.policy()
	var res datatransfer.ValidationResult
	if p.Accept {
		res = datatransfer.ValidationResult{Accepted: true, DataLimit: p.PayEvery, RequiresFinalization: p.Finalize}
	} else {
		res = datatransfer.ValidationResult{Accepted: false, VoucherResult: rejection(p, p.RejectMessage)}
	}
	v.n.out.Emit(map[string]any{
		"type": "validated", "kind": kind, "chid": toChidJSON(chid), "accepted": res.Accepted,
		"voucher": toVoucherJSON(datatransfer.TypedVoucher{Type: v.vtype, Voucher: voucher}),
	})
	return res
}

func (v *validator) ValidatePush(chid datatransfer.ChannelID, sender peerID, voucher datamodel.Node, baseCid cid.Cid, selector datamodel.Node) (datatransfer.ValidationResult, error) {
	return v.validateNew("push", chid, voucher), nil
}

func (v *validator) ValidatePull(chid datatransfer.ChannelID, receiver peerID, voucher datamodel.Node, baseCid cid.Cid, selector datamodel.Node) (datatransfer.ValidationResult, error) {
	return v.validateNew("pull", chid, voucher), nil
}

// ValidateRestart keeps the channel's current data limit and finalization
// flag (so a restart neither grants nor takes away paid-for data).
func (v *validator) ValidateRestart(chid datatransfer.ChannelID, st datatransfer.ChannelState) (datatransfer.ValidationResult, error) {
	p := v.policy()
	var res datatransfer.ValidationResult
	switch {
	case !p.Accept:
		res = datatransfer.ValidationResult{Accepted: false, VoucherResult: rejection(p, p.RejectMessage)}
	case !p.AcceptRestarts:
		res = datatransfer.ValidationResult{Accepted: false, VoucherResult: rejection(p, "restart rejected")}
	default:
		res = datatransfer.ValidationResult{Accepted: true, DataLimit: st.DataLimit(), RequiresFinalization: st.RequiresFinalization()}
	}
	v.n.out.Emit(map[string]any{
		"type": "validated", "kind": "restart", "chid": toChidJSON(chid), "accepted": res.Accepted,
		"voucher": toVoucherJSON(lastVoucher(st)),
	})
	return res, nil
}

// ---- payment bookkeeping ----

type payState struct {
	paid     uint64 // responder: cumulative bytes paid for (from the client's vouchers)
	payments int    // responder: number of payments taken
	sentPaid uint64 // initiator: cumulative amount we have paid
	init     bool
}

type payments struct {
	mu sync.Mutex
	m  map[datatransfer.ChannelID]*payState
}

func newPayments() *payments {
	return &payments{m: make(map[datatransfer.ChannelID]*payState)}
}

// get returns the channel's bookkeeping, seeding it from the channel's last
// voucher after a process restart.
func (p *payments) get(st datatransfer.ChannelState) *payState {
	p.mu.Lock()
	defer p.mu.Unlock()
	ps := p.m[st.ChannelID()]
	if ps == nil {
		ps = &payState{}
		p.m[st.ChannelID()] = ps
	}
	if !ps.init {
		ps.init = true
		if paid, ok := intField(lastVoucher(st).Voucher, "paid"); ok {
			ps.paid, ps.sentPaid = paid, paid
		}
	}
	return ps
}

// ---- per-channel serial worker ----

// serialWorker runs submitted functions one at a time per channel, in
// submission order, on goroutines that exist only while there is work.
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

// ---- event reactions ----

// reactToEvent is called from the event callback; it only queues work.
func (n *node) reactToEvent(ev datatransfer.Event, st datatransfer.ChannelState) {
	switch ev.Code {
	case datatransfer.DataLimitExceeded, datatransfer.NewVoucher, datatransfer.BeginFinalizing, datatransfer.NewVoucherResult:
	default:
		return
	}
	n.worker.submit(st.ChannelID(), func() { n.handlePaymentEvent(ev, st) })
}

func (n *node) handlePaymentEvent(ev datatransfer.Event, st datatransfer.ChannelState) {
	chid := st.ChannelID()
	pol, ok := n.policies.get(lastOpeningVoucherType(st))
	if !ok {
		return
	}
	self := n.host.ID()
	ctx, cancel := context.WithTimeout(n.ctx, 60*time.Second)
	defer cancel()

	switch {
	case chid.Responder == self && !pol.Manual:
		n.responderPayment(ctx, ev, st, pol)
	case chid.Initiator == self && pol.AutoPay && ev.Code == datatransfer.NewVoucherResult:
		n.clientPay(ctx, st, pol)
	}
}

// progress is the byte count the data limit applies to: queued bytes when we
// send (pull responder), received bytes when we receive (push responder).
func progress(st datatransfer.ChannelState) uint64 {
	if st.IsPull() {
		return st.Queued()
	}
	return st.Received()
}

func (n *node) responderPayment(ctx context.Context, ev datatransfer.Event, st datatransfer.ChannelState, pol policy) {
	chid := st.ChannelID()
	ps := n.pay.get(st)
	switch ev.Code {
	case datatransfer.DataLimitExceeded:
		if pol.PayEvery == 0 {
			return
		}
		n.requestPayment(ctx, st, pol, ps, false)

	case datatransfer.BeginFinalizing:
		if !pol.Finalize && !st.RequiresFinalization() {
			return
		}
		n.requestPayment(ctx, st, pol, ps, true)

	case datatransfer.NewVoucher:
		paid, ok := intField(lastVoucher(st).Voucher, "paid")
		if !ok {
			return // not a payment voucher
		}
		fresh, err := n.dt.ChannelState(ctx, chid)
		if err != nil {
			n.actionError(chid, "channel state", err)
			return
		}
		n.pay.mu.Lock()
		ps.paid = paid
		ps.payments++
		count := ps.payments
		n.pay.mu.Unlock()
		prog := progress(fresh)
		owed := uint64(0)
		if prog > paid {
			owed = prog - paid
		}
		final := fresh.Status() == datatransfer.Finalizing
		n.out.Emit(map[string]any{"type": "payment", "chid": toChidJSON(chid), "paid": paid, "owed": owed, "payments": count, "final": final})

		var vr datatransfer.ValidationResult
		switch {
		case final:
			// Last payment: drop the finalization requirement so the channel completes.
			vr = datatransfer.ValidationResult{Accepted: true, RequiresFinalization: false}
		case pol.PayEvery > 0:
			vr = datatransfer.ValidationResult{Accepted: true, DataLimit: fresh.DataLimit() + pol.PayEvery, RequiresFinalization: fresh.RequiresFinalization()}
		default:
			return
		}
		if err := n.dt.UpdateValidationStatus(ctx, chid, vr); err != nil {
			n.actionError(chid, "UpdateValidationStatus", err)
		}
	}
}

// requestPayment sends {"owed": unpaid bytes} as a voucher result.
func (n *node) requestPayment(ctx context.Context, st datatransfer.ChannelState, pol policy, ps *payState, final bool) {
	chid := st.ChannelID()
	n.pay.mu.Lock()
	prog, paid := progress(st), ps.paid
	n.pay.mu.Unlock()
	owed := uint64(0)
	if prog > paid {
		owed = prog - paid
	}
	res := datatransfer.TypedVoucher{Type: datatransfer.TypeIdentifier(pol.ResultType), Voucher: mapNode(func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "owed", qp.Int(int64(owed)))
	})}
	n.out.Emit(map[string]any{"type": "payment_request", "chid": toChidJSON(chid), "owed": owed, "final": final})
	if err := n.dt.SendVoucherResult(ctx, chid, res); err != nil {
		n.actionError(chid, "SendVoucherResult", err)
	}
}

// clientPay answers a {"owed": O} voucher result with a voucher
// {"deal": D, "paid": cumulative}.
func (n *node) clientPay(ctx context.Context, st datatransfer.ChannelState, pol policy) {
	owed, ok := intField(lastVoucherResult(st).Voucher, "owed")
	if !ok {
		return
	}
	chid := st.ChannelID()
	ps := n.pay.get(st)
	n.pay.mu.Lock()
	ps.sentPaid += owed
	paid := ps.sentPaid
	n.pay.mu.Unlock()

	var deal datamodel.Node = basicnode.NewInt(0)
	if vs := st.Vouchers(); len(vs) > 0 && vs[0].Voucher != nil && vs[0].Voucher.Kind() == datamodel.Kind_Map {
		if d, err := vs[0].Voucher.LookupByString("deal"); err == nil {
			deal = d
		}
	}
	v := datatransfer.TypedVoucher{Type: datatransfer.TypeIdentifier(pol.VoucherType), Voucher: mapNode(func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "deal", qp.Node(deal))
		qp.MapEntry(ma, "paid", qp.Int(int64(paid)))
	})}
	n.out.Emit(map[string]any{"type": "paid", "chid": toChidJSON(chid), "paid": paid, "owed": owed})
	if err := n.dt.SendVoucher(ctx, chid, v); err != nil {
		n.actionError(chid, "SendVoucher", err)
	}
}

func (n *node) actionError(chid datatransfer.ChannelID, what string, err error) {
	log.Warnf("%s on %s: %s", what, chid, err)
	n.out.Emit(map[string]any{"type": "action_error", "chid": toChidJSON(chid), "action": what, "error": err.Error()})
}

// lastOpeningVoucherType is the type of the channel's opening voucher, which
// selects the policy.
func lastOpeningVoucherType(st datatransfer.ChannelState) datatransfer.TypeIdentifier {
	if vs := st.Vouchers(); len(vs) > 0 {
		return vs[0].Type
	}
	return ""
}

// ---- small IPLD helpers ----

func mapNode(f func(ma datamodel.MapAssembler)) datamodel.Node {
	nd, err := qp.BuildMap(basicnode.Prototype.Any, -1, f)
	if err != nil {
		panic(err) // only fails on programming errors
	}
	return nd
}

// intField reads a non-negative integer field of a map node.
func intField(nd datamodel.Node, key string) (uint64, bool) {
	if nd == nil || nd.Kind() != datamodel.Kind_Map {
		return 0, false
	}
	v, err := nd.LookupByString(key)
	if err != nil || v.Kind() != datamodel.Kind_Int {
		return 0, false
	}
	i, err := v.AsInt()
	if err != nil || i < 0 {
		return 0, false
	}
	return uint64(i), true
}
