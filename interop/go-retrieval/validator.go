package main

// The provider's request validator for RetrievalDealProposal/1, deciding
// pulls like Boost's unpaid (free) graphsync retrieval path
// (boost retrievalmarket/server/gsunpaidretrieval.go + validation.go):
//
//  1. --reject MSG: reject with MSG.
//  2. the voucher decodes as a DealProposal;
//  3. PricePerByte and UnsealPrice are zero (Boost hands priced proposals to
//     its paid path; this provider has none and rejects them);
//  4. PayloadCID equals the request's root;
//  5. the request selector's dag-cbor bytes equal the proposal's
//     Params.Selector bytes, or explore-all recursive when the proposal has
//     no selector;
//  6. the root block is in the blockstore (Boost: an unsealed piece holds the
//     payload CID).
//
// Accepting answers with voucher result RetrievalDealResponse/1
// {Status: DealStatusAccepted, ID} and RequiresFinalization (so that the
// provider can send the final Completed result, see provide.go). Rejecting
// answers with {Status: DealStatusRejected, ID, Message: reason} and returns
// the reason as the validation error (like Boost), which terminates the
// graphsync request. Pushes are always rejected.

import (
	"bytes"
	"errors"
	"fmt"

	datatransfer "github.com/filecoin-project/go-data-transfer/v2"
	retrievaltypes "github.com/filecoin-project/go-retrieval-types"
	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	selectorparse "github.com/ipld/go-ipld-prime/traversal/selector/parse"
	"github.com/libp2p/go-libp2p/core/peer"
)

var exploreAllBytes = func() []byte {
	b, err := ipld.Encode(selectorparse.CommonSelector_ExploreAllRecursively, dagcbor.Encode)
	if err != nil {
		panic(err)
	}
	return b
}()

type validator struct {
	p *provider
}

var _ datatransfer.RequestValidator = (*validator)(nil)

func (v *validator) ValidatePull(chid datatransfer.ChannelID, receiver peer.ID, voucher datamodel.Node, baseCid cid.Cid, sel datamodel.Node) (datatransfer.ValidationResult, error) {
	return v.validate("pull", chid, voucher, baseCid, sel)
}

func (v *validator) ValidatePush(chid datatransfer.ChannelID, sender peer.ID, voucher datamodel.Node, baseCid cid.Cid, sel datamodel.Node) (datatransfer.ValidationResult, error) {
	var id retrievaltypes.DealID
	if prop, err := retrievaltypes.DealProposalFromNode(voucher); err == nil {
		id = prop.ID
	}
	return v.reject("push", chid, id, "a retrieval provider does not accept pushes")
}

// ValidateRestart revalidates a restarted channel against its opening
// proposal, base CID and selector (Boost validates restarts like new pulls).
func (v *validator) ValidateRestart(chid datatransfer.ChannelID, st datatransfer.ChannelState) (datatransfer.ValidationResult, error) {
	if !st.IsPull() {
		return v.reject("restart", chid, 0, "a retrieval provider does not accept pushes")
	}
	return v.validate("restart", chid, st.Voucher().Voucher, st.BaseCID(), st.Selector())
}

func (v *validator) validate(kind string, chid datatransfer.ChannelID, voucher datamodel.Node, baseCid cid.Cid, sel datamodel.Node) (datatransfer.ValidationResult, error) {
	prop, err := retrievaltypes.DealProposalFromNode(voucher)
	if err != nil {
		return v.reject(kind, chid, 0, fmt.Sprintf("invalid deal proposal: %s", err))
	}
	if reason := v.decide(prop, baseCid, sel); reason != "" {
		return v.reject(kind, chid, prop.ID, reason)
	}

	res := retrievaltypes.DealResponse{Status: retrievaltypes.DealStatusAccepted, ID: prop.ID}
	result := datatransfer.ValidationResult{Accepted: true, RequiresFinalization: true}
	if v.p.fundsNeeded != nil {
		// --funds-needed: accepted, but paused until paid (never, here)
		res = retrievaltypes.DealResponse{Status: retrievaltypes.DealStatusFundsNeeded, ID: prop.ID, PaymentOwed: *v.p.fundsNeeded}
		result.ForcePause = true
	}
	tv := res.AsVoucher()
	result.VoucherResult = &tv
	v.p.out.Emit(validatedLine{Validated: true, Accepted: true, Kind: kind, Channel: chid.String(),
		DealID: uint64(prop.ID), DealStatus: uint64(res.Status)})
	return result, nil
}

// decide returns why the proposal is rejected, or "" to accept it.
func (v *validator) decide(prop *retrievaltypes.DealProposal, baseCid cid.Cid, sel datamodel.Node) string {
	if v.p.rejectMsg != "" {
		return v.p.rejectMsg
	}
	if !prop.PricePerByte.NilOrZero() || !prop.UnsealPrice.NilOrZero() {
		return fmt.Sprintf("paid retrieval is not supported: price per byte %s, unseal price %s",
			bigString(prop.PricePerByte), bigString(prop.UnsealPrice))
	}
	if !prop.PayloadCID.Equals(baseCid) {
		return "incorrect CID for this proposal"
	}
	if sel == nil {
		return "request has no selector"
	}
	reqSel, err := ipld.Encode(sel, dagcbor.Encode)
	if err != nil {
		return fmt.Sprintf("encoding request selector: %s", err)
	}
	want := exploreAllBytes
	if prop.SelectorSpecified() {
		if want, err = ipld.Encode(prop.Selector.Node, dagcbor.Encode); err != nil {
			return fmt.Sprintf("encoding proposal selector: %s", err)
		}
	}
	if !bytes.Equal(reqSel, want) {
		return "incorrect selector for this proposal"
	}
	has, err := v.p.bs.Has(v.p.ctx, prop.PayloadCID)
	if err != nil {
		return fmt.Sprintf("looking up payload cid %s: %s", prop.PayloadCID, err)
	}
	if !has {
		return fmt.Sprintf("there is no unsealed piece containing payload cid %s", prop.PayloadCID)
	}
	return ""
}

// reject builds the rejection: voucher result {Rejected, ID, Message} and the
// message as the validation error.
func (v *validator) reject(kind string, chid datatransfer.ChannelID, id retrievaltypes.DealID, msg string) (datatransfer.ValidationResult, error) {
	tv := (&retrievaltypes.DealResponse{Status: retrievaltypes.DealStatusRejected, ID: id, Message: msg}).AsVoucher()
	v.p.out.Emit(validatedLine{Validated: true, Accepted: false, Message: msg, Kind: kind, Channel: chid.String(),
		DealID: uint64(id), DealStatus: uint64(retrievaltypes.DealStatusRejected)})
	return datatransfer.ValidationResult{Accepted: false, VoucherResult: &tv}, errors.New(msg)
}
