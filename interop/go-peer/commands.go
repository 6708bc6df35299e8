package main

// stdin command parsing and dispatch. Every command is one JSON object per
// line: {"id": N, "cmd": "<name>", ...fields}. Every command gets exactly one
// {"type":"result","id":N,"ok":...} line.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	datatransfer "github.com/filecoin-project/go-data-transfer/v2"
	"github.com/filecoin-project/go-data-transfer/v2/transport/graphsync/extension"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-graphsync"
	"github.com/ipld/go-ipld-prime"
	"github.com/ipld/go-ipld-prime/codec/dagjson"
	"github.com/ipld/go-ipld-prime/datamodel"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	selectorparse "github.com/ipld/go-ipld-prime/traversal/selector/parse"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/multiformats/go-multiaddr"
)

// command is the union of all command fields.
type command struct {
	ID  int64  `json:"id"`
	Cmd string `json:"cmd"`

	// connect / disconnect
	Addr string `json:"addr"`
	Peer string `json:"peer"`

	// import / export / import_car / walk / has
	Path      string          `json:"path"`
	ChunkSize int64           `json:"chunk_size"`
	RawLeaves *bool           `json:"raw_leaves"`
	CidVer    *int            `json:"cid_version"`
	MaxLinks  int             `json:"max_links"`
	Root      string          `json:"root"`
	Selector  json.RawMessage `json:"selector"`
	Cid       string          `json:"cid"`

	// pull / push / send_voucher / send_voucher_result / update_validation / ...
	Chid                 *chidJSON    `json:"chid"`
	Voucher              *voucherJSON `json:"voucher"`
	Result               *voucherJSON `json:"result"`
	Accepted             bool         `json:"accepted"`
	DataLimit            uint64       `json:"data_limit"`
	RequiresFinalization bool         `json:"requires_finalization"`
	ForcePause           bool         `json:"force_pause"`

	// gs_policy
	AcceptAll bool `json:"accept_all"`

	// gs_pull
	TimeoutMs int64 `json:"timeout_ms"`

	// throttle
	BlockDelayMs int64 `json:"block_delay_ms"`

	raw json.RawMessage
}

func parseCommand(line []byte) (command, error) {
	var c command
	if err := json.Unmarshal(line, &c); err != nil {
		// Try to recover the id for the error result.
		var idOnly struct {
			ID int64 `json:"id"`
		}
		_ = json.Unmarshal(line, &idOnly)
		return command{ID: idOnly.ID}, fmt.Errorf("bad command JSON: %w", err)
	}
	c.raw = append(json.RawMessage(nil), line...)
	return c, nil
}

