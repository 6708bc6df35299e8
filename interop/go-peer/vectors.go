package main

// `go-peer vectors`: the exact bytes Go encodes for a fixed set of
// data-transfer 1.2.0 and graphsync 2.0.0 messages, one JSON line each:
// {"name":"..","hex":"..","params":{...}} (graphsync vectors also carry
// "hex_body", the message without its varint length prefix).
//
// Fixed inputs (also repeated in every vector's params):
//   transfer id   1234567890123456789
//   root          CIDv1 raw sha2-256("interop")
//   selector      explore-all recursive (CommonSelector_ExploreAllRecursively)
//   voucher       "interop/voucher/1" {"deal":42,"paid":0}
//   result        "interop/result/1"  {"owed":1048576}
//   peers         ed25519 seeds 0x01*32 (initiator), 0x02*32 (responder)
//   gs request id 00112233-4455-6677-8899-aabbccddeeff

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"

	datatransfer "github.com/filecoin-project/go-data-transfer/v2"
	dtmessage "github.com/filecoin-project/go-data-transfer/v2/message"
	"github.com/filecoin-project/go-data-transfer/v2/message/types"
	"github.com/filecoin-project/go-data-transfer/v2/transport/graphsync/extension"
	"github.com/google/uuid"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-graphsync"
	"github.com/ipfs/go-graphsync/donotsendfirstblocks"
	gsmsg "github.com/ipfs/go-graphsync/message"
	gsmsgv2 "github.com/ipfs/go-graphsync/message/v2"
	"github.com/ipld/go-ipld-prime"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/codec/dagjson"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/fluent/qp"
	selectorparse "github.com/ipld/go-ipld-prime/traversal/selector/parse"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multihash"
)

const (
	vecTransferID = datatransfer.TransferID(1234567890123456789)
	vecRequestID  = "00112233-4455-6677-8899-aabbccddeeff"
)

type vector struct {
	Name    string         `json:"name"`
	Hex     string         `json:"hex"`
	HexBody string         `json:"hex_body,omitempty"`
	Params  map[string]any `json:"params"`
}

// vectorInputs are the fixed inputs shared by all vectors.
type vectorInputs struct {
	root      cid.Cid
	selector  datamodel.Node
	voucher   datatransfer.TypedVoucher
	result    datatransfer.TypedVoucher
	initiator peer.ID
	responder peer.ID
	requestID graphsync.RequestID
	leaf      blocks.Block // second block for graphsync responses
	rootBlock blocks.Block
}

func newVectorInputs() (*vectorInputs, error) {
	in := &vectorInputs{selector: selectorparse.CommonSelector_ExploreAllRecursively}
	var err error
	rootData := []byte("interop")
	in.root, err = cid.NewPrefixV1(cid.Raw, multihash.SHA2_256).Sum(rootData)
	if err != nil {
		return nil, err
	}
	if in.rootBlock, err = blocks.NewBlockWithCid(rootData, in.root); err != nil {
		return nil, err
	}
	leafData := []byte("interop leaf")
	leafCid, err := cid.NewPrefixV1(cid.Raw, multihash.SHA2_256).Sum(leafData)
	if err != nil {
		return nil, err
	}
	if in.leaf, err = blocks.NewBlockWithCid(leafData, leafCid); err != nil {
		return nil, err
	}
	in.voucher = datatransfer.TypedVoucher{Type: "interop/voucher/1", Voucher: mapNode(func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "deal", qp.Int(42))
		qp.MapEntry(ma, "paid", qp.Int(0))
	})}
	in.result = datatransfer.TypedVoucher{Type: "interop/result/1", Voucher: mapNode(func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "owed", qp.Int(1048576))
	})}
	for i, seed := range []byte{0x01, 0x02} {
		priv, err := privKeyFromSeed(hex.EncodeToString(bytes.Repeat([]byte{seed}, 32)))
		if err != nil {
			return nil, err
		}
		id, err := peer.IDFromPrivateKey(priv)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			in.initiator = id
		} else {
			in.responder = id
		}
	}
	u := uuid.MustParse(vecRequestID)
	if in.requestID, err = graphsync.ParseRequestID(u[:]); err != nil {
		return nil, err
	}
	return in, nil
}