func (n *node) dispatch(c command) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(n.ctx, 120*time.Second)
	defer cancel()

	switch c.Cmd {
	case "connect":
		return nil, n.cmdConnect(ctx, c)
	case "disconnect":
		p, err := peer.Decode(c.Peer)
		if err != nil {
			return nil, err
		}
		return map[string]any{}, n.host.Network().ClosePeer(p)
	case "security":
		// The secure channel of each connection to a peer ("/tls/1.0.0", "/noise").
		p, err := peer.Decode(c.Peer)
		if err != nil {
			return nil, err
		}
		protocols := []string{}
		for _, conn := range n.host.Network().ConnsToPeer(p) {
			protocols = append(protocols, string(conn.ConnState().Security))
		}
		return map[string]any{"security": protocols}, nil
	case "import":
		return n.cmdImport(ctx, c)
	case "import_car":
		return n.cmdImportCar(ctx, c)
	case "export":
		return n.cmdExport(ctx, c)
	case "walk":
		root, err := cid.Decode(c.Root)
		if err != nil {
			return nil, fmt.Errorf("root: %w", err)
		}
		sel, err := parseSelector(c.Selector)
		if err != nil {
			return nil, err
		}
		cids, err := n.walk(ctx, root, sel)
		if err != nil {
			return nil, err
		}
		return map[string]any{"cids": cidStrings(cids)}, nil
	case "has":
		k, err := cid.Decode(c.Cid)
		if err != nil {
			return nil, err
		}
		has, err := n.bs.Has(ctx, k)
		return map[string]any{"has": has}, err
	case "delete_all":
		return n.cmdDeleteAll(ctx)
	case "policy":
		return n.cmdPolicy(c)
	case "pull", "push":
		return n.cmdOpen(c)
	case "send_voucher":
		chid, err := c.Chid.toChannelID()
		if err != nil {
			return nil, err
		}
		v, err := c.Voucher.toTyped()
		if err != nil {
			return nil, err
		}
		return map[string]any{}, n.dt.SendVoucher(ctx, chid, v)
	case "send_voucher_result":
		chid, err := c.Chid.toChannelID()
		if err != nil {
			return nil, err
		}
		v, err := c.Result.toTyped()
		if err != nil {
			return nil, err
		}
		return map[string]any{}, n.dt.SendVoucherResult(ctx, chid, v)
	case "update_validation":
		chid, err := c.Chid.toChannelID()
		if err != nil {
			return nil, err
		}
		vr := datatransfer.ValidationResult{
			Accepted:             c.Accepted,
			DataLimit:            c.DataLimit,
			RequiresFinalization: c.RequiresFinalization,
			ForcePause:           c.ForcePause,
		}
		if c.Result != nil {
			v, err := c.Result.toTyped()
			if err != nil {
				return nil, err
			}
			vr.VoucherResult = &v
		}
		return map[string]any{}, n.dt.UpdateValidationStatus(ctx, chid, vr)
	case "pause", "resume", "close", "restart":
		chid, err := c.Chid.toChannelID()
		if err != nil {
			return nil, err
		}
		switch c.Cmd {
		case "pause":
			err = n.dt.PauseDataTransferChannel(ctx, chid)
		case "resume":
			err = n.dt.ResumeDataTransferChannel(ctx, chid)
		case "close":
			err = n.dt.CloseDataTransferChannel(ctx, chid)
		case "restart":
			// The restart context must outlive this command: for a pull the
			// new graphsync request runs under it.
			err = n.dt.RestartDataTransferChannel(n.ctx, chid)
		}
		return map[string]any{}, err
	case "status":
		chid, err := c.Chid.toChannelID()
		if err != nil {
			return nil, err
		}
		st, err := n.dt.ChannelState(ctx, chid)
		if err != nil {
			return nil, err
		}
		return structToMap(toStateJSON(st))
	case "channels":
		return n.cmdChannels(ctx, c)
	case "gs_policy":
		n.gsAcceptAll.Store(c.AcceptAll)
		return map[string]any{"accept_all": c.AcceptAll}, nil
	case "gs_pull":
		return n.cmdGsPull(c)
	case "throttle":
		if c.BlockDelayMs < 0 {
			return nil, errors.New("block_delay_ms must not be negative")
		}
		n.blockDelay.Store(c.BlockDelayMs)
		return map[string]any{"block_delay_ms": c.BlockDelayMs}, nil
	case "":
		return nil, errors.New(`missing "cmd"`)
	default:
		return nil, fmt.Errorf("unknown command %q", c.Cmd)
	}
}

func (n *node) cmdConnect(ctx context.Context, c command) error {
	ma, err := multiaddr.NewMultiaddr(c.Addr)
	if err != nil {
		return fmt.Errorf("addr: %w", err)
	}
	ai, err := peer.AddrInfoFromP2pAddr(ma)
	if err != nil {
		return fmt.Errorf("addr: %w", err)
	}
	// Keep the address for good: data-transfer reconnects (restarts, the
	// channel monitor) dial by peer id only.
	n.host.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.PermanentAddrTTL)
	return n.host.Connect(ctx, *ai)
}

func (n *node) cmdPolicy(c command) (map[string]any, error) {
	p := defaultPolicy()
	// Absent fields take their defaults; the whole policy of the voucher type
	// is replaced.
	if err := json.Unmarshal(c.raw, &p); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if err := n.applyPolicy(p); err != nil {
		return nil, err
	}
	return structToMap(p)
}

func (n *node) cmdOpen(c command) (map[string]any, error) {
	to, err := peer.Decode(c.Peer)
	if err != nil {
		return nil, fmt.Errorf("peer: %w", err)
	}
	root, err := cid.Decode(c.Root)
	if err != nil {
		return nil, fmt.Errorf("root: %w", err)
	}
	sel, err := parseSelector(c.Selector)
	if err != nil {
		return nil, err
	}
	var v datatransfer.TypedVoucher
	if c.Voucher != nil {
		if v, err = c.Voucher.toTyped(); err != nil {
			return nil, err
		}
	} else {
		v = datatransfer.TypedVoucher{Type: defaultVoucherType, Voucher: mapNode(func(ma datamodel.MapAssembler) {})}
	}
	// The node context, not a per-command timeout: a pull's graphsync request
	// lives under this context.
	var chid datatransfer.ChannelID
	if c.Cmd == "pull" {
		chid, err = n.dt.OpenPullDataChannel(n.ctx, to, v, root, sel)
	} else {
		chid, err = n.dt.OpenPushDataChannel(n.ctx, to, v, root, sel)
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"chid": toChidJSON(chid)}, nil
}