// common returns the params every vector repeats.
func (in *vectorInputs) common() map[string]any {
	return map[string]any{
		"transfer_id":    strconv.FormatUint(uint64(vecTransferID), 10),
		"root":           in.root.String(),
		"selector":       dagJSONValue(in.selector),
		"voucher":        toVoucherJSON(in.voucher),
		"voucher_result": toVoucherJSON(in.result),
	}
}

func dagJSONValue(nd datamodel.Node) json.RawMessage {
	b, err := ipld.Encode(nd, dagjson.Encode)
	if err != nil {
		panic(err)
	}
	return b
}

func printVectors(w io.Writer) error {
	in, err := newVectorInputs()
	if err != nil {
		return err
	}
	dtVecs, err := dtVectors(in)
	if err != nil {
		return err
	}
	gsVecs, err := gsVectors(in)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	for _, v := range append(dtVecs, gsVecs...) {
		if err := enc.Encode(v); err != nil {
			return err
		}
	}
	return nil
}

// ---- data-transfer 1.2.0 ----

type dtCase struct {
	name   string
	msg    datatransfer.Message
	params map[string]any
}

func dtVectors(in *vectorInputs) ([]vector, error) {
	id := vecTransferID
	v, r := in.voucher, in.result
	must := func(m datatransfer.Message, err error) datatransfer.Message {
		if err != nil {
			panic(err)
		}
		return m
	}
	p := func(kv ...any) map[string]any {
		m := map[string]any{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	chid := datatransfer.ChannelID{Initiator: in.initiator, Responder: in.responder, ID: id}
	accepted := datatransfer.ValidationResult{Accepted: true}
	acceptedWithResult := datatransfer.ValidationResult{Accepted: true, VoucherResult: &r}

	cases := []dtCase{
		// requests
		{"dt/request/new_pull", must(dtmessage.NewRequest(id, false, true, &v, in.root, in.selector)), p("ctor", "NewRequest(id, isRestart=false, isPull=true, voucher, root, selector)")},
		{"dt/request/new_push", must(dtmessage.NewRequest(id, false, false, &v, in.root, in.selector)), p("ctor", "NewRequest(id, isRestart=false, isPull=false, voucher, root, selector)")},
		{"dt/request/restart_pull", must(dtmessage.NewRequest(id, true, true, &v, in.root, in.selector)), p("ctor", "NewRequest(id, isRestart=true, isPull=true, ...)")},
		{"dt/request/restart_push", must(dtmessage.NewRequest(id, true, false, &v, in.root, in.selector)), p("ctor", "NewRequest(id, isRestart=true, isPull=false, ...)")},
		{"dt/request/restart_existing_channel", dtmessage.RestartExistingChannelRequest(chid), p("ctor", "RestartExistingChannelRequest(chid)",
			"restart_chid", toChidJSON(chid), "initiator_seed", "01*32", "responder_seed", "02*32",
			"note", "RestartChannel is a tuple [initiator, responder, id]; the peer ids are their raw multihash bytes inside CBOR *text* strings (not valid UTF-8); XferID is 0")},
		{"dt/request/update_paused", dtmessage.UpdateRequest(id, true), p("ctor", "UpdateRequest(id, true)")},
		{"dt/request/update_unpaused", dtmessage.UpdateRequest(id, false), p("ctor", "UpdateRequest(id, false)")},
		{"dt/request/voucher", must(dtmessage.VoucherRequest(id, &v)), p("ctor", "VoucherRequest(id, voucher)")},
		{"dt/request/cancel", dtmessage.CancelRequest(id), p("ctor", "CancelRequest(id)")},

		// responses
		{"dt/response/new_accepted", must(dtmessage.NewResponse(id, true, false, nil)), p("ctor", "NewResponse(id, accepted=true, paused=false, nil)")},
		{"dt/response/new_accepted_paused", must(dtmessage.NewResponse(id, true, true, nil)), p("ctor", "NewResponse(id, accepted=true, paused=true, nil)")},
		{"dt/response/new_accepted_with_result", must(dtmessage.NewResponse(id, true, false, &r)), p("ctor", "NewResponse(id, true, false, result)")},
		{"dt/response/new_rejected", must(dtmessage.NewResponse(id, false, false, nil)), p("ctor", "NewResponse(id, accepted=false, false, nil)")},
		{"dt/response/new_rejected_with_result", must(dtmessage.NewResponse(id, false, false, &r)), p("ctor", "NewResponse(id, false, false, result)")},
		{"dt/response/restart_accepted", must(dtmessage.RestartResponse(id, true, false, nil)), p("ctor", "RestartResponse(id, true, false, nil)")},
		{"dt/response/restart_rejected", must(dtmessage.RestartResponse(id, false, false, nil)), p("ctor", "RestartResponse(id, false, false, nil)")},
		{"dt/response/update_paused", dtmessage.UpdateResponse(id, true), p("ctor", "UpdateResponse(id, true)", "note", "what Go sends when a data limit is hit (rides the graphsync block response)")},
		{"dt/response/update_unpaused", dtmessage.UpdateResponse(id, false), p("ctor", "UpdateResponse(id, false)")},
		{"dt/response/cancel", dtmessage.CancelResponse(id), p("ctor", "CancelResponse(id)")},
		{"dt/response/complete", must(dtmessage.CompleteResponse(id, true, false, nil)), p("ctor", "CompleteResponse(id, accepted=true, paused=false, nil)")},
		{"dt/response/complete_finalizing", must(dtmessage.CompleteResponse(id, true, true, nil)), p("ctor", "CompleteResponse(id, true, paused=true, nil)", "note", "responder needs finalization (RequiresFinalization)")},
		{"dt/response/complete_finalizing_with_result", must(dtmessage.CompleteResponse(id, true, true, &r)), p("ctor", "CompleteResponse(id, true, true, result)", "note", "SendVoucherResult while Finalizing")},
		{"dt/response/complete_rejected", must(dtmessage.CompleteResponse(id, false, false, nil)), p("ctor", "CompleteResponse(id, false, false, nil)")},
		{"dt/response/voucher_result_paused", must(dtmessage.VoucherResultResponse(id, true, true, &r)), p("ctor", "VoucherResultResponse(id, true, paused=true, result)", "note", "SendVoucherResult on a channel paused by its data limit")},
		{"dt/response/voucher_result_unpaused", must(dtmessage.VoucherResultResponse(id, true, false, &r)), p("ctor", "VoucherResultResponse(id, true, paused=false, result)")},
		{"dt/response/validation_result_accepted", must(dtmessage.ValidationResultResponse(types.VoucherResultMessage, id, accepted, nil, false)), p("ctor", "ValidationResultResponse(VoucherResultMessage, id, {Accepted}, nil, paused=false)", "note", "what UpdateValidationStatus sends to unpause after a payment (VTyp \"\", VRes null)")},
		{"dt/response/validation_result_with_result_paused", must(dtmessage.ValidationResultResponse(types.VoucherResultMessage, id, acceptedWithResult, nil, true)), p("ctor", "ValidationResultResponse(VoucherResultMessage, id, {Accepted, result}, nil, paused=true)")},
		{"dt/response/validation_result_complete", must(dtmessage.ValidationResultResponse(types.CompleteMessage, id, accepted, nil, false)), p("ctor", "ValidationResultResponse(CompleteMessage, id, {Accepted}, nil, paused=false)", "note", "what UpdateValidationStatus sends while Finalizing: the final Complete")},
		{"dt/response/validation_result_rejected", must(dtmessage.ValidationResultResponse(types.VoucherResultMessage, id, datatransfer.ValidationResult{Accepted: false, VoucherResult: &r}, nil, false)), p("ctor", "ValidationResultResponse(VoucherResultMessage, id, {Accepted:false, result}, nil, false)")},
	}

	out := make([]vector, 0, len(cases))
	for _, c := range cases {
		var buf bytes.Buffer
		if err := c.msg.ToNet(&buf); err != nil {
			return nil, fmt.Errorf("%s: %w", c.name, err)
		}
		params := in.common()
		for k, v := range c.params {
			params[k] = v
		}
		describeDT(c.msg, params)
		out = append(out, vector{Name: c.name, Hex: hex.EncodeToString(buf.Bytes()), Params: params})
	}
	return out, nil
}

// describeDT adds the decoded header fields of a DT message to params.
func describeDT(m datatransfer.Message, params map[string]any) {
	params["is_request"] = m.IsRequest()
	params["paused"] = m.IsPaused()
	switch t := m.(type) {
	case datatransfer.Request:
		params["is_pull"] = t.IsPull()
		params["message_type"] = dtRequestType(t)
		params["has_voucher"] = t.VoucherType() != ""
	case datatransfer.Response:
		params["accepted"] = t.Accepted()
		params["message_type"] = dtResponseType(t)
		params["has_voucher_result"] = !t.EmptyVoucherResult()
	}
}

func dtRequestType(r datatransfer.Request) int {
	switch {
	case r.IsRestartExistingChannelRequest():
		return int(types.RestartExistingChannelRequestMessage)
	case r.IsRestart():
		return int(types.RestartMessage)
	case r.IsNew():
		return int(types.NewMessage)
	case r.IsCancel():
		return int(types.CancelMessage)
	case r.IsVoucher():
		return int(types.VoucherMessage)
	default:
		return int(types.UpdateMessage)
	}
}

func dtResponseType(r datatransfer.Response) int {
	switch {
	case r.IsRestart():
		return int(types.RestartMessage)
	case r.IsNew():
		return int(types.NewMessage)
	case r.IsCancel():
		return int(types.CancelMessage)
	case r.IsComplete():
		return int(types.CompleteMessage)
	case r.IsValidationResult():
		return int(types.VoucherResultMessage)
	default:
		return int(types.UpdateMessage)
	}
}

// ---- graphsync 2.0.0 ----

func gsVectors(in *vectorInputs) ([]vector, error) {
	id := vecTransferID
	rid := in.requestID
	v := in.voucher
	r := in.result
	dtExt := func(name graphsync.ExtensionName, m datatransfer.Message) graphsync.ExtensionData {
		return graphsync.ExtensionData{Name: name, Data: m.ToIPLD()}
	}
	newPull, err := dtmessage.NewRequest(id, false, true, &v, in.root, in.selector)
	if err != nil {
		return nil, err
	}
	restartPull, err := dtmessage.NewRequest(id, true, true, &v, in.root, in.selector)
	if err != nil {
		return nil, err
	}
	newAccepted, err := dtmessage.NewResponse(id, true, false, nil)
	if err != nil {
		return nil, err
	}
	newRejected, err := dtmessage.NewResponse(id, false, false, &r)
	if err != nil {
		return nil, err
	}
	pausedUpdate := dtmessage.UpdateResponse(id, true)
	unpauseReq := dtmessage.UpdateRequest(id, false)
	resumeValidation, err := dtmessage.ValidationResultResponse(types.VoucherResultMessage, id, datatransfer.ValidationResult{Accepted: true}, nil, false)
	if err != nil {
		return nil, err
	}

	dt11 := extension.ExtensionDataTransfer1_1
	inReq := extension.ExtensionIncomingRequest1_1
	outBlk := extension.ExtensionOutgoingBlock1_1
	present := func(c cid.Cid) gsmsg.GraphSyncLinkMetadatum {
		return gsmsg.GraphSyncLinkMetadatum{Link: c, Action: graphsync.LinkActionPresent}
	}

	type gsCase struct {
		name      string
		requests  []gsmsg.GraphSyncRequest
		responses []gsmsg.GraphSyncResponse
		blocks    []blocks.Block
		params    map[string]any
	}
	cases := []gsCase{
		{
			name:     "gs/request/new_with_dt_extension",
			requests: []gsmsg.GraphSyncRequest{gsmsg.NewRequest(rid, in.root, in.selector, 7, dtExt(dt11, newPull))},
			params: map[string]any{"request_type": "New", "priority": 7, "extensions": []string{string(dt11)}, "dt_message": "dt/request/new_pull",
				"note": "Go's own requests always use priority 0, which is omitted from the encoding; 7 here exercises the field"},
		},
		{
			name:     "gs/request/new_plain",
			requests: []gsmsg.GraphSyncRequest{gsmsg.NewRequest(rid, in.root, in.selector, 0)},
			params:   map[string]any{"request_type": "New", "priority": 0, "extensions": []string{}, "note": "a bare request as Go sends it (gs.Request without extensions): no pri, no ext"},
		},
		{
			name: "gs/request/new_do_not_send_first_blocks",
			requests: []gsmsg.GraphSyncRequest{gsmsg.NewRequest(rid, in.root, in.selector, 0,
				graphsync.ExtensionData{Name: graphsync.ExtensionsDoNotSendFirstBlocks, Data: donotsendfirstblocks.EncodeDoNotSendFirstBlocks(5)})},
			params: map[string]any{"request_type": "New", "extensions": []string{string(graphsync.ExtensionsDoNotSendFirstBlocks)}, "do_not_send_first_blocks": 5},
		},
		{
			name: "gs/request/restart_with_dt_and_do_not_send_first_blocks",
			requests: []gsmsg.GraphSyncRequest{gsmsg.NewRequest(rid, in.root, in.selector, 0, dtExt(dt11, restartPull),
				graphsync.ExtensionData{Name: graphsync.ExtensionsDoNotSendFirstBlocks, Data: donotsendfirstblocks.EncodeDoNotSendFirstBlocks(5)})},
			params: map[string]any{"request_type": "New", "extensions": []string{string(dt11), string(graphsync.ExtensionsDoNotSendFirstBlocks)},
				"dt_message": "dt/request/restart_pull", "do_not_send_first_blocks": 5,
				"note": "what a Go puller sends on RestartDataTransferChannel: DT Restart (type 6) + skip count = ReceivedCidsTotal"},
		},
		{
			name:     "gs/request/update_with_extension",
			requests: []gsmsg.GraphSyncRequest{gsmsg.NewUpdateRequest(rid, dtExt(dt11, unpauseReq))},
			params:   map[string]any{"request_type": "Update", "extensions": []string{string(dt11)}, "dt_message": "dt/request/update_unpaused"},
		},
		{
			name:     "gs/request/cancel",
			requests: []gsmsg.GraphSyncRequest{gsmsg.NewCancelRequest(rid)},
			params:   map[string]any{"request_type": "Cancel"},
		},
		{
			name: "gs/response/partial_with_metadata_extensions_blocks",
			responses: []gsmsg.GraphSyncResponse{gsmsg.NewResponse(rid, graphsync.PartialResponse,
				[]gsmsg.GraphSyncLinkMetadatum{present(in.root), present(in.leaf.Cid())},
				dtExt(inReq, newAccepted), dtExt(dt11, newAccepted))},
			blocks: []blocks.Block{in.rootBlock, in.leaf},
			params: map[string]any{"status": int(graphsync.PartialResponse), "extensions": []string{string(dt11), string(inReq)},
				"dt_message": "dt/response/new_accepted",
				"metadata":   []map[string]string{{"link": in.root.String(), "action": "p"}, {"link": in.leaf.Cid().String(), "action": "p"}},
				"note":       "first response to an accepted DT pull: the New response rides under both incoming-request/1.1 and 1.1"},
		},
		{
			name: "gs/response/paused",
			responses: []gsmsg.GraphSyncResponse{gsmsg.NewResponse(rid, graphsync.RequestPaused,
				[]gsmsg.GraphSyncLinkMetadatum{present(in.leaf.Cid())},
				dtExt(outBlk, pausedUpdate), dtExt(dt11, pausedUpdate))},
			blocks: []blocks.Block{in.leaf},
			params: map[string]any{"status": int(graphsync.RequestPaused), "extensions": []string{string(dt11), string(outBlk)},
				"dt_message": "dt/response/update_paused",
				"metadata":   []map[string]string{{"link": in.leaf.Cid().String(), "action": "p"}},
				"note":       "data limit hit: the crossing block is still sent, with the DT Update(paused) under outgoing-block/1.1 and 1.1"},
		},
		{
			name: "gs/response/unpaused_with_validation_result",
			responses: []gsmsg.GraphSyncResponse{gsmsg.NewResponse(rid, graphsync.PartialResponse, nil,
				dtExt(dt11, resumeValidation))},
			params: map[string]any{"status": int(graphsync.PartialResponse), "extensions": []string{string(dt11)},
				"dt_message": "dt/response/validation_result_accepted",
				"note":       "shape of the extension data gs.Unpause sends after UpdateValidationStatus (graphsync may merge it with blocks/metadata)"},
		},
		{
			name:      "gs/response/completed_full",
			responses: []gsmsg.GraphSyncResponse{gsmsg.NewResponse(rid, graphsync.RequestCompletedFull, nil)},
			params:    map[string]any{"status": int(graphsync.RequestCompletedFull)},
		},
		{
			name:      "gs/response/rejected",
			responses: []gsmsg.GraphSyncResponse{gsmsg.NewResponse(rid, graphsync.RequestRejected, nil)},
			params:    map[string]any{"status": int(graphsync.RequestRejected), "note": "a bare request no hook validated"},
		},
		{
			name: "gs/response/dt_rejected",
			responses: []gsmsg.GraphSyncResponse{gsmsg.NewResponse(rid, graphsync.RequestFailedUnknown, nil,
				dtExt(inReq, newRejected), dtExt(dt11, newRejected))},
			params: map[string]any{"status": int(graphsync.RequestFailedUnknown), "extensions": []string{string(dt11), string(inReq)},
				"dt_message": "dt/response/new_rejected_with_result",
				"note":       "a DT pull the validator rejected: go-data-transfer terminates the graphsync request with an error (status 32), not 30"},
		},
	}

	handler := gsmsgv2.NewMessageHandler()
	out := make([]vector, 0, len(cases))
	for _, c := range cases {
		reqs := map[graphsync.RequestID]gsmsg.GraphSyncRequest{}
		for _, q := range c.requests {
			reqs[q.ID()] = q
		}
		resps := map[graphsync.RequestID]gsmsg.GraphSyncResponse{}
		for _, q := range c.responses {
			resps[q.RequestID()] = q
		}
		blks := map[cid.Cid]blocks.Block{}
		for _, b := range c.blocks {
			blks[b.Cid()] = b
		}
		want := make([]string, len(c.blocks))
		for i, b := range c.blocks {
			want[i] = b.Cid().String()
		}
		// Go keeps a message's blocks in a map, so their encoded order is
		// random. Re-encode until it is the listed order, so that the output
		// is stable (any order is valid on the wire).
		var full []byte
		var n int
		for attempt := 0; ; attempt++ {
			var buf bytes.Buffer
			if err := handler.ToNet(in.initiator, gsmsg.NewMessage(reqs, resps, blks), &buf); err != nil {
				return nil, fmt.Errorf("%s: %w", c.name, err)
			}
			full = buf.Bytes()
			var bodyLen uint64
			bodyLen, n = binary.Uvarint(full)
			if n <= 0 || int(bodyLen) != len(full)-n {
				return nil, fmt.Errorf("%s: bad length prefix", c.name)
			}
			if len(c.blocks) < 2 {
				break
			}
			order, err := encodedBlockOrder(full[n:])
			if err != nil {
				return nil, fmt.Errorf("%s: %w", c.name, err)
			}
			if slices.Equal(order, want) {
				break
			}
			if attempt > 200 {
				return nil, fmt.Errorf("%s: could not get a stable block order", c.name)
			}
		}
		params := in.common()
		for k, v := range c.params {
			params[k] = v
		}
		params["request_id"] = rid.String()
		params["length_prefix_bytes"] = n
		if len(c.blocks) > 0 {
			params["blocks"] = want
		}
		out = append(out, vector{Name: c.name, Hex: hex.EncodeToString(full), HexBody: hex.EncodeToString(full[n:]), Params: params})
	}
	return out, nil
}

// encodedBlockOrder decodes a gs2 body and returns the CIDs of its blocks in
// encoded order.
func encodedBlockOrder(body []byte) ([]string, error) {
	nd, err := ipld.Decode(body, dagcbor.Decode)
	if err != nil {
		return nil, err
	}
	gs2, err := nd.LookupByString("gs2")
	if err != nil {
		return nil, err
	}
	blk, err := gs2.LookupByString("blk")
	if err != nil {
		return nil, err
	}
	var out []string
	it := blk.ListIterator()
	for !it.Done() {
		_, b, err := it.Next()
		if err != nil {
			return nil, err
		}
		pn, err := b.LookupByIndex(0)
		if err != nil {
			return nil, err
		}
		dn, err := b.LookupByIndex(1)
		if err != nil {
			return nil, err
		}
		prefixBytes, _ := pn.AsBytes()
		data, _ := dn.AsBytes()
		prefix, err := cid.PrefixFromBytes(prefixBytes)
		if err != nil {
			return nil, err
		}
		c, err := prefix.Sum(data)
		if err != nil {
			return nil, err
		}
		out = append(out, c.String())
	}
	return out, nil
}