func (n *node) cmdChannels(ctx context.Context, c command) (map[string]any, error) {
	// InProgressChannels lists every channel stored in the datastore.
	chans, err := n.dt.InProgressChannels(ctx)
	if err != nil {
		return nil, err
	}
	states := make([]stateJSON, 0, len(chans))
	for _, st := range chans {
		states = append(states, toStateJSON(st))
	}
	sort.Slice(states, func(i, j int) bool {
		if states[i].Chid.Initiator != states[j].Chid.Initiator {
			return states[i].Chid.Initiator < states[j].Chid.Initiator
		}
		return states[i].Chid.ID < states[j].Chid.ID
	})
	return map[string]any{"channels": states}, nil
}

// ---- bare graphsync pulls ----

// gsCollector records the blocks graphsync hands to the incoming block hook
// for one of our own bare requests.
type gsCollector struct {
	mu   sync.Mutex
	cids []cid.Cid
}

func (c *gsCollector) add(b graphsync.BlockData) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := b.Link().(cidlink.Link); ok {
		c.cids = append(c.cids, cl.Cid)
	}
}

func (n *node) cmdGsPull(c command) (map[string]any, error) {
	p, err := peer.Decode(c.Peer)
	if err != nil {
		return nil, fmt.Errorf("peer: %w", err)
	}
	root, err := cid.Decode(c.Root)
	if err != nil {
		return nil, fmt.Errorf("root: %w", err)
	}
	sel, err := parseSelector(c.Selector)
	if err != nil {
		return nil, err
	}
	timeout := 120 * time.Second
	if c.TimeoutMs > 0 {
		timeout = time.Duration(c.TimeoutMs) * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(n.ctx, timeout)
	defer cancel()

	// Choose the request id ourselves (graphsync honours RequestIDContextKey)
	// so the incoming block hook can attribute blocks to this request.
	rid := graphsync.NewRequestID()
	col := &gsCollector{}
	n.gsPullsMu.Lock()
	n.gsPulls[rid] = col
	n.gsPullsMu.Unlock()
	defer func() {
		n.gsPullsMu.Lock()
		delete(n.gsPulls, rid)
		n.gsPullsMu.Unlock()
	}()
	ctx = context.WithValue(ctx, graphsync.RequestIDContextKey{}, rid)

	progress, errs := n.gs.Request(ctx, p, cidlink.Link{Cid: root}, sel)
	var errList []string
	for progress != nil || errs != nil {
		select {
		case _, ok := <-progress:
			if !ok {
				progress = nil
			}
		case e, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			errList = append(errList, e.Error())
		}
	}
	col.mu.Lock()
	cids := append([]cid.Cid(nil), col.cids...)
	col.mu.Unlock()
	if len(errList) > 0 {
		return nil, fmt.Errorf("graphsync request %s: %s (blocks received: %d)", rid, strings.Join(errList, "; "), len(cids))
	}
	return map[string]any{"cids": cidStrings(cids), "blocks": len(cids), "request_id": rid.String()}, nil
}

// hasDTExtension reports whether a graphsync request carries a data-transfer
// message in any of the extension names go-data-transfer uses.
func hasDTExtension(req graphsync.RequestData) bool {
	for _, name := range []graphsync.ExtensionName{
		extension.ExtensionDataTransfer1_1,
		extension.ExtensionIncomingRequest1_1,
		extension.ExtensionOutgoingBlock1_1,
	} {
		if _, ok := req.Extension(name); ok {
			return true
		}
	}
	return false
}

// ---- helpers ----

// parseSelector decodes a DAG-JSON selector; null/absent means
// explore-all recursive.
func parseSelector(raw json.RawMessage) (datamodel.Node, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return selectorparse.CommonSelector_ExploreAllRecursively, nil
	}
	nd, err := ipld.Decode([]byte(s), dagjson.Decode)
	if err != nil {
		return nil, fmt.Errorf("selector (dag-json): %w", err)
	}
	return nd, nil
}

func cidStrings(cs []cid.Cid) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.String()
	}
	return out
}

// structToMap turns a JSON-tagged struct into result fields.
func structToMap(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	// UseNumber keeps large integers (e.g. in vouchers) exact.
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}
